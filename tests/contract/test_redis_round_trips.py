"""How many times the Redis store talks to Redis, seen from Redis itself.

A Redis ``MONITOR`` connection lists every command the server executes, in
order; commands run inside a Lua script are listed too, marked ``lua``, so
the client's own commands (its round trips) and the script's inner work can
be told apart, which ``INFO commandstats`` cannot. Each test runs one room
operation through L{Rooms} over a real L{RedisStore}, then a ``PING`` as an
end marker on the same connection, and reads what Redis saw in between.

Also here: pipelining. Many commands share one connection, and every caller
still gets the answer to its own command.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from privydrop.redis.resp import ReplyParser, encode_command
from privydrop.rooms import Rooms
from privydrop.settings import RoomSettings
from privydrop.store.interface import JoinOutcome, RoomProbe
from privydrop.store.redis import RedisStore
from tests.conftest import redis_settings
from tests.redis_server import RedisServer

#: Longest wait for Redis to report what it executed; a failure, not a hang.
WAIT_S = 10.0


class Monitor(Protocol):
    """A ``MONITOR`` connection: collects the lines Redis reports."""

    def __init__(self) -> None:
        self._parser = ReplyParser()
        self.lines: list[str] = []
        self._waiters: list[tuple[Callable[[], bool], Deferred[None]]] = []
        self.started: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(encode_command(("MONITOR",)))

    def dataReceived(self, data: bytes) -> None:
        for reply in self._parser.feed(data):
            if reply == "OK" and not self.started.called:
                self.started.callback(None)
                continue
            self.lines.append(reply)
            for waiter in list(self._waiters):
                condition, d = waiter
                if condition():
                    self._waiters.remove(waiter)
                    d.callback(None)

    def wait_for(self, condition: Callable[[], bool]) -> Deferred[None]:
        """Fires once C{condition()} holds (checked now and on every new line)."""
        d: Deferred[None] = Deferred()
        if condition():
            d.callback(None)
        else:
            self._waiters.append((condition, d))
        return d.addTimeout(WAIT_S, reactor)


def command_of(line: str) -> tuple[bool, str]:
    """C{(inside_script, COMMAND)} of one MONITOR line.

    Lines look like ``1700000000.123456 [9 127.0.0.1:5555] "EVALSHA" "..."``,
    with ``[9 lua]`` for commands a script ran.
    """
    source, _, rest = line.partition("] ")
    name = rest.split(" ", 1)[0].strip('"').upper()
    return source.endswith(" lua"), name


@pytest_twisted.async_yield_fixture
async def watched(
    redis_server: RedisServer, redis_db: int
) -> AsyncIterator[tuple[RedisStore, Rooms, Callable[[], Deferred[list[tuple[bool, str]]]]]]:
    """A store, its L{Rooms}, and C{seen()}: what Redis executed since the last C{seen()}."""
    store = RedisStore(redis_settings(redis_server, db=redis_db), reactor)
    await store.connect()
    rooms = Rooms(store, RoomSettings(), reactor)
    monitor = Monitor()
    protocol = await connectProtocol(
        TCP4ClientEndpoint(reactor, redis_server.host, redis_server.port), monitor
    )
    await monitor.started.addTimeout(WAIT_S, reactor)
    marks = [0]

    async def seen_now() -> list[tuple[bool, str]]:
        # PING from the store itself marks the end: Redis runs a
        # connection's commands in order, and the store pipelines on its
        # first connection while fewer than PIPELINE_DEPTH replies are owed.
        await store.ping()
        start = marks[0]

        def pings() -> list[int]:
            return [
                i
                for i in range(start, len(monitor.lines))
                if command_of(monitor.lines[i]) == (False, "PING")
            ]

        await monitor.wait_for(lambda: bool(pings()))
        end = pings()[0]
        marks[0] = end + 1
        return [command_of(line) for line in monitor.lines[start:end]]

    def seen() -> Deferred[list[tuple[bool, str]]]:
        return Deferred.fromCoroutine(seen_now())

    try:
        await seen()  # everything before the test's own operation
        yield store, rooms, seen
    finally:
        protocol.transport.loseConnection()
        await store.close()


def round_trips(commands: list[tuple[bool, str]]) -> list[str]:
    """The commands the client sent (each one request and one reply)."""
    return [name for in_script, name in commands if not in_script]


@pytest_twisted.ensureDeferred
async def test_a_successful_join_is_one_round_trip_to_redis(watched: Any) -> None:
    """Joining a room costs the server one exchange with Redis (one atomic
    script), however much the join checks and writes; with many users
    joining at once, that is what keeps the store from becoming the queue."""
    _store, rooms, seen = watched
    await rooms.create("room-1")
    await seen()
    decision = await rooms.join("sock-1", "room-1", "203.0.113.1")
    assert decision.outcome is JoinOutcome.JOINED
    commands = await seen()
    assert round_trips(commands) == ["EVALSHA"]
    inner = [name for in_script, name in commands if in_script]
    # The rate window, the room's incarnation, the ghost check, the binding,
    # the node records and the TTL refreshes ran inside it.
    assert {"ZADD", "GET", "HGET", "SMEMBERS", "SET", "SADD", "HSET", "EXPIRE"} <= set(inner)


@pytest_twisted.ensureDeferred
async def test_join_refusals_and_leaving_are_one_round_trip_each(watched: Any) -> None:
    """The other outcomes of a join, and the disconnect clean-up, are single
    exchanges too."""
    _store, rooms, seen = watched
    assert (await rooms.join("sock-1", "nowhere", "203.0.113.1")).outcome is JoinOutcome.NO_ROOM
    assert round_trips(await seen()) == ["EVALSHA"]
    await rooms.create("room-1")
    await rooms.create("room-2")
    await rooms.join("sock-1", "room-1", "203.0.113.1")
    await seen()
    refused = await rooms.join("sock-1", "room-2", "203.0.113.1")
    assert refused.outcome is JoinOutcome.OTHER_ROOM
    assert round_trips(await seen()) == ["EVALSHA"]
    left = await rooms.leave("sock-1")
    assert left.room_id == "room-1"
    assert round_trips(await seen()) == ["EVALSHA"]


@pytest_twisted.ensureDeferred
async def test_rejoining_after_a_room_ended_and_checking_rooms_are_one_round_trip_each(
    watched: Any, redis_server: RedisServer, redis_db: int
) -> None:
    """A join that finds its binding stale (the room ended and its id was
    issued again) is still one exchange, and so is the periodic check of
    every room a process's sockets are in."""
    _store, rooms, seen = watched
    await rooms.create("room-1")
    first = await rooms.join("sock-1", "room-1", "203.0.113.1")
    assert first.incarnation is not None
    redis_server.command("DEL", "room:room-1", "room:room-1:sockets", db=redis_db)
    # The id issued again, later: a room's incarnation is its creation time
    # in ms, and a re-creation within the same millisecond would be taken
    # for the same room.
    redis_server.command(
        "HSET", "room:room-1", "created_at", str(first.incarnation + 1), db=redis_db
    )
    await seen()
    again = await rooms.join("sock-1", "room-1", "203.0.113.1", known=("room-1", first.incarnation))
    assert again.outcome is JoinOutcome.JOINED
    assert round_trips(await seen()) == ["EVALSHA"]
    checks = await rooms.check(
        [RoomProbe("room-1", first.incarnation, ("sock-1",)), RoomProbe("room-2", 1, ("x",))]
    )
    assert again.incarnation == first.incarnation + 1
    assert [c.alive for c in checks] == [False, False]
    assert round_trips(await seen()) == ["EVALSHA"]


@pytest_twisted.ensureDeferred
async def test_rest_operations_are_one_round_trip_each(watched: Any) -> None:
    """create_room, check_room and get_room each ask Redis once (get_room
    once per batch of candidate ids, and the first batch almost always has
    a free one)."""
    _store, rooms, seen = watched
    await rooms.create("abcdefgh")
    assert round_trips(await seen()) == ["EVALSHA"]
    assert not await rooms.is_available("abcdefgh")
    assert round_trips(await seen()) == ["HEXISTS"]
    room_id = await rooms.allocate()
    assert len(room_id) == 4
    assert round_trips(await seen()) == ["EVALSHA"]


@pytest_twisted.ensureDeferred
async def test_many_commands_share_a_connection_and_each_gets_its_own_answer(
    redis_server: RedisServer, redis_db: int
) -> None:
    """Hundreds of users joining at once on a single connection are all
    answered, each with its own room: replies are matched to commands in
    order, never swapped."""
    store = RedisStore(redis_settings(redis_server, db=redis_db, pool_size=1), reactor)
    await store.connect()
    try:
        count = 300
        await gatherResults(
            [Deferred.fromCoroutine(store.create_room(f"r{i}", 1, 3600)) for i in range(count)]
        )
        joins = [
            Deferred.fromCoroutine(
                store.join_room(f"s{i}", f"r{i}", 1, 3600, 7200, None, node_id="n")
            )
            for i in range(count)
        ]
        # All of them are on the wire before the first answer is read: none
        # waits for a free connection (the pool used to carry one command
        # per connection at a time, and a burst of joins queued behind it
        # until it hit the command timeout).
        assert store.pool.replies_owed == count
        results = await gatherResults(joins)
        assert [r.bound_room for r in results] == [f"r{i}" for i in range(count)]
        assert all(r.outcome is JoinOutcome.JOINED for r in results)
        owners = await gatherResults(
            [Deferred.fromCoroutine(store.room_of_socket(f"s{i}")) for i in range(count)]
        )
        assert owners == [f"r{i}" for i in range(count)]
    finally:
        await store.close()
