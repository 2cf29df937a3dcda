"""Redis through Sentinel, with real processes: start-up, the store, pub/sub, failovers.

The groups (C{tests/sentinel_group.py}) are a real master, a real replica and
three real Sentinels on loopback, with a 1 s C{down-after-milliseconds}.
Service trees are built by L{privydrop.service.build_service} from the
variables an operator sets (C{REDIS_SENTINELS}, C{REDIS_SENTINEL_MASTER},
...), and their users are raw Engine.IO/Socket.IO WebSocket clients, so what
is asserted is what a browser would see.

What real Sentinels do only in a narrow window (name a server that has just
become a replica, name one server and then another) is played by
L{tests.sentinel_group.StaleSentinel}, a real TCP server that answers with
the address it is told.

Waiting for a failover polls the Sentinels with a bounded deadline: the
promotion is an external event nothing announces to the test.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
import pytest_twisted
import treq
from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, DeferredList, TimeoutError
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.logger import globalLogPublisher

from privydrop.redis.probe import RedisProbeError, find_master, probe_redis
from privydrop.redis.sentinel import MasterNotFound, SentinelResolver
from privydrop.settings import RedisSettings, SentinelSettings, Settings
from privydrop.settings.sources import settings_from_options
from privydrop.signaling.handlers import SERVER_ERROR
from privydrop.store.interface import StoreUnavailable
from privydrop.store.redis import RedisStore
from tests.conftest import TEST_SENTINEL_PASSWORD
from tests.integration.test_cluster_redis import SocketIOClient
from tests.integration.test_twistd import (
    RUNNERS,
    child_env,
    ended_within,
    reactor_pid,
    spawn,
    wait_for_health,
)
from tests.interop.service_tree import LISTEN, RunningTree, start_tree
from tests.redis_server import HOST, RedisServer, free_port
from tests.sentinel_group import MASTER_NAME, SentinelGroup, StaleSentinel

#: Longest wait for anything a test expects; a failure, not a hang, past it.
WAIT_S = 10.0
#: Pause between two looks at a condition that nothing announces.
POLL_S = 0.05
#: The deadline of one store command in the service trees here: a join
#: during a failover must fail within it (plus the answer's way back).
COMMAND_TIMEOUT_S = 1.0
#: "A few seconds": how long after the promotion the trees may take to
#: join, subscribe and relay again (reconnection back-off of at most
#: REDIS_SENTINEL_RECONNECT_MAX_DELAY, 1 s by default, one command deadline,
#: and room for a loaded machine; measured here: 0.2 to 1.4 s).
RECOVERY_S = 4.0

JOINED = "Successfully joined room"


def within(d: Deferred[Any] | Coroutine[Any, Any, Any], seconds: float = WAIT_S) -> Deferred[Any]:
    """C{d} (a Deferred or a coroutine), failing with TimeoutError if it has
    not finished within C{seconds}."""
    if not isinstance(d, Deferred):
        d = Deferred.fromCoroutine(d)
    return d.addTimeout(seconds, reactor)


async def until(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> float:
    """Look at C{condition} every L{POLL_S} until it holds; the seconds it took.

    @raise AssertionError: it did not hold within C{timeout_s}.
    """
    started = reactor.seconds()
    while not condition():
        if reactor.seconds() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await task.deferLater(reactor, POLL_S, lambda: None)
    return float(reactor.seconds() - started)


@pytest.fixture
def captured_warnings() -> Iterator[list[dict[str, Any]]]:
    """Every warning-or-worse log event emitted during the test."""
    from twisted.logger import LogLevel

    events: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_level") in (LogLevel.warn, LogLevel.error, LogLevel.critical):
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


def _texts(events: list[dict[str, Any]]) -> str:
    from twisted.logger import formatEvent

    return "\n".join(formatEvent(e) for e in events)


# -- the start-up probe --------------------------------------------------------------


def test_probe_finds_the_master_through_the_sentinels(sentinel_group: SentinelGroup) -> None:
    """A production server configured with Sentinels starts: the probe asks
    them, reaches the master and checks it is one."""
    settings = sentinel_group.settings()
    assert settings.sentinel is not None
    assert find_master(settings.sentinel) == (HOST, sentinel_group.master.port)
    probe_redis(settings)


def test_probe_names_the_sentinel_setting_to_fix(
    sentinel_group: SentinelGroup, redis_server: RedisServer
) -> None:
    """Each Sentinel mistake stops start-up with a message naming the
    variable to fix, never a hang."""
    with pytest.raises(RedisProbeError) as caught:
        probe_redis(sentinel_group.settings(sentinel_master="no-such-master"))
    assert "REDIS_SENTINEL_MASTER" in str(caught.value)
    assert "'no-such-master'" in str(caught.value)

    dead = [(HOST, free_port()), (HOST, free_port())]
    with pytest.raises(RedisProbeError) as caught:
        probe_redis(sentinel_group.settings(sentinel_addresses=tuple(dead)))
    message = str(caught.value)
    assert "REDIS_SENTINELS" in message
    assert all(f"{host}:{port}" in message for host, port in dead)

    # A plain Redis given as a Sentinel.
    with pytest.raises(RedisProbeError, match="is it a Sentinel.*REDIS_SENTINELS"):
        probe_redis(
            sentinel_group.settings(sentinel_addresses=((HOST, redis_server.port),))
        )


def test_probe_names_the_sentinel_password_and_the_master_password(
    password_sentinel_group: SentinelGroup,
) -> None:
    """The Sentinels' password and the master's are two settings; a refusal
    of either names the right one, and neither password is printed."""
    group = password_sentinel_group
    probe_redis(group.settings())

    for wrong in (None, "wrong-sentinel-pw"):
        with pytest.raises(RedisProbeError) as caught:
            probe_redis(group.settings(sentinel_password=wrong))
        assert "REDIS_SENTINEL_PASSWORD" in str(caught.value)
        assert TEST_SENTINEL_PASSWORD not in str(caught.value)
        assert "wrong-sentinel-pw" not in str(caught.value)

    with pytest.raises(RedisProbeError) as caught:
        probe_redis(group.settings(password="wrong-master-pw"))
    assert "REDIS_PASSWORD" in str(caught.value)
    assert "REDIS_SENTINEL_PASSWORD" not in str(caught.value)
    assert "wrong-master-pw" not in str(caught.value)


def test_probe_refuses_a_replica_named_as_master(sentinel_group: SentinelGroup) -> None:
    """A Sentinel whose view is out of date (a failover under way) names a
    replica: start-up says so rather than serving writes that would all fail."""
    stale = StaleSentinel((HOST, sentinel_group.replica.port))
    try:
        with pytest.raises(RedisProbeError, match="is a slave, not the master"):
            probe_redis(sentinel_group.settings(sentinel_addresses=((HOST, stale.port),)))
    finally:
        stale.stop()


def test_probe_asks_the_next_sentinel_after_a_silent_one(sentinel_group: SentinelGroup) -> None:
    """A Sentinel that accepts connections but never answers (hung, or
    behind a black-holing firewall) costs its timeout, then the next one is
    asked."""
    with socket.socket() as silent:
        silent.bind((HOST, 0))
        silent.listen(8)  # never accepted: connections complete, nothing answers
        real = sentinel_group.settings().sentinel
        assert real is not None
        addresses = (silent.getsockname(), *real.addresses)
        started = time.monotonic()
        probe_redis(sentinel_group.settings(sentinel_addresses=addresses, sentinel_timeout=0.3))
        assert 0.3 <= time.monotonic() - started < 0.3 + 1.5


@pytest_twisted.ensureDeferred
async def test_twistd_starts_in_production_through_the_sentinels(
    sentinel_group: SentinelGroup, tmp_path: Path
) -> None:
    """The server as operators run it: production settings naming the
    Sentinels pass the start-up probe, and the server serves, connected to
    the master the Sentinels name."""
    port = free_port()
    env = child_env(**sentinel_group.environ(0, NODE_ENV="production"))
    proc = spawn(
        RUNNERS["twistd"] + ["privydrop", "--listen", f"tcp:{port}:interface=127.0.0.1"],
        tmp_path,
        env,
    )
    try:
        await wait_for_health(f"http://127.0.0.1:{port}/health", proc)
        response = await within(treq.get(f"http://127.0.0.1:{port}/health/detailed"))
        redis = (await treq.json_content(response))["dependencies"]["redis"]
        assert redis["status"] == "connected"
        assert f"master {MASTER_NAME}" in redis["address"]
    finally:
        if not proc.ended.called:
            os.kill(reactor_pid(proc), signal.SIGTERM)
    assert await ended_within(proc, 15) in (0, -signal.SIGTERM), proc.output[-2000:]


def test_production_start_up_stops_naming_the_sentinel_setting(
    sentinel_group: SentinelGroup,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A production server whose Sentinels do not know the master name exits
    non-zero before listening, naming REDIS_SENTINEL_MASTER."""
    from privydrop.tap import Options, makeService

    monkeypatch.chdir(tmp_path)  # no .env.production here
    for name, value in sentinel_group.environ(
        0, NODE_ENV="production", REDIS_SENTINEL_MASTER="typo"
    ).items():
        monkeypatch.setenv(name, value)
    for name in ("REDIS_URL", "REDIS_HOST"):
        monkeypatch.delenv(name, raising=False)
    options = Options()
    options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1"])
    with pytest.raises(SystemExit) as caught:
        makeService(options)
    assert caught.value.code == 1
    err = capsys.readouterr().err
    assert "REDIS_SENTINEL_MASTER" in err and "'typo'" in err


# -- the resolver ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_resolver_asks_in_order_and_keeps_the_one_that_answered(
    sentinel_group: SentinelGroup,
) -> None:
    """Dead and silent Sentinels cost at most their timeout each; the one
    that answered is asked first next time, so later reconnections are fast."""
    real = sentinel_group.settings().sentinel
    assert real is not None
    with socket.socket() as silent:
        silent.bind((HOST, 0))
        silent.listen(8)
        dead = (HOST, free_port())
        settings = SentinelSettings(
            addresses=(dead, silent.getsockname(), real.addresses[1]),
            master=MASTER_NAME,
            timeout=0.3,
        )
        resolver = SentinelResolver(settings, reactor)
        started = reactor.seconds()
        assert await within(resolver.master_address()) == (HOST, sentinel_group.master.port)
        assert 0.3 <= reactor.seconds() - started < 0.3 + 1.0
        assert resolver.order[0] == real.addresses[1]
        started = reactor.seconds()
        assert await within(resolver.master_address()) == (HOST, sentinel_group.master.port)
        assert reactor.seconds() - started < 0.3


@pytest_twisted.ensureDeferred
async def test_resolver_shares_one_question_and_reports_every_sentinel(
    sentinel_group: SentinelGroup,
) -> None:
    """A pool reconnecting all its connections at once asks the Sentinels
    once; when none knows the master, the error says why for each."""
    stale = StaleSentinel((HOST, sentinel_group.master.port))
    try:
        settings = SentinelSettings(addresses=((HOST, stale.port),), master=MASTER_NAME)
        resolver = SentinelResolver(settings, reactor)
        answers = await within(
            DeferredList([resolver.master_address() for _ in range(5)], fireOnOneErrback=True)
        )
        assert {answer for _, answer in answers} == {(HOST, sentinel_group.master.port)}
        assert stale.questions == 1
    finally:
        stale.stop()

    dead = (HOST, free_port())
    real = sentinel_group.settings().sentinel
    assert real is not None
    resolver = SentinelResolver(
        SentinelSettings(addresses=(dead, real.addresses[0]), master="unknown-master"), reactor
    )
    with pytest.raises(MasterNotFound) as caught:
        await within(resolver.master_address())
    assert f"{HOST}:{dead[1]}" in str(caught.value)
    assert "monitors no master named 'unknown-master'" in str(caught.value)
    assert caught.value.settings_to_check == ("REDIS_SENTINEL_MASTER", "REDIS_SENTINELS")


# -- the pools --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_store_uses_only_the_master_and_follows_the_sentinels(
    sentinel_group: SentinelGroup, captured_warnings: list[dict[str, Any]]
) -> None:
    """While a Sentinel names a replica (its view is out of date), the store
    does not use it: operations fail within their deadline and say why in
    the log. Once the master is named, the store works without a restart."""
    group = sentinel_group
    stale = StaleSentinel((HOST, group.replica.port))
    store = RedisStore(
        group.settings(
            sentinel_addresses=((HOST, stale.port),), command_timeout=0.5, db=3
        ),
        reactor,
        reconnect_initial_delay=0.05,
    )
    try:
        started = reactor.seconds()
        with pytest.raises(StoreUnavailable):
            await within(store.ping())
        assert reactor.seconds() - started < 0.5 + 0.5
        assert "answered as a slave, not the master" in _texts(captured_warnings)
        stale.names = (HOST, group.master.port)
        await until(lambda: bool(store.pool.connections), "a connection to the master")
        assert await within(store.create_room("sentinel-store", 1, 60)) is True
        assert group.master.command("EXISTS", "room:sentinel-store", db=3) == 1
        replica_clients = group.replica.command("CLIENT", "LIST")
        assert "name=privydrop" not in replica_clients
    finally:
        await store.close()
        stale.stop()
        group.master.command("FLUSHDB", db=3)


@pytest_twisted.ensureDeferred
async def test_a_master_turned_replica_is_left_on_its_first_readonly_reply(
    tmp_path: Path, captured_warnings: list[dict[str, Any]]
) -> None:
    """When the master becomes a replica under a connection (a failover that
    did not kill our connections), the write that hits it fails at once and
    the next one goes to the new master: the pool never keeps writing into a
    server that refuses every write."""
    old, new = RedisServer(tmp_path / "old"), RedisServer(tmp_path / "new")
    old.start()
    new.start()
    stale = StaleSentinel((HOST, old.port))
    store = RedisStore(
        RedisSettings(
            pool_size=1,
            command_timeout=1.0,
            sentinel=SentinelSettings(addresses=((HOST, stale.port),), master=MASTER_NAME),
        ),
        reactor,
        reconnect_initial_delay=0.05,
    )
    try:
        assert await within(store.create_room("before", 1, 60)) is True
        old.command("REPLICAOF", HOST, new.port)
        stale.names = (HOST, new.port)
        started = reactor.seconds()
        with pytest.raises(StoreUnavailable, match="READONLY"):
            await within(store.create_room("during", 1, 60))
        assert reactor.seconds() - started < 0.5
        assert "is a replica now" in _texts(captured_warnings)
        assert await within(store.create_room("after", 1, 60)) is True
        assert new.command("EXISTS", "room:after") == 1
    finally:
        await store.close()
        stale.stop()
        old.kill()
        new.kill()


@pytest_twisted.ensureDeferred
async def test_sentinel_password_reaches_the_sentinels_and_not_the_master(
    password_sentinel_group: SentinelGroup, captured_warnings: list[dict[str, Any]]
) -> None:
    """With passwords on both the Sentinels and Redis, the store authenticates
    to each with its own; a wrong Sentinel password fails start-up within the
    connect timeout and the log names REDIS_SENTINEL_PASSWORD."""
    group = password_sentinel_group
    store = RedisStore(group.settings(db=4), reactor)
    try:
        await within(store.connect())
        assert await within(store.create_room("authenticated", 1, 60)) is True
    finally:
        await store.close()
        group.master.command("FLUSHDB", db=4)

    store = RedisStore(
        group.settings(sentinel_password="wrong", connect_timeout=0.5), reactor
    )
    try:
        started = reactor.seconds()
        with pytest.raises(StoreUnavailable):
            await within(store.connect())
        assert reactor.seconds() - started < 0.5 + 0.5
        assert "check REDIS_SENTINEL_PASSWORD" in _texts(captured_warnings)
    finally:
        await store.close()


# -- service trees -----------------------------------------------------------------------


def _settings(group: SentinelGroup, db: int, **more: str) -> Settings:
    """Settings as an operator gives them: environment variables only."""
    variables = group.environ(
        db,
        NODE_ENV="development",
        DISABLE_JOIN_RATE_LIMIT="1",
        REDIS_COMMAND_TIMEOUT=str(COMMAND_TIMEOUT_S),
        REDIS_CONNECT_TIMEOUT="2",
        **more,
    )
    return settings_from_options(
        {"listen": LISTEN}, variables, cwd=str(Path(__file__).parent)
    )


@attrs.define
class Node:
    """A running service tree and its users."""

    tree: RunningTree
    clients: list[SocketIOClient] = attrs.Factory(list)

    @property
    def adapter(self) -> Any:
        return self.tree.service.getServiceNamed("adapter")

    async def client(self) -> tuple[SocketIOClient, str]:
        factory = WebSocketClientFactory(
            f"ws://127.0.0.1:{self.tree.port}/socket.io/?EIO=4&transport=websocket"
        )
        factory.protocol = SocketIOClient
        client: SocketIOClient = await TCP4ClientEndpoint(
            reactor, "127.0.0.1", self.tree.port
        ).connect(factory)
        self.clients.append(client)
        socket_id = await within(client.sio_connected)
        return client, socket_id

    async def create_room(self, room: str) -> None:
        response = await within(
            treq.post(f"{self.tree.url}/api/create_room", json={"roomId": room}, persistent=False)
        )
        assert response.code == 200, await response.text()


StartNode = Callable[[Settings], Awaitable[Node]]


@pytest_twisted.async_yield_fixture
async def start_node() -> AsyncIterator[StartNode]:
    nodes: list[Node] = []

    async def start(settings: Settings) -> Node:
        node = Node(await start_tree(settings, reactor))
        nodes.append(node)
        await within(node.adapter.wait_subscribed())
        return node

    yield start

    for node in nodes:
        for client in node.clients:
            if client.transport is not None:
                client.dropConnection(abort=True)
        await within(DeferredList([c.sio_closed for c in node.clients]))
        # Nothing hung: the tree stops within the deadline, Redis or not.
        await within(node.tree.stop(), 15.0)


async def _event(client: SocketIOClient, seconds: float = WAIT_S) -> list[Any]:
    """The next event the client receives, decoded: C{[name, *args]}, without
    the offset connection state recovery appends (the nodes run with it on)."""
    raw = await within(client.events.get(), seconds)
    decoded: list[Any] = orjson.loads(raw[0][1:])
    assert isinstance(decoded[-1], str), decoded
    return decoded[:-1]


async def _join(client: SocketIOClient, room: str, seconds: float = WAIT_S) -> dict[str, Any]:
    client.emit("join", {"roomId": room})
    name, response = await _event(client, seconds)
    assert name == "joinResponse"
    result: dict[str, Any] = response
    return result


async def _pair(a: Node, b: Node, room: str) -> tuple[SocketIOClient, str, SocketIOClient, str]:
    """Alice on A and Bob on B in one room; Alice heard Bob is ready."""
    await a.create_room(room)
    alice, alice_id = await a.client()
    bob, bob_id = await b.client()
    assert await _join(alice, room) == {"success": True, "message": JOINED, "roomId": room}
    # Alice's "ready" named its recipients (nobody yet): Bob, joining next,
    # cannot receive it, so there is nothing to wait for.
    assert await _join(bob, room) == {"success": True, "message": JOINED, "roomId": room}
    assert await _event(alice) == ["ready", {"peerId": bob_id}]
    return alice, alice_id, bob, bob_id


def _offer(n: int) -> dict[str, Any]:
    return {"type": "offer", "sdp": f"v=0\r\no=- {n} 2 IN IP4 127.0.0.1\r\ns=-\r\n"}


async def _relay(
    alice: SocketIOClient, bob: SocketIOClient, bob_id: str, alice_id: str, n: int
) -> None:
    alice.emit("offer", {"peerId": bob_id, "offer": _offer(n)})
    expected = ["offer", {"offer": _offer(n), "from": alice_id, "peerId": alice_id}]
    assert await _event(bob) == expected


async def _relay_again(
    alice: SocketIOClient, bob: SocketIOClient, alice_id: str, bob_id: str
) -> int:
    """Offer from Alice to Bob until one gets through; the number of tries.

    A publication made before the publisher reconnected fails after its
    deadline and is lost (delivery is at most once), so each try is bounded
    by a command deadline and the next one is a new offer.
    """
    tries = 0
    while True:
        tries += 1
        alice.emit("offer", {"peerId": bob_id, "offer": _offer(100 + tries)})
        try:
            event = await _event(bob, COMMAND_TIMEOUT_S + 0.5)
        except TimeoutError:
            continue  # lost in the failover: try again
        assert event[0] == "offer" and event[1]["from"] == alice_id
        return tries


def _our_connections(server: RedisServer) -> set[tuple[str, str]]:
    """C{(node, role)} of every connection of a service tree to this server."""
    listing: str = server.command("CLIENT", "LIST")
    return set(re.findall(r" name=privydrop:([^:\s]+):(\S+) ", listing))


def _roles(*nodes: Node) -> set[tuple[str, str]]:
    """What L{_our_connections} shows at least when the nodes' store, publisher
    and subscriber are all connected there."""
    return {(n.adapter.node_id, role) for n in nodes for role in ("store", "publish", "subscribe")}


@pytest_twisted.ensureDeferred
async def test_two_nodes_share_rooms_and_signal_through_sentinel(
    sentinel_group: SentinelGroup, start_node: StartNode
) -> None:
    """Rooms, joins and the relay between two processes work when Redis is
    found through Sentinel, and every connection is on the master."""
    db = 6
    a = await start_node(_settings(sentinel_group, db))
    b = await start_node(_settings(sentinel_group, db))
    try:
        alice, alice_id, bob, bob_id = await _pair(a, b, "sentinel-room")
        await _relay(alice, bob, bob_id, alice_id, 1)
        assert sentinel_group.master.command(
            "SISMEMBER", "room:sentinel-room:sockets", bob_id, db=db
        )
        assert _our_connections(sentinel_group.master) >= _roles(a, b)
        assert _our_connections(sentinel_group.replica) == set()
    finally:
        sentinel_group.master.command("FLUSHDB", db=db)


@pytest_twisted.ensureDeferred
async def test_a_failover_costs_the_failover_time_plus_a_few_seconds(
    failover_group: SentinelGroup, start_node: StartNode
) -> None:
    """The master dies and Sentinel promotes the replica. Meanwhile a join
    fails within its deadline ("Server error while joining room") and
    nothing hangs; a few seconds after the promotion joins succeed again,
    both processes are subscribed on the new master, and the relay between
    them resumes with the sockets that were connected all along.

    If this breaks, a Redis failover would take signaling down until the
    servers are restarted, or for as long as a stock client's discovery
    timeout.
    """
    group = failover_group
    # Heartbeats far shorter than the failover: neither process may take
    # the other for dead because of it.
    beating = {"CLUSTER_HEARTBEAT_INTERVAL_MS": "250", "CLUSTER_NODE_TIMEOUT_MS": "1000"}
    a = await start_node(_settings(group, 0, **beating))
    b = await start_node(_settings(group, 0, **beating))
    alice, alice_id, bob, bob_id = await _pair(a, b, "before-failover")
    await _relay(alice, bob, bob_id, alice_id, 1)
    await a.create_room("created-before-failover")
    # The room must be on the replica before the kill: replication is
    # asynchronous, and what it had not received yet is lost in a failover.
    assert group.master.command("WAIT", 1, 1000) == 1
    subscribed = (a.adapter.subscriptions, b.adapter.subscriptions)

    group.master.crash()
    killed = reactor.seconds()

    carol, _ = await a.client()
    started = reactor.seconds()
    response = await _join(carol, "created-before-failover", COMMAND_TIMEOUT_S + 1.0)
    assert response == {
        "success": False,
        "message": SERVER_ERROR,
        "roomId": "created-before-failover",
    }
    assert reactor.seconds() - started < COMMAND_TIMEOUT_S + 1.0

    await until(group.promoted, "the replica's promotion", 20.0)
    promoted = reactor.seconds()

    async def joins_again() -> None:
        while True:
            dave, _ = await a.client()
            if (await _join(dave, "created-before-failover", COMMAND_TIMEOUT_S + 1.0))["success"]:
                return

    await within(joins_again(), RECOVERY_S)
    await within(a.adapter.wait_subscribed(subscribed[0]), RECOVERY_S)
    await within(b.adapter.wait_subscribed(subscribed[1]), RECOVERY_S)

    tries = await within(_relay_again(alice, bob, alice_id, bob_id), RECOVERY_S)
    recovered = reactor.seconds()
    assert recovered - promoted < RECOVERY_S
    # Every connection of both processes is on the new master.
    await until(
        lambda: _our_connections(group.replica) >= _roles(a, b), "connections on the new master"
    )
    # Both processes beat through twice the node timeout after the failover:
    # nobody was reaped, and neither peer was told the other left.
    monitors = [n.tree.service.getServiceNamed("nodes").monitor for n in (a, b)]
    for monitor in monitors:
        await within(monitor.wait_beats(monitor.beats + 8), 15.0)
    assert [m.reaped_nodes for m in monitors] == [0, 0]
    assert [m.judged_dead for m in monitors] == [frozenset(), frozenset()]
    await _relay(bob, alice, alice_id, bob_id, 200)
    print(
        f"failover: promoted {promoted - killed:.1f}s after the kill; service back"
        f" {recovered - promoted:.1f}s after the promotion; relayed at try {tries}"
    )


@pytest_twisted.ensureDeferred
async def test_a_paused_master_is_left_as_soon_as_the_sentinels_switch(
    failover_group: SentinelGroup, start_node: StartNode
) -> None:
    """A master that hangs (paused, or cut off from the Sentinels) closes no
    connection when the replica is promoted. The subscriptions would stay
    on it, deaf, for as long as it hangs; the Sentinels' +switch-master
    announcement moves them, and the relay resumes a few seconds after the
    promotion."""
    group = failover_group
    a = await start_node(_settings(group, 0))
    b = await start_node(_settings(group, 0))
    alice, alice_id, bob, bob_id = await _pair(a, b, "before-pause")
    subscribed = (a.adapter.subscriptions, b.adapter.subscriptions)

    group.master.pause()
    await until(group.promoted, "the replica's promotion", 20.0)
    promoted = reactor.seconds()
    await within(a.adapter.wait_subscribed(subscribed[0]), RECOVERY_S)
    await within(b.adapter.wait_subscribed(subscribed[1]), RECOVERY_S)
    tries = await within(_relay_again(alice, bob, alice_id, bob_id), RECOVERY_S)
    recovered = reactor.seconds()
    assert recovered - promoted < RECOVERY_S
    print(
        f"paused master: service back {recovered - promoted:.1f}s after the promotion;"
        f" relayed at try {tries}"
    )


def test_admin_command_finds_the_master_through_the_sentinels(
    password_sentinel_group: SentinelGroup,
) -> None:
    """privydrop-admin, given the server's settings, looks at the master the
    Sentinels name (not at a default address), with both passwords."""
    from privydrop.admin.client import RedisClient, RedisError

    group = password_sentinel_group
    group.master.command("SET", "admin-probe", "here", db=5)
    try:
        with RedisClient(group.settings(db=5)) as client:
            assert client.command("GET", "admin-probe") == "here"
            assert client.address == f"{HOST}:{group.master.port}"
        with pytest.raises(RedisError, match="REDIS_SENTINEL_MASTER"):
            RedisClient(group.settings(sentinel_master="nope"))
    finally:
        group.master.command("FLUSHDB", db=5)
