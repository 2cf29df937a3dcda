"""Processes that die without a shutdown: real C{twistd privydrop} processes
on a real Redis, killed with SIGKILL or stalled with SIGSTOP.

Each test runs its own redis-server (pub/sub ignores database indexes, and
one test changes the server's configuration) and two or three server
processes on it, with the official socket.io-client (Node.js) as users on
each. What the processes must do, from the outside: the peers of a dead
process's users are told C{peer-disconnected}, on every surviving process,
within the bound the settings promise; the store holds nothing of the dead
process afterwards; rooms left empty get their 900 s TTL.

Waiting on another process's state in Redis has no event to wait on: it is
polled (every 20 ms) up to a deadline, as start-up is.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred

from tests.integration.test_twistd import (
    TWISTD,
    _Collect,
    child_env,
    ended_within,
    reactor_pid,
    spawn,
    wait_for_health,
)
from tests.interop.js_clients import JsClients
from tests.redis_server import RedisServer, _encode, _read_reply, free_port

#: Short settings for the tests that do not measure the default bound.
FAST = {"CLUSTER_HEARTBEAT_INTERVAL_MS": "200", "CLUSTER_NODE_TIMEOUT_MS": "1000"}


@attrs.define
class Server:
    """One C{twistd privydrop} process."""

    port: int
    process: _Collect
    env: dict[str, str]

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    @property
    def pid(self) -> int:
        return reactor_pid(self.process)

    @property
    def alive(self) -> bool:
        return not self.process.ended.called


@attrs.define
class Cluster:
    redis: RedisServer
    cwd: Path
    servers: list[Server] = attrs.field(factory=list)
    #: Settings of every process unless a test gives others.
    defaults: dict[str, str] = attrs.field(factory=dict)

    def key(self, *args: Any) -> Any:
        return self.redis.command(*args)

    async def start(self, port: int | None = None, **env: str) -> Server:
        """A process on this Redis, once it serves, beats and is subscribed."""
        port = free_port() if port is None else port
        environment = child_env(
            REDIS_URL="redis://127.0.0.1:%d/0" % self.redis.port,
            DISABLE_JOIN_RATE_LIMIT="1",
            **{**self.defaults, **env},
        )
        process = spawn(
            TWISTD
            + ["-n", "--pidfile=", "privydrop", "--listen", "tcp:%d:interface=127.0.0.1" % port],
            self.cwd,
            environment,
        )
        server = Server(port, process, environment)
        self.servers.append(server)
        await wait_for_health(server.url + "/health", process)
        await until(lambda: self.subscribed(server), "process %d registered" % server.pid)
        return server

    def node_of(self, server: Server) -> str | None:
        """The node id a process beats under (its info names its pid)."""
        for node in self.key("HKEYS", "cluster:heartbeats") or []:
            if self.key("HGET", "cluster:node:%s:info" % node, "pid") == str(server.pid):
                return str(node)
        return None

    def subscribed(self, server: Server) -> bool:
        node = self.node_of(server)
        if node is None:
            return False
        counts = self.key("PUBSUB", "SHARDNUMSUB", "privydrop#node#" + node)
        return bool(counts[1] == 1)

    def kill(self, server: Server, sig: int = signal.SIGKILL) -> None:
        os.kill(server.pid, sig)

    async def stop_all(self) -> None:
        for server in self.servers:
            if server.alive:
                os.kill(server.pid, signal.SIGCONT)
                os.kill(server.pid, signal.SIGTERM)
        for server in self.servers:
            if server.alive:
                await ended_within(server.process, 20)


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    """Wait until C{condition()} holds (polled), or fail naming C{what}."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("not within %ss: %s" % (timeout_s, what))
        await task.deferLater(reactor, 0.02)


@pytest_twisted.async_yield_fixture
async def cluster(private_redis: RedisServer, tmp_path: Path) -> AsyncIterator[Cluster]:
    # These tests are about the clean-up that announces a dead process's
    # users at detection: without connection state recovery (with it, the
    # survivors keep recoverable sockets until their window ends; see
    # test_cluster_recovery.py).
    made = Cluster(private_redis, tmp_path, defaults={"SOCKETIO_RECOVERY_WINDOW_MS": "0"})
    try:
        yield made
    finally:
        await made.stop_all()


@pytest_twisted.async_yield_fixture
async def js(cluster: Cluster) -> AsyncIterator[JsClients]:
    clients = JsClients.spawn(reactor)
    try:
        yield clients
    finally:
        await clients.quit()


async def _room(js: JsClients, server: Server, room: str) -> None:
    created = await js.fetch("POST", server.url + "/api/create_room", {"roomId": room})
    assert created["status"] == 200, created


async def _enter(js: JsClients, name: str, server: Server, room: str) -> str:
    """Connect client C{name} to C{server} and join C{room}; its socket id."""
    sid: str = (await js.connect(name, server.url, "websocket"))["id"]
    await js.emit(name, "join", {"roomId": room})
    response = await js.next(name, "joinResponse")
    assert response["success"] is True, response
    return sid


async def _pairs(
    js: JsClients, cluster: Cluster, rooms: int, *servers: Server
) -> list[dict[str, str]]:
    """C{rooms} rooms, each with one user on every one of C{servers}; for
    each room, client name -> socket id. Each user hears the "ready" of
    every later one, so every route between the processes works."""
    made = []
    for i in range(rooms):
        room = "crash-%d" % i
        await _room(js, servers[0], room)
        members: dict[str, str] = {}
        for j, server in enumerate(servers):
            name = "u%d-%d" % (i, j)
            members[name] = await _enter(js, name, server, room)
        names = list(members)
        for k, name in enumerate(names):
            for later in names[k + 1 :]:
                assert await js.next(name, "ready") == {"peerId": members[later]}
        made.append(members)
    return made


def _dead_node_is_gone(cluster: Cluster, node: str, sids: list[str]) -> bool:
    return (
        cluster.key("HEXISTS", "cluster:heartbeats", node) == 0
        and cluster.key("EXISTS", "cluster:node:%s:sockets" % node) == 0
        and all(cluster.key("EXISTS", "socket:" + sid) == 0 for sid in sids)
    )


@pytest_twisted.ensureDeferred
async def test_kill_9_tells_the_peers_on_the_survivor_within_15_s_by_default(
    cluster: Cluster, js: JsClients
) -> None:
    """A process killed with SIGKILL (default heartbeat settings): every
    peer on the surviving process gets exactly one C{peer-disconnected}
    within 15 s, the store forgets the dead process's sockets, and rooms
    whose members were all on it get the 900 s empty TTL.

    If this breaks, users whose peer's process crashed wait forever (the
    frontend tears down and re-offers only on C{peer-disconnected}), and
    the crashed process's members stay in Redis for a day.
    """
    a = await cluster.start()
    b = await cluster.start()
    rooms = await _pairs(js, cluster, 6, a, b)
    await _room(js, a, "crash-alone")
    alone = await _enter(js, "alone", a, "crash-alone")
    dead = cluster.node_of(a)
    assert dead is not None
    victims = [members["u%d-0" % i] for i, members in enumerate(rooms)] + [alone]

    killed_at = time.monotonic()
    cluster.kill(a)
    for i, members in enumerate(rooms):
        told = await js.next("u%d-1" % i, "peer-disconnected", timeout_ms=20_000)
        assert told == {"peerId": members["u%d-0" % i]}
    elapsed = time.monotonic() - killed_at
    assert elapsed <= 15.0, elapsed
    await until(lambda: _dead_node_is_gone(cluster, dead, victims), "the dead node forgotten")
    for i, members in enumerate(rooms):
        assert set(cluster.key("SMEMBERS", "room:crash-%d:sockets" % i)) == {members["u%d-1" % i]}
        assert cluster.key("HKEYS", "room:crash-%d:nodes" % i) == [members["u%d-1" % i]]
    assert 0 < cluster.key("TTL", "room:crash-alone") <= 900
    # Exactly once: a later message on the same route comes after any second notice.
    survivor = rooms[0]["u0-1"]
    late = await _enter(js, "late", b, "crash-0")
    assert await js.next("u0-1", "ready") == {"peerId": late}
    assert await js.received("u0-1", "peer-disconnected") == []
    assert survivor in set(cluster.key("SMEMBERS", "room:crash-0:sockets"))


@pytest_twisted.ensureDeferred
async def test_a_process_restarted_alone_cleans_up_its_predecessor_at_start_up(
    cluster: Cluster, js: JsClients
) -> None:
    """The only process is killed and started again on the same endpoint:
    it removes what its predecessor left at once, without waiting for the
    timeout (nobody else would ever judge the predecessor dead).

    If this breaks, a single-process deployment restarted after a crash
    keeps the crashed process's members in every room for a day, and their
    rooms never get the empty TTL.
    """
    slow = {"CLUSTER_HEARTBEAT_INTERVAL_MS": "2000", "CLUSTER_NODE_TIMEOUT_MS": "60000"}
    first = await cluster.start(**slow)
    sids = []
    for i in range(3):
        await _room(js, first, "alone-%d" % i)
        sids.append(await _enter(js, "c%d" % i, first, "alone-%d" % i))
    old = cluster.node_of(first)
    assert old is not None
    cluster.kill(first)
    await ended_within(first.process, 10)
    restarted_at = time.monotonic()
    again = await cluster.start(port=first.port, **slow)
    await until(lambda: _dead_node_is_gone(cluster, old, sids), "the predecessor cleaned up", 10)
    # Well before the 60 s timeout: at start-up.
    assert time.monotonic() - restarted_at < 20
    for i in range(3):
        assert cluster.key("SCARD", "room:alone-%d:sockets" % i) == 0
        assert 0 < cluster.key("TTL", "room:alone-%d" % i) <= 900
    assert cluster.node_of(again) is not None


@pytest_twisted.ensureDeferred
async def test_a_process_stalled_past_the_timeout_closes_its_sessions_and_registers_again(
    cluster: Cluster, js: JsClients
) -> None:
    """SIGSTOP beyond the timeout: the other process cleans it up and tells
    the peers; on SIGCONT the stalled process learns at its next heartbeat
    that it was reaped, closes every session (its clients reconnect and join
    afresh), tells no one a second time, and serves again under a new node id.

    If this breaks, a process that was paused (a GC pause, an overloaded VM)
    comes back relaying for sockets whose peers were told they left.
    """
    a = await cluster.start(**FAST)
    b = await cluster.start(**FAST)
    (members,) = await _pairs(js, cluster, 1, a, b)
    on_a, on_b = members["u0-0"], members["u0-1"]
    stalled = cluster.node_of(b)
    assert stalled is not None

    cluster.kill(b, signal.SIGSTOP)
    assert await js.next("u0-0", "peer-disconnected") == {"peerId": on_b}
    await until(lambda: _dead_node_is_gone(cluster, stalled, [on_b]), "the stalled node reaped")
    cluster.kill(b, signal.SIGCONT)
    # Its session is closed by the server (not by the client).
    assert await js.next("u0-1", "disconnect") in ("transport close", "io server disconnect")
    await until(lambda: cluster.node_of(b) not in (None, stalled), "a new node id")
    assert cluster.key("EXISTS", "cluster:node:%s:info" % stalled) == 0

    # It serves again: a user joining through it is announced once, and
    # its relays reach the peer.
    fresh = await _enter(js, "fresh", b, "crash-0")
    assert await js.next("u0-0", "ready") == {"peerId": fresh}
    await js.emit("fresh", "offer", {"peerId": on_a, "offer": {"type": "offer", "sdp": "v=0"}})
    assert (await js.next("u0-0", "offer"))["from"] == fresh
    assert await js.received("u0-0", "peer-disconnected") == []
    assert set(cluster.key("SMEMBERS", "room:crash-0:sockets")) == {on_a, fresh}


class _PauseOnClaim(threading.Thread):
    """Pauses every writing Redis client (C{CLIENT PAUSE ... WRITE}) the
    moment a reaper claims a dead node (a keyspace notification), so the
    test can kill the reaper in the middle of its clean-up."""

    def __init__(self, redis: RedisServer) -> None:
        super().__init__(daemon=True)
        self.claimed = threading.Event()
        self.key: str | None = None
        self._listen = socket.create_connection(("127.0.0.1", redis.port))
        self._pauser = socket.create_connection(("127.0.0.1", redis.port))
        self._listen.sendall(_encode("PSUBSCRIBE", "__keyspace@0__:cluster:reap:*"))
        self._stream = self._listen.makefile("rb")
        _read_reply(self._stream)

    def run(self) -> None:
        while True:
            try:
                push = _read_reply(self._stream)
            except (OSError, ValueError):
                return
            channel, event = push[2], push[3]
            if event == "set" and not channel.endswith(":pending"):
                self._pauser.sendall(_encode("CLIENT", "PAUSE", "20000", "WRITE"))
                _read_reply(self._pauser.makefile("rb"))
                self.key = channel.split("__:", 1)[1]
                self.claimed.set()
                return

    def close(self) -> None:
        self._listen.close()
        self._pauser.close()


@pytest_twisted.ensureDeferred
async def test_a_reaper_that_dies_during_the_clean_up_leaves_it_to_another(
    cluster: Cluster, js: JsClients
) -> None:
    """Three processes; one is killed; the one that claims its clean-up is
    killed in the middle of it (Redis pauses writers the moment the claim is
    written). The last process cleans up both: every peer is told of both
    dead processes' users (those of the batch the first reaper had in hand
    may be told twice), and nothing of either stays in the store.

    If this breaks, a second crash during a clean-up (a host going down
    with two processes) leaves sockets bound and peers waiting forever.
    """
    env = dict(FAST, CLUSTER_REAP_BATCH="1")
    servers = [await cluster.start(**env) for _ in range(3)]
    rooms = await _pairs(js, cluster, 8, *servers)
    first_dead = servers[1]
    first_node = cluster.node_of(first_dead)
    assert first_node is not None
    cluster.key("CONFIG", "SET", "notify-keyspace-events", "K$")
    watcher = _PauseOnClaim(cluster.redis)
    watcher.start()
    try:
        cluster.kill(first_dead)
        claimed = Deferred.fromCoroutine(until(watcher.claimed.is_set, "a claim"))
        await claimed
        assert watcher.key == "cluster:reap:" + first_node
        reaper_node = cluster.key("GET", watcher.key)
        reaper = next(s for s in servers if cluster.node_of(s) == reaper_node)
        # The premise: the clean-up is under way, not finished.
        assert cluster.key("SCARD", "cluster:node:%s:sockets" % first_node) > 0
        cluster.kill(reaper)
        await ended_within(reaper.process, 10)
    finally:
        cluster.key("CLIENT", "UNPAUSE")
        cluster.key("CONFIG", "SET", "notify-keyspace-events", "")
        watcher.close()
    survivor_index = next(i for i, s in enumerate(servers) if s not in (first_dead, reaper))
    reaper_index = servers.index(reaper)
    gone_sids = []
    for i, members in enumerate(rooms):
        mine = "u%d-%d" % (i, survivor_index)
        expected = {members["u%d-1" % i], members["u%d-%d" % (i, reaper_index)]}
        gone_sids += sorted(expected)
        told: set[str] = set()
        while told != expected:
            told.add((await js.next(mine, "peer-disconnected", timeout_ms=20_000))["peerId"])
            assert told <= expected, told
    await until(
        lambda: _dead_node_is_gone(cluster, first_node, [])
        and cluster.key("HLEN", "cluster:heartbeats") == 1
        and all(cluster.key("EXISTS", "socket:" + sid) == 0 for sid in gone_sids),
        "both dead processes cleaned up",
    )
    assert cluster.key("EXISTS", "cluster:reap:%s:pending" % first_node) == 0
    for i, members in enumerate(rooms):
        survivor_sid = members["u%d-%d" % (i, survivor_index)]
        assert set(cluster.key("SMEMBERS", "room:crash-%d:sockets" % i)) == {survivor_sid}


@pytest_twisted.ensureDeferred
async def test_a_redis_outage_longer_than_the_timeout_reaps_no_one(
    cluster: Cluster, js: JsClients
) -> None:
    """Redis stops answering for 4 s (four times the node timeout): no
    process judges another dead, because none observes while it cannot beat
    itself; afterwards the peers still signal each other and nobody was
    told C{peer-disconnected}.

    If this breaks, every Redis hiccup or failover disconnects every user
    whose peer is on another process.
    """
    a = await cluster.start(**FAST)
    b = await cluster.start(**FAST)
    (members,) = await _pairs(js, cluster, 1, a, b)
    nodes = [cluster.node_of(a), cluster.node_of(b)]

    cluster.redis.pause()
    try:
        await task.deferLater(reactor, 4.0)  # the outage itself, not a wait for an event
    finally:
        cluster.redis.resume()
    resumed_ms = time.time() * 1000

    def beat_since_for_a_while() -> bool:
        beats = [cluster.key("HGET", "cluster:node:%s:info" % n, "beat_ms") for n in nodes]
        return all(b is not None and int(b) > resumed_ms + 2500 for b in beats)

    await until(beat_since_for_a_while, "both processes beating again for 2.5 s")
    assert [cluster.node_of(a), cluster.node_of(b)] == nodes
    await js.emit("u0-1", "offer", {"peerId": members["u0-0"], "offer": {"type": "offer", "sdp": "v=0"}})
    assert (await js.next("u0-0", "offer"))["from"] == members["u0-1"]
    await js.emit("u0-0", "answer", {"peerId": members["u0-1"], "answer": {"type": "answer", "sdp": "v=0"}})
    assert (await js.next("u0-1", "answer"))["from"] == members["u0-0"]
    for name in ("u0-0", "u0-1"):
        assert await js.received(name, "peer-disconnected") == []
    assert set(cluster.key("SMEMBERS", "room:crash-0:sockets")) == set(members.values())
