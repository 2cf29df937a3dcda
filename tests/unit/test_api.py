"""The REST API in memory: Klein routes over the memory store, driven by StubTreq and a Clock."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from privydrop.api.routes import PrivyDropAPI
from privydrop.settings import ApiSettings, HttpSettings, RoomSettings, Settings
from privydrop.store import keys
from privydrop.store.interface import LeaveResult, StoreUnavailable
from privydrop.store.memory import MemoryStore

BASE = "http://127.0.0.1:3001"


def result_of(d: Any) -> Any:
    """The result of a Deferred that has already fired (like trial's successResultOf)."""
    results: list[Any] = []
    failures: list[Any] = []
    d.addCallbacks(results.append, failures.append)
    if failures:
        failures[0].raiseException()
    assert results, "Deferred has not fired"
    return results[0]


@attrs.define
class Client:
    """A StubTreq client with helpers that return (status, headers, JSON body)."""

    stub: StubTreq
    clock: Clock
    store: MemoryStore

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        hdrs = {"Content-Type": "application/json"} if data is not None else {}
        hdrs.update(headers or {})
        d = self.stub.request(method, BASE + path, data=data, headers=hdrs)
        self.stub.flush()
        response = result_of(d)
        content = result_of(response.content())
        return response.code, response.headers, (json.loads(content) if content else None)

    def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any, Any]:
        return self.request("POST", path, body, **kw)

    def get(self, path: str, **kw: Any) -> tuple[int, Any, Any]:
        return self.request("GET", path, **kw)

    def run(self, coroutine: Any) -> Any:
        return result_of(defer.Deferred.fromCoroutine(coroutine))


def make_client(settings: Settings | None = None, store: Any = None, **api_kwargs: Any) -> Client:
    clock = Clock()
    clock.advance(1_700_000_000)
    memory = MemoryStore(clock)
    api = PrivyDropAPI(settings or Settings(), store or memory, clock, **api_kwargs)
    return Client(StubTreq(api.resource()), clock, memory)


@pytest.fixture
def client() -> Client:
    return make_client()


def test_create_room_then_duplicate_short_id(client: Client) -> None:
    """Two people cannot create the same short room id: the second is told it exists."""
    assert client.post("/api/create_room", {"roomId": "4321"})[::2] == (
        200, {"success": True, "message": "create room success"})
    assert client.post("/api/create_room", {"roomId": "4321"})[::2] == (
        200, {"success": False, "message": "roomId is already exists"})


def test_create_existing_long_room_allows_rejoin_without_refreshing_ttl(client: Client) -> None:
    """A reconnecting client re-creating its long room id is allowed, and the room's TTL is untouched."""
    client.post("/api/create_room", {"roomId": "longroom1"})
    client.clock.advance(100)
    code, _, body = client.post("/api/create_room", {"roomId": "longroom1"})
    assert (code, body) == (200, {"success": True, "message": "room exists (rejoin allowed)"})
    assert client.run(client.store.ttl(keys.room("longroom1"))) == 24 * 3600 - 100


@pytest.mark.parametrize("path", ["/api/create_room", "/api/check_room"])
@pytest.mark.parametrize("body", [{}, {"roomId": ""}, {"roomId": None}])
def test_missing_room_id_is_400(client: Client, path: str, body: Any) -> None:
    """A client that forgets roomId gets the Node backend's 400 message."""
    assert client.post(path, body)[::2] == (400, {"error": "Room ID is required"})


@pytest.mark.parametrize(
    "room_id",
    [123, ["a"], {"x": 1}, "x" * 65, "abc:sockets", "tab\there", "nul\x00", "zw\u200b", "   ", " 0427", "0427 "],
)
def test_bad_room_ids_are_400_and_write_nothing(client: Client, room_id: Any) -> None:
    """Odd room ids (numbers, too long, ':' or control characters) are refused without touching state."""
    client.post("/api/create_room", {"roomId": "abc"})
    before = client.store.key_count()
    code, _, body = client.post("/api/create_room", {"roomId": room_id})
    assert code == 400 and isinstance(body["error"], str)
    code, _, body = client.post("/api/check_room", {"roomId": room_id})
    assert code == 400
    assert client.store.key_count() == before
    assert client.post("/api/check_room", {"roomId": "abc"})[2] == {"available": False}


def test_room_id_limit_is_configurable() -> None:
    """MAX_ROOM_ID_LENGTH changes which ids are accepted."""
    client = make_client(Settings(rooms=RoomSettings(max_room_id_length=5)))
    assert client.post("/api/create_room", {"roomId": "abcde"})[0] == 200
    assert client.post("/api/create_room", {"roomId": "abcdef"})[0] == 400


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"{not json", "Malformed JSON body"),
        (b"[" * 100_000, "Malformed JSON body"),
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, "Malformed JSON body"),
        (b"\xff\xfe", "Malformed JSON body"),
        (b"[1, 2]", "JSON body must be an object"),
        (b'"roomId"', "JSON body must be an object"),
        (b"42", "JSON body must be an object"),
    ],
    ids=["broken", "deep-array", "deep-object", "not-utf8", "array", "string", "number"],
)
def test_malformed_or_non_object_json_is_400(client: Client, raw: bytes, message: str) -> None:
    """Garbage or deeply nested JSON is a clear 400, never a crash or a 500."""
    assert client.post("/api/check_room", raw=raw)[::2] == (400, {"error": message})


def test_check_room_reports_availability(client: Client) -> None:
    """The front-end can tell whether a room id is free before offering it."""
    assert client.post("/api/check_room", {"roomId": "7777"})[2] == {"available": True}
    client.post("/api/create_room", {"roomId": "7777"})
    assert client.post("/api/check_room", {"roomId": "7777"})[2] == {"available": False}


def test_get_room_returns_a_fresh_string_id(client: Client) -> None:
    """Asking for a room gives a new 4-character id as a string, already created."""
    code, _, body = client.get("/api/get_room")
    assert code == 200
    room_id = body["roomId"]
    assert isinstance(room_id, str) and len(room_id) == 4
    assert client.post("/api/check_room", {"roomId": room_id})[2] == {"available": False}


def test_get_room_exhausted_is_503() -> None:
    """When no id can be found the client gets a clear 503 instead of a hang."""
    settings = Settings(rooms=RoomSettings(numeric_id_attempts=0, alphanumeric_id_attempts=0))
    client = make_client(settings)
    code, _, body = client.get("/api/get_room")
    assert code == 503 and "error" in body


def test_leave_room_unknown_room(client: Client) -> None:
    """Leaving a room that no longer exists is harmless."""
    assert client.post("/api/leave_room", {"roomId": "9999", "socketId": "s1"})[::2] == (
        200, {"success": True, "message": "Room does not exist."})


@pytest.mark.parametrize("body", [{}, {"roomId": "1234"}, {"socketId": "s"},
                                  {"roomId": "", "socketId": "s"}])
def test_leave_room_missing_fields(client: Client, body: Any) -> None:
    """leave_room without both ids gets the Node backend's 400."""
    assert client.post("/api/leave_room", body)[::2] == (
        400, {"error": "Room ID and Socket ID are required"})


def test_leave_room_unbinds_then_notifies_a_member_and_shortens_ttl() -> None:
    """A member's leave is announced (with the store's answer: the room, its
    remaining members, the node holding the socket), and the empty room
    expires in 15 min."""
    calls: list[tuple[str, LeaveResult]] = []

    async def notify(socket_id: str, result: LeaveResult) -> None:
        calls.append((socket_id, result))

    client = make_client(notify_peer_left=notify)
    client.post("/api/create_room", {"roomId": "5555"})
    for sid in ("sockA", "sockB"):
        client.run(client.store.join_room(sid, "5555", 0, 86400, 90000, None, node_id="n"))
    code, _, body = client.post("/api/leave_room", {"roomId": "5555", "socketId": "sockA"})
    assert (code, body) == (200, {"success": True, "message": "Successfully left the room"})
    [(socket_id, result)] = calls
    assert socket_id == "sockA"
    assert (result.room_id, result.removed, result.node, dict(result.members)) == (
        "5555", True, "n", {"sockB": "n"}
    )
    client.post("/api/leave_room", {"roomId": "5555", "socketId": "sockB"})
    assert client.run(client.store.room_sockets("5555")) == set()
    assert client.run(client.store.ttl(keys.room("5555"))) == 900


def test_leave_room_of_a_non_member_tells_no_one() -> None:
    """Anyone who knows a room id could otherwise push "peer-disconnected"
    with any socket id into it (the Node backend does), tearing down a
    transfer in progress."""
    calls: list[Any] = []
    client = make_client(notify_peer_left=lambda socket_id, result: calls.append(socket_id))
    client.post("/api/create_room", {"roomId": "5555"})
    client.run(client.store.join_room("sockA", "5555", 0, 86400, 90000, None, node_id="n"))
    code, _, body = client.post("/api/leave_room", {"roomId": "5555", "socketId": "made-up"})
    assert (code, body) == (200, {"success": True, "message": "Successfully left the room"})
    assert calls == []
    assert client.run(client.store.room_sockets("5555")) == {"sockA"}


def test_leave_room_rejects_bad_socket_id(client: Client) -> None:
    """A socket id with ':' cannot reach another key of the schema."""
    client.post("/api/create_room", {"roomId": "5555"})
    code, _, _ = client.post("/api/leave_room", {"roomId": "5555", "socketId": "a:b"})
    assert code == 400


def test_set_track_counts_the_frontends_visits_on_the_servers_utc_day(client: Client) -> None:
    """The PrivyDrop frontend sends C{new Date().toISOString()} on every page
    load; each visit is counted on the server's UTC day, with a 30-day TTL."""
    # The client's clock (make_client) is at 2023-11-14T22:13:20Z.
    for timestamp in ("2026-12-02T21:33:33.123Z", 1_710_460_800_000):
        assert client.post("/api/set_track", {"ref": "noRef", "timestamp": timestamp,
                                              "path": "/"})[::2] == (200, {"success": True})
    key = keys.referrers("2023-11-14")
    assert client.store._hashes == {key: {"noRef": "2"}}
    assert client.run(client.store.ttl(key)) == 30 * 24 * 3600


@pytest.mark.parametrize(
    "body",
    [{"ref": "x"}, {"ref": "x", "timestamp": "not a time"}, {"ref": "x", "timestamp": True},
     {"ref": "r" * 129, "timestamp": 1_710_460_800_000}, {"timestamp": 1_710_460_800_000},
     {"ref": 5, "timestamp": 1_710_460_800_000}],
)
def test_set_track_bad_input_is_400(client: Client, body: Any) -> None:
    """Broken tracking calls are refused and count nothing."""
    code, _, answer = client.post("/api/set_track", body)
    assert code == 400 and "error" in answer
    assert client.store.key_count() == 0


def test_logs_debug_logs_one_truncated_field() -> None:
    """A client's debug message lands in the log as one field, cut to the limit."""
    client = make_client(Settings(api=ApiSettings(max_log_message_length=10)))
    with capturedLogs() as events:
        code, _, body = client.post("/api/logs_debug", {"message": "line1\nline2\nline3",
                                                        "timestamp": 123})
    assert (code, body) == (200, {"success": True})
    logged = [e for e in events if "client_message" in e]
    assert len(logged) == 1
    assert logged[0]["client_message"] == "line1\nline"
    assert logged[0]["truncated"] is True
    from twisted.logger import formatEvent
    assert "\n" not in formatEvent(logged[0])


def test_unknown_path_and_wrong_method_are_json(client: Client) -> None:
    """Typos in URLs and methods get JSON errors the front-end can parse."""
    code, headers, body = client.get("/api/nothing")
    assert (code, body) == (404, {"error": "Not found"})
    assert headers.getRawHeaders("content-type")[0].startswith("application/json")
    code, headers, body = client.get("/api/create_room")
    assert (code, body) == (405, {"error": "Method not allowed"})
    assert headers.getRawHeaders("allow") == ["POST"]


def test_health_endpoints(client: Client) -> None:
    """Load balancers and Docker see a healthy service with its uptime."""
    client.clock.advance(42)
    for path in ("/health", "/api/health"):
        code, _, body = client.get(path)
        assert code == 200
        assert body["status"] == "healthy"
        assert body["service"] == "privydrop-backend"
        assert body["uptime"] == 42
        assert body["environment"] == "development"
        assert body["timestamp"].endswith("Z")


def test_detailed_health_connected(client: Client) -> None:
    """Operators see the store answering and the Socket.IO figures."""
    code, _, body = client.get("/health/detailed")
    assert code == 200
    assert body["dependencies"]["redis"]["status"] == "connected"
    assert isinstance(body["dependencies"]["redis"]["responseTime"], (int, float))
    assert body["dependencies"]["socketio"] == {"status": "not_initialized", "connections": 0}
    assert body["system"]["memory"]["rss"] > 0


def test_detailed_health_counts_connections() -> None:
    """Once Socket.IO is wired in, its connection count shows up."""
    client = make_client(connection_count=lambda: 7)
    body = client.get("/health/detailed")[2]
    assert body["dependencies"]["socketio"] == {"status": "running", "connections": 7}


@attrs.define
class DownStore:
    """A store whose every operation fails as an unreachable Redis does."""

    def __getattr__(self, name: str) -> Any:
        async def fail(*args: Any, **kwargs: Any) -> Any:
            raise StoreUnavailable("Redis at 127.0.0.1:1 is not reachable")
        return fail


def test_store_down_is_503_json() -> None:
    """With Redis down, API calls fail fast with 503 JSON, and health says disconnected."""
    client = make_client(store=DownStore())
    for method, path, body in [("POST", "/api/create_room", {"roomId": "1"}),
                               ("POST", "/api/check_room", {"roomId": "1"}),
                               ("GET", "/api/get_room", None),
                               ("POST", "/api/set_track", {"ref": "a", "timestamp": 1_710_460_800_000}),
                               ("POST", "/api/leave_room", {"roomId": "1", "socketId": "s"})]:
        code, _, answer = client.request(method, path, body)
        assert code == 503 and isinstance(answer["error"], str), path
    code, _, answer = client.get("/health/detailed")
    assert code == 503
    assert answer["status"] == "unhealthy"
    assert answer["dependencies"]["redis"]["status"] == "disconnected"
    assert "not reachable" in answer["dependencies"]["redis"]["error"]
    assert client.get("/health")[0] == 200


def test_call_budget_429_and_health_exempt() -> None:
    """One client past its API budget gets 429 JSON, others and health checks are unaffected."""
    settings = Settings(api=ApiSettings(rate_limit_calls=3, rate_limit_window_s=60),
                        http=HttpSettings(trusted_proxies=("127.0.0.0/8",)))
    client = make_client(settings)
    me = {"X-Forwarded-For": "203.0.113.9"}
    for _ in range(3):
        assert client.post("/api/check_room", {"roomId": "1"}, headers=me)[0] == 200
    code, headers, body = client.post("/api/check_room", {"roomId": "1"}, headers=me)
    assert code == 429 and "error" in body
    assert int(headers.getRawHeaders("retry-after")[0]) >= 1
    assert client.get("/health", headers=me)[0] == 200
    assert client.post("/api/check_room", {"roomId": "1"},
                       headers={"X-Forwarded-For": "198.51.100.2"})[0] == 200
    client.clock.advance(120)
    assert client.post("/api/check_room", {"roomId": "1"}, headers=me)[0] == 200


def test_ipv6_clients_share_one_budget_per_64() -> None:
    """A client cannot walk room ids with check_room by using a fresh address
    of its /64 for each call: the whole network has one budget."""
    settings = Settings(api=ApiSettings(rate_limit_calls=3, rate_limit_window_s=60),
                        http=HttpSettings(trusted_proxies=("127.0.0.0/8",)))
    client = make_client(settings)
    codes = [client.post("/api/check_room", {"roomId": "1"},
                         headers={"X-Forwarded-For": "2001:db8:1:2::%x" % n})[0]
             for n in range(1, 6)]
    assert codes == [200, 200, 200, 429, 429]
    assert client.post("/api/check_room", {"roomId": "1"},
                       headers={"X-Forwarded-For": "2001:db8:1:3::1"})[0] == 200
    wider = make_client(attrs.evolve(
        settings, http=attrs.evolve(settings.http, rate_limit_ipv6_prefix=128)))
    assert [wider.post("/api/check_room", {"roomId": "1"},
                       headers={"X-Forwarded-For": "2001:db8:1:2::%x" % n})[0]
            for n in range(1, 6)] == [200] * 5


def test_logs_debug_has_its_own_tighter_budget() -> None:
    """Each logs_debug call writes a log line: past its own budget a client
    gets 429 there while its other API calls still work."""
    settings = Settings(
        api=ApiSettings(rate_limit_calls=20, logs_debug_rate_limit_calls=2,
                        logs_debug_rate_limit_window_s=60),
        http=HttpSettings(trusted_proxies=("127.0.0.0/8",)))
    client = make_client(settings)
    me = {"X-Forwarded-For": "203.0.113.9"}
    line = {"message": "hello", "timestamp": 1}
    assert [client.post("/api/logs_debug", line, headers=me)[0] for _ in range(4)] == [
        200, 200, 429, 429]
    code, headers, body = client.post("/api/logs_debug", line, headers=me)
    assert code == 429 and "error" in body and int(headers.getRawHeaders("retry-after")[0]) >= 1
    assert client.post("/api/check_room", {"roomId": "1"}, headers=me)[0] == 200
    assert client.post("/api/logs_debug", line,
                       headers={"X-Forwarded-For": "198.51.100.2"})[0] == 200
    client.clock.advance(120)
    assert client.post("/api/logs_debug", line, headers=me)[0] == 200


def test_logs_debug_budget_off_with_zero() -> None:
    """LOGS_DEBUG_RATE_LIMIT=0 leaves logs_debug to the API budget alone."""
    client = make_client(Settings(api=ApiSettings(logs_debug_rate_limit_calls=0)))
    for _ in range(50):
        assert client.post("/api/logs_debug", {"message": "m", "timestamp": 1})[0] == 200


def test_call_budget_off_with_zero() -> None:
    """API_RATE_LIMIT=0 lets a benchmark hammer the API."""
    client = make_client(Settings(api=ApiSettings(rate_limit_calls=0)))
    for _ in range(50):
        assert client.post("/api/check_room", {"roomId": "1"})[0] == 200


def test_cors_allowed_origin(client: Client) -> None:
    """The local front-end can read API answers with credentials."""
    code, headers, _ = client.post("/api/check_room", {"roomId": "1"},
                                   headers={"Origin": "http://localhost:3002"})
    assert code == 200
    assert headers.getRawHeaders("access-control-allow-origin") == ["http://localhost:3002"]
    assert headers.getRawHeaders("access-control-allow-credentials") == ["true"]
    assert "Origin" in headers.getRawHeaders("vary")[0]


def test_cors_refused_origin(client: Client) -> None:
    """A foreign site's page cannot read API answers."""
    _, headers, _ = client.post("/api/check_room", {"roomId": "1"},
                                headers={"Origin": "https://evil.example"})
    assert headers.getRawHeaders("access-control-allow-origin") is None


def test_cors_preflight(client: Client) -> None:
    """The browser's preflight for a JSON POST is answered with the allowed methods and headers."""
    d = client.stub.request("OPTIONS", BASE + "/api/create_room", headers={
        "Origin": "http://192.168.0.7:3002", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    client.stub.flush()
    response = result_of(d)
    assert response.code == 204
    h = response.headers
    assert h.getRawHeaders("access-control-allow-origin") == ["http://192.168.0.7:3002"]
    assert h.getRawHeaders("access-control-allow-methods") == ["GET,POST,OPTIONS"]
    assert h.getRawHeaders("access-control-allow-headers") == ["Content-Type,Authorization"]
    assert h.getRawHeaders("access-control-allow-credentials") == ["true"]


def test_rejections_are_logged_once_per_cause_per_interval(client: Client) -> None:
    """A flood of bad requests gives one warning (with a count later), not a flood of log lines."""
    with capturedLogs() as events:
        for _ in range(20):
            client.post("/api/check_room", raw=b"{broken")
        client.post("/api/check_room", {"roomId": "a:b"})
    refused = [e for e in events if e.get("code") == 400]
    assert [e["error"] for e in refused] == ["Malformed JSON body", "Room ID must not contain ':'"]
    client.clock.advance(11)
    with capturedLogs() as events:
        client.post("/api/check_room", raw=b"{broken")
    refused = [e for e in events if e.get("code") == 400]
    assert len(refused) == 1 and refused[0]["suppressed"] == 19


@pytest.mark.parametrize("origin", ["http://localhost:3002", "https://evil.example", None])
def test_cors_headers_match_the_node_cors_middleware(client: Client, origin: str | None) -> None:
    """Answers carry exactly the CORS headers of the Node backend's cors
    middleware, so a front-end or proxy set up for it sees no difference:
    the origin is echoed only when allowed, the rest never depends on it."""
    sent = {} if origin is None else {"Origin": origin}
    allowed = ["http://localhost:3002"] if origin == "http://localhost:3002" else None

    _, headers, _ = client.post("/api/check_room", {"roomId": "1"}, headers=sent)
    assert headers.getRawHeaders("access-control-allow-origin") == allowed
    assert headers.getRawHeaders("access-control-allow-credentials") == ["true"]
    assert headers.getRawHeaders("vary") == ["Origin"]
    assert headers.getRawHeaders("access-control-allow-methods") is None

    d = client.stub.request("OPTIONS", BASE + "/api/check_room", headers={
        **sent, "Access-Control-Request-Method": "POST"})
    client.stub.flush()
    response = result_of(d)
    assert response.code == 204
    h = response.headers
    assert h.getRawHeaders("access-control-allow-origin") == allowed
    assert h.getRawHeaders("access-control-allow-credentials") == ["true"]
    assert h.getRawHeaders("access-control-allow-methods") == ["GET,POST,OPTIONS"]
    assert h.getRawHeaders("access-control-allow-headers") == ["Content-Type,Authorization"]


# -- request bodies: JSON only ------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain;charset=UTF-8",  # what fetch() sends for a string body: a "simple" request
        "application/x-www-form-urlencoded",
        "application/json; charset=iso-8859-1",
        "application/json; charset=utf-16",
        "application/jsonp",
        "application/json-patch+json",
        "",
    ],
)
def test_a_body_that_is_not_declared_json_is_415(client: Client, content_type: str) -> None:
    """A cross-site page can POST text/plain or a form without a CORS preflight;
    such bodies never reach a route (no room created, no referrer counted)."""
    body = json.dumps({"roomId": "4321"}).encode()
    code, headers, answer = client.request(
        "POST", "/api/create_room", raw=body,
        headers={"Content-Type": content_type, "Origin": "http://localhost:3002"})
    assert code == 415
    assert answer == {"error": "Content-Type must be application/json"}
    assert headers.getRawHeaders("content-type")[0].startswith("application/json")
    assert headers.getRawHeaders("access-control-allow-origin") == ["http://localhost:3002"]
    assert client.post("/api/check_room", {"roomId": "4321"})[2] == {"available": True}


def test_a_body_without_content_type_is_415(client: Client) -> None:
    stub = client.stub
    d = stub.request("POST", BASE + "/api/set_track", data=b'{"ref":"x","timestamp":1}',
                     headers={})
    stub.flush()
    response = result_of(d)
    assert response.code == 415


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8",
     'application/json; charset="utf-8"'],
)
def test_json_bodies_are_accepted(client: Client, content_type: str) -> None:
    code, _, answer = client.post("/api/create_room", raw=b'{"roomId": "4321"}',
                                  headers={"Content-Type": content_type})
    assert (code, answer) == (200, {"success": True, "message": "create room success"})


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "x-custom", "gzip, identity"])
def test_an_encoded_body_is_415(client: Client, encoding: str) -> None:
    """The server decodes no Content-Encoding; it must not parse compressed bytes as JSON."""
    code, _, answer = client.post("/api/create_room", {"roomId": "4321"},
                                  headers={"Content-Encoding": encoding})
    assert code == 415
    assert answer == {"error": "Content-Encoding is not supported"}


def test_identity_encoding_is_no_encoding(client: Client) -> None:
    code, _, _ = client.post("/api/create_room", {"roomId": "4321"},
                             headers={"Content-Encoding": "identity"})
    assert code == 200


def test_bodiless_requests_need_no_content_type(client: Client) -> None:
    """GETs, and a POST without a body, are not held to a body's type."""
    assert client.get("/api/get_room")[0] == 200
    assert client.get("/health", headers={"Content-Type": "text/plain"})[0] == 200
    assert client.post("/api/create_room")[::2] == (400, {"error": "Room ID is required"})


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "field, depth, code, answer",
    [
        ("message", 10, 200, {"success": True}),
        ("message", 254, 200, {"success": True}),
        ("message", 255, 400, {"error": "message is nested too deeply"}),
        ("message", 1000, 400, {"error": "message is nested too deeply"}),
        ("timestamp", 300, 400, {"error": "timestamp is nested too deeply"}),
        ("message", 2000, 400, {"error": "Malformed JSON body"}),
    ],
)
def test_logs_debug_with_deep_json_is_a_400_not_a_500(
    client: Client, field: str, depth: int, code: int, answer: Any
) -> None:
    """The JSON parser takes documents nested deeper than the encoder writes:
    a message the log cannot hold is the client's error, not the server's."""
    nested = b"[" * depth + b'"x"' + b"]" * depth
    other = "timestamp" if field == "message" else "message"
    body = b'{"%s": %s, "%s": "1"}' % (field.encode(), nested, other.encode())
    with capturedLogs() as events:
        assert client.post("/api/logs_debug", raw=body)[::2] == (code, answer)
    assert not [e for e in events if e.get("log_failure") is not None]


def test_health_is_readiness_and_health_live_is_liveness() -> None:
    """/health follows the store's health; /health/live only the process."""
    from privydrop.store.health import StoreHealth

    clock = Clock()
    clock.advance(1_700_000_000)
    health = StoreHealth(clock, grace_s=2.0)
    api = PrivyDropAPI(Settings(), MemoryStore(clock), clock, store_health=health)
    client = Client(StubTreq(api.resource()), clock, MemoryStore(clock))
    for path in ("/health", "/api/health", "/health/live"):
        code, _, body = client.get(path)
        assert (code, body["status"]) == (200, "healthy")
    health.failed(clock.seconds(), "Redis at 10.0.0.1:6379: error reply (LOADING ...)")
    clock.advance(2.5)
    for path in ("/health", "/api/health"):
        code, _, body = client.get(path)
        assert (code, body["status"]) == (503, "unhealthy")
        assert body["errors"] == ["store unusable for 2.5 s: Redis at 10.0.0.1:6379: "
                                  "error reply (LOADING ...)"]
    code, _, body = client.get("/health/live")
    assert (code, body["status"]) == (200, "healthy")
    health.succeeded(clock.seconds())
    assert client.get("/health")[0] == 200
