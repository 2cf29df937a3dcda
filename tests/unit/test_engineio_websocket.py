"""The WebSocket glue's pieces that need no socket: frames, buffer size, hardening."""

from __future__ import annotations

import pytest
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from privydrop.config import EngineSettings
from privydrop.engineio.server import EngineServer
from privydrop.engineio.websocket import (
    EngineWebSocketFactory,
    outbound_buffer_size,
    server_frame,
)


def _autobahn_frame(payload: bytes, binary: bool) -> bytes:
    factory = WebSocketServerFactory()
    factory.protocol = WebSocketServerProtocol
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
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
