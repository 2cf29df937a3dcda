"""Limits one client cannot exhaust, against the real service tree.

Each test starts the whole server (store, Engine.IO + Socket.IO + signaling,
REST API) from environment variables as an operator gives them, on a
loopback port or a UNIX socket, and talks HTTP to it. Clients are told apart
as behind nginx: the test connects from loopback (a trusted proxy by
default) or over the UNIX socket, and names each client in X-Forwarded-For.
Socket.IO runs over real long-polling requests (C{GET}/C{POST} under
C{/socket.io/}), so what is asserted is what a browser would get.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
import pytest_twisted
import treq
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from privydrop.service import build_service
from privydrop.settings import Settings
from privydrop.settings.sources import settings_from_options
from tests.redis_server import RedisServer

#: Longest wait for one answer; a failure, not a hang, past it.
WAIT_S = 10.0
PACKET_SEPARATOR = b"\x1e"


def settings_for(listen: str, **environ: str) -> Settings:
    """Settings from environment variables, as an operator gives them."""
    return settings_from_options(
        {"listen": listen}, {"NODE_ENV": "development", **environ}, cwd=str(Path(__file__).parent)
    )


def redis_url(server: RedisServer, db: int) -> str:
    return f"redis://{server.host}:{server.port}/{db}"


@implementer(IAgentEndpointFactory)
class _UNIXEndpoints:
    """Every request goes to one UNIX socket, whatever its URL names."""

    def __init__(self, path: str) -> None:
        self._path = path

    def endpointForURI(self, uri: Any) -> UNIXClientEndpoint:
        return UNIXClientEndpoint(reactor, self._path)


@attrs.define
class Running:
    """A started service tree and an HTTP client that reaches it."""

    service: Any
    base: str
    pool: HTTPConnectionPool
    http: HTTPClient

    async def request(
        self,
        method: str,
        path: str,
        client: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """One request as the proxy forwards it for C{client}."""
        sent = {"X-Forwarded-For": client, **(headers or {})}
        response = await self.http.request(
            method, self.base + path, data=body, headers=sent
        ).addTimeout(WAIT_S, reactor)
        return response.code, await treq.content(response)

    async def api(self, path: str, client: str, payload: Any) -> int:
        code, _ = await self.request(
            "POST", path, client, orjson.dumps(payload), {"Content-Type": "application/json"}
        )
        return code

    @property
    def engine_server(self) -> Any:
        return self.service.getServiceNamed("realtime").realtime.engine_server

    async def stop(self) -> None:
        await self.pool.closeCachedConnections()
        await self.service.stopService()


async def start(settings: Settings) -> Running:
    service = build_service(settings, reactor)
    service.startService()
    await service.getServiceNamed("store").store.ping()
    port = await service.getServiceNamed("http")._waitingForPort
    pool = HTTPConnectionPool(reactor, persistent=False)
    if settings.listen.startswith("unix:"):
        agent = Agent.usingEndpointFactory(
            reactor, _UNIXEndpoints(settings.listen.split(":", 1)[1]), pool=pool
        )
        base = "http://privydrop.local"
    else:
        agent = Agent(reactor, pool=pool)
        base = "http://127.0.0.1:%d" % (port.getHost().port,)
    return Running(service, base, pool, HTTPClient(agent))


@pytest_twisted.async_yield_fixture
async def launch() -> AsyncIterator[Callable[[Settings], Deferred[Running]]]:
    """Starts service trees; stops every one at the end of the test."""
    running: list[Running] = []

    def launch(settings: Settings) -> Deferred[Running]:
        d = Deferred.fromCoroutine(start(settings))
        d.addCallback(lambda tree: running.append(tree) or tree)
        return d

    yield launch
    for tree in running:
        await tree.stop()


class PollingSocket:
    """A Socket.IO v5 client on Engine.IO v4 long-polling, forwarded for one client."""

    def __init__(self, server: Running, client: str) -> None:
        self.server = server
        self.client = client
        self.sid = ""
        self._received: list[str] = []

    def _path(self) -> str:
        return "/socket.io/?EIO=4&transport=polling" + (f"&sid={self.sid}" if self.sid else "")

    async def handshake(self) -> int:
        """The Engine.IO handshake; returns its HTTP status."""
        code, body = await self.server.request("GET", self._path(), self.client)
        if code == 200:
            assert body[:1] == b"0", body
            self.sid = orjson.loads(body[1:])["sid"]
        return code

    async def send(self, *packets: str) -> None:
        code, body = await self.server.request(
            "POST", self._path(), self.client, PACKET_SEPARATOR.join(p.encode() for p in packets)
        )
        assert (code, body) == (200, b"ok"), (code, body)

    async def receive(self, predicate: Callable[[str], bool]) -> str:
        """The first Socket.IO packet (Engine.IO message) matching C{predicate}."""
        while True:
            for index, packet in enumerate(self._received):
                if predicate(packet):
                    del self._received[: index + 1]
                    return packet
            code, body = await self.server.request("GET", self._path(), self.client)
            assert code == 200, (code, body)
            for item in body.split(PACKET_SEPARATOR):
                text = item.decode()
                if text == "2":
                    await self.send("3")
                elif text.startswith("4"):
                    self._received.append(text[1:])

    async def connect(self) -> None:
        """Handshake and CONNECT to the main namespace."""
        assert await self.handshake() == 200
        await self.send("40")
        await self.receive(lambda p: p.startswith("0"))

    async def join(self, room_id: str) -> dict[str, Any]:
        await self.send("42" + orjson.dumps(["join", {"roomId": room_id}]).decode())
        packet = await self.receive(lambda p: p.startswith('2["joinResponse"'))
        answer: dict[str, Any] = orjson.loads(packet[1:])[1]
        return answer

    async def close(self) -> None:
        if self.sid:
            await self.send("1")


async def handshakes(server: Running, clients: Sequence[str]) -> list[int]:
    """Polling handshakes sent at once, one per entry; their HTTP statuses."""
    sockets = [PollingSocket(server, client) for client in clients]
    return list(
        await gatherResults([Deferred.fromCoroutine(s.handshake()) for s in sockets])
    )


# -- handshake floods ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_visitors_keep_connecting_while_one_address_floods_handshakes(
    launch: Callable[[Settings], Deferred[Running]],
) -> None:
    """One address sending polling handshakes as fast as it can, never
    continuing them, holds a few silent sessions and gets 429 for the rest;
    every other visitor keeps connecting meanwhile (with one cap for the
    whole process, the flood kept it full and everyone got 503)."""
    server = await launch(settings_for(
        "tcp:0:interface=127.0.0.1",
        ENGINE_MAX_PENDING_SESSIONS="20",
        ENGINE_MAX_PENDING_SESSIONS_PER_IP="4",
    ))
    flooder = "203.0.113.66"
    first = await handshakes(server, [flooder] * 30)
    assert sorted(first) == [200] * 4 + [429] * 26
    for round_ in range(5):
        assert await handshakes(server, [flooder] * 10) == [429] * 10
        visitor = PollingSocket(server, "198.51.100.%d" % (round_ + 1))
        await visitor.connect()
        await visitor.close()
    # An IPv6 flooder is one client per /64, whichever addresses it picks.
    v6 = await handshakes(server, ["2001:db8:1:2::%x" % n for n in range(1, 31)])
    assert sorted(v6) == [200] * 4 + [429] * 26
    visitor = PollingSocket(server, "2001:db8:1:3::1")
    await visitor.connect()
    await visitor.close()


@pytest_twisted.ensureDeferred
async def test_a_flood_from_many_addresses_evicts_silent_sessions_not_visitors(
    launch: Callable[[Settings], Deferred[Running]],
) -> None:
    """Past the process's cap of silent sessions, the oldest of them are
    closed so new visitors still get in, and a visitor that spoke is never
    among them."""
    server = await launch(settings_for(
        "tcp:0:interface=127.0.0.1",
        ENGINE_MAX_PENDING_SESSIONS="20",
        ENGINE_MAX_PENDING_SESSIONS_PER_IP="4",
    ))
    early = PollingSocket(server, "198.51.100.1")
    await early.connect()
    oldest = PollingSocket(server, "203.0.113.1")
    assert await oldest.handshake() == 200
    flood = ["203.0.113.%d" % (n % 10 + 1) for n in range(39)]
    assert await handshakes(server, flood) == [200] * 39
    assert server.engine_server.pending_count <= 20
    visitor = PollingSocket(server, "198.51.100.2")
    await visitor.connect()
    # The oldest silent session was closed for the newcomers: its sid is unknown.
    code, body = await server.request("GET", oldest._path(), oldest.client)
    assert (code, orjson.loads(body)["code"]) == (400, 1)
    # The visitor that connected first is still there.
    await early.send('42["ping"]')
    assert server.engine_server.get_session(early.sid) is not None
    await early.close()
    await visitor.close()


# -- IPv6 clients are one client per network ---------------------------------------


@pytest_twisted.ensureDeferred
async def test_join_window_counts_an_ipv6_network_as_one_client(
    launch: Callable[[Settings], Deferred[Running]],
) -> None:
    """Sockets from different addresses of one /64 share the join window
    (2 fresh joins per 5 s): a fresh address per socket does not escape it."""
    server = await launch(settings_for("tcp:0:interface=127.0.0.1"))
    for room in ("r1", "r2", "r3", "r4"):
        assert await server.api("/api/create_room", "192.0.2.1", {"roomId": room}) == 200
    answers = []
    for n, room in enumerate(("r1", "r2", "r3"), start=1):
        socket = PollingSocket(server, "2001:db8:1:2::%d" % n)
        await socket.connect()
        answers.append((await socket.join(room))["message"])
        await socket.close()
    assert answers[:2] == ["Successfully joined room"] * 2
    assert answers[2].startswith("Rate limit exceeded.")
    other = PollingSocket(server, "2001:db8:1:3::1")
    await other.connect()
    assert (await other.join("r4"))["success"] is True
    await other.close()


# -- the API budget across processes -----------------------------------------------


@pytest_twisted.ensureDeferred
async def test_api_budget_holds_across_two_processes_on_one_redis(
    launch: Callable[[Settings], Deferred[Running]], redis_server: RedisServer, redis_db: int
) -> None:
    """Two processes behind one load balancer give a client about one
    budget, not two: calls alternating between them are counted together."""
    environ = {"REDIS_URL": redis_url(redis_server, redis_db), "API_RATE_LIMIT": "20/60"}
    one = await launch(settings_for("tcp:0:interface=127.0.0.1", **environ))
    two = await launch(settings_for("tcp:0:interface=127.0.0.1", **environ))
    client = "203.0.113.9"
    codes = []
    for n in range(40):
        server = (one, two)[n % 2]
        codes.append(await server.api("/api/check_room", client, {"roomId": "1234"}))
    allowed = codes.count(200)
    assert codes.count(429) == 40 - allowed
    assert 20 <= allowed <= 22, codes
    # The count is in Redis under the documented key.
    keys = redis_server.command("KEYS", "ratelimit:api:60:*:203.0.113.9", db=redis_db)
    assert len(keys) in (1, 2)
    # Another client still has its whole budget on either process.
    assert await two.api("/api/check_room", "198.51.100.1", {"roomId": "1234"}) == 200
    assert await one.api("/api/check_room", "198.51.100.1", {"roomId": "1234"}) == 200


@pytest_twisted.ensureDeferred
async def test_logs_debug_budget_holds_across_two_processes(
    launch: Callable[[Settings], Deferred[Running]], redis_server: RedisServer, redis_db: int
) -> None:
    """logs_debug's own budget (each call is a log line) is shared the same way."""
    environ = {"REDIS_URL": redis_url(redis_server, redis_db), "LOGS_DEBUG_RATE_LIMIT": "4/60"}
    one = await launch(settings_for("tcp:0:interface=127.0.0.1", **environ))
    two = await launch(settings_for("tcp:0:interface=127.0.0.1", **environ))
    line = {"message": "client says hi", "timestamp": 1}
    codes = [await (one, two)[n % 2].api("/api/logs_debug", "203.0.113.9", line)
             for n in range(12)]
    assert 4 <= codes.count(200) <= 6, codes
    assert await one.api("/api/check_room", "203.0.113.9", {"roomId": "1234"}) == 200


# -- a UNIX socket listener behind nginx ----------------------------------------------


@pytest.fixture
def socket_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    # A short path: UNIX socket paths are limited to about 100 bytes.
    return str(tmp_path_factory.mktemp("sock") / "pd.sock")


@pytest_twisted.ensureDeferred
async def test_unix_listener_tells_clients_apart_by_forwarded_address_in_the_api(
    launch: Callable[[Settings], Deferred[Running]], socket_path: str
) -> None:
    """Behind nginx on the same host over a UNIX socket, each visitor has its
    own API budget (the socket's peer is the proxy, so X-Forwarded-For names
    the client), even with no TRUSTED_PROXIES at all."""
    server = await launch(settings_for(
        "unix:" + socket_path, API_RATE_LIMIT="2/60", TRUSTED_PROXIES=""
    ))
    alice, bob = "203.0.113.9", "198.51.100.1"
    assert [await server.api("/api/check_room", alice, {"roomId": "1234"})
            for _ in range(3)] == [200, 200, 429]
    assert await server.api("/api/check_room", bob, {"roomId": "1234"}) == 200
    assert await server.api("/api/check_room", "2001:db8:1:2::1", {"roomId": "1"}) == 200
    assert await server.api("/api/check_room", "2001:db8:1:2::2", {"roomId": "1"}) == 200
    assert await server.api("/api/check_room", "2001:db8:1:2::3", {"roomId": "1"}) == 429


@pytest_twisted.ensureDeferred
async def test_unix_listener_gives_each_visitor_its_own_join_window_over_polling(
    launch: Callable[[Settings], Deferred[Running]], socket_path: str
) -> None:
    """Over Socket.IO long-polling through the UNIX socket, each visitor's
    fresh joins count against its own window, not one window for the site."""
    server = await launch(settings_for("unix:" + socket_path, TRUSTED_PROXIES=""))
    for room in ("r1", "r2", "r3", "r4"):
        assert await server.api("/api/create_room", "192.0.2.1", {"roomId": room}) == 200
    alice = [PollingSocket(server, "203.0.113.9") for _ in range(3)]
    messages = []
    for socket, room in zip(alice, ("r1", "r2", "r3")):
        await socket.connect()
        messages.append((await socket.join(room))["message"])
    assert messages[:2] == ["Successfully joined room"] * 2
    assert messages[2].startswith("Rate limit exceeded.")
    bob = PollingSocket(server, "198.51.100.1")
    await bob.connect()
    assert (await bob.join("r4"))["success"] is True
    for socket in (*alice, bob):
        await socket.close()
