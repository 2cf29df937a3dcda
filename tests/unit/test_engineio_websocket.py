"""The WebSocket glue's pieces that need no socket: frames, buffer size, hardening."""

from __future__ import annotations

import pytest
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from privydrop.engineio.server import EngineServer
from privydrop.engineio.websocket import (
    EngineWebSocketFactory,
    EngineWebSocketProtocol,
    outbound_buffer_size,
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


class _FileDescriptorLike:
    def __init__(self, data: bytes, offset: int, temp: int) -> None:
        self.dataBuffer = data
        self.offset = offset
        self._tempDataLen = temp


class _Wrapper:
    def __init__(self, inner: object) -> None:
        self.transport = inner


def test_outbound_buffer_counts_unsent_bytes() -> None:
    """The slow-reader cap must see bytes the peer has not taken, including through TLS."""
    tcp = _FileDescriptorLike(b"x" * 100, 40, 25)
    assert outbound_buffer_size(tcp) == 85
    assert outbound_buffer_size(_Wrapper(tcp)) == 85
    assert outbound_buffer_size(object()) == 0


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


def _open_connection(**changes: Any) -> tuple[Any, StringTransport, _Recorder]:
    app = _Recorder()
    settings = EngineSettings(**changes)
    server = EngineServer(Clock(), settings, app)  # type: ignore[arg-type]
    factory = EngineWebSocketFactory(server)
    protocol = factory.buildProtocol(None)
    transport = _Transport()
    protocol.makeConnection(transport)
    protocol.dataReceived(_UPGRADE)
    assert protocol.state == protocol.STATE_OPEN
    transport.clear()
    return protocol, transport, app


def test_unmask_matches_the_rfc_example() -> None:
    """RFC 6455 section 5.7: a masked "Hello"; a wrong unmask corrupts every message."""
    assert unmask(b"\x7f\x9f\x4d\x51\x58", b"\x37\xfa\x21\x3d") == b"Hello"
    assert unmask(b"", b"\x37\xfa\x21\x3d") == b""


def test_messages_arrive_in_order_however_the_stream_is_cut() -> None:
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


def test_invalid_utf8_closes_with_1007_as_autobahn_does() -> None:
    """A text frame that is not UTF-8 is a protocol error (RFC 6455, 8.1);
    what came before it in the same read is still delivered."""
    protocol, transport, app = _open_connection()
    protocol.dataReceived(_client_frame(b"4ok") + _client_frame(b"4\xff\xfe"))
    assert app.messages == ["ok"]
    assert transport.value()[2:4] == b"\x03\xef"  # close, 1007
    protocol.dataReceived(_client_frame(b"4after"))
    assert app.messages == ["ok"]


def test_frame_over_max_payload_closes_with_1009() -> None:
    """The size limit holds for frames the fast path would otherwise take."""
    protocol, transport, app = _open_connection(max_payload=100)
    protocol.dataReceived(_client_frame(b"4" + b"a" * 99) + _client_frame(b"4" + b"b" * 100))
    assert app.messages == ["a" * 99]
    assert transport.value()[2:4] == b"\x03\xf1"  # 1009


def test_unmasked_client_frame_is_refused() -> None:
    """RFC 6455, 5.1: the server closes a connection whose client does not mask."""
    protocol, transport, app = _open_connection()
    protocol.dataReceived(b"\x81\x03" + b"4hi")
    assert app.messages == []
    assert transport.value()[2:4] == b"\x03\xea"  # 1002


def test_replies_to_a_read_are_written_when_the_read_is_handled() -> None:
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


def test_autobahn_debug_text_is_built_only_when_logged() -> None:
    """Autobahn's per-connection debug events still render as before, but their
    text (pretty-printed settings, coloured names) is built only if an event is
    formatted; other callers of the module's pformat get text at once."""
    from autobahn.websocket import protocol as autobahn_protocol
    from twisted.logger import formatEvent

    import privydrop.engineio.websocket  # noqa: F401 - installs the lazy pformat

    events: list[dict[str, object]] = []
    factory = WebSocketServerFactory()
    factory.protocol = WebSocketServerProtocol
    protocol = factory.buildProtocol(None)
    protocol.log = _RecordingLog(events)
    protocol.makeConnection(_Transport())
    settings = [e for e in events if e["format"] == "\n{attrs}"]
    assert len(settings) == 1
    attrs = settings[0]["attrs"]
    assert not isinstance(attrs, str)
    text = formatEvent({"log_format": "\n{attrs}", "attrs": attrs})
    assert text.startswith("\n[(") and "'openHandshakeTimeout'" in text
    assert text == "\n" + str(attrs) == "\n" + repr(attrs)
    assert autobahn_protocol.pformat({"a": 1}) == "{'a': 1}"
    assert autobahn_protocol.pformat([1, 2], width=1) == "[1,\n 2]"
    established = [e for e in events if "connection accepted" in str(e["format"])]
    assert len(established) == 1 and not isinstance(established[0]["func"], str)

    from autobahn import util
    from autobahn.twisted import websocket as autobahn_websocket

    for module in (autobahn_protocol, autobahn_websocket):
        for name, original in (("hltype", util.hltype), ("hlval", util.hlval)):
            lazy = getattr(module, name)(WebSocketServerProtocol.onConnect)
            assert not isinstance(lazy, str)
            expected = original(WebSocketServerProtocol.onConnect)
            assert str(lazy) == repr(lazy) == f"{lazy}" == expected


class _RecordingLog:
    def __init__(self, events: list[dict[str, object]]) -> None:
        self._events = events

    def debug(self, format: str, **fields: object) -> None:
        self._events.append(dict(fields, format=format))

    def __getattr__(self, name: str) -> object:
        return lambda *args, **kwargs: None


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


def test_upgraded_channel_is_no_longer_the_transports_producer() -> None:
    """After Autobahn takes a transport from its HTTP channel, the channel stops
    being the transport's producer (which kept it and its request alive); a
    channel that still owns its transport, or a transport with another
    producer, is left alone."""
    from privydrop.engineio.resource import _release_channel

    class Channel:
        transport: object = None
        _requestProducer = None

    channel = Channel()
    transport = StringTransport()
    transport.registerProducer(channel, True)
    _release_channel(channel, transport)
    assert transport.producer is None

    owner = Channel()
    owned = StringTransport()
    owner.transport = owned
    owned.registerProducer(owner, True)
    _release_channel(owner, owned)
    assert owned.producer is owner

    other = StringTransport()
    producer = object()
    other.registerProducer(producer, True)
    _release_channel(channel, other)
    assert other.producer is producer
    _release_channel(channel, None)
