"""HTTP hardening of the one site: deadlines, body caps per path, no version leak, routing.

The site is driven byte by byte over a StringTransport with a Clock, as a
slow or hostile client would drive it.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from twisted.internet import defer, tcp
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import Resource

from privydrop.api.routes import PrivyDropAPI
from privydrop.compat import twisted as twisted_compat
from privydrop.compat.twisted import outbound_buffer_size
from privydrop.settings import ApiSettings, EngineSettings, HttpSettings, Settings
from privydrop.store.memory import MemoryStore
from privydrop.web.site import HardenedChannel, PrivyDropSite, build_site

SETTINGS = Settings(
    api=ApiSettings(max_body_bytes=1000),
    engine=EngineSettings(max_payload=5000),
    http=HttpSettings(header_timeout_s=10, body_timeout_s=30, idle_timeout_s=60),
)


class EngineStub(Resource):
    """Stands in for the Engine.IO resource: echoes the body size it received."""

    isLeaf = True

    def render(self, request):  # type: ignore[no-untyped-def]
        request.setHeader(b"content-type", b"text/plain")
        return b"engine got %d bytes at %s" % (
            len(request.content.read()), b"/".join(request.prepath))


@attrs.define
class Connection:
    channel: HardenedChannel
    transport: StringTransport
    clock: Clock

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    def response(self) -> tuple[int, dict[bytes, bytes], bytes]:
        raw = self.transport.value()
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        code = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if headers.get(b"transfer-encoding") == b"chunked":
            body = _dechunk(body)
        return code, headers, body


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2:]
    return out


def connect(settings: Settings = SETTINGS, engine: Resource | None = None) -> Connection:
    clock = Clock()
    api = PrivyDropAPI(settings, MemoryStore(clock), clock)
    site = build_site(settings, clock, api.resource(), engine)
    assert isinstance(site, PrivyDropSite)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    channel.makeConnection(transport)
    return Connection(channel, transport, clock)


def post(path: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def test_api_request_over_the_site_works_without_server_header() -> None:
    """A normal API call succeeds and does not advertise the Twisted version."""
    conn = connect()
    conn.send(post(b"/api/check_room", b'{"roomId":"1234"}'))
    code, headers, body = conn.response()
    assert code == 200
    assert json.loads(body) == {"available": True}
    assert b"server" not in headers
    assert b"TwistedWeb" not in conn.transport.value()


def test_declared_body_over_api_cap_is_413_before_reading() -> None:
    """An oversized upload is refused at once with JSON, and the connection closed."""
    conn = connect()
    conn.send(b"POST /api/check_room HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n"
              b"Expect: 100-continue\r\nOrigin: http://localhost:3002\r\n\r\n")
    code, headers, body = conn.response()
    assert code == 413
    assert json.loads(body) == {"error": "Request body is too large"}
    assert headers[b"access-control-allow-origin"] == b"http://localhost:3002"
    assert b"100 Continue" not in conn.transport.value()
    assert conn.transport.disconnecting
    # Whatever the client still sends is not read or answered.
    conn.transport.clear()
    conn.send(b"x" * 2000)
    assert conn.transport.value() == b""


def test_chunked_body_over_cap_is_413_while_streaming() -> None:
    """A chunked upload is cut off as soon as the bytes read pass the cap."""
    conn = connect()
    conn.send(b"POST /api/check_room HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    conn.send(b"258\r\n" + b"a" * 600 + b"\r\n")
    assert conn.transport.value() == b""
    conn.send(b"258\r\n" + b"a" * 600 + b"\r\n0\r\n\r\n")
    code, _, body = conn.response()
    assert code == 413
    assert conn.transport.disconnecting
    assert conn.transport.value().count(b"HTTP/1.1") == 1


def test_body_at_cap_is_accepted() -> None:
    """A body of exactly the allowed size is processed normally."""
    conn = connect()
    body = b'{"roomId":"1234","pad":"' + b"p" * (1000 - 26) + b'"}'
    assert len(body) == 1000
    conn.send(post(b"/api/check_room", body))
    assert conn.response()[0] == 200


def test_engine_path_has_its_own_bigger_cap() -> None:
    """Socket.IO polling posts may be larger than API bodies, up to the engine's max payload."""
    conn = connect(engine=EngineStub())
    conn.send(post(b"/socket.io/?EIO=4&transport=polling", b"4" * 4000))
    code, _, body = conn.response()
    assert code == 200
    assert body == b"engine got 4000 bytes at socket.io"
    conn = connect(engine=EngineStub())
    conn.send(post(b"/socket.io/?EIO=4&transport=polling", b"4" * 5001))
    assert conn.response()[0] == 413


def test_without_engine_socketio_path_is_api_404() -> None:
    """Before Socket.IO is wired in, its path is an ordinary JSON 404."""
    conn = connect()
    conn.send(b"GET /socket.io/?EIO=4 HTTP/1.1\r\nHost: x\r\n\r\n")
    code, _, body = conn.response()
    assert code == 404 and json.loads(body) == {"error": "Not found"}


def test_slow_headers_are_dropped_at_the_deadline() -> None:
    """A client trickling one header byte every few seconds is disconnected after header_timeout_s."""
    conn = connect()
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n"
    for byte in request[:5]:
        conn.send(bytes([byte]))
        conn.clock.advance(1.9)
    assert not conn.transport.disconnecting
    conn.clock.advance(10 - 5 * 1.9)
    assert conn.transport.disconnecting


def test_slow_body_is_dropped_at_the_deadline() -> None:
    """A client that sends headers promptly but drips its body is dropped after body_timeout_s."""
    conn = connect()
    conn.send(b"POST /api/check_room HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
    for _ in range(14):
        conn.send(b"x")
        conn.clock.advance(2)
    assert not conn.transport.disconnecting
    conn.clock.advance(2)
    assert conn.transport.disconnecting


def test_prompt_requests_on_keepalive_are_not_cut() -> None:
    """A browser reusing a connection for several requests minutes apart keeps working."""
    conn = connect()
    for _ in range(3):
        conn.transport.clear()
        conn.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.response()[0] == 200
        conn.clock.advance(30)
        assert not conn.transport.disconnecting


def test_idle_connection_without_request_is_dropped() -> None:
    """A connection that never sends anything does not stay open past the header deadline."""
    conn = connect()
    conn.clock.advance(10)
    assert conn.transport.disconnecting


@pytest.mark.parametrize("path", [b"/health", b"/api/health"])
def test_health_over_site(path: bytes) -> None:
    """Health checks answer through the real site stack."""
    conn = connect()
    conn.send(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    code, headers, body = conn.response()
    assert code == 200
    assert headers[b"content-type"].startswith(b"application/json")
    assert json.loads(body)["status"] == "healthy"


def test_client_going_away_mid_request_is_not_logged_as_a_bug() -> None:
    """A browser tab closed while the store is slow leaves no error in the log."""
    pending: list[defer.Deferred[None]] = []

    class SlowStore(MemoryStore):
        async def room_exists(self, room_id: str) -> bool:
            d: defer.Deferred[None] = defer.Deferred()
            pending.append(d)
            await d
            return False

    clock = Clock()
    api = PrivyDropAPI(SETTINGS, SlowStore(clock), clock)
    site = build_site(SETTINGS, clock, api.resource())
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    channel.makeConnection(transport)
    with capturedLogs() as events:
        channel.dataReceived(post(b"/api/check_room", b'{"roomId":"1234"}'))
        assert len(pending) == 1 and transport.value() == b""
        channel.connectionLost(Failure(ConnectionLost("client went away")))
        clock.advance(60)
    failures = [e for e in events if e.get("log_failure") is not None]
    assert failures == []
    assert transport.value() == b""


def test_json_answers_carry_their_length() -> None:
    """API answers are sent with Content-Length, as the express backend sends
    them, not in chunks; keep-alive clients read them the same way."""
    conn = connect()
    conn.send(post(b"/api/create_room", b'{"roomId":"abcd"}'))
    code, headers, body = conn.response()
    assert code == 200
    assert b"transfer-encoding" not in headers
    assert int(headers[b"content-length"]) == len(body)
    assert json.loads(body) == {"success": True, "message": "create room success"}


def test_a_form_body_is_not_parsed_into_arguments() -> None:
    """A body sent as a form never becomes request arguments: a client cannot
    override a query argument (Engine.IO's ``sid``) through the body, and no
    CPU goes into parsing forms nobody reads."""
    seen: list[dict[bytes, list[bytes]]] = []

    class ArgsStub(Resource):
        isLeaf = True

        def render(self, request):  # type: ignore[no-untyped-def]
            seen.append(dict(request.args))
            return b"ok"

    conn = connect(engine=ArgsStub())
    body = b"sid=forged"
    conn.send(
        b"POST /socket.io/?EIO=4&transport=polling&sid=real HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    assert seen and seen[0][b"sid"] == [b"real"]


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        (b"GET /api/check_room HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"POST /api/get_room HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
        (b"GET /api/get_room/ HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"GET /api/nothing HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    ],
)
def test_routing_errors_are_still_klein_s(request_bytes: bytes, code: int) -> None:
    """Paths and methods outside the routes get Klein's routing answers as
    JSON, next to the direct dispatch of exact routes."""
    conn = connect()
    conn.send(request_bytes)
    got, headers, body = conn.response()
    assert got == code
    assert headers[b"content-type"].startswith(b"application/json")
    assert "error" in json.loads(body)


def test_an_encoded_route_path_still_reaches_its_route() -> None:
    """A percent-encoded path (taken through Klein's own matching) answers
    like the plain one."""
    conn = connect()
    conn.send(post(b"/api/check%5Froom", b'{"roomId":"1234"}'))
    code, _, answer = conn.response()
    assert code == 200 and json.loads(answer) == {"available": True}


def test_body_caps_hold_where_twisted_does_not_show_the_path_early(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a Twisted whose channel does not show the request-target when the
    headers are in (privydrop.compat.twisted.request_head), each path's cap
    still holds: the body is read up to the largest cap, then checked
    against its own path's."""
    from privydrop.compat import twisted as twisted_compat
    from privydrop.web import site as site_module

    def without_target(channel: Any) -> tuple[Any, None, int | None]:
        request, _, length = twisted_compat.request_head(channel)
        return request, None, length

    monkeypatch.setattr(site_module, "request_head", without_target)
    conn = connect(engine=EngineStub())
    conn.send(post(b"/api/check_room", b"a" * 1001))
    assert conn.response()[0] == 413
    assert conn.transport.disconnecting

    conn = connect(engine=EngineStub())
    conn.send(post(b"/socket.io/?EIO=4&transport=polling", b"4" * 4000))
    assert conn.response()[:3:2] == (200, b"engine got 4000 bytes at socket.io")

    conn = connect(engine=EngineStub())
    conn.send(b"POST /api/check_room HTTP/1.1\r\nHost: x\r\nContent-Length: 5001\r\n\r\n")
    assert conn.response()[0] == 413


def test_pipelined_request_waits_for_the_answer_before_its_deadline() -> None:
    """Bytes of a next request sent while one is being answered (a long
    poll) do not start the header deadline: it starts when the answer is
    done and the bytes are read."""
    held: list[Any] = []

    class HeldStub(Resource):
        isLeaf = True

        def render(self, request):  # type: ignore[no-untyped-def]
            held.append(request)
            return server.NOT_DONE_YET

    conn = connect(engine=HeldStub())
    conn.send(b"GET /socket.io/?EIO=4 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(held) == 1
    conn.send(b"GET /health HTTP/1.1\r\n")  # half of a next request
    conn.clock.advance(60)
    assert not conn.transport.disconnecting
    held[0].write(b"done")
    held[0].finish()
    assert not conn.transport.disconnecting
    conn.clock.advance(10)
    assert conn.transport.disconnecting


# -- what reaches the log ------------------------------------------------------------


def _text_of(events: list[dict[str, Any]]) -> str:
    """Everything an observer could write of these events: the formatted line
    and every field (a JSON log writes them all)."""
    from twisted.logger import formatEvent

    parts = []
    for event in events:
        parts.append(formatEvent(event))
        parts.extend(repr(v) for k, v in event.items() if not k.startswith("log_"))
        failure = event.get("log_failure")
        if failure is not None:
            parts.append(failure.getTraceback())
    return "\n".join(parts)


@pytest.mark.parametrize("log_ips", [False, True])
def test_an_idle_timeout_names_the_client_only_when_allowed(log_ips: bool) -> None:
    """Twisted's own "Timing out client: <address>" ignored LOG_CLIENT_IPS."""
    settings = attrs.evolve(SETTINGS, http=attrs.evolve(SETTINGS.http, log_client_ips=log_ips))
    conn = connect(settings)
    with capturedLogs() as events:
        conn.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.response()[0] == 200
        conn.clock.advance(SETTINGS.http.idle_timeout_s + 1)
    assert conn.transport.disconnecting
    text = _text_of(list(events))
    assert "idle" in text
    assert ("127.0.0.1" in text) is log_ips


def test_an_idle_connection_that_does_not_close_is_aborted() -> None:
    conn = connect()
    conn.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.clock.advance(SETTINGS.http.idle_timeout_s + 1)
    assert conn.transport.disconnecting and not conn.transport.disconnected
    conn.clock.advance(HardenedChannel.abortTimeout)
    assert conn.transport.disconnected


@pytest.mark.parametrize("method", [b"GET", b"HEAD", b"POST"])
def test_logged_uris_never_carry_the_engineio_sid(method: bytes) -> None:
    """The sid is a session's only credential; HEAD used to reach Twisted's own
    "HEAD request <request>" line, which shows the URI."""
    conn = connect(engine=EngineStub())
    with capturedLogs() as events:
        conn.send(method + b" /socket.io/?EIO=4&transport=polling&sid=SECRETSID HTTP/1.1\r\n"
                  b"Host: x\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n")
    code, headers, body = conn.response()
    assert code == 200
    if method == b"HEAD":
        assert body == b"" and int(headers[b"content-length"]) > 0
    text = _text_of(list(events))
    assert "/socket.io/" in text  # the access line is there...
    assert "SECRETSID" not in text  # ...without the credential


def test_head_is_answered_with_headers_only() -> None:
    conn = connect()
    conn.send(b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n")
    code, headers, body = conn.response()
    assert code == 200 and body == b""
    assert int(headers[b"content-length"]) > 0


def test_a_flood_of_requests_logs_few_access_lines() -> None:
    conn = connect()
    with capturedLogs() as events:
        for _ in range(500):
            conn.send(b"GET /nothing/" + b"x" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    lines = [e for e in events if e.get("log_namespace") == "privydrop.web.site"]
    assert 1 <= len(lines) <= 2
    assert all(len(str(e.get("uri", ""))) < 300 for e in lines)


def test_a_multipart_body_is_415_at_the_site() -> None:
    conn = connect()
    body = b"--x\r\nContent-Disposition: form-data; name=roomId\r\n\r\n1234\r\n--x--\r\n"
    conn.send(b"POST /api/create_room HTTP/1.1\r\nHost: x\r\n"
              b"Content-Type: multipart/form-data; boundary=x\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    code, _, answer = conn.response()
    assert (code, json.loads(answer)) == (415, {"error": "Content-Type must be application/json"})


class HalfClosingTransport(StringTransport):
    """A StringTransport that can half-close, as TCP can."""

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True


def _connect_half_closing(settings: Settings = SETTINGS) -> Connection:
    clock = Clock()
    api = PrivyDropAPI(settings, MemoryStore(clock), clock)
    site = build_site(settings, clock, api.resource())
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = HalfClosingTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    channel.makeConnection(transport)
    return Connection(channel, transport, clock)


def test_a_refused_body_is_drained_after_the_413_within_bounds() -> None:
    """Lingering close: answer, stop writing, read and discard the rest of the
    body (bounded in bytes and time), then close."""
    from privydrop.web.site import LINGER_MAX_BYTES

    conn = _connect_half_closing()
    transport = conn.transport
    assert isinstance(transport, HalfClosingTransport)
    conn.send(b"POST /api/check_room HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 2000000\r\n\r\n")
    assert conn.response()[0] == 413
    assert transport.write_closed and not transport.disconnecting
    answer = transport.value()
    conn.send(b"x" * 1_000_000)
    assert transport.value() == answer and not transport.disconnecting
    # The client closes once it has read the answer: nothing more to do.
    conn.channel.connectionLost(Failure(ConnectionLost("client closed")))
    assert conn.clock.getDelayedCalls() == []

    # A client that keeps sending past the byte bound is cut off...
    conn = _connect_half_closing()
    conn.send(b"POST /api/check_room HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n")
    for _ in range(LINGER_MAX_BYTES // 1_000_000 + 1):
        conn.send(b"x" * 1_000_000)
    assert conn.transport.disconnected
    # ...and so is one that keeps the connection open past the body deadline.
    conn = _connect_half_closing()
    conn.send(b"POST /api/check_room HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n")
    conn.clock.advance(SETTINGS.http.body_timeout_s - 1)
    assert not conn.transport.disconnecting
    conn.clock.advance(1)
    assert conn.transport.disconnected


# -- answers written on a real TCP transport -------------------------------------


class FakeSocket:
    """What C{tcp.Server} asks of a socket; sends take at most C{accepts} bytes."""

    def __init__(self, accepts: int | None = None) -> None:
        self.accepts = accepts
        self.sent: list[bytes] = []
        self.getsockname_calls = 0

    def setblocking(self, flag: bool) -> None:
        pass

    def setsockopt(self, *args: Any) -> None:
        pass

    def fileno(self) -> int:
        return 99

    def getsockname(self) -> tuple[str, int]:
        self.getsockname_calls += 1
        return ("127.0.0.1", 3000)

    def send(self, data: bytes) -> int:
        taken = len(data) if self.accepts is None else min(self.accepts, len(data))
        self.sent.append(bytes(data[:taken]))
        return taken


def _connect_tcp(sock: FakeSocket) -> tuple[HardenedChannel, Any, MemoryReactor]:
    """The site's channel on a real C{tcp.Server} over C{sock}."""
    clock = Clock()
    api = PrivyDropAPI(SETTINGS, MemoryStore(clock), clock)
    site = build_site(SETTINGS, clock, api.resource(), EngineStub())
    reactor = MemoryReactor()
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = tcp.Server(sock, channel, ("127.0.0.1", 40000), None, 0, reactor)
    transport.connected = 1
    channel.makeConnection(transport)
    return channel, transport, reactor


def _engine_post(body: bytes) -> bytes:
    return (b"POST /socket.io/?EIO=4 HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body)


def test_an_answer_leaves_in_one_send_without_a_reactor_turn() -> None:
    """With nothing buffered, the head and body of an answer go to the
    socket at once and together: no registration for writability (and its
    reactor turn), no head and body in separate packets."""
    sock = FakeSocket()
    channel, transport, reactor = _connect_tcp(sock)
    channel.dataReceived(_engine_post(b"hello"))
    assert len(sock.sent) == 1
    head, _, body = sock.sent[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert body == b"engine got 5 bytes at socket.io"
    assert transport not in reactor.getWriters()
    assert outbound_buffer_size(transport) == 0


def test_engine_requests_take_the_stock_way_when_twisted_changed_what_is_repeated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The shorter way repeats parts of stock methods; when the installed
    Twisted's differ from the pinned ones, Engine.IO requests are handled
    the stock way (buffered until the reactor's next turn), answered alike."""
    pinned = dict(twisted_compat.REPLICATED_METHODS)
    pinned[(server.Request, "process")] = "0" * 64
    monkeypatch.setattr(twisted_compat, "REPLICATED_METHODS", pinned)
    sock = FakeSocket()
    channel, transport, reactor = _connect_tcp(sock)
    channel.dataReceived(_engine_post(b"hello"))
    assert sock.sent == []
    assert transport in reactor.getWriters()
    transport.doWrite()
    head, _, body = b"".join(sock.sent).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nserver:" not in head.lower()
    assert body == b"engine got 5 bytes at socket.io"


def test_a_site_on_a_twisted_with_a_changed_repeated_method_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pinned = dict(twisted_compat.REPLICATED_METHODS)
    pinned[(server.Request, "process")] = "0" * 64
    monkeypatch.setattr(twisted_compat, "REPLICATED_METHODS", pinned)
    clock = Clock()
    with capturedLogs() as events:
        build_site(SETTINGS, clock, PrivyDropAPI(SETTINGS, MemoryStore(clock), clock).resource(),
                   EngineStub())
    warned = [e for e in events if "Request.process" in str(e.get("names", ""))]
    assert len(warned) == 1 and warned[0]["log_level"].name == "warn"


def test_what_the_socket_does_not_take_is_buffered_in_order() -> None:
    """A socket that takes only part of an answer leaves the rest to the
    transport's buffer (with its back-pressure), and a later answer queues
    behind it rather than jumping ahead."""
    sock = FakeSocket(accepts=10)
    channel, transport, reactor = _connect_tcp(sock)
    channel.dataReceived(_engine_post(b"one"))
    channel.dataReceived(_engine_post(b"three"))
    assert sock.sent == [sock.sent[0]] and len(sock.sent[0]) == 10
    assert transport in reactor.getWriters()
    sock.accepts = None
    transport.doWrite()
    stream = b"".join(sock.sent)
    first = stream.index(b"engine got 3 bytes")
    second = stream.index(b"engine got 5 bytes")
    assert first < second
    assert stream.count(b"HTTP/1.1 200 OK") == 2
    assert outbound_buffer_size(transport) == 0


def test_the_local_address_is_asked_once_per_connection() -> None:
    """Every request records the server's address; the connection's does not
    change, so the kernel is asked once, not once per request."""
    sock = FakeSocket()
    channel, transport, reactor = _connect_tcp(sock)
    for _ in range(3):
        channel.dataReceived(_engine_post(b"x"))
    assert b"".join(sock.sent).count(b"HTTP/1.1 200 OK") == 3
    assert sock.getsockname_calls <= 1


def test_api_answers_keep_the_buffered_path() -> None:
    """API answers are left to the transport's buffer (sent on the reactor's
    next turn), so a client pipelining API requests without reading fills
    the server's buffer and meets the outbound cap."""
    sock = FakeSocket()
    channel, transport, reactor = _connect_tcp(sock)
    channel.dataReceived(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.sent == []
    assert transport in reactor.getWriters()
    transport.doWrite()
    assert b"".join(sock.sent).startswith(b"HTTP/1.1 200 OK")


def test_a_request_head_over_the_outbound_cap_drops_the_client() -> None:
    """Answers past max_outbound_buffer still unread when the next request's
    head arrives (even within one read) get the client dropped."""
    settings = attrs.evolve(
        SETTINGS, engine=attrs.evolve(SETTINGS.engine, max_outbound_buffer=100)
    )
    clock = Clock()
    api = PrivyDropAPI(settings, MemoryStore(clock), clock)
    site = build_site(settings, clock, api.resource(), EngineStub())
    sock = FakeSocket(accepts=0)
    reactor = MemoryReactor()
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = tcp.Server(sock, channel, ("127.0.0.1", 40000), None, 0, reactor)
    transport.connected = 1
    channel.makeConnection(transport)
    aborted: list[bool] = []
    transport.abortConnection = lambda: aborted.append(True)
    channel.dataReceived(_engine_post(b"a") + _engine_post(b"b") + _engine_post(b"c"))
    assert aborted == [True]
    assert channel.refused


class PathRecorder(Resource):
    """An Engine.IO stand-in that records the path it was reached with."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[list[bytes], list[bytes], bytes]] = []

    def render(self, request):  # type: ignore[no-untyped-def]
        self.seen.append((list(request.prepath), list(request.postpath), request.path))
        if request.postpath == [b"boom"]:
            raise RuntimeError("resource failed")
        return b"ok"


@pytest.mark.parametrize(
    ("target", "prepath", "postpath"),
    [
        (b"/socket.io/?EIO=4&transport=polling", [b"socket.io"], [b""]),
        (b"/socket.io", [b"socket.io"], []),
        (b"/socket.io/a/p%41th?x=1", [b"socket.io"], [b"a", b"pAth"]),
    ],
)
def test_engine_requests_reach_the_engine_resource_as_routed(
    target: bytes, prepath: list[bytes], postpath: list[bytes]
) -> None:
    """Engine.IO requests skip the resource tree walk but reach the Engine.IO
    resource with the prepath and postpath the routing gives them."""
    engine = PathRecorder()
    conn = connect(engine=engine)
    conn.send(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    code, headers, body = conn.response()
    assert (code, body) == (200, b"ok")
    assert engine.seen == [(prepath, postpath, target.split(b"?")[0])]


def test_engine_answers_carry_the_current_date_and_no_server_header() -> None:
    """The Date header follows the clock (made once per second, not once
    per request); the Twisted version is not told."""
    conn = connect(engine=PathRecorder())
    conn.clock.advance(0.5)
    conn.send(b"GET /socket.io/ HTTP/1.1\r\nHost: x\r\n\r\n")
    _, headers, _ = conn.response()
    assert headers[b"date"] == b"Thu, 01 Jan 1970 00:00:00 GMT"
    assert b"server" not in headers
    conn.transport.clear()
    conn.clock.advance(1)
    conn.send(b"GET /socket.io/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert conn.response()[1][b"date"] == b"Thu, 01 Jan 1970 00:00:01 GMT"


def test_an_engine_resource_failure_is_a_500_not_a_crash() -> None:
    conn = connect(engine=PathRecorder())
    conn.send(b"GET /socket.io/boom HTTP/1.1\r\nHost: x\r\n\r\n")
    code, _, body = conn.response()
    assert code == 500
    assert b"resource failed" not in body


# -- timers ----------------------------------------------------------------------


def test_keepalive_requests_reuse_the_connection_timers() -> None:
    """Each request moves the connection's deadline and idle timers instead
    of cancelling them and scheduling new ones, so the reactor's timer heap
    does not churn per request."""
    conn = connect(engine=PathRecorder())
    conn.send(_engine_post(b"first"))
    timers = {id(call) for call in conn.clock.getDelayedCalls()}
    for _ in range(5):
        conn.send(_engine_post(b"again"))
        conn.send(b"GET /socket.io/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert {id(call) for call in conn.clock.getDelayedCalls()} == timers
    assert len(timers) <= 2
    assert conn.response()[0] == 200


def test_the_idle_timeout_counts_from_the_last_answer() -> None:
    """After an answer the connection may stay idle idle_timeout_s; a request
    meanwhile starts the count again from its answer."""
    conn = connect()
    conn.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.clock.advance(59)
    assert not conn.transport.disconnecting
    conn.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.clock.advance(59)
    assert not conn.transport.disconnecting
    conn.clock.advance(1)
    assert conn.transport.disconnecting


def test_a_request_started_after_a_long_idle_still_gets_its_header_deadline() -> None:
    """The header deadline of a request counts from its first byte, even on
    a connection whose previous deadlines were disarmed long ago."""
    conn = connect()
    conn.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.clock.advance(50)
    conn.send(b"GET /hea")
    conn.clock.advance(9)
    assert not conn.transport.disconnecting
    conn.clock.advance(1)
    assert conn.transport.disconnecting


def test_a_closed_connection_leaves_no_timer_behind() -> None:
    """Timers kept between requests are cancelled when the connection goes,
    so nothing keeps the channel alive."""
    conn = connect(engine=PathRecorder())
    conn.send(_engine_post(b"x"))
    conn.channel.connectionLost(Failure(ConnectionLost()))
    assert conn.clock.getDelayedCalls() == []


class ArgsRecorder(Resource):
    """Records what a resource can read of an Engine.IO request's query."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[Any, Any, bool]] = []

    def render(self, request):  # type: ignore[no-untyped-def]
        query = request.query_params()
        self.seen.append((request.args, dict(query), request.query_params() is query))
        return b"ok"


def test_an_engine_request_query_is_read_once_and_args_still_work() -> None:
    """The query of an Engine.IO request is parsed once, as text, for every
    reader; request.args still gives twisted.web's answer when asked."""
    engine = ArgsRecorder()
    conn = connect(engine=engine)
    conn.send(b"GET /socket.io/?EIO=4&sid=a%20b&x=1&x=2;y=%e2%82%ac HTTP/1.1\r\nHost: x\r\n\r\n")
    assert conn.response()[0] == 200
    [(args, query, same)] = engine.seen
    assert args == {b"EIO": [b"4"], b"sid": [b"a b"], b"x": [b"1", b"2"], b"y": [b"\xe2\x82\xac"]}
    assert query == {"EIO": "4", "sid": "a b", "x": "2", "y": "\u20ac"}
    assert same


def test_an_api_request_keeps_twisted_s_args() -> None:
    seen: list[Any] = []

    class Api(Resource):
        isLeaf = True

        def render(self, request):  # type: ignore[no-untyped-def]
            seen.append((request.args, request.query_params()))
            return b"{}"

    clock = Clock()
    site = build_site(SETTINGS, clock, Api(), PathRecorder())
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    channel.makeConnection(StringTransport())
    channel.dataReceived(b"GET /api/x?a=1&a=2 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert seen == [({b"a": [b"1", b"2"]}, {"a": "2"})]


def test_writing_after_finish_is_still_twisted_s_error() -> None:
    """A resource writing to a finished Engine.IO request gets twisted.web's
    RuntimeError, as before, not some other failure."""
    finished: list[Any] = []

    class Finisher(Resource):
        isLeaf = True

        def render(self, request):  # type: ignore[no-untyped-def]
            request.write(b"done")
            request.finish()
            finished.append(request)
            return server.NOT_DONE_YET

    conn = connect(engine=Finisher())
    conn.send(b"GET /socket.io/ HTTP/1.1\r\nHost: x\r\n\r\n")
    [request] = finished
    with pytest.raises(RuntimeError):
        request.write(b"more")


def test_an_engine_head_request_is_answered_with_headers_only_in_one_send() -> None:
    """HEAD on the Engine.IO path: the head alone, with the length the body
    would have had, sent at once; the connection stays usable."""
    sock = FakeSocket()
    channel, transport, reactor = _connect_tcp(sock)
    channel.dataReceived(b"HEAD /socket.io/?EIO=4 HTTP/1.1\r\nHost: x\r\n\r\n")
    [answer] = sock.sent
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 31" in head
    assert body == b""
    channel.dataReceived(_engine_post(b"x"))
    assert len(sock.sent) == 2 and sock.sent[1].endswith(b"engine got 1 bytes at socket.io")
