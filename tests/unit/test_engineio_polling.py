"""The polling resource through twisted.web, in memory (StubTreq) on a fake clock."""

from __future__ import annotations

from typing import Any, TypeVar

import attrs
import orjson
import pytest
from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from privydrop.engineio.interface import EngineConnection, Message
from privydrop.engineio.resource import build_engineio_resource
from privydrop.engineio.server import EngineServer
from privydrop.settings import EngineSettings, OriginSettings, Settings
from privydrop.web.site import build_site

T = TypeVar("T")
BASE = "http://engine.example/engine.io/"


def result_of(d: Deferred[T]) -> T:
    """The result a Deferred already has (like trial's successResultOf)."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "Deferred has no result yet"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]  # type: ignore[no-any-return]


class Echo:
    def on_open(self, connection: EngineConnection) -> None:
        pass

    def on_message(self, connection: EngineConnection, message: Message) -> None:
        connection.send(message)

    def on_close(self, connection: EngineConnection, reason: str) -> None:
        pass


@attrs.define
class Stub:
    clock: Clock
    server: EngineServer
    http: StubTreq

    def request(self, method: str, query: str, **kwargs: Any) -> Deferred[Any]:
        return self.http.request(method, BASE + "?" + query, **kwargs)

    def answer(self, d: Deferred[Any]) -> tuple[int, bytes, Any]:
        self.http.flush()
        response = result_of(d)
        body = result_of(self.http.content(response))
        return response.code, body, response.headers

    def handshake(self) -> str:
        code, body, _ = self.answer(self.request("GET", "EIO=4&transport=polling"))
        assert code == 200
        return str(orjson.loads(body[1:])["sid"])


def make_stub(**changes: Any) -> Stub:
    clock = Clock()
    settings = attrs.evolve(
        EngineSettings(path="/engine.io/", ping_interval_ms=1000, ping_timeout_ms=500),
        **changes,
    )
    server = EngineServer(clock, settings, Echo())
    root = Resource()
    root.putChild(b"engine.io", build_engineio_resource(server))
    return Stub(clock, server, StubTreq(root))


def test_held_get_is_answered_by_the_ping_after_ping_interval() -> None:
    """A long-poll must stay open until there is something to say (here the
    heartbeat), or clients would hammer the server with empty polls."""
    stub = make_stub()
    sid = stub.handshake()
    held = stub.request("GET", f"EIO=4&transport=polling&sid={sid}")
    seen: list[Any] = []
    held.addBoth(lambda r: seen.append(r) or r)
    stub.http.flush()
    stub.clock.advance(0.999)
    stub.http.flush()
    assert seen == []
    stub.clock.advance(0.001)
    stub.clock.advance(0)
    assert stub.answer(held)[:2] == (200, b"2")


def test_post_is_echoed_into_the_next_get() -> None:
    """Messages posted by a polling client reach the application, and its
    answers come back in the next poll."""
    stub = make_stub()
    sid = stub.handshake()
    query = f"EIO=4&transport=polling&sid={sid}"
    assert stub.answer(stub.request("POST", query, data=b"4a\x1e4b"))[:2] == (
        200,
        b"ok",
    )
    get = stub.request("GET", query)
    stub.clock.advance(0)
    assert stub.answer(get)[:2] == (200, b"4a\x1e4b")


def test_missing_pong_makes_the_sid_unknown() -> None:
    """After a ping timeout the client must be told its session is gone (code 1)."""
    stub = make_stub()
    sid = stub.handshake()
    stub.clock.advance(1.0)
    stub.clock.advance(0.5)
    code, body, _ = stub.answer(
        stub.request("GET", f"EIO=4&transport=polling&sid={sid}")
    )
    assert code == 400
    assert orjson.loads(body) == {"code": 1, "message": "Session ID unknown"}


@pytest.mark.parametrize(
    "origin, expected",
    [
        ("https://privydrop.app", ["https://privydrop.app"]),
        ("https://evil.example", None),
    ],
)
def test_preflight_allows_only_configured_origins(
    origin: str, expected: list[str] | None
) -> None:
    """Browsers on the PrivyDrop origin must pass CORS preflight; others must not."""
    stub = make_stub(origins=OriginSettings(origins=("https://privydrop.app",)))
    code, _, headers = stub.answer(
        stub.request("OPTIONS", "EIO=4&transport=polling", headers={"Origin": origin})
    )
    assert code == 204
    assert headers.getRawHeaders("access-control-allow-origin") == expected


class _RecordHandshakes(Echo):
    def __init__(self) -> None:
        self.headers: list[Any] = []

    def on_open(self, connection: EngineConnection) -> None:
        self.headers.append(dict(connection.handshake.headers))


def test_repeated_header_lines_reach_the_handshake_joined() -> None:
    """A client that starts on polling behind a proxy that adds its own
    X-Forwarded-For line keeps every hop in its handshake, as over WebSocket;
    otherwise the join rate limit would count a different address depending
    on the transport the client happened to start with."""
    app = _RecordHandshakes()
    clock = Clock()
    server = EngineServer(clock, EngineSettings(path="/engine.io/"), app)
    root = Resource()
    root.putChild(b"engine.io", build_engineio_resource(server))
    http = StubTreq(root)
    d = http.request(
        "GET",
        BASE + "?EIO=4&transport=polling",
        headers={"X-Forwarded-For": ["198.51.100.9", "203.0.113.5"]},
    )
    http.flush()
    assert result_of(d).code == 200
    assert app.headers[0]["x-forwarded-for"] == "198.51.100.9, 203.0.113.5"
    server.close_all()
    clock.advance(60)


# -- over the real site: requests whose bodies are still arriving ---------------


class _Recording(Echo):
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.closed: list[str] = []

    def on_message(self, connection: EngineConnection, message: Message) -> None:
        self.messages.append(message)

    def on_close(self, connection: EngineConnection, reason: str) -> None:
        self.closed.append(reason)


@attrs.define
class SiteStub:
    """The production site (its channels see a request's head before its
    body) with the Engine.IO resource at /engine.io/, over StringTransports."""

    clock: Clock
    server: EngineServer
    app: _Recording
    site: Any

    def connect(self) -> Any:
        channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        channel.makeConnection(
            StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        )
        return channel

    def handshake(self) -> str:
        channel = self.connect()
        channel.dataReceived(b"GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n")
        code, body = _answer(channel)
        assert code == 200
        return str(orjson.loads(body[1:])["sid"])


def _post_head(sid: str, length: int) -> bytes:
    return (
        b"POST /engine.io/?EIO=4&transport=polling&sid=%s HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: text/plain;charset=UTF-8\r\nContent-Length: %d\r\n\r\n"
        % (sid.encode(), length)
    )


def _answers(channel: Any) -> list[tuple[int, bytes]]:
    """Every HTTP answer written on C{channel} so far: (status, body)."""
    raw = channel.transport.value()
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(
            int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:")
        )
        out.append((int(lines[0].split()[1]), rest[:length]))
        raw = rest[length:]
    return out


def _answer(channel: Any) -> tuple[int, bytes]:
    answers = _answers(channel)
    assert len(answers) == 1, answers
    return answers[0]


def make_site_stub() -> SiteStub:
    clock = Clock()
    settings = Settings(
        engine=EngineSettings(path="/engine.io/", ping_interval_ms=1000, ping_timeout_ms=500)
    )
    app = _Recording()
    server = EngineServer(clock, settings.engine, app)
    site = build_site(settings, clock, Resource(), build_engineio_resource(server))
    return SiteStub(clock, server, app, site)


def test_second_post_while_the_first_body_arrives_gets_400_and_closes_session() -> None:
    """engine.io-protocol v4: a client has one active POST at a time. A
    second one while the first one's body is still coming is answered 400
    and the session is closed, as the reference server does; nothing either
    of them carried reaches the application."""
    stub = make_site_stub()
    sid = stub.handshake()
    first, second = stub.connect(), stub.connect()
    first.dataReceived(_post_head(sid, 6) + b"4a")
    second.dataReceived(_post_head(sid, 2) + b"4b")
    assert _answer(second)[0] == 400
    assert stub.app.closed == ["transport error"]
    assert stub.server.get_session(sid) is None
    first.dataReceived(b"\x1e4c2")
    assert _answer(first)[0] == 400
    assert stub.app.messages == []


def test_posts_one_after_the_other_are_all_delivered() -> None:
    """Sequential POSTs, on separate connections or one after the other on a
    kept-alive one, are the normal case and never count as overlapping."""
    stub = make_site_stub()
    sid = stub.handshake()
    one, two = stub.connect(), stub.connect()
    one.dataReceived(_post_head(sid, 2) + b"4a")
    two.dataReceived(_post_head(sid, 2) + b"4b")
    one.dataReceived(_post_head(sid, 2) + b"4c" + _post_head(sid, 2) + b"4d")
    assert _answers(one) == [(200, b"ok")] * 3
    assert _answers(two) == [(200, b"ok")]
    assert stub.app.messages == ["a", "b", "c", "d"]
    assert stub.app.closed == []


def test_post_whose_connection_dropped_mid_body_is_no_longer_active() -> None:
    """A POST cut off by the network delivers nothing and does not make the
    client's next POST an overlapping one."""
    stub = make_site_stub()
    sid = stub.handshake()
    cut, retry = stub.connect(), stub.connect()
    cut.dataReceived(_post_head(sid, 6) + b"4a")
    cut.connectionLost(Failure(ConnectionDone()))
    retry.dataReceived(_post_head(sid, 2) + b"4b")
    assert _answer(retry) == (200, b"ok")
    assert stub.app.messages == ["b"]
    assert stub.app.closed == []


def _get(sid: str) -> bytes:
    return b"GET /engine.io/?EIO=4&transport=polling&sid=%s HTTP/1.1\r\nHost: x\r\n\r\n" % (
        sid.encode(),
    )


def test_get_dropped_by_the_network_leaves_its_packets_for_the_next_get() -> None:
    """A held GET whose connection resets does not end the session; what is
    sent meanwhile reaches the next GET, once and in order."""
    stub = make_site_stub()
    sid = stub.handshake()
    session = stub.server.get_session(sid)
    assert session is not None
    dropped = stub.connect()
    dropped.dataReceived(_get(sid))
    assert session.has_pending_poll
    dropped.connectionLost(Failure(ConnectionLost("reset by peer")))
    assert not session.has_pending_poll
    session.send("m1")
    session.send("m2")
    stub.clock.advance(0)
    assert dropped.transport.value() == b""
    retry = stub.connect()
    retry.dataReceived(_get(sid))
    assert _answer(retry) == (200, b"4m1\x1e4m2")
    again = stub.connect()
    again.dataReceived(_get(sid))
    session.send("m3")
    stub.clock.advance(0)
    assert _answer(again) == (200, b"4m3")
    assert stub.app.closed == []


def test_answer_written_before_the_connection_died_is_not_repeated() -> None:
    """What a GET's answer carried counts as delivered: a later reset of
    that connection does not make the next GET repeat it."""
    stub = make_site_stub()
    sid = stub.handshake()
    session = stub.server.get_session(sid)
    assert session is not None
    first = stub.connect()
    first.dataReceived(_get(sid))
    session.send("m1")
    stub.clock.advance(0)
    assert _answer(first) == (200, b"4m1")
    first.connectionLost(Failure(ConnectionLost("reset by peer")))
    second = stub.connect()
    second.dataReceived(_get(sid))
    session.send("m2")
    stub.clock.advance(0)
    assert _answer(second) == (200, b"4m2")
    assert stub.app.closed == []


class _TakenOverTransport(StringTransport):
    """Autobahn unregisters a producer it never registered when it closes."""

    def unregisterProducer(self) -> None:
        self.producer = None


def test_a_channel_taken_over_by_a_websocket_keeps_no_timer() -> None:
    """The HTTP channel keeps its deadline and idle timers between requests;
    once a WebSocket has taken its connection they are cancelled, so that
    nothing scheduled keeps the channel (and its request) alive."""
    stub = make_site_stub()
    channel = stub.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = _TakenOverTransport()
    transport.protocol = channel
    channel.makeConnection(transport)
    channel.dataReceived(
        b"GET /engine.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert channel.transport is None
    assert transport.value().startswith(b"HTTP/1.1 101 ")
    held = [
        call for call in stub.clock.getDelayedCalls()
        if getattr(call.func, "__self__", None) is channel
    ]
    assert held == []
