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
from privydrop.store.interface import (
    JoinOutcome,
    LeaveResult,
    RateResult,
    RateWindow,
    ReapStatus,
    RoomProbe,
)
from privydrop.store.memory import MemoryStore
from privydrop.store.redis import CREATE_ROOM, RedisStore
from tests.conftest import Backend
from tests.redis_server import RedisServer

NOW = 1_700_000_000_000
DAY = 86_400
ROOM_TTL = DAY
SOCKET_TTL = DAY + 3_600
EMPTY_TTL = 900
NODE = "n1"


def assert_ttl(actual: int | None, expected: int) -> None:
    """Redis counts down in real time while the test runs: allow 2 s."""
    assert actual is not None, "key is missing"
    assert expected - 2 <= actual <= expected, (actual, expected)


def window(ip: str = "10.0.0.1", member: str = "m", limit: int = 2) -> RateWindow:
    return RateWindow(key_suffix=ip, member=member, window_ms=5_000, limit=limit, ttl_s=5)


def left(result: LeaveResult) -> tuple[str | None, int]:
    """The room a leave unbound from and how many members it kept."""
    return result.room_id, result.remaining


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
    node: str = NODE,
) -> JoinOutcome:
    result = await backend.store.join_room(
        socket_id, room_id, now_ms, ROOM_TTL, SOCKET_TTL, rate, node_id=node
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
    assert left(await store.leave_room("123", None, EMPTY_TTL)) == ("0427", 0)


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
    result = await store.join_room(
        "sid-1", room_id, NOW, ROOM_TTL, SOCKET_TTL, window(ip=room_id), node_id=NODE
    )
    assert result.outcome is JoinOutcome.JOINED
    assert result.bound_room == room_id
    assert await store.room_of_socket("sid-1") == room_id
    assert await store.room_sockets(room_id) == {"sid-1"}
    assert left(await store.leave_room("sid-1", room_id, EMPTY_TTL)) == (room_id, 0)


# -- joining -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_join_binds_the_socket_and_refreshes_the_room(backend: Backend) -> None:
    """A join makes the socket a member and gives the room a fresh 24 h."""
    store = backend.store
    await store.create_room("room", NOW, 60)
    result = await store.join_room(
        "s1", "room", NOW, ROOM_TTL, SOCKET_TTL, None, node_id=NODE
    )
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
    result = await store.join_room("s1", "B", NOW, ROOM_TTL, SOCKET_TTL, window(), node_id=NODE)
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
    first = await store.join_room(
        "s1", "R", NOW, ROOM_TTL, SOCKET_TTL, window(member="a", limit=1), node_id=NODE
    )
    assert first.outcome is JoinOutcome.JOINED
    assert first.rate == RateResult(count=1, oldest_ms=NOW)
    for n in range(3):
        again = await store.join_room(
            "s1", "R", NOW + n, ROOM_TTL, SOCKET_TTL, window(member=f"r{n}", limit=1),
            node_id=NODE,
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
    await store.join_room("s1", "R", NOW, 100, 200, None, node_id=NODE)
    assert_ttl(await store.ttl(keys.room("R")), 100)
    result = await store.join_room("s1", "R", NOW, ROOM_TTL, SOCKET_TTL, None, node_id=NODE)
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
            f"s{n}", "R", NOW + n * 100, ROOM_TTL, SOCKET_TTL, window(member=f"m{n}"),
            node_id=NODE,
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
    other = await store.join_room(
        "t", "R", NOW, ROOM_TTL, SOCKET_TTL, window(ip="10.0.0.2"), node_id=NODE
    )
    assert other.outcome is JoinOutcome.JOINED


@pytest_twisted.ensureDeferred
async def test_rate_check_happens_before_the_room_check(backend: Backend) -> None:
    """Guessing room codes costs attempts: a missing room still counts (Node order)."""
    store = backend.store
    result = await store.join_room("s", "nope", NOW, ROOM_TTL, SOCKET_TTL, window(), node_id=NODE)
    assert result.outcome is JoinOutcome.NO_ROOM
    assert result.rate == RateResult(1, NOW)


@pytest_twisted.ensureDeferred
async def test_concurrent_joins_from_one_ip_admit_exactly_the_limit(backend: Backend) -> None:
    """A burst of joins from one address lets exactly `limit` through, never more."""
    store = backend.store
    await store.create_room("R", NOW, ROOM_TTL)
    results = await gather(
        *(
            store.join_room(
                f"s{n}", "R", NOW, ROOM_TTL, SOCKET_TTL, window(member=f"m{n}"), node_id=NODE
            )
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
        store.join_room("new", "R", NOW, ROOM_TTL, SOCKET_TTL, None, node_id=NODE),
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
    assert left(await store.leave_room("s1", None, EMPTY_TTL)) == ("R", 1)
    assert_ttl(await store.ttl(keys.room("R")), ROOM_TTL)
    assert await store.room_of_socket("s1") is None
    assert left(await store.leave_room("s2", "R", EMPTY_TTL)) == ("R", 0)
    assert_ttl(await store.ttl(keys.room("R")), EMPTY_TTL)
    assert await store.ttl(keys.room_sockets("R")) is None
    assert await store.ttl(keys.socket("s2")) is None
    assert await store.room_exists("R")


@pytest_twisted.ensureDeferred
async def test_leaving_when_in_no_room_does_nothing(backend: Backend) -> None:
    """A disconnect of a socket that never joined changes nothing."""
    store = backend.store
    await store.create_room("R", NOW, ROOM_TTL)
    assert left(await store.leave_room("stranger", None, EMPTY_TTL)) == (None, 0)
    assert_ttl(await store.ttl(keys.room("R")), ROOM_TTL)


@pytest_twisted.ensureDeferred
async def test_leaving_a_missing_room_writes_nothing(backend: Backend) -> None:
    """leave_room for a room that does not exist leaves the socket's real room alone."""
    store = backend.store
    await store.create_room("A", NOW, ROOM_TTL)
    await join(backend, "s1", "A")
    assert left(await store.leave_room("s1", "ghost", EMPTY_TTL)) == (None, 0)
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
    assert left(await store.leave_room("s1", "B", EMPTY_TTL)) == ("B", 1)
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


# -- rooms that end, ghosts, nodes ------------------------------------------------


def end_room(backend: Backend, room_id: str) -> None:
    """Room C{room_id} ends the way its TTL ends it: its keys vanish while
    its sockets' bindings (which live an hour longer) stay.

    Memory: the clock passes the room TTL. Redis: the keys are deleted, as
    expiry (or a FLUSHALL followed by new bindings) would leave them.
    """
    if backend.kind == "memory":
        backend.clock.advance(ROOM_TTL)
        return
    assert backend.server is not None
    backend.server.command(
        "DEL", keys.room(room_id), keys.room_sockets(room_id), keys.room_nodes(room_id),
        db=backend.db,
    )


def drop_key(backend: Backend, key: str, member: str | None = None) -> None:
    """Delete a key (or one set member) behind the store's back, as a failed
    unbind or an expired key leaves the schema."""
    if backend.kind == "memory":
        store = backend.store
        assert isinstance(store, MemoryStore)
        if member is None:
            store._drop(key)
        else:
            store._srem(key, member)
        return
    assert backend.server is not None
    if member is None:
        backend.server.command("DEL", key, db=backend.db)
    else:
        backend.server.command("SREM", key, member, db=backend.db)


@pytest_twisted.ensureDeferred
async def test_join_answers_the_incarnation_and_the_members_with_their_nodes(
    backend: Backend,
) -> None:
    """Each node learns from the join itself who is in the room and where,
    so signaling can reach them without asking Redis again."""
    store = backend.store
    await store.create_room("R", NOW, ROOM_TTL)
    first = await store.join_room("s1", "R", NOW, ROOM_TTL, SOCKET_TTL, None, node_id="na")
    assert first.incarnation == NOW
    assert first.members == {"s1": "na"}
    second = await store.join_room("s2", "R", NOW, ROOM_TTL, SOCKET_TTL, None, node_id="nb")
    assert second.incarnation == NOW
    assert second.members == {"s1": "na", "s2": "nb"}
    assert_ttl(await store.ttl(keys.room_nodes("R")), ROOM_TTL)
    assert_ttl(await store.ttl(keys.node_sockets("na")), SOCKET_TTL)
    refused = await store.join_room("s3", "nope", NOW, ROOM_TTL, SOCKET_TTL, None, node_id="na")
    assert refused.incarnation is None and refused.members == {}


@pytest_twisted.ensureDeferred
async def test_binding_to_a_room_that_ended_is_no_binding(backend: Backend) -> None:
    """A room that ended is over even when its id is issued again: the old
    socket joins the new room like a fresh socket (counted by the rate
    limit), never as a member of the old one."""
    store = backend.store
    await store.create_room("R", NOW, ROOM_TTL)
    old = await store.join_room("old", "R", NOW, ROOM_TTL, SOCKET_TTL, None, node_id="na")
    end_room(backend, "R")
    assert await store.create_room("R", NOW + 5, ROOM_TTL)
    newcomer = await store.join_room("new", "R", NOW + 5, ROOM_TTL, SOCKET_TTL, None, node_id="nb")
    assert newcomer.members == {"new": "nb"}
    assert newcomer.incarnation == NOW + 5 != old.incarnation
    again = await store.join_room(
        "old", "R", NOW + 6, ROOM_TTL, SOCKET_TTL, window(member="x"), node_id="na",
        known_room="R", known_incarnation=old.incarnation,
    )
    assert again.outcome is JoinOutcome.JOINED
    assert again.rate == RateResult(1, NOW + 6)
    assert again.incarnation == NOW + 5
    assert again.members == {"new": "nb", "old": "na"}


@pytest_twisted.ensureDeferred
async def test_stale_binding_does_not_keep_a_socket_out_of_other_rooms(
    backend: Backend,
) -> None:
    """Whether the caller knows the old incarnation or not, a binding to an
    ended room neither refuses another room nor counts as a rejoin."""
    store = backend.store
    await store.create_room("R", NOW, ROOM_TTL)
    await store.join_room("a", "R", NOW, ROOM_TTL, SOCKET_TTL, None, node_id="na")
    await store.join_room("b", "R", NOW, ROOM_TTL, SOCKET_TTL, None, node_id="na")
    end_room(backend, "R")
    await store.create_room("S", NOW + 1, ROOM_TTL)
    await store.create_room("R", NOW + 2, ROOM_TTL)
    # "a" names what it knows; "b" does not (the membership decides).
    other = await store.join_room(
        "a", "S", NOW + 3, ROOM_TTL, SOCKET_TTL, None, node_id="na",
        known_room="R", known_incarnation=NOW,
    )
    assert other.outcome is JoinOutcome.JOINED
    same_id = await store.join_room("b", "R", NOW + 3, ROOM_TTL, SOCKET_TTL, window(), node_id="na")
    assert same_id.outcome is JoinOutcome.JOINED and same_id.rate is not None
    assert await store.room_sockets("R") == {"b"}


@pytest_twisted.ensureDeferred
async def test_rejoin_of_a_living_room_adds_a_missing_member_again(backend: Backend) -> None:
    """A socket whose binding is live (same incarnation) but which fell out
    of the member set is a member again after its rejoin, without a rate
    count."""
    store = backend.store
    await store.create_room("R", NOW, ROOM_TTL)
    await store.join_room("s1", "R", NOW, ROOM_TTL, SOCKET_TTL, None, node_id="na")
    await store.join_room("s2", "R", NOW, ROOM_TTL, SOCKET_TTL, None, node_id="na")
    drop_key(backend, keys.room_sockets("R"), "s1")
    result = await store.join_room(
        "s1", "R", NOW, ROOM_TTL, SOCKET_TTL, window(), node_id="na",
        known_room="R", known_incarnation=NOW,
    )
    assert result.outcome is JoinOutcome.REJOINED and result.rate is None
    assert await store.room_sockets("R") == {"s1", "s2"}


@pytest_twisted.ensureDeferred
async def test_ghost_members_are_pruned_so_an_emptied_room_expires(backend: Backend) -> None:
    """A member whose binding is gone is dropped when the room is touched,
    and the last real leave gives the room its 15 minutes, however often
    people joined meanwhile."""
    store = backend.store
    await store.create_room("R", NOW, ROOM_TTL)
    await store.join_room("ghost", "R", NOW, ROOM_TTL, SOCKET_TTL, None, node_id="na")
    drop_key(backend, keys.socket("ghost"))
    joined = await store.join_room("live", "R", NOW, ROOM_TTL, SOCKET_TTL, None, node_id="nb")
    assert joined.members == {"live": "nb"}
    assert await store.room_sockets("R") == {"live"}
    left_room = await store.leave_room("live", None, EMPTY_TTL)
    assert (left_room.remaining, left_room.removed, left_room.members) == (0, True, {})
    assert_ttl(await store.ttl(keys.room("R")), EMPTY_TTL)


@pytest_twisted.ensureDeferred
async def test_ghost_bound_to_another_room_is_pruned_too(backend: Backend) -> None:
    """A member whose binding names another room is not a member."""
    store = backend.store
    await store.create_room("A", NOW, ROOM_TTL)
    await store.create_room("B", NOW, ROOM_TTL)
    await store.join_room("s1", "A", NOW, ROOM_TTL, SOCKET_TTL, None, node_id="na")
    await store.join_room("s2", "A", NOW, ROOM_TTL, SOCKET_TTL, None, node_id="na")
    await store.leave_room("s1", None, EMPTY_TTL)
    await store.join_room("s1", "B", NOW, ROOM_TTL, SOCKET_TTL, None, node_id="na")
    if backend.kind == "redis":
        assert backend.server is not None
        backend.server.command("SADD", keys.room_sockets("A"), "s1", db=backend.db)
    else:
        assert isinstance(store, MemoryStore)
        store._sadd(keys.room_sockets("A"), "s1")
    result = await store.leave_room("s2", None, EMPTY_TTL)
    assert (result.remaining, result.members) == (0, {})


@pytest_twisted.ensureDeferred
async def test_leave_says_whether_it_removed_a_member(backend: Backend) -> None:
    """Only a leave that took a member out may be announced to the room:
    anyone can name a room id and an arbitrary socket id."""
    store = backend.store
    await store.create_room("R", NOW, ROOM_TTL)
    await store.join_room("s1", "R", NOW, ROOM_TTL, SOCKET_TTL, None, node_id="na")
    await store.join_room("s2", "R", NOW, ROOM_TTL, SOCKET_TTL, None, node_id="nb")
    outsider = await store.leave_room("made-up", "R", EMPTY_TTL)
    assert (outsider.room_id, outsider.removed, outsider.node) == ("R", False, None)
    assert outsider.members == {"s1": "na", "s2": "nb"}
    member = await store.leave_room("s1", "R", EMPTY_TTL)
    assert (member.room_id, member.removed, member.node) == ("R", True, "na")
    assert member.incarnation == NOW
    assert member.members == {"s2": "nb"}
    twice = await store.leave_room("s1", "R", EMPTY_TTL)
    assert twice.removed is False
    assert await store.room_of_socket("s1") is None


@pytest_twisted.ensureDeferred
async def test_leave_takes_the_socket_off_its_node(backend: Backend) -> None:
    """A socket that left is no longer one a dead node's clean-up would find."""
    store = backend.store
    await store.create_room("R", NOW, ROOM_TTL)
    await store.join_room("s1", "R", NOW, ROOM_TTL, SOCKET_TTL, None, node_id="na")
    await store.leave_room("s1", None, EMPTY_TTL)
    assert await store.ttl(keys.node_sockets("na")) is None
    assert await store.ttl(keys.room_nodes("R")) is None


@pytest_twisted.ensureDeferred
async def test_check_rooms_reports_ended_rooms_missing_members_and_members(
    backend: Backend,
) -> None:
    """One answer for all of a process's rooms: which ended (or were issued
    again), which of its sockets are no longer members, who is in them."""
    store = backend.store
    await store.create_room("A", NOW, ROOM_TTL)
    await store.create_room("B", NOW, ROOM_TTL)
    for sid, room, node in (("a1", "A", "na"), ("a2", "A", "nb"), ("b1", "B", "na")):
        await store.join_room(sid, room, NOW, ROOM_TTL, SOCKET_TTL, None, node_id=node)
    await store.leave_room("a1", "A", EMPTY_TTL)
    checks = await store.check_rooms(
        [RoomProbe("A", NOW, ("a1",)), RoomProbe("B", NOW, ("b1",)), RoomProbe("B", NOW - 1, ("b1",))]
    )
    assert [(c.room_id, c.alive, c.missing, dict(c.members)) for c in checks] == [
        ("A", True, frozenset({"a1"}), {"a2": "nb"}),
        ("B", True, frozenset(), {"b1": "na"}),
        ("B", False, frozenset(), {}),
    ]
    end_room(backend, "A")
    [ended] = await store.check_rooms([RoomProbe("A", NOW, ("a2",))])
    assert not ended.alive
    assert await store.check_rooms([]) == []


# -- heartbeats and the clean-up of a dead node -------------------------------------


async def _beat(backend: Backend, node: str, beat: str, name: str = "") -> None:
    answer = await backend.store.heartbeat(node, beat, {"name": name or node}, SOCKET_TTL)
    assert not answer.reaped


@pytest_twisted.ensureDeferred
async def test_heartbeat_answers_every_nodes_beat_and_name(backend: Backend) -> None:
    """Each node sees everyone's heartbeat (to judge it) and name (to find
    its own previous life at start-up)."""
    store = backend.store
    await _beat(backend, "na", "1", "host:3001")
    answer = await store.heartbeat("nb", "7", {"name": "host:3002", "pid": "42"}, SOCKET_TTL)
    assert not answer.reaped
    assert {n: (b.beat, b.name) for n, b in answer.nodes.items()} == {
        "na": ("1", "host:3001"),
        "nb": ("7", "host:3002"),
    }
    assert_ttl(await store.ttl(keys.HEARTBEATS), SOCKET_TTL)
    assert_ttl(await store.ttl(keys.node_info("nb")), SOCKET_TTL)


@pytest_twisted.ensureDeferred
async def test_only_one_judge_claims_a_dead_node_and_only_while_it_is_silent(
    backend: Backend,
) -> None:
    """Exactly one reaper: a second judge is refused, a node that beat since
    it was observed is not claimed, and a claim held by a dead judge can be
    taken over."""
    store = backend.store
    await _beat(backend, "dead", "5")
    assert not await store.claim_reap("dead", "j1", "4", 10_000, SOCKET_TTL)
    assert await store.claim_reap("dead", "j1", "5", 10_000, SOCKET_TTL)
    assert await store.claim_reap("dead", "j1", "5", 10_000, SOCKET_TTL)  # its own claim
    assert not await store.claim_reap("dead", "j2", "5", 10_000, SOCKET_TTL)
    assert await store.claim_reap("dead", "j2", "5", 10_000, SOCKET_TTL, takeover_from={"j1"})
    assert not await store.claim_reap("nobody", "j1", "1", 10_000, SOCKET_TTL)
    # The dead node learns at its next heartbeat that it was reaped.
    assert (await store.heartbeat("dead", "6", {}, SOCKET_TTL)).reaped


@pytest_twisted.ensureDeferred
async def test_reaping_unbinds_a_dead_nodes_sockets_in_batches(backend: Backend) -> None:
    """The dead node's sockets leave their rooms (emptied rooms get 15
    minutes), each with the members to tell; a batch stays pending until
    announced; at the end the node's keys are gone."""
    store = backend.store
    await store.create_room("A", NOW, ROOM_TTL)
    await store.create_room("B", NOW, ROOM_TTL)
    for sid, room, node in (("d1", "A", "dead"), ("d2", "A", "dead"), ("live", "A", "na"),
                            ("d3", "B", "dead")):
        await store.join_room(sid, room, NOW, ROOM_TTL, SOCKET_TTL, None, node_id=node)
    await _beat(backend, "dead", "1")
    assert await store.claim_reap("dead", "na", "1", 10_000, SOCKET_TTL)

    async def step(ack: bool) -> tuple[ReapStatus, dict[str, tuple[str, int, dict[str, str]]]]:
        batch = await store.reap_node(
            "dead", "na", batch=2, ack=ack, empty_ttl_s=EMPTY_TTL, claim_ttl_ms=10_000,
            pending_ttl_s=SOCKET_TTL,
        )
        return batch.status, {
            s.socket_id: (s.room_id, s.incarnation, dict(s.members)) for s in batch.sockets
        }

    status, first = await step(ack=False)
    assert status is ReapStatus.BATCH and len(first) == 2
    # Not acknowledged (the reaper died before telling the peers): again.
    assert await step(ack=False) == (ReapStatus.BATCH, first)
    status, second = await step(ack=True)
    assert status is ReapStatus.BATCH and len(second) == 1
    reaped = {**first, **second}
    assert set(reaped) == {"d1", "d2", "d3"}
    assert reaped["d3"] == ("B", NOW, {})
    assert reaped["d1"][0] == "A" and "live" in reaped["d1"][2]
    assert await step(ack=True) == (ReapStatus.DONE, {})
    assert await store.room_sockets("A") == {"live"}
    assert await store.room_of_socket("d1") is None
    assert_ttl(await store.ttl(keys.room("B")), EMPTY_TTL)
    assert_ttl(await store.ttl(keys.room("A")), ROOM_TTL)
    for key in (keys.node_sockets("dead"), keys.node_info("dead"), keys.reap_claim("dead"),
                keys.reap_pending("dead")):
        assert await store.ttl(key) is None, key
    answer = await store.heartbeat("na", "1", {}, SOCKET_TTL)
    assert set(answer.nodes) == {"na"}
    # Without the claim nothing is done.
    lost = await store.reap_node(
        "dead", "na", batch=2, ack=False, empty_ttl_s=EMPTY_TTL, claim_ttl_ms=10_000,
        pending_ttl_s=SOCKET_TTL,
    )
    assert lost.status is ReapStatus.LOST


@pytest_twisted.ensureDeferred
async def test_reaping_leaves_alone_a_socket_held_by_another_node(backend: Backend) -> None:
    """A socket id in a dead node's set whose room records another node (or
    that is no longer bound) is not unbound."""
    store = backend.store
    await store.create_room("R", NOW, ROOM_TTL)
    await store.join_room("s1", "R", NOW, ROOM_TTL, SOCKET_TTL, None, node_id="dead")
    await store.join_room("s1", "R", NOW, ROOM_TTL, SOCKET_TTL, None, node_id="na")
    await _beat(backend, "dead", "1")
    assert await store.claim_reap("dead", "na", "1", 10_000, SOCKET_TTL)
    batch = await store.reap_node(
        "dead", "na", batch=10, ack=False, empty_ttl_s=EMPTY_TTL, claim_ttl_ms=10_000,
        pending_ttl_s=SOCKET_TTL,
    )
    assert batch.status is ReapStatus.BATCH and batch.sockets == ()
    assert await store.room_sockets("R") == {"s1"}


@pytest_twisted.ensureDeferred
async def test_a_stopping_node_deregisters_only_without_bound_sockets(backend: Backend) -> None:
    """A clean stop removes the node from the heartbeats, unless sockets it
    bound are still bound: then others must judge it dead and reap them."""
    store = backend.store
    await store.create_room("R", NOW, ROOM_TTL)
    await store.join_room("s1", "R", NOW, ROOM_TTL, SOCKET_TTL, None, node_id="na")
    await _beat(backend, "na", "1")
    assert not await store.deregister_node("na")
    await store.leave_room("s1", None, EMPTY_TTL)
    assert await store.deregister_node("na")
    assert await store.ttl(keys.node_info("na")) is None
    assert (await store.heartbeat("nb", "1", {}, SOCKET_TTL)).nodes.keys() == {"nb"}


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
    await store.join_room(
        "sid", "0427", NOW, ROOM_TTL, SOCKET_TTL, window(ip="9.9.9.9"), node_id=NODE
    )
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


# -- connection state recovery across processes ---------------------------------------

PID = "s1." + "ab" * 16


async def _recoverable(backend: Backend) -> None:
    store = backend.store
    await store.create_room("R", NOW, ROOM_TTL)
    for sid, node, pid in (("s1", "x", PID), ("s2", "y", "s2." + "cd" * 16)):
        await store.join_room(sid, "R", NOW, ROOM_TTL, SOCKET_TTL, None, node_id=node, pid=pid)


@pytest_twisted.ensureDeferred
async def test_a_claim_moves_a_recoverable_socket_to_the_claiming_node_once(
    backend: Backend,
) -> None:
    """A client back on node z with its pid: the socket is recorded on z, its
    window stops, and the answer names its room, old node and members."""
    store = backend.store
    await _recoverable(backend)
    await store.set_recovery_deadline("s1", NOW + 1000)
    assert not (await store.claim_recovery("s1", "s1." + "00" * 16, "z", SOCKET_TTL)).claimed
    claim = await store.claim_recovery("s1", PID, "z", SOCKET_TTL)
    assert claim.claimed and claim.was_waiting
    assert (claim.room_id, claim.old_node) == ("R", "x")
    assert claim.incarnation == NOW
    assert dict(claim.members) == {"s1": "z", "s2": "y"}
    # The deadline went with the claim: nobody ends the socket now.
    assert await store.take_due_recoveries(NOW + 5000, 10) == []
    again = await store.claim_recovery("s1", PID, "w", SOCKET_TTL)
    assert again.old_node == "z" and not again.was_waiting


@pytest_twisted.ensureDeferred
async def test_a_socket_that_left_cannot_be_claimed(backend: Backend) -> None:
    store = backend.store
    await _recoverable(backend)
    await store.set_recovery_deadline("s1", NOW + 1000)
    await store.leave_room("s1", None, EMPTY_TTL)
    assert not (await store.claim_recovery("s1", PID, "z", SOCKET_TTL)).claimed
    assert await store.take_due_recoveries(NOW + 5000, 10) == []


@pytest_twisted.ensureDeferred
async def test_a_leave_naming_another_room_keeps_the_sockets_recovery(backend: Backend) -> None:
    """A leave of room Q naming a socket that sits in room R (anyone may ask
    POST /api/leave_room for any socket id) unbinds nothing, so it must not
    take the socket's recovery either: it can still be claimed, and its
    deadline still ends it."""
    store = backend.store
    await _recoverable(backend)
    await store.create_room("Q", NOW, ROOM_TTL)
    await store.set_recovery_deadline("s1", NOW + 1000)
    await store.leave_room("s1", "Q", EMPTY_TTL)
    assert await store.room_of_socket("s1") == "R"
    assert await store.take_due_recoveries(NOW + 5000, 10) == ["s1"]
    assert (await store.claim_recovery("s1", PID, "z", SOCKET_TTL)).claimed


@pytest_twisted.ensureDeferred
async def test_each_deadline_is_taken_exactly_once(backend: Backend) -> None:
    """The holder's timer and every node's sweep race for a deadline: one wins."""
    store = backend.store
    await store.set_recovery_deadline("s1", NOW + 1000)
    await store.set_recovery_deadline("s2", NOW + 3000)
    assert await store.take_due_recoveries(NOW + 2000, 10) == ["s1"]
    assert await store.take_due_recoveries(NOW + 2000, 10) == []
    assert await store.take_recovery_deadline("s2")
    assert not await store.take_recovery_deadline("s2")


@pytest_twisted.ensureDeferred
async def test_the_reaper_keeps_recoverable_sockets_of_a_dead_node(backend: Backend) -> None:
    """A dead node's recoverable socket is not unbound: the reaper holds it,
    with a deadline from detection, and its peers are not to be told."""
    store = backend.store
    await _recoverable(backend)
    await _beat(backend, "x", "1")
    assert await store.claim_reap("x", "y", "1", 10_000, SOCKET_TTL)
    batch = await store.reap_node(
        "x", "y", batch=10, ack=False, empty_ttl_s=EMPTY_TTL, claim_ttl_ms=10_000,
        pending_ttl_s=SOCKET_TTL, now_ms=NOW, recovery_window_ms=5000,
    )
    assert batch.sockets == ()
    [kept] = batch.kept
    assert (kept.socket_id, kept.pid, kept.deadline_ms) == ("s1", PID, NOW + 5000)
    assert dict(kept.members) == {"s1": "y", "s2": "y"}
    assert await store.room_of_socket("s1") == "R"
    claim = await store.claim_recovery("s1", PID, "z", SOCKET_TTL)
    assert claim.claimed and claim.old_node == "y"
