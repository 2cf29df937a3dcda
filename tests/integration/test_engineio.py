"""Engine.IO over real loopback sockets: treq for polling, Autobahn for WebSocket.

Each test starts its own Engine.IO server (an echo application with a few
test commands) on 127.0.0.1 and an ephemeral port; teardown closes every
session and client and stops listening.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import orjson
import pytest
import pytest_twisted
import treq
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, DeferredQueue, maybeDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.threads import deferToThread
from twisted.logger import capturedLogs, formatEvent
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site

from privydrop.engineio.interface import EngineConnection, Message
from privydrop.engineio.resource import build_engineio_resource
from privydrop.engineio.server import EngineServer
from privydrop.engineio.session import (
    REASON_OUTBOUND_LIMIT,
    REASON_PAYLOAD_LIMIT,
    REASON_PING_TIMEOUT,
)
from privydrop.settings import EngineSettings, OriginSettings

PATH = "/engine.io/"
FLOOD_CHUNK = "x" * 131_072


@attrs.define(eq=False)
class EchoCommandsApp:
    """Echoes messages; C{burst:N} answers N numbered messages; C{flood} streams
    data every reactor turn until the session closes."""

    connections: dict[str, EngineConnection] = attrs.Factory(dict)
    close_reasons: dict[str, str] = attrs.Factory(dict)
    close_calls: list[str] = attrs.Factory(list)
    _close_waiters: dict[str, list[Deferred[str]]] = attrs.Factory(dict)

    def on_open(self, connection: EngineConnection) -> None:
        self.connections[connection.sid] = connection

    def on_message(self, connection: EngineConnection, message: Message) -> None:
        if isinstance(message, str) and message.startswith("burst:"):
            connection.send_many([f"n{i}" for i in range(int(message[6:]))])
        elif message == "flood":
            self._flood(connection)
        else:
            connection.send(message)

    def _flood(self, connection: EngineConnection) -> None:
        if connection.sid in self.close_reasons:
            return
        connection.send(FLOOD_CHUNK)
        reactor.callLater(0, self._flood, connection)  # type: ignore[attr-defined]

    def on_close(self, connection: EngineConnection, reason: str) -> None:
        self.close_calls.append(connection.sid)
        self.close_reasons[connection.sid] = reason
        for waiter in self._close_waiters.pop(connection.sid, []):
            waiter.callback(reason)

    def closed(self, sid: str) -> Deferred[str]:
        """Fires with the close reason of session C{sid} (at once if it is closed)."""
        d: Deferred[str] = Deferred()
        if sid in self.close_reasons:
            d.callback(self.close_reasons[sid])
        else:
            self._close_waiters.setdefault(sid, []).append(d)
        return d


class WSClient(WebSocketClientProtocol):
    """A test WebSocket client that queues what it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.received: DeferredQueue[tuple[bytes, bool]] = DeferredQueue()
        self.opened: Deferred[None] = Deferred()
        self.closed: Deferred[tuple[bool, int | None]] = Deferred()

    def onOpen(self) -> None:
        self.opened.callback(None)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.received.put((payload, isBinary))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.opened.called:
            self.opened.errback(ConnectionError("handshake failed"))
        if not self.closed.called:
            self.closed.callback((wasClean, code))

    async def next_text(self) -> str:
        payload, binary = await self.received.get()
        assert not binary
        return payload.decode("utf-8")


@attrs.define
class Running:
    server: EngineServer
    app: EchoCommandsApp
    port: int
    http: Any
    _clients: list[WSClient]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    def url(self, query: str) -> str:
        return self.base + "?" + query

    async def request(
        self,
        method: str,
        query: str,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes, Any]:
        response = await self.http.request(
            method, self.url(query), data=data, headers=headers
        )
        body = await response.content()
        return response.code, body, response.headers

    async def handshake_polling(self) -> str:
        code, body, _ = await self.request("GET", "EIO=4&transport=polling")
        assert code == 200 and body.startswith(b"0")
        return str(orjson.loads(body[1:])["sid"])

    async def websocket(self, query: str, origin: str | None = None) -> WSClient:
        factory = WebSocketClientFactory(
            f"ws://127.0.0.1:{self.port}{PATH}?{query}", origin=origin
        )
        factory.protocol = WSClient
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        client: WSClient = await endpoint.connect(factory)
        self._clients.append(client)
        return client


SETTINGS = EngineSettings(
    path=PATH,
    max_payload=10_000,
    max_outbound_buffer=262_144,
    max_buffered_bytes=4_000_000,
    origins=OriginSettings(allow_any=True),
)


@pytest_twisted.async_yield_fixture
async def engine() -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    started: list[tuple[Running, Any]] = []
    pool = HTTPConnectionPool(reactor, persistent=False)
    http = treq.client.HTTPClient(Agent(reactor, pool=pool))

    async def start(**changes: Any) -> Running:
        settings = attrs.evolve(SETTINGS, **changes)
        app = EchoCommandsApp()
        server = EngineServer(reactor, settings, app)
        root = Resource()
        root.putChild(b"engine.io", build_engineio_resource(server))
        site = Site(root)
        site.noisy = False
        port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[attr-defined]
        running = Running(server, app, port.getHost().port, http, [])
        started.append((running, port))
        return running

    yield start

    for running, port in started:
        running.server.close_all()
        # Polling sessions without a pending GET would otherwise wait for one.
        for session in running.server.sessions():
            session.force_close("test teardown")
        for client in running._clients:
            if client.transport is not None:
                client.transport.resumeProducing()
                client.dropConnection(abort=True)
        await DeferredList([c.closed for c in running._clients])
        await maybeDeferred(port.stopListening)
    await pool.closeCachedConnections()


# -- polling -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_polling_session_echoes_text_and_binary(engine: Any) -> None:
    """Clients on polling (the JS client's default start) could not exchange messages."""
    running = await engine()
    sid = await running.handshake_polling()
    code, body, _ = await running.request(
        "POST", f"EIO=4&transport=polling&sid={sid}", b"4hello\x1ebAQIDBA=="
    )
    assert (code, body) == (200, b"ok")
    code, body, headers = await running.request(
        "GET", f"EIO=4&transport=polling&sid={sid}"
    )
    assert (code, body) == (200, b"4hello\x1ebAQIDBA==")
    assert headers.getRawHeaders("content-type") == ["text/plain; charset=UTF-8"]
    assert headers.getRawHeaders("access-control-allow-origin") == ["*"]


@pytest.mark.parametrize(
    "method, query, status, code",
    [
        ("GET", "transport=polling", 400, 5),
        ("GET", "EIO=abc&transport=polling", 400, 5),
        ("GET", "EIO=4", 400, 0),
        ("GET", "EIO=4&transport=abc", 400, 0),
        ("GET", "EIO=4&transport=polling&sid=unknown", 400, 1),
        ("POST", "EIO=4&transport=polling", 400, 2),
        ("PUT", "EIO=4&transport=polling", 400, 2),
        ("GET", "EIO=4&transport=websocket", 400, 3),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_requests_get_reference_error_codes(
    engine: Any, method: str, query: str, status: int, code: int
) -> None:
    """Clients decide whether to retry from these codes; wrong codes break reconnection."""
    running = await engine()
    got_status, body, headers = await running.request(method, query)
    assert got_status == status
    assert orjson.loads(body)["code"] == code
    assert headers.getRawHeaders("content-type") == ["application/json"]


@pytest_twisted.ensureDeferred
async def test_second_concurrent_get_closes_session(engine: Any) -> None:
    """Overlapping polls would reorder packets; the session must end instead."""
    running = await engine()
    sid = await running.handshake_polling()
    query = f"EIO=4&transport=polling&sid={sid}"
    first = Deferred.fromCoroutine(running.request("GET", query))
    closed = running.app.closed(sid)
    # The held GET is registered once the server sees it; wait for that.
    while not running.server.get_session(sid).has_pending_poll:  # type: ignore[union-attr]
        await _next_turn()
    second_status, _, _ = await running.request("GET", query + "&t=burst")
    assert second_status == 400
    assert (await first)[:2] == (200, b"1")
    await closed
    status, body, _ = await running.request("GET", query)
    assert status == 400 and orjson.loads(body)["code"] == 1


@pytest_twisted.ensureDeferred
async def test_oversize_polling_post_closes_session(engine: Any) -> None:
    """A client posting more than maxPayload must lose its session, not fill memory."""
    running = await engine()
    sid = await running.handshake_polling()
    query = f"EIO=4&transport=polling&sid={sid}"
    status, _, _ = await running.request("POST", query, b"4" + b"a" * 10_000)
    assert status == 413
    assert running.app.close_reasons[sid] == REASON_PAYLOAD_LIMIT
    status, _, _ = await running.request("GET", query)
    assert status == 400


@pytest_twisted.ensureDeferred
async def test_invalid_polling_payload_closes_session(engine: Any) -> None:
    """Garbage from a client must end its session (official suite: invalid packet format)."""
    running = await engine()
    sid = await running.handshake_polling()
    query = f"EIO=4&transport=polling&sid={sid}"
    status, body, _ = await running.request("POST", query, b"abc")
    assert status == 400 and orjson.loads(body)["code"] == 3
    status, _, _ = await running.request("GET", query)
    assert status == 400


@pytest_twisted.ensureDeferred
async def test_polling_ping_timeout_closes_session(engine: Any) -> None:
    """Clients that vanish without closing must be dropped after interval + timeout."""
    running = await engine(ping_interval_ms=50, ping_timeout_ms=50)
    sid = await running.handshake_polling()
    assert await running.app.closed(sid) == REASON_PING_TIMEOUT
    status, body, _ = await running.request("GET", f"EIO=4&transport=polling&sid={sid}")
    assert status == 400 and orjson.loads(body)["code"] == 1


@pytest_twisted.ensureDeferred
async def test_get_reset_by_the_client_keeps_the_session(engine: Any) -> None:
    """A long-poll whose TCP connection the client resets (a phone changing
    networks) does not end the session: the next GET collects what was sent
    in between."""
    running = await engine()
    sid = await running.handshake_polling()
    session = running.server.get_session(sid)
    assert session is not None
    query = f"EIO=4&transport=polling&sid={sid}"
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", running.port)
    raw = await connectProtocol(endpoint, _RawHTTP())
    raw.transport.write(
        f"GET {PATH}?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode("ascii")
    )
    while not session.has_pending_poll:
        await _next_turn()
    raw.transport.abortConnection()  # SO_LINGER 0: the server sees a reset
    while session.has_pending_poll:
        await _next_turn()
    status, _, _ = await running.request("POST", query, b"4burst:3")
    assert status == 200
    assert (await running.request("GET", query))[:2] == (200, b"4n0\x1e4n1\x1e4n2")
    assert sid not in running.app.close_reasons


# -- websocket -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_websocket_session_handshakes_and_echoes_text_and_binary(
    engine: Any, autobahn_api: str
) -> None:
    """The PrivyDrop frontend starts on WebSocket; without this it cannot connect
    (on an Autobahn without the internals the fast paths use, too)."""
    running = await engine()
    client = await running.websocket("EIO=4&transport=websocket")
    await client.opened
    opening = await client.next_text()
    assert opening.startswith("0")
    info = orjson.loads(opening[1:])
    assert info["upgrades"] == [] and info["maxPayload"] == 10_000
    client.sendMessage(b"4hello")
    assert await client.next_text() == "4hello"
    client.sendMessage(b"\x01\x02\x03", isBinary=True)
    assert await client.received.get() == (b"\x01\x02\x03", True)
    assert running.server.get_session(info["sid"]).transport_name == "websocket"  # type: ignore[union-attr]


@pytest_twisted.ensureDeferred
async def test_websocket_ping_timeout_closes_connection(engine: Any) -> None:
    """A WebSocket client that stops answering pings must be disconnected."""
    running = await engine(ping_interval_ms=50, ping_timeout_ms=50)
    client = await running.websocket("EIO=4&transport=websocket")
    sid = orjson.loads((await client.next_text())[1:])["sid"]
    assert await client.next_text() == "2"
    await client.closed
    assert running.app.close_reasons[sid] == REASON_PING_TIMEOUT


@pytest_twisted.ensureDeferred
async def test_oversize_websocket_message_closes_session(
    engine: Any, autobahn_api: str
) -> None:
    """A WebSocket message above maxPayload must end the session (close code
    1009; 1000 through Autobahn's public API, which sends no other)."""
    running = await engine()
    client = await running.websocket("EIO=4&transport=websocket")
    sid = orjson.loads((await client.next_text())[1:])["sid"]
    client.sendMessage(b"4" + b"a" * 10_000)
    _, code = await client.closed
    assert code == (1009 if autobahn_api == "internals" else 1000)
    assert await running.app.closed(sid) == REASON_PAYLOAD_LIMIT
    assert running.server.clients_count == 0


@pytest_twisted.ensureDeferred
async def test_websocket_with_unknown_sid_is_refused(engine: Any) -> None:
    """A guessed or stale sid must not open a WebSocket onto anything."""
    running = await engine()
    status, body, _ = await running.request(
        "GET", "EIO=4&transport=websocket&sid=nope", headers=_UPGRADE
    )
    assert status == 400 and orjson.loads(body)["code"] == 1


@pytest_twisted.ensureDeferred
async def test_upgrade_from_polling_loses_and_reorders_nothing(
    engine: Any, autobahn_api: str
) -> None:
    """Messages sent while the JS client upgrades must arrive once and in order."""
    running = await engine()
    sid = await running.handshake_polling()
    query = f"EIO=4&transport=polling&sid={sid}"
    held = Deferred.fromCoroutine(running.request("GET", query))
    while not running.server.get_session(sid).has_pending_poll:  # type: ignore[union-attr]
        await _next_turn()
    client = await running.websocket(f"EIO=4&transport=websocket&sid={sid}")
    await client.opened
    client.sendMessage(b"2probe")
    assert await client.next_text() == "3probe"
    assert (await held)[:2] == (200, b"6")
    # Polling is paused; the application answers a last POST with a burst.
    status, _, _ = await running.request("POST", query, b"4burst:5")
    assert status == 200
    client.sendMessage(b"5")
    client.sendMessage(b"4after")
    received = [await client.next_text() for _ in range(6)]
    assert received == ["4n0", "4n1", "4n2", "4n3", "4n4", "4after"]
    status, body, _ = await running.request("GET", query)
    assert status == 400 and orjson.loads(body)["code"] == 3


@pytest.mark.parametrize("first", [b"5", b"2probe?", b"4hello"])
@pytest_twisted.ensureDeferred
async def test_upgrade_without_the_probe_closes_only_that_websocket(
    engine: Any, autobahn_api: str, first: bytes
) -> None:
    """A WebSocket that sends C{5} (or anything but C{2probe}) before the
    probe is closed (1002), and the polling session it named goes on."""
    running = await engine()
    sid = await running.handshake_polling()
    query = f"EIO=4&transport=polling&sid={sid}"
    client = await running.websocket(f"EIO=4&transport=websocket&sid={sid}")
    await client.opened
    client.sendMessage(first)
    _, code = await client.closed
    assert code == (1002 if autobahn_api == "internals" else 1000)
    status, _, _ = await running.request("POST", query, b"4still polling")
    assert status == 200
    assert (await running.request("GET", query))[:2] == (200, b"4still polling")
    assert running.server.get_session(sid).transport_name == "polling"  # type: ignore[union-attr]
    assert sid not in running.app.close_reasons


# -- origins ---------------------------------------------------------------------

_UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


@pytest_twisted.ensureDeferred
async def test_foreign_origins_are_forbidden_on_both_transports(engine: Any) -> None:
    """A page on another site must not open a session in a visitor's browser."""
    running = await engine(origins=OriginSettings(origins=("http://allowed.example",)))
    evil = {"Origin": "http://evil.example"}
    status, body, headers = await running.request(
        "GET", "EIO=4&transport=polling", headers=evil
    )
    assert status == 403 and orjson.loads(body) == {"code": 4, "message": "Forbidden"}
    assert headers.getRawHeaders("access-control-allow-origin") is None
    status, body, _ = await running.request(
        "GET", "EIO=4&transport=websocket", headers={**_UPGRADE, **evil}
    )
    assert status == 403 and orjson.loads(body)["code"] == 4
    refused = await running.websocket(
        "EIO=4&transport=websocket", origin="http://evil.example"
    )
    with pytest.raises(ConnectionError):
        await refused.opened
    assert running.server.clients_count == 0


@pytest_twisted.ensureDeferred
async def test_allowed_origin_gets_cors_and_websocket(engine: Any) -> None:
    """The frontend's origin must get CORS headers (with credentials) and its WebSocket."""
    running = await engine(origins=OriginSettings(origins=("http://allowed.example",)))
    good = {"Origin": "http://allowed.example"}
    status, _, headers = await running.request(
        "OPTIONS",
        "EIO=4&transport=polling",
        headers={**good, "Access-Control-Request-Headers": "content-type"},
    )
    assert status == 204
    assert headers.getRawHeaders("access-control-allow-origin") == [
        "http://allowed.example"
    ]
    assert headers.getRawHeaders("access-control-allow-credentials") == ["true"]
    assert headers.getRawHeaders("access-control-allow-headers") == ["content-type"]
    status, body, headers = await running.request(
        "GET", "EIO=4&transport=polling", headers=good
    )
    assert status == 200 and body.startswith(b"0")
    assert headers.getRawHeaders("access-control-allow-origin") == [
        "http://allowed.example"
    ]
    client = await running.websocket(
        "EIO=4&transport=websocket", origin="http://allowed.example"
    )
    await client.opened
    assert (await client.next_text()).startswith("0")


@pytest_twisted.ensureDeferred
async def test_message_split_into_too_many_fragments_closes_session(
    engine: Any,
) -> None:
    """Thousands of tiny fragments would let a client burn CPU and memory per message."""
    running = await engine(max_fragments=8)
    client = await running.websocket("EIO=4&transport=websocket")
    sid = orjson.loads((await client.next_text())[1:])["sid"]
    # Autobahn ends a message fragmented by 1 byte with an empty final frame.
    client.sendMessage(b"4abcdef", fragmentSize=1)  # 8 frames: allowed
    assert await client.next_text() == "4abcdef"
    client.sendMessage(b"4abcdefg", fragmentSize=1)  # 9 frames
    _, code = await client.closed
    assert code == 1009
    assert await running.app.closed(sid) == "max_fragments exceeded"


class _RawHTTP(Protocol):
    """Reads one HTTP response head from a raw connection."""

    def __init__(self) -> None:
        self.buffer = b""
        self.head: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" in self.buffer and not self.head.called:
            self.head.callback(self.buffer.split(b"\r\n\r\n", 1)[0])

    def connectionLost(self, reason: Any = None) -> None:
        if not self.head.called:
            self.head.callback(self.buffer)


async def _raw_upgrade(running: Running, version: str) -> bytes:
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", running.port)
    protocol = await connectProtocol(endpoint, _RawHTTP())
    lines = [
        f"GET {PATH}?EIO=4&transport=websocket HTTP/1.1",
        f"Host: 127.0.0.1:{running.port}",
        *(
            f"{k}: {v}"
            for k, v in {**_UPGRADE, "Sec-WebSocket-Version": version}.items()
        ),
    ]
    protocol.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
    head = await protocol.head
    done: Deferred[None] = Deferred()
    protocol.connectionLost = lambda reason=None: done.callback(None)  # type: ignore[method-assign]
    protocol.transport.abortConnection()
    await done
    return head


@pytest_twisted.ensureDeferred
async def test_websocket_handshake_hides_version_and_accepts_only_rfc6455(
    engine: Any,
) -> None:
    """Old draft protocols widen the attack surface; a version banner helps attackers."""
    running = await engine()
    accepted = await _raw_upgrade(running, "13")
    assert accepted.startswith(b"HTTP/1.1 101")
    assert b"server:" not in accepted.lower()
    refused = await _raw_upgrade(running, "8")
    assert refused.startswith(b"HTTP/1.1 400")
    closing = [running.app.closed(sid) for sid in list(running.app.connections)]
    await DeferredList(closing)
    assert running.server.clients_count == 0


class _RawWebSocket(Protocol):
    """A WebSocket client written by hand, to send what no library would."""

    def __init__(self) -> None:
        self.received = b""
        self.opened: Deferred[None] = Deferred()
        self.lost: Deferred[Any] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        # The 101 head, then the Engine.IO open packet's frame.
        if not self.opened.called and b"\r\n\r\n" in self.received:
            head, _, frames = self.received.partition(b"\r\n\r\n")
            if frames and len(frames) >= 2 + frames[1]:
                assert head.startswith(b"HTTP/1.1 101")
                self.received = frames[2 + frames[1] :]
                self.opened.callback(None)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback([reason])  # a Failure as the result would be an error

    def send_frame(self, opcode: int, payload: bytes) -> None:
        mask = b"\x11\x22\x33\x44"
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.transport.write(bytes((0x80 | opcode, 0x80 | len(payload))) + mask + masked)


@pytest.mark.parametrize(
    "payload",
    [b"\x03", struct.pack("!H", 999), struct.pack("!H", 1005), struct.pack("!H", 1006),
     struct.pack("!H", 5000), struct.pack("!H", 1000) + b"\xff\xfe"],
    ids=["one byte", "999", "1005", "1006", "5000", "reason not UTF-8"],
)
@pytest_twisted.ensureDeferred
async def test_invalid_close_frame_gets_1002_before_an_orderly_close(
    engine: Any, autobahn_api: str, payload: bytes
) -> None:
    """Over a real socket: the client reads a close frame with 1002, then
    the end of the connection (not a reset), and the session ends once."""
    running = await engine()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", running.port)
    raw = await connectProtocol(endpoint, _RawWebSocket())
    lines = [f"GET {PATH}?EIO=4&transport=websocket HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in _UPGRADE.items()]
    raw.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
    await raw.opened
    (sid,) = running.app.connections
    raw.send_frame(0x8, payload)
    (reason,) = await raw.lost
    assert reason.check(ConnectionDone), reason  # FIN, not a reset
    assert raw.received[:1] == b"\x88" and raw.received[2:4] == struct.pack("!H", 1002)
    assert await running.app.closed(sid)
    assert running.app.close_calls == [sid]
    assert running.server.clients_count == 0


# -- slow readers ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_client_that_stops_reading_is_dropped_without_affecting_others(
    engine: Any, autobahn_api: str
) -> None:
    """One stalled client must not make the server buffer without bound or slow others."""
    running = await engine()
    stalled = await running.websocket("EIO=4&transport=websocket")
    stalled_sid = orjson.loads((await stalled.next_text())[1:])["sid"]
    healthy = await running.websocket("EIO=4&transport=websocket")
    await healthy.next_text()
    stalled.transport.pauseProducing()  # stop reading from the socket
    with capturedLogs() as events:
        stalled.sendMessage(b"4flood")
        assert await running.app.closed(stalled_sid) == REASON_OUTBOUND_LIMIT
    assert [e.get("limit") for e in events if "limit" in e] == ["max_outbound_buffer"]
    # Client addresses stay out of the logs (log_client_ips is off).
    assert not [e for e in events if "127.0.0.1" in (formatEvent(e) or "")]
    healthy.sendMessage(b"4still here")
    assert await healthy.next_text() == "4still here"
    assert running.server.clients_count == 1


@pytest_twisted.ensureDeferred
async def test_client_flooding_pings_without_reading_is_dropped(engine: Any) -> None:
    """A client that sends WebSocket pings and never reads the pongs must
    not make the server queue pongs without bound: it is cut off at the
    outbound cap like any client that stops reading, and others go on."""
    running = await engine()
    stalled = await running.websocket("EIO=4&transport=websocket")
    stalled_sid = orjson.loads((await stalled.next_text())[1:])["sid"]
    healthy = await running.websocket("EIO=4&transport=websocket")
    await healthy.next_text()
    stalled.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.transport.pauseProducing()  # stop reading from the socket
    for _ in range(80_000):
        stalled.sendPing(b"p" * 125)
    assert await running.app.closed(stalled_sid) == REASON_OUTBOUND_LIMIT
    healthy.sendMessage(b"4still here")
    assert await healthy.next_text() == "4still here"
    assert running.server.clients_count == 1


# -- interop ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_python_engineio_client_interoperates(engine: Any) -> None:
    """The python-engineio client (used by Python integrations) must work on both transports."""
    running = await engine()

    def exchange(transports: list[str] | None) -> tuple[str, list[Any]]:
        import threading

        import engineio  # the third-party client, not privydrop.engineio

        client = engineio.Client()
        got: list[Any] = []
        done = threading.Event()

        @client.on("message")
        def on_message(data: Any) -> None:
            got.append(data)
            if len(got) == 2:
                done.set()

        client.connect(
            f"http://127.0.0.1:{running.port}",
            engineio_path=PATH,
            transports=transports,
        )
        client.send("héllo")
        client.send(b"\x00\xff")
        done.wait(5)
        transport = client.transport()
        client.disconnect()
        return transport, got

    for transports, expected in ((["polling"], "polling"), (None, "websocket")):
        transport, got = await deferToThread(exchange, transports)
        assert (transport, got) == (expected, ["héllo", b"\x00\xff"])


def _next_turn() -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(0, d.callback, None)  # type: ignore[attr-defined]
    return d
