"""What one abusive client can make the server log, over real sockets.

A battery of bad input (junk HTTP requests, bad JSON, refused bodies, unknown
Engine.IO sessions, Socket.IO events with megabyte names, packets for
namespaces nobody joined, relays from outside any room, refused joins, slow
and idle connections, broken WebSocket frames, a deeply nested offer) is sent
to a real server with every log level recorded. Each kind of line may appear
a few times, not once per bad input; no line holds a client's text at
length, a client's address (LOG_CLIENT_IPS is off), an Engine.IO sid or a
traceback.
"""

from __future__ import annotations

import base64
import collections
import json
import os
from typing import Any

import pytest_twisted
import treq
from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import formatEvent, globalLogPublisher
from twisted.web.client import HTTPConnectionPool

from privydrop.logs import levels as loglevels
from privydrop.service import build_service
from privydrop.settings import HttpSettings, Settings

LISTEN = "tcp:0:interface=127.0.0.1"
#: The client's address, as the trusted proxy (loopback) reports it.
CLIENT = "203.0.113.77"
RECORD = 0x1E

#: Namespaces of the test's own clients' log events.
CLIENT_SIDE = ("twisted.web.client", "twisted.internet.endpoints")

#: Lines that honest clients cause once per connection or join; they get a
#: burst per interval (privydrop.logs.throttle.LIFECYCLE_BURST), more than
#: this battery opens connections.
LIFECYCLE = {
    "engine session {engine_sid} opened over {transport}",
    "engine session {engine_sid} closed ({reason})",
    "engine session {engine_sid} upgraded",
    "socket {sid} joined namespace {namespace}",
    "socket {sid} left namespace {namespace}: {reason}",
    "socket {sid} joined room {room_id}",
    "socket {sid} left room {room_id} ({remaining} remaining)",
    "room {room_id} created",
    "room {room_id} is empty and expires in {ttl_s}s",
}


class _Raw(Protocol):
    """A raw TCP client: keeps what it receives, fires C{lost} at the end."""

    def __init__(self) -> None:
        self.received = b""
        self.lost: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


class Battery:
    def __init__(self, port: int) -> None:
        self.port = port
        self.base = "http://127.0.0.1:%d" % (port,)
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.secrets: set[str] = set()

    async def http(
        self, method: str, path: str, body: bytes | None = None, **headers: str
    ) -> tuple[int, bytes]:
        sent = {"X-Forwarded-For": CLIENT, **{k.replace("_", "-"): v for k, v in headers.items()}}
        response = await treq.request(method, self.base + path, data=body, headers=sent,
                                      pool=self.pool)
        return response.code, await treq.content(response)

    async def raw(self, data: bytes) -> _Raw:
        proto = _Raw()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), proto)
        if data:
            proto.transport.write(data)  # type: ignore[union-attr]
        return proto

    # -- Engine.IO polling -------------------------------------------------

    async def session(self) -> tuple[str, str]:
        """A polling session connected to "/": (engine sid, socket id)."""
        code, body = await self.http("GET", "/socket.io/?EIO=4&transport=polling")
        assert code == 200, body
        sid = json.loads(body[1:])["sid"]
        self.secrets.add(sid)
        await self.post(sid, ["40"])
        packets = await self.poll(sid)
        connect = next(p for p in packets if p.startswith("40"))
        return sid, json.loads(connect[2:])["sid"]

    async def post(self, sid: str, packets: list[str]) -> int:
        body = "\x1e".join(packets).encode()
        code, _ = await self.http(
            "POST", "/socket.io/?EIO=4&transport=polling&sid=" + sid, body,
            Content_Type="text/plain;charset=UTF-8")
        return code

    async def poll(self, sid: str) -> list[str]:
        code, body = await self.http("GET", "/socket.io/?EIO=4&transport=polling&sid=" + sid)
        assert code == 200, body
        return body.decode().split("\x1e")

    async def poll_until(self, sid: str, text: str) -> None:
        for _ in range(20):
            if any(text in p for p in await self.poll(sid)):
                return
        raise AssertionError("never received %r" % (text,))


async def _run_battery(b: Battery) -> None:
    junk = "/nothing/" + "x" * 5000
    for _ in range(30):
        await b.http("GET", junk)
    for _ in range(20):
        await b.http("POST", "/api/check_room", b"{not json", Content_Type="application/json")
    for _ in range(10):
        await b.http("POST", "/api/create_room", b'{"roomId":"9999"}', Content_Type="text/plain")
    for _ in range(5):
        await b.http("POST", "/api/check_room", b"x" * 200_000, Content_Type="application/json")
    for _ in range(20):
        await b.http("GET", "/socket.io/?EIO=4&transport=polling&sid=SECRETUNKNOWNSID")
    b.secrets.add("SECRETUNKNOWNSID")

    # Two sessions in one room; one sends the other an offer nested as deep
    # as the encoder goes once wrapped.
    code, _ = await b.http("POST", "/api/create_room", b'{"roomId":"deep1"}',
                           Content_Type="application/json")
    assert code == 200
    sid_a, socket_a = await b.session()
    sid_b, socket_b = await b.session()
    for sid in (sid_a, sid_b):
        await b.post(sid, ['42["join",{"roomId":"deep1"}]'])
        await b.poll_until(sid, "Successfully joined room")
    deep = "[" * 253 + '"x"' + "]" * 253
    offer = '["offer",{"peerId":"%s","offer":%s}]' % (socket_b, deep)
    for _ in range(10):
        await b.post(sid_a, ["42" + offer])
    await b.http("HEAD", "/socket.io/?EIO=4&transport=polling&sid=" + sid_a)

    # Floods of events nobody handles, for namespaces nobody joined, relays
    # from outside a room, malformed relays, refused joins.
    sid, socket_id = await b.session()
    long_name = "e" * 5000
    await b.post(sid, ['42["%s",1]' % (long_name,)] * 150)
    await b.post(sid, ['42["%s",1]' % ("E" * 900_000,)])
    await b.post(sid, ["42/%s,[\"x\"]" % (long_name,)] * 150)
    await b.post(sid, ['42["offer",{"peerId":"p","offer":{}}]'] * 200)
    await b.post(sid, ['42["offer","x"]'] * 200)
    await b.post(sid, ['42["join",{"roomId":"nope%d"}]' % (i,) for i in range(100)])
    await b.post(sid, ['43999999["x"]'] * 100)

    # Protocol errors, each closing its session.
    for _ in range(8):
        bad_sid, _ = await b.session()
        await b.post(bad_sid, ["9garbage"])

    # Broken WebSocket frames on real WebSocket sessions.
    key = base64.b64encode(os.urandom(16))
    websockets = []
    for _ in range(6):
        ws = await b.raw(
            b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n"
            b"X-Forwarded-For: " + CLIENT.encode() + b"\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key
            + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        websockets.append(ws)
    while not all(b"\r\n\r\n" in ws.received for ws in websockets):
        await task.deferLater(reactor, 0.01)
    for ws in websockets:
        ws.transport.write(b"\x81\x05hello")  # type: ignore[union-attr]  # unmasked

    # Slow clients and idle keep-alive connections.
    slow = [await b.raw(b"GET /health HTT") for _ in range(10)]
    idle = [await b.raw(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n") for _ in range(10)]
    await defer.gatherResults(
        [p.lost.addTimeout(10, reactor) for p in slow + idle + websockets]
    )


@pytest_twisted.ensureDeferred
async def test_one_abusive_client_cannot_flood_the_log() -> None:
    loglevels.set_minimum(None)  # every level recorded, as with LOG_LEVEL=debug
    settings = Settings(
        listen=LISTEN,
        http=HttpSettings(header_timeout_s=0.5, idle_timeout_s=0.5, body_timeout_s=0.5),
    )
    service = build_service(settings, reactor)
    service.startService()
    port = (await service.getServiceNamed("http")._waitingForPort).getHost().port
    battery = Battery(port)
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        await _run_battery(battery)
    finally:
        globalLogPublisher.removeObserver(events.append)
        await battery.pool.closeCachedConnections()
        await service.stopService()

    failures = [e for e in events if e.get("log_failure") is not None]
    assert failures == [], formatEvent(failures[0]) + failures[0]["log_failure"].getTraceback()

    # One line per cause and interval (some formats serve several causes,
    # such as one per HTTP status), except the lifecycle bursts.
    server_events = [e for e in events if not str(e.get("log_namespace")).startswith(CLIENT_SIDE)]
    counts = collections.Counter(
        (e.get("log_namespace"), e.get("log_format"), e.get("cause")) for e in server_events
        if e.get("log_format") not in LIFECYCLE
    )
    flooded = {key: n for key, n in counts.items() if n > 3}
    assert flooded == {}

    for event in server_events:
        text = formatEvent(event)
        fields = [repr(v) for k, v in event.items() if not k.startswith("log_")]
        for piece in [text, *fields]:
            assert len(piece) < 2000, piece[:300]
            assert CLIENT not in piece and "127.0.0.1" not in piece, piece
            for secret in battery.secrets:
                assert secret not in piece, piece
    # The battery did reach the server's refusals.
    formats = {e.get("log_format") for e in events}
    assert "no handler for event {event!r} in {namespace}" in formats
    assert any("refused" in str(f) for f in formats)
