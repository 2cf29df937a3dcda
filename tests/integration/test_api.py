"""The REST API over real HTTP against the real service tree, on the memory store and real Redis."""

from __future__ import annotations

import datetime
import json
import socket
from pathlib import Path
from typing import Any, AsyncIterator

import attrs
import pytest
import pytest_twisted
import treq
from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.web.client import HTTPConnectionPool

from privydrop.service import build_service
from privydrop.settings import ApiSettings, RedisSettings, Settings
from privydrop.store.service import verify_store
from tests.conftest import redis_settings
from tests.redis_server import RedisServer

LISTEN = "tcp:0:interface=127.0.0.1"


@attrs.define
class Server:
    """A started service tree and a treq client bound to its port."""

    base: str
    service: Any
    pool: HTTPConnectionPool
    #: The Redis behind the store (None for the memory store).
    redis: RedisServer | None = None
    db: int = 0

    async def request(self, method: str, path: str, body: Any = None,
                      raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        response = await treq.request(
            method, self.base + path, data=data, pool=self.pool,
            headers={"Content-Type": "application/json"} if data is not None else {})
        content = await treq.content(response)
        return response.code, (json.loads(content) if content else None)

    @property
    def store(self) -> Any:
        return self.service.getServiceNamed("store").store


async def start_server(settings: Settings) -> Server:
    service = build_service(settings, reactor)
    service.startService()
    store = service.getServiceNamed("store").store
    await verify_store(store)
    # The endpoint service exposes its listening port only through this Deferred.
    port = await service.getServiceNamed("http")._waitingForPort
    pool = HTTPConnectionPool(reactor, persistent=False)
    return Server("http://127.0.0.1:%d" % port.getHost().port, service, pool)


async def stop_server(server: Server) -> None:
    await server.pool.closeCachedConnections()
    await server.service.stopService()


@pytest_twisted.async_yield_fixture(params=["memory", "redis"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    redis: RedisSettings | None = None
    if request.param == "redis":
        redis = redis_settings(request.getfixturevalue("redis_server"),
                               db=request.getfixturevalue("redis_db"))
    started = await start_server(Settings(listen=LISTEN, redis=redis))
    if redis is not None:
        started.redis = request.getfixturevalue("redis_server")
        started.db = redis.db
    try:
        yield started
    finally:
        await stop_server(started)


@pytest_twisted.ensureDeferred
async def test_room_lifecycle_over_http(server: Server) -> None:
    """A sender creates a room, a receiver finds it taken, and leaving empties it."""
    assert await server.request("POST", "/api/create_room", {"roomId": "0427"}) == (
        200, {"success": True, "message": "create room success"})
    assert await server.request("POST", "/api/check_room", {"roomId": "0427"}) == (
        200, {"available": False})
    await server.store.join_room("sock1", "0427", 0, 86400, 90000, None, node_id="n")
    assert await server.request("POST", "/api/leave_room",
                                {"roomId": "0427", "socketId": "sock1"}) == (
        200, {"success": True, "message": "Successfully left the room"})
    assert await server.store.room_sockets("0427") == set()
    assert 0 < await server.store.ttl("room:0427") <= 900


@pytest_twisted.ensureDeferred
async def test_get_room_ids_are_strings_and_distinct(server: Server) -> None:
    """Fresh room ids come back as strings (a leading 0 survives) and never repeat."""
    codes_and_ids = await defer.gatherResults([
        defer.Deferred.fromCoroutine(server.request("GET", "/api/get_room")) for _ in range(20)])
    ids = [body["roomId"] for code, body in codes_and_ids if code == 200]
    assert len(ids) == 20
    assert all(isinstance(i, str) and len(i) == 4 for i in ids)
    assert len(set(ids)) == 20


@pytest_twisted.ensureDeferred
async def test_concurrent_create_same_short_id_one_wins(server: Server) -> None:
    """Two people racing for the same short room id: exactly one gets it."""
    results = await defer.gatherResults([
        defer.Deferred.fromCoroutine(
            server.request("POST", "/api/create_room", {"roomId": "1111"}))
        for _ in range(10)])
    assert sorted(body["success"] for _, body in results) == [False] * 9 + [True]


@pytest_twisted.ensureDeferred
async def test_key_schema_collision_refused(server: Server) -> None:
    """A room named like another room's member set cannot be created."""
    await server.request("POST", "/api/create_room", {"roomId": "abc"})
    code, body = await server.request("POST", "/api/create_room", {"roomId": "abc:sockets"})
    assert code == 400 and "error" in body
    assert await server.request("POST", "/api/check_room", {"roomId": "abc"}) == (
        200, {"available": False})


def _utc_today() -> str:
    return datetime.datetime.now(datetime.timezone.utc).date().isoformat()


@pytest_twisted.ensureDeferred
async def test_set_track_and_health(server: Server) -> None:
    """Tracking counts, and the detailed health check reports the store as connected."""
    before = _utc_today()
    for timestamp in ("2024-03-15T00:00:00.000Z", 1_710_460_800_000):
        assert await server.request("POST", "/api/set_track",
                                    {"ref": "twitter", "timestamp": timestamp,
                                     "path": "/"}) == (200, {"success": True})
    # Both visits count on the server's UTC day (the day the test began,
    # unless it ran across midnight).
    day = before if await server.store.ttl("referrers:daily:" + before) else _utc_today()
    key = "referrers:daily:" + day
    assert 0 < await server.store.ttl(key) <= 30 * 24 * 3600
    if server.redis is not None:
        # Read back with an independent client: the key schema is a public contract.
        count = server.redis.command("HGET", key, "twitter", db=server.db)
        assert count in (b"2", "2")
    code, body = await server.request("GET", "/health/detailed")
    assert code == 200
    assert body["dependencies"]["redis"]["status"] == "connected"


@pytest_twisted.ensureDeferred
async def test_oversized_body_is_413_over_tcp(server: Server) -> None:
    """A 200 KiB upload to the API is refused with 413 JSON over a real socket."""
    code, body = await server.request("POST", "/api/check_room", raw=b"x" * (200 * 1024))
    assert code == 413
    assert body == {"error": "Request body is too large"}


@pytest_twisted.ensureDeferred
async def test_api_rate_limit_over_http() -> None:
    """One address hammering the API is told to slow down; health checks keep working."""
    server = await start_server(Settings(listen=LISTEN, api=ApiSettings(rate_limit_calls=2)))
    try:
        codes = [(await server.request("POST", "/api/check_room", {"roomId": "1"}))[0]
                 for _ in range(3)]
        assert codes == [200, 200, 429]
        assert (await server.request("GET", "/health"))[0] == 200
    finally:
        await stop_server(server)


@pytest_twisted.ensureDeferred
async def test_stalled_redis_gives_503_then_recovers(tmp_path: Path) -> None:
    """While Redis hangs, API calls fail with 503 within the timeout; afterwards they work again."""
    redis = RedisServer(tmp_path / "stall")
    redis.start()
    try:
        settings = Settings(listen=LISTEN, redis=redis_settings(redis, command_timeout=0.3))
        server = await start_server(settings)
        try:
            assert (await server.request("POST", "/api/check_room", {"roomId": "1"}))[0] == 200
            redis.pause()
            try:
                code, body = await server.request("POST", "/api/check_room", {"roomId": "1"})
                assert code == 503 and isinstance(body["error"], str)
                code, body = await server.request("GET", "/health/detailed")
                assert code == 503
                assert body["dependencies"]["redis"]["status"] == "disconnected"
            finally:
                redis.resume()
            # Bounded wait for the pool to reconnect by itself (no restart).
            deadline = reactor.seconds() + 10
            while True:
                code, body = await server.request("POST", "/api/check_room", {"roomId": "1"})
                if code == 200 or reactor.seconds() > deadline:
                    break
                await task.deferLater(reactor, 0.05)
            assert (code, body) == (200, {"available": True})
        finally:
            await stop_server(server)
    finally:
        redis.kill()


@pytest_twisted.ensureDeferred
async def test_socketio_is_mounted_beside_the_api(server: Server) -> None:
    """The same port serves Socket.IO at /socket.io/, and health counts its connections."""
    response = await treq.get(server.base + "/socket.io/?EIO=4&transport=polling",
                              pool=server.pool)
    body = await treq.content(response)
    assert response.code == 200
    assert body.startswith(b"0{")
    assert b'"sid"' in body
    code, health = await server.request("GET", "/health/detailed")
    assert code == 200
    assert health["dependencies"]["socketio"]["status"] == "running"
    assert health["dependencies"]["socketio"]["connections"] >= 1


@pytest_twisted.ensureDeferred
async def test_wrong_redis_password_shows_as_unhealthy_not_as_a_stall(tmp_path: Path) -> None:
    """An operator who mistyped REDIS_PASSWORD sees it on /health/detailed
    (503, Redis "disconnected", with the reason), and API calls answer 503
    within the command timeout instead of hanging."""
    redis = RedisServer(tmp_path / "auth", password="right one")
    redis.start()
    try:
        settings = Settings(
            listen=LISTEN, redis=redis_settings(redis, password="wrong", command_timeout=0.5)
        )
        service = build_service(settings, reactor)
        service.startService()
        try:
            port = await service.getServiceNamed("http")._waitingForPort
            pool = HTTPConnectionPool(reactor, persistent=False)
            server = Server(f"http://127.0.0.1:{port.getHost().port}", service, pool)
            started = reactor.seconds()
            code, body = await server.request("GET", "/health/detailed")
            assert code == 503
            assert body["status"] == "unhealthy"
            assert body["dependencies"]["redis"]["status"] == "disconnected"
            assert "authentication" in body["dependencies"]["redis"]["error"]
            code, body = await server.request("POST", "/api/check_room", {"roomId": "0427"})
            assert code == 503 and isinstance(body["error"], str)
            assert reactor.seconds() - started < 2 * 0.5 + 1
            await pool.closeCachedConnections()
        finally:
            await service.stopService()
    finally:
        redis.kill()


class _ClientThatNeverReads(Protocol):
    """Pipelines many requests and never reads an answer."""

    def __init__(self, requests: bytes) -> None:
        self._requests = requests
        self.lost: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.transport.pauseProducing()
        self.transport.write(self._requests)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


@pytest_twisted.ensureDeferred
async def test_client_that_pipelines_without_reading_is_dropped() -> None:
    """A client that pipelines requests and never reads the answers is cut
    off once the answers waiting for it pass the outbound cap, instead of
    making the server hold them all in memory; other clients are served."""
    settings = Settings(
        listen=LISTEN,
        engine=attrs.evolve(Settings().engine, max_outbound_buffer=64 * 1024),
    )
    server = await start_server(settings)
    try:
        port = int(server.base.rsplit(":", 1)[1])
        hog = _ClientThatNeverReads(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 40_000)
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), hog)
        await hog.lost.addTimeout(20, reactor)
        assert (await server.request("GET", "/health"))[0] == 200
    finally:
        await stop_server(server)
