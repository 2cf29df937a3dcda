"""The WebSocket glue's pieces that need no socket: frames, hardening, receiving.

The connection-level tests run twice: with the Autobahn internals the fast
paths use, and as on an Autobahn version that lost one of them (the
transport then runs on Autobahn's public API; see privydrop.compat.autobahn).
Clients must not see a difference, except close codes the public API cannot
send.
"""

from __future__ import annotations

import pytest
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from privydrop.engineio.server import EngineServer
from privydrop.engineio.websocket import (
    EngineWebSocketFactory,
    EngineWebSocketProtocol,
    server_frame,
)
from privydrop.settings import EngineSettings


def _autobahn_frame(payload: bytes, binary: bool) -> bytes:
    factory = WebSocketServerFactory()
    factory.protocol = WebSocketServerProtocol
    protocol = factory.buildProtocol(None)
    transport = _Transport()
    protocol.makeConnection(transport)
    transport.clear()
    protocol.state = protocol.STATE_OPEN
    protocol.websocket_version = 13
    protocol._perMessageCompress = None
    protocol.sendMessage(payload, binary)
    return transport.value()


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70_000])
@pytest.mark.parametrize("binary", [False, True])
def test_server_frames_match_autobahn_encoding(size: int, binary: bool) -> None:
    """Clients would see corrupt frames at the 126/65536 length boundaries if this broke."""
    payload = b"a" * size
    assert server_frame(payload, binary) == _autobahn_frame(payload, binary)


@pytest.mark.parametrize("size", [0, 1, 124, 125, 126, 127, 65534, 65535, 65536, 70_000])
def test_packet_frames_match_the_general_encoding(size: int) -> None:
    """The short cut for text packets must frame exactly as server_frame does
    at the 126/65536 boundaries (counted in UTF-8 bytes of the "4" + text),
    or clients read corrupt frames; binary packets take the general way."""
    from privydrop.engineio import packets
    from privydrop.engineio.websocket import packet_frame

    text = "x" * max(size - 1, 0)
    for data in (text, "é" * (max(size - 1, 0) // 2), text.encode()):
        packet = packets.Packet(packets.PacketType.MESSAGE, data)
        assert packet_frame(packet) == server_frame(*packets.encode_websocket(packet))
    assert packet_frame(packets.PING) == server_frame(b"2", False)


def test_factory_is_hardened_from_settings() -> None:
    """Autobahn's permissive defaults (old drafts, status page, version banner,
    unbounded frames) must not reach production."""
    settings = EngineSettings(max_payload=5_000, max_frame_bytes=0)
    server = EngineServer(Clock(), settings, application=None)  # type: ignore[arg-type]
    factory = EngineWebSocketFactory(server)
    assert factory.versions == [13]
    assert factory.webStatus is False
    assert not factory.server
    assert factory.maxFramePayloadSize == 5_000
    assert factory.perMessageCompressionAccept([object()]) is None
    assert factory.failByDrop is False
    assert factory.openHandshakeTimeout == settings.ws_open_handshake_timeout_s
    assert factory.closeHandshakeTimeout == settings.ws_close_handshake_timeout_s


# -- receiving frames ------------------------------------------------------------
#
# An open connection's reads are parsed by a fast path for whole, final,
# masked data frames, and by Autobahn for everything else. Whatever way a
# stream of frames is cut into reads, the application must see the same
# messages, and control frames and errors must be handled as Autobahn does.

import random  # noqa: E402
import struct  # noqa: E402
from typing import Any  # noqa: E402

from privydrop.engineio.websocket import unmask  # noqa: E402

_UPGRADE = (
    b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
    b"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class _Transport(StringTransport):
    """Autobahn unregisters a producer it never registered when it closes."""

    def unregisterProducer(self) -> None:
        self.producer = None


class _Recorder:
    def __init__(self) -> None:
        self.messages: list[object] = []
        self.closed: list[str] = []

    def on_open(self, connection: object) -> None:
        pass

    def on_message(self, connection: object, message: object) -> None:
        self.messages.append(message)

    def on_close(self, connection: object, reason: str) -> None:
        self.closed.append(reason)


def _client_frame(
    payload: bytes, opcode: int = 1, fin: bool = True, mask: bytes = b"\x01\x02\x03\x04"
) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    size = len(payload)
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", size)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", size)
    return head + mask + unmask(payload, mask)


#: The close code a client sees for a server close with C{code}: Autobahn's
#: public sendClose takes only 1000 and 3000-4999.
def _close_code(code: int, autobahn_api: str) -> bytes:
    return struct.pack("!H", code if autobahn_api == "internals" else 1000)


def _open_connection(**changes: Any) -> tuple[Any, StringTransport, _Recorder]:
    app = _Recorder()
    settings = EngineSettings(**changes)
    server = EngineServer(Clock(), settings, app)  # type: ignore[arg-type]
    factory = EngineWebSocketFactory(server)
    protocol = factory.buildProtocol(None)
    transport = _Transport()
    protocol.makeConnection(transport)
    protocol.dataReceived(_UPGRADE)
    assert transport.value().startswith(b"HTTP/1.1 101 ")
    transport.clear()
    return protocol, transport, app


def test_unmask_matches_the_rfc_example() -> None:
    """RFC 6455 section 5.7: a masked "Hello"; a wrong unmask corrupts every message."""
    assert unmask(b"\x7f\x9f\x4d\x51\x58", b"\x37\xfa\x21\x3d") == b"Hello"
    assert unmask(b"", b"\x37\xfa\x21\x3d") == b""


def test_messages_arrive_in_order_however_the_stream_is_cut(autobahn_api: str) -> None:
    """Reads that end inside a frame, or mix control frames and fragments in,
    must not lose, reorder or corrupt messages."""
    frames = [
        _client_frame(b"4first"),
        _client_frame(b"4" + "é€".encode() * 100),  # 16-bit length
        _client_frame(b"\x00\x01binary", opcode=2),
        _client_frame(b"ping!", opcode=9),
        _client_frame(b"4frag", fin=False),
        _client_frame(b"mented", opcode=0),
        _client_frame(b"4"),
        _client_frame(b"4" + b"last" * 30),
    ]
    expected = ["first", "é€" * 100, b"\x00\x01binary", "fragmented", "", "last" * 30]
    stream = b"".join(frames)
    rng = random.Random(5)
    for trial in range(40):
        protocol, transport, app = _open_connection()
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(0, 6))) if trial else []
        start = 0
        for cut in [*cuts, len(stream)]:
            protocol.dataReceived(stream[start:cut])
            start = cut
        assert app.messages == expected, cuts
        assert b"\x8a\x05ping!" in transport.value()  # the pong


def test_invalid_utf8_closes_with_1007_as_autobahn_does(autobahn_api: str) -> None:
    """A text frame that is not UTF-8 is a protocol error (RFC 6455, 8.1);
    what came before it in the same read is still delivered."""
    protocol, transport, app = _open_connection()
    protocol.dataReceived(_client_frame(b"4ok") + _client_frame(b"4\xff\xfe"))
    assert app.messages == ["ok"]
    assert transport.value()[2:4] == b"\x03\xef"  # close, 1007
    protocol.dataReceived(_client_frame(b"4after"))
    assert app.messages == ["ok"]


def test_frame_over_max_payload_closes_with_1009(autobahn_api: str) -> None:
    """The size limit holds for frames the fast path would otherwise take;
    the session ends naming the limit."""
    protocol, transport, app = _open_connection(max_payload=100)
    protocol.dataReceived(_client_frame(b"4" + b"a" * 99) + _client_frame(b"4" + b"b" * 100))
    assert app.messages == ["a" * 99]
    assert transport.value()[2:4] == _close_code(1009, autobahn_api)
    assert b"max_payload exceeded" in transport.value()
    assert app.closed == ["max_payload exceeded"]


def test_message_over_max_payload_in_fragments_is_not_delivered(autobahn_api: str) -> None:
    """A message that passes the cap over several fragments is refused, and
    what follows of it is neither delivered nor kept."""
    protocol, transport, app = _open_connection(max_payload=100)
    protocol.dataReceived(_client_frame(b"4" + b"a" * 60, fin=False))
    protocol.dataReceived(_client_frame(b"b" * 60, opcode=0, fin=False))
    protocol.dataReceived(_client_frame(b"c" * 60, opcode=0))
    assert app.messages == []
    assert app.closed == ["max_payload exceeded"]
    assert transport.value()[2:4] == _close_code(1009, autobahn_api)


def test_bad_packet_ends_the_session_with_a_close_frame(autobahn_api: str) -> None:
    """A frame that is not an Engine.IO packet ends the session, and the
    client is told why in the close frame."""
    protocol, transport, app = _open_connection()
    protocol.dataReceived(_client_frame(b"9nonsense"))
    assert app.closed == ["parse error"]
    assert transport.value()[2:4] == _close_code(1002, autobahn_api)
    assert transport.value()[4:] == b"parse error"
    protocol.dataReceived(_client_frame(b"4after"))
    assert app.messages == []


def test_unmasked_client_frame_is_refused(autobahn_api: str) -> None:
    """RFC 6455, 5.1: the server closes a connection whose client does not mask."""
    protocol, transport, app = _open_connection()
    protocol.dataReceived(b"\x81\x03" + b"4hi")
    assert app.messages == []
    assert transport.value()[2:4] == b"\x03\xea"  # 1002


def test_replies_to_a_read_are_written_when_the_read_is_handled(autobahn_api: str) -> None:
    """An answer caused by a client's read must leave without waiting for a
    later reactor turn (it would add latency to every relayed message)."""

    class Echo(_Recorder):
        def on_message(self, connection: object, message: object) -> None:
            connection.send(message)

    app = Echo()
    server = EngineServer(Clock(), EngineSettings(), app)  # type: ignore[arg-type]
    protocol = EngineWebSocketFactory(server).buildProtocol(None)
    transport = _Transport()
    protocol.makeConnection(transport)
    protocol.dataReceived(_UPGRADE)
    transport.clear()
    protocol.dataReceived(_client_frame(b"4one") + _client_frame(b"4two"))
    assert transport.value() == server_frame(b"4one", False) + server_frame(b"4two", False)


def test_protocol_options_are_shared_class_attributes() -> None:
    """Each connection reads the factory's option values from its class, so
    Autobahn's per-connection copy into the instance dict is skipped; a later
    change of the factory's options (or of its protocol class) is honoured."""
    server = EngineServer(Clock(), EngineSettings(), _Recorder())  # type: ignore[arg-type]
    factory = EngineWebSocketFactory(server)
    first = factory.buildProtocol(None)
    first.makeConnection(_Transport())
    names = first.CONFIG_ATTRS
    assert names
    for name in names:
        assert name not in first.__dict__
        assert getattr(first, name) is getattr(factory, name)
    assert isinstance(first, EngineWebSocketProtocol)
    assert factory.buildProtocol(None).__class__ is first.__class__

    factory.setProtocolOptions(openHandshakeTimeout=123.0)
    changed = factory.buildProtocol(None)
    changed.makeConnection(_Transport())
    assert changed.openHandshakeTimeout == 123.0
    assert first.openHandshakeTimeout != 123.0

    factory.protocol = WebSocketServerProtocol
    plain = factory.buildProtocol(None)
    assert isinstance(plain, WebSocketServerProtocol)
    assert not isinstance(plain, EngineWebSocketProtocol)
    assert plain.factory is factory


# -- how a connection ended ------------------------------------------------------
#
# Socket.IO keeps a socket recoverable when its transport was lost and ends it
# at once when the client left on purpose; only the WebSocket layer can tell
# the two apart.


class _KindRecorder(_Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.kinds: list[object] = []

    def on_close(self, connection: Any, reason: str) -> None:
        super().on_close(connection, reason)
        self.kinds.append(connection.close_kind)


def _open_session_connection() -> tuple[Any, StringTransport, _KindRecorder]:
    app = _KindRecorder()
    server = EngineServer(Clock(), EngineSettings(), app)  # type: ignore[arg-type]
    protocol = EngineWebSocketFactory(server).buildProtocol(None)
    transport = _Transport()
    protocol.makeConnection(transport)
    protocol.dataReceived(_UPGRADE)
    return protocol, transport, app


@pytest.mark.parametrize(
    "close_payload", [struct.pack("!H", 1000), struct.pack("!H", 1001) + b"bye", b""]
)
def test_close_frame_meaning_going_away_is_a_client_close(
    autobahn_api: str, close_payload: bytes
) -> None:
    """1000, 1001 and a close frame without a code are how clients (and
    socket.io-client) leave on purpose."""
    from privydrop.engineio.interface import CloseKind

    protocol, transport, app = _open_session_connection()
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure

    protocol.dataReceived(_client_frame(close_payload, opcode=8))
    protocol.connectionLost(Failure(ConnectionDone()))
    assert app.kinds == [CloseKind.CLIENT]


@pytest.mark.parametrize("close_payload", [None, struct.pack("!H", 1011)])
def test_connection_lost_without_a_leaving_close_frame_is_lost(
    autobahn_api: str, close_payload: bytes | None
) -> None:
    """A TCP connection that ends without a close frame (or with an error
    code) is a lost transport, not a leave."""
    from twisted.internet.error import ConnectionLost
    from twisted.python.failure import Failure

    from privydrop.engineio.interface import CloseKind

    protocol, transport, app = _open_session_connection()
    if close_payload is not None:
        protocol.dataReceived(_client_frame(close_payload, opcode=8))
    protocol.connectionLost(Failure(ConnectionLost()))
    assert app.kinds == [CloseKind.LOST]


def test_server_close_is_not_a_client_close(autobahn_api: str) -> None:
    """When the server closes first, the client's answering close frame
    does not make it a client leave."""
    from privydrop.engineio.interface import CloseKind

    protocol, transport, app = _open_session_connection()
    protocol.dataReceived(_client_frame(b"9nonsense"))
    protocol.dataReceived(_client_frame(struct.pack("!H", 1000), opcode=8))
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure

    protocol.connectionLost(Failure(ConnectionDone()))
    assert app.kinds == [CloseKind.SERVER]
def test_websocket_handshakes_are_capped_per_client_before_the_upgrade() -> None:
    """A client opening sessions directly over WebSocket meets the same caps
    as over polling, refused with an HTTP 429 instead of the 101 upgrade."""
    app = _Recorder()
    server = EngineServer(
        Clock(), EngineSettings(max_pending_sessions_per_ip=2), app  # type: ignore[arg-type]
    )
    factory = EngineWebSocketFactory(server)
    answers = []
    for _ in range(3):
        protocol = factory.buildProtocol(None)
        transport = _Transport()
        protocol.makeConnection(transport)
        protocol.dataReceived(_UPGRADE)
        answers.append(transport.value().split(b"\r\n", 1)[0])
    assert answers[:2] == [b"HTTP/1.1 101 Switching Protocols"] * 2
    assert answers[2].startswith(b"HTTP/1.1 429 ")
    assert server.clients_count == 2


# -- close frames (RFC 6455, 5.5.1 and 7.4) ----------------------------------------

#: Close frames a client must not send: a 1-byte payload, codes reserved or
#: out of range, a reason that is not UTF-8.
INVALID_CLOSE_PAYLOADS = {
    "one byte": b"\x03",
    "code 999": struct.pack("!H", 999),
    "code 1004": struct.pack("!H", 1004),
    "code 1005": struct.pack("!H", 1005),
    "code 1006": struct.pack("!H", 1006),
    "code 1015": struct.pack("!H", 1015),
    "code 2999": struct.pack("!H", 2999),
    "code 5000": struct.pack("!H", 5000),
    "reason not UTF-8": struct.pack("!H", 1000) + b"ok \xff\xfe",
    "reason a lone surrogate": struct.pack("!H", 1000) + b"\xed\xa0\x80",
}


def _close_frames(data: bytes) -> list[bytes]:
    """The payloads of the close frames in C{data}, which holds server
    frames only (unmasked, payloads under 126 bytes for control frames)."""
    payloads = []
    while data:
        head, size = data[0], data[1]
        if size == 126:
            size = struct.unpack("!H", data[2:4])[0]
            start = 4
        elif size == 127:
            size = struct.unpack("!Q", data[2:10])[0]
            start = 10
        else:
            start = 2
        if head == 0x88:
            payloads.append(data[start : start + size])
        data = data[start + size :]
    return payloads


@pytest.mark.parametrize("name", list(INVALID_CLOSE_PAYLOADS))
def test_invalid_close_frame_is_answered_with_1002_then_closed(
    autobahn_api: str, name: str
) -> None:
    """An invalid close frame gets a close frame with 1002 (protocol error)
    before the TCP connection is closed in order, not aborted (a bare reset
    would throw the close frame away); the session's clean-up runs once."""
    protocol, transport, app = _open_connection()
    protocol.dataReceived(_client_frame(b"4before"))
    protocol.dataReceived(_client_frame(INVALID_CLOSE_PAYLOADS[name], opcode=8))
    closes = _close_frames(transport.value())
    assert len(closes) == 1 and closes[0][:2] == struct.pack("!H", 1002), closes
    assert transport.disconnecting and not transport.disconnected  # not aborted
    protocol.dataReceived(_client_frame(b"4after"))
    assert app.messages == ["before"]
    assert len(_close_frames(transport.value())) == 1
    protocol.connectionLost(Failure(ConnectionDone()))
    assert len(app.closed) == 1, app.closed


@pytest.mark.parametrize(
    "payload",
    [b"", struct.pack("!H", 1000), struct.pack("!H", 1001) + "bye é".encode(), struct.pack("!H", 4000)],
)
def test_valid_close_frame_is_answered_and_closed_in_order(
    autobahn_api: str, payload: bytes
) -> None:
    """A client's close is answered with a close frame, then the connection
    is closed in order; the session ends once."""
    protocol, transport, app = _open_connection()
    protocol.dataReceived(_client_frame(payload, opcode=8))
    closes = _close_frames(transport.value())
    assert len(closes) == 1 and closes[0][:2] == struct.pack("!H", 1000), closes
    assert transport.disconnecting and not transport.disconnected
    protocol.connectionLost(Failure(ConnectionDone()))
    assert len(app.closed) == 1, app.closed


def test_connection_not_closed_after_an_invalid_close_frame_is_dropped_in_time(
    autobahn_api: str,
) -> None:
    """A client that neither reads nor closes after its invalid close frame
    does not hold the connection: it is aborted after the close handshake
    timeout."""
    protocol, transport, app = _open_connection(ws_close_handshake_timeout_s=2.0)
    clock = protocol.factory.engine.clock
    protocol.dataReceived(_client_frame(struct.pack("!H", 999), opcode=8))
    clock.advance(1.9)
    assert not transport.disconnected
    clock.advance(0.1)
    assert transport.disconnected
    protocol.connectionLost(Failure(ConnectionDone()))
    assert clock.getDelayedCalls() == []
    assert len(app.closed) == 1
