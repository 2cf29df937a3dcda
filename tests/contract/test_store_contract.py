"""The store contract: every L{IStore} behaviour, run against MemoryStore and RedisStore.

Both backends run for real (``backend`` fixture in ``tests/conftest.py``).
TTLs are checked by reading them back with C{ttl()}, never by waiting; the
rate window is driven by the C{now_ms} each call passes. A few tests that
need time to pass are memory-only (the clock is ours to advance), and a few
that read the raw key schema are Redis-only.
"""

from __future__ import annotations

import random

import attrs
import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock

from privydrop.store import keys
from privydrop.store.interface import JoinOutcome, LeaveResult, RateResult, RateWindow
from privydrop.store.memory import MemoryStore
from privydrop.store.redis import CREATE_ROOM, RedisStore
from tests.conftest import Backend
from tests.redis_server import RedisServer

NOW = 1_700_000_000_000
DAY = 86_400
ROOM_TTL = DAY
SOCKET_TTL = DAY + 3_600
EMPTY_TTL = 900


def assert_ttl(actual: int | None, expected: int) -> None:
    """Redis counts down in real time while the test runs: allow 2 s."""
    assert actual is not None, "key is missing"
    assert expected - 2 <= actual <= expected, (actual, expected)


def window(ip: str = "10.0.0.1", member: str = "m", limit: int = 2) -> RateWindow:
    return RateWindow(key_suffix=ip, member=member, window_ms=5_000, limit=limit, ttl_s=5)


def attrs_evolve(w: RateWindow, member: str) -> RateWindow:
    return attrs.evolve(w, member=member)


def gather(*coroutines: object) -> defer.Deferred[list[object]]:
    """Start every coroutine before waiting for any of them."""
    return defer.gatherResults(
        [defer.Deferred.fromCoroutine(c) for c in coroutines],  # type: ignore[arg-type]
        consumeErrors=True,
    )


async def join(
    backend: Backend,
    socket_id: str,
    room_id: str,
    rate: RateWindow | None = None,
    now_ms: int = NOW,
) -> JoinOutcome:
    result = await backend.store.join_room(
        socket_id, room_id, now_ms, ROOM_TTL, SOCKET_TTL, rate
    )
    return result.outcome


# -- rooms -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_created_room_exists_with_its_ttl(backend: Backend) -> None:
    """A room made by create_room can be found and lives 24 h; otherwise users get "room does not exist"."""
    store = backend.store
    assert not await store.room_exists("4821")
    assert await store.create_room("4821", NOW, ROOM_TTL) is True
    assert await store.room_exists("4821")
    assert_ttl(await store.ttl(keys.room("4821")), ROOM_TTL)
    # No member yet: Redis has no empty sets, and neither do we.
    assert await store.ttl(keys.room_sockets("4821")) is None


@pytest_twisted.ensureDeferred
async def test_creating_an_existing_room_is_refused_and_keeps_its_ttl(backend: Backend) -> None:
    """A second create of a taken id neither succeeds nor extends the room's life."""
    store = backend.store
    assert await store.create_room("7777", NOW, 100)
    assert await store.create_room("7777", NOW + 1, ROOM_TTL) is False
    assert_ttl(await store.ttl(keys.room("7777")), 100)


@pytest_twisted.ensureDeferred
async def test_concurrent_creates_of_one_id_have_exactly_one_winner(backend: Backend) -> None:
    """Two users picking the same id at once: only one of them may be told it was created."""
    results = await gather(
        backend.store.create_room("same", NOW, ROOM_TTL),
        backend.store.create_room("same", NOW, ROOM_TTL),
    )
    assert sorted(results) == [False, True]  # type: ignore[type-var]


@pytest_twisted.ensureDeferred
async def test_first_free_room_skips_taken_candidates(backend: Backend) -> None:
    """get_room hands out the first free id of a batch, and nothing when all are taken."""
    store = backend.store
    await store.create_room("1111", NOW, ROOM_TTL)
    assert await store.create_first_free_room(["1111", "2222", "3333"], NOW, 50) == "2222"
    assert await store.room_exists("2222")
    assert not await store.room_exists("3333")
    assert_ttl(await store.ttl(keys.room("2222")), 50)
    assert await store.create_first_free_room(["1111", "2222"], NOW, 50) is None
    assert await store.create_first_free_room([], NOW, 50) is None


@pytest_twisted.ensureDeferred
async def test_concurrent_allocations_never_share_an_id(backend: Backend) -> None:
    """Many simultaneous get_room calls: two users must never be given the same room."""
    pool = [f"{n:04d}" for n in range(10)]
    rng = random.Random(7)
    batches = [rng.sample(pool, 5) for _ in range(30)]
    results = await gather(
        *(backend.store.create_first_free_room(b, NOW, ROOM_TTL) for b in batches)
    )
    handed_out = [r for r in results if r is not None]
    assert len(handed_out) == len(set(handed_out))
    for batch, result in zip(batches, results):
        assert result is None or result in batch


@pytest_twisted.ensureDeferred
async def test_numeric_looking_ids_stay_strings(backend: Backend) -> None:
    """Room "0427" must come back as "0427" (not 427), or the user's room code changes."""
    store = backend.store
    assert await store.create_first_free_room(["0427"], NOW, ROOM_TTL) == "0427"
    await join(backend, "123", "0427")
    bound = await store.room_of_socket("123")
    assert bound == "0427" and isinstance(bound, str)
    members = await store.room_sockets("0427")
    assert members == {"123"}
    assert all(isinstance(m, str) for m in members)
    assert await store.leave_room("123", None, EMPTY_TTL) == LeaveResult("0427", 0)


ODD_IDS = [
    "héllo wörld",
    "日本語の部屋",
    "emoji 🎉",
    'quote " and \\ backslash',
    "1e5",
    "-0",
    "0x1F",
    "NaN",
    " ",
    "%s{}[]*?",
    "x" * 64,
]


@pytest.mark.parametrize("room_id", ODD_IDS)
@pytest_twisted.ensureDeferred
async def test_odd_room_ids_round_trip(backend: Backend, room_id: str) -> None:
    """Any valid id a user types works end to end, byte for byte."""
    store = backend.store
    assert await store.create_room(room_id, NOW, ROOM_TTL)
    assert await store.room_exists(room_id)
    result = await store.join_room("sid-1", room_id, NOW, ROOM_TTL, SOCKET_TTL, window(ip=room_id))
    assert result.outcome is JoinOutcome.JOINED
    assert result.bound_room == room_id
    assert await store.room_of_socket("sid-1") == room_id
    assert await store.room_sockets(room_id) == {"sid-1"}
    assert await store.leave_room("sid-1", room_id, EMPTY_TTL) == LeaveResult(room_id, 0)


# -- joining -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_join_binds_the_socket_and_refreshes_the_room(backend: Backend) -> None:
    """A join makes the socket a member and gives the room a fresh 24 h."""
    store = backend.store
    await store.create_room("room", NOW, 60)
    result = await store.join_room("s1", "room", NOW, ROOM_TTL, SOCKET_TTL, None)
    assert result.outcome is JoinOutcome.JOINED
    assert result.bound_room == "room"
    assert result.rate is None
    assert await store.room_of_socket("s1") == "room"
    assert await store.room_sockets("room") == {"s1"}
    assert_ttl(await store.ttl(keys.room("room")), ROOM_TTL)
    assert_ttl(await store.ttl(keys.room_sockets("room")), ROOM_TTL)
    assert_ttl(await store.ttl(keys.socket("s1")), SOCKET_TTL)


@pytest_twisted.ensureDeferred
async def test_join_of_a_missing_room_is_refused_without_writes(backend: Backend) -> None:
    """Joining a room that does not exist says so and leaves no binding behind."""
    store = backend.store
    assert await join(backend, "s1", "ghost") is JoinOutcome.NO_ROOM
    assert await store.room_of_socket("s1") is None
    assert await store.room_sockets("ghost") == set()
    assert not await store.room_exists("ghost")


@pytest_twisted.ensureDeferred
async def test_socket_in_one_room_cannot_join_another(backend: Backend) -> None:
    """A socket already in room A is told so when it asks for B, and stays in A only."""
    store = backend.store
    await store.create_room("A", NOW, ROOM_TTL)
    await store.create_room("B", NOW, ROOM_TTL)
    await join(backend, "s1", "A")
    result = await store.join_room("s1", "B", NOW, ROOM_TTL, SOCKET_TTL, window())
    assert result.outcome is JoinOutcome.OTHER_ROOM
    assert result.bound_room == "A"
    assert result.rate is None
    assert await store.room_sockets("B") == set()
    # Refused before the rate check: nothing was counted.
    assert await store.ttl(keys.join_rate("10.0.0.1")) is None


@pytest_twisted.ensureDeferred
async def test_rejoining_ones_own_room_skips_the_rate_limit(backend: Backend) -> None:
    """A reconnecting client re-sending join for its room is never rate limited."""
    store = backend.store
    await store.create_room("R", NOW, ROOM_TTL)
    first = await store.join_room("s1", "R", NOW, ROOM_TTL, SOCKET_TTL, window(member="a", limit=1))
    assert first.outcome is JoinOutcome.JOINED
    assert first.rate == RateResult(count=1, oldest_ms=NOW)
    for n in range(3):
        again = await store.join_room(
            "s1", "R", NOW + n, ROOM_TTL, SOCKET_TTL, window(member=f"r{n}", limit=1)
        )
        assert again.outcome is JoinOutcome.REJOINED
        assert again.rate is None
    after = await store.record_attempt(window(member="z", limit=1), NOW + 10)
    assert after.count == 2  # the rejoins were not counted
    assert await store.room_sockets("R") == {"s1"}


@pytest_twisted.ensureDeferred
async def test_rejoin_refreshes_room_and_socket_ttls(backend: Backend) -> None:
    """A rejoin keeps an active room (and the socket's binding) alive for another day."""
    store = backend.store
    await store.create_room("R", NOW, ROOM_TTL)
    await store.join_room("s1", "R", NOW, 100, 200, None)
    assert_ttl(await store.ttl(keys.room("R")), 100)
    result = await store.join_room("s1", "R", NOW, ROOM_TTL, SOCKET_TTL, None)
    assert result.outcome is JoinOutcome.REJOINED
    assert_ttl(await store.ttl(keys.room("R")), ROOM_TTL)
    assert_ttl(await store.ttl(keys.room_sockets("R")), ROOM_TTL)
    assert_ttl(await store.ttl(keys.socket("s1")), SOCKET_TTL)


@pytest_twisted.ensureDeferred
async def test_joins_over_the_limit_are_refused_and_counted(backend: Backend) -> None:
    """The third join from one IP in 5 s is refused; refused attempts still count."""
    store = backend.store
    await store.create_room("R", NOW, ROOM_TTL)
    outcomes = []
    for n in range(4):
        result = await store.join_room(
            f"s{n}", "R", NOW + n * 100, ROOM_TTL, SOCKET_TTL, window(member=f"m{n}")
        )
        outcomes.append((result.outcome, result.rate))
    assert outcomes == [
        (JoinOutcome.JOINED, RateResult(1, NOW)),
        (JoinOutcome.JOINED, RateResult(2, NOW)),
        (JoinOutcome.RATE_LIMITED, RateResult(3, NOW)),
        (JoinOutcome.RATE_LIMITED, RateResult(4, NOW)),
    ]
    assert await store.room_sockets("R") == {"s0", "s1"}
    assert await store.room_of_socket("s2") is None
    # Another IP has its own window.
    other = await store.join_room("t", "R", NOW, ROOM_TTL, SOCKET_TTL, window(ip="10.0.0.2"))
    assert other.outcome is JoinOutcome.JOINED


@pytest_twisted.ensureDeferred
async def test_rate_check_happens_before_the_room_check(backend: Backend) -> None:
    """Guessing room codes costs attempts: a missing room still counts (Node order)."""
    store = backend.store
    result = await store.join_room("s", "nope", NOW, ROOM_TTL, SOCKET_TTL, window())
    assert result.outcome is JoinOutcome.NO_ROOM
    assert result.rate == RateResult(1, NOW)


@pytest_twisted.ensureDeferred
async def test_concurrent_joins_from_one_ip_admit_exactly_the_limit(backend: Backend) -> None:
    """A burst of joins from one address lets exactly `limit` through, never more."""
    store = backend.store
    await store.create_room("R", NOW, ROOM_TTL)
    results = await gather(
        *(
            store.join_room(f"s{n}", "R", NOW, ROOM_TTL, SOCKET_TTL, window(member=f"m{n}"))
            for n in range(10)
        )
    )
    joined = [r for r in results if r.outcome is JoinOutcome.JOINED]  # type: ignore[attr-defined]
    assert len(joined) == 2
    assert len(await store.room_sockets("R")) == 2


@pytest_twisted.ensureDeferred
async def test_join_racing_the_last_leave_never_leaves_a_doomed_room(backend: Backend) -> None:
    """If one peer leaves as another joins, the room must not be left with the 15-minute TTL."""
    store = backend.store
    await store.create_room("R", NOW, ROOM_TTL)
    await join(backend, "old", "R")
    leave, joined = await gather(
        store.leave_room("old", None, EMPTY_TTL),
        store.join_room("new", "R", NOW, ROOM_TTL, SOCKET_TTL, None),
    )
    assert joined.outcome is JoinOutcome.JOINED  # type: ignore[attr-defined]
    assert leave.room_id == "R"  # type: ignore[attr-defined]
    assert await store.room_sockets("R") == {"new"}
    assert_ttl(await store.ttl(keys.room("R")), ROOM_TTL)
    assert_ttl(await store.ttl(keys.room_sockets("R")), ROOM_TTL)


# -- leaving -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_room_gets_the_empty_ttl_when_the_last_socket_leaves(backend: Backend) -> None:
    """An abandoned room disappears after 15 minutes, an occupied one does not."""
    store = backend.store
    await store.create_room("R", NOW, ROOM_TTL)
    await join(backend, "s1", "R")
    await join(backend, "s2", "R")
    assert await store.leave_room("s1", None, EMPTY_TTL) == LeaveResult("R", 1)
    assert_ttl(await store.ttl(keys.room("R")), ROOM_TTL)
    assert await store.room_of_socket("s1") is None
    assert await store.leave_room("s2", "R", EMPTY_TTL) == LeaveResult("R", 0)
    assert_ttl(await store.ttl(keys.room("R")), EMPTY_TTL)
    assert await store.ttl(keys.room_sockets("R")) is None
    assert await store.ttl(keys.socket("s2")) is None
    assert await store.room_exists("R")


@pytest_twisted.ensureDeferred
async def test_leaving_when_in_no_room_does_nothing(backend: Backend) -> None:
    """A disconnect of a socket that never joined changes nothing."""
    store = backend.store
    await store.create_room("R", NOW, ROOM_TTL)
    assert await store.leave_room("stranger", None, EMPTY_TTL) == LeaveResult(None, 0)
    assert_ttl(await store.ttl(keys.room("R")), ROOM_TTL)


@pytest_twisted.ensureDeferred
async def test_leaving_a_missing_room_writes_nothing(backend: Backend) -> None:
    """leave_room for a room that does not exist leaves the socket's real room alone."""
    store = backend.store
    await store.create_room("A", NOW, ROOM_TTL)
    await join(backend, "s1", "A")
    assert await store.leave_room("s1", "ghost", EMPTY_TTL) == LeaveResult(None, 0)
    assert await store.room_of_socket("s1") == "A"
    assert await store.room_sockets("A") == {"s1"}


@pytest_twisted.ensureDeferred
async def test_leaving_another_room_does_not_unbind_the_socket(backend: Backend) -> None:
    """A leave naming room B cannot kick a socket out of room A."""
    store = backend.store
    await store.create_room("A", NOW, ROOM_TTL)
    await store.create_room("B", NOW, ROOM_TTL)
    await join(backend, "s1", "A")
    await join(backend, "s2", "B")
    assert await store.leave_room("s1", "B", EMPTY_TTL) == LeaveResult("B", 1)
    assert await store.room_of_socket("s1") == "A"
    assert await store.room_sockets("A") == {"s1"}


@pytest_twisted.ensureDeferred
async def test_socket_can_join_again_after_leaving(backend: Backend) -> None:
    """After leaving, the same socket may join another room."""
    store = backend.store
    await store.create_room("A", NOW, ROOM_TTL)
    await store.create_room("B", NOW, ROOM_TTL)
    await join(backend, "s1", "A")
    await store.leave_room("s1", None, EMPTY_TTL)
    assert await join(backend, "s1", "B") is JoinOutcome.JOINED
    assert await store.room_of_socket("s1") == "B"


# -- rate windows --------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_rate_window_slides_with_time(backend: Backend) -> None:
    """Attempts older than the window stop counting, so a patient user gets through again."""
    store = backend.store
    w = window(ip="1.2.3.4")
    assert await store.record_attempt(attrs_evolve(w, "a"), NOW) == RateResult(1, NOW)
    assert await store.record_attempt(attrs_evolve(w, "b"), NOW + 1_000) == RateResult(2, NOW)
    assert_ttl(await store.ttl(keys.join_rate("1.2.3.4")), 5)
    # At exactly now - window the first attempt is out (inclusive bound, as in Node).
    assert await store.record_attempt(attrs_evolve(w, "c"), NOW + 5_000) == RateResult(
        2, NOW + 1_000
    )
    assert await store.record_attempt(attrs_evolve(w, "d"), NOW + 20_000) == RateResult(
        1, NOW + 20_000
    )


@pytest_twisted.ensureDeferred
async def test_attempts_in_the_same_millisecond_all_count(backend: Backend) -> None:
    """Distinct members make same-millisecond attempts count separately."""
    store = backend.store
    w = window()
    for n in range(3):
        result = await store.record_attempt(attrs_evolve(w, f"{NOW}-{n}"), NOW)
    assert result == RateResult(3, NOW)


# -- referrers -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_referrers_are_counted_per_day_up_to_the_cap(backend: Backend) -> None:
    """Known referrers keep counting once a day is full; new names are refused."""
    store = backend.store
    day = "2024-03-15"
    assert await store.track_referrer(day, "twitter", 30 * DAY, 2)
    assert await store.track_referrer(day, "producthunt", 30 * DAY, 2)
    assert await store.track_referrer(day, "spam", 30 * DAY, 2) is False
    assert await store.track_referrer(day, "twitter", 30 * DAY, 2)
    assert_ttl(await store.ttl(keys.referrers(day)), 30 * DAY)
    # The next day has its own cap.
    assert await store.track_referrer("2024-03-16", "spam", 30 * DAY, 2)


@pytest_twisted.ensureDeferred
async def test_refused_referrer_writes_nothing(backend: Backend) -> None:
    """With a cap of zero nothing is stored at all."""
    store = backend.store
    assert await store.track_referrer("2024-01-01", "x", 30 * DAY, 0) is False
    assert await store.ttl(keys.referrers("2024-01-01")) is None


# -- misc ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_ping_and_missing_key_ttl(backend: Backend) -> None:
    """A healthy store answers ping, and a missing key has no TTL (None)."""
    await backend.store.ping()
    assert await backend.store.ttl("room:nothing-here") is None


# -- memory only: time passes ---------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_memory_keys_expire_when_the_clock_passes_their_ttl(
    memory_store: MemoryStore, clock: Clock
) -> None:
    """Rooms really go away after their TTL (memory store, driven by the clock)."""
    store = memory_store
    backend = Backend("memory", store, clock)
    await store.create_room("R", NOW, ROOM_TTL)
    await join(backend, "s1", "R")
    await store.leave_room("s1", None, EMPTY_TTL)
    clock.advance(EMPTY_TTL - 1)
    assert await store.ttl(keys.room("R")) == 1
    assert await store.room_exists("R")
    clock.advance(1)
    assert not await store.room_exists("R")
    assert await join(backend, "s2", "R") is JoinOutcome.NO_ROOM
    # A freed id can be created again.
    assert await store.create_room("R", NOW, ROOM_TTL)


@pytest_twisted.ensureDeferred
async def test_memory_sweep_frees_keys_nobody_touches(
    memory_store: MemoryStore, clock: Clock
) -> None:
    """Without sweeping, one-off visitors' rate windows would pile up in memory."""
    store = memory_store
    for n in range(50):
        await store.record_attempt(window(ip=f"10.1.0.{n}"), NOW)
    await store.create_room("R", NOW, ROOM_TTL)
    assert store.key_count() == 51
    clock.advance(5)
    assert store.sweep() == 50
    assert store.key_count() == 1
    assert await store.room_exists("R")


# -- Redis only: the key schema shared with the Node backend ----------------------


@pytest_twisted.ensureDeferred
async def test_redis_keys_follow_the_node_schema(
    redis_store: RedisStore, redis_server: RedisServer, redis_db: int
) -> None:
    """Operators' scripts and Node processes read these exact keys and types."""
    server, db, store = redis_server, redis_db, redis_store
    await store.create_room("0427", NOW, ROOM_TTL)
    await store.join_room("sid", "0427", NOW, ROOM_TTL, SOCKET_TTL, window(ip="9.9.9.9"))
    await store.track_referrer("2024-03-15", "twitter", 30 * DAY, 10)
    await store.track_referrer("2024-03-15", "twitter", 30 * DAY, 10)
    assert server.command("HGET", "room:0427", "created_at", db=db) == str(NOW)
    assert server.command("TYPE", "room:0427:sockets", db=db) == "set"
    assert server.command("SMEMBERS", "room:0427:sockets", db=db) == ["sid"]
    assert server.command("GET", "socket:sid", db=db) == "0427"
    assert server.command("TYPE", "ratelimit:join:9.9.9.9", db=db) == "zset"
    assert server.command("ZRANGE", "ratelimit:join:9.9.9.9", 0, -1, "WITHSCORES", db=db) == [
        "m",
        str(NOW),
    ]
    assert server.command("HGET", "referrers:daily:2024-03-15", "twitter", db=db) == "2"


@pytest_twisted.ensureDeferred
async def test_redis_scripts_are_resent_after_a_script_flush(
    redis_store: RedisStore, redis_server: RedisServer
) -> None:
    """After Redis forgets its scripts (restart, SCRIPT FLUSH) operations keep working."""
    redis_server.command("SCRIPT", "FLUSH")
    assert await redis_store.create_room("R", NOW, ROOM_TTL)
    assert await redis_store.create_room("R", NOW, ROOM_TTL) is False
    assert redis_server.command("SCRIPT", "EXISTS", CREATE_ROOM.sha) == [1]
