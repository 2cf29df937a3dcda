"""Room rules over the memory store, on a fake clock, with seeded random sources."""

from __future__ import annotations

import random

import pytest
import pytest_twisted
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from privydrop.rooms import (
    CreateOutcome,
    InvalidRoomId,
    JoinOutcome,
    RoomIdsExhausted,
    Rooms,
)
from privydrop.settings import RoomSettings
from privydrop.store import keys
from privydrop.store.interface import LeaveResult
from privydrop.store.memory import MemoryStore

START = 1_700_000_000.0  # seconds since the epoch


class Always0:
    """A random source that always picks the first choice: every batch is one id."""

    def choice(self, seq: str) -> str:
        return seq[0]

    def random(self) -> float:
        return 0.5


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.advance(START)
    return clock


@pytest.fixture
def store(clock: Clock) -> MemoryStore:
    return MemoryStore(clock)


@pytest.fixture
def rooms(store: MemoryStore, clock: Clock) -> Rooms:
    return Rooms(store, RoomSettings(), clock, rng=random.Random(42))


# -- create ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_create_makes_a_room_that_lives_a_day(rooms: Rooms, store: MemoryStore) -> None:
    """create_room answers as Node did and the room lasts 24 h."""
    outcome = await rooms.create("4821")
    assert outcome is CreateOutcome.CREATED
    assert (outcome.success, outcome.message) == (True, "create room success")
    assert await store.ttl(keys.room("4821")) == 24 * 3600


@pytest_twisted.ensureDeferred
async def test_creating_a_taken_short_id_is_refused(rooms: Rooms) -> None:
    """Two users cannot share a short room code."""
    await rooms.create("4821")
    outcome = await rooms.create("4821")
    assert outcome is CreateOutcome.EXISTS
    assert (outcome.success, outcome.message) == (False, "roomId is already exists")


@pytest_twisted.ensureDeferred
async def test_long_ids_may_be_created_again_without_extending_the_room(
    rooms: Rooms, store: MemoryStore, clock: Clock
) -> None:
    """A client reconnecting with its long id is told to go ahead; only a join refreshes the TTL."""
    await rooms.create("long-id-1")
    clock.advance(3600)
    outcome = await rooms.create("long-id-1")
    assert outcome is CreateOutcome.REJOIN_ALLOWED
    assert (outcome.success, outcome.message) == (True, "room exists (rejoin allowed)")
    assert await store.ttl(keys.room("long-id-1")) == 23 * 3600
    # Seven characters is still "short".
    await rooms.create("1234567")
    assert await rooms.create("1234567") is CreateOutcome.EXISTS


@pytest_twisted.ensureDeferred
async def test_invalid_ids_are_refused_before_the_store(rooms: Rooms, store: MemoryStore) -> None:
    """A bad id is a 400, and nothing is written for it."""
    for bad in ("", "abc:sockets", "x" * 65, "tab\there"):
        with pytest.raises(InvalidRoomId):
            await rooms.create(bad)
        with pytest.raises(InvalidRoomId):
            await rooms.is_available(bad)
        with pytest.raises(InvalidRoomId):
            await rooms.join("s", bad, "1.2.3.4")
        with pytest.raises(InvalidRoomId):
            await rooms.leave("s", bad)
    assert store.key_count() == 0


# -- allocate ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_allocate_creates_a_four_digit_room(rooms: Rooms, store: MemoryStore) -> None:
    """get_room gives a fresh four-digit code that is already a room."""
    room_id = await rooms.allocate()
    assert len(room_id) == 4 and room_id.isdigit()
    assert await store.room_exists(room_id)
    assert not await rooms.is_available(room_id)


@pytest_twisted.ensureDeferred
async def test_allocate_falls_back_to_letters_when_digits_are_crowded(
    store: MemoryStore, clock: Clock
) -> None:
    """With every four-digit code taken, users still get a room (four letters/digits)."""
    for n in range(10_000):
        await store.create_room(f"{n:04d}", 0, 3600)
    rooms = Rooms(store, RoomSettings(), clock, rng=random.Random(9))
    with capturedLogs() as events:
        room_id = await rooms.allocate()
    assert len(room_id) == 4 and not room_id.isdigit()
    assert await store.room_exists(room_id)
    warnings = [e for e in events if e.get("kind") == "numeric"]
    assert warnings and warnings[0]["count"] == 10


@pytest_twisted.ensureDeferred
async def test_allocate_reports_exhaustion_when_every_candidate_is_taken(
    store: MemoryStore, clock: Clock
) -> None:
    """When no free id is found the API can answer 503 instead of looping for ever."""
    rooms = Rooms(store, RoomSettings(), clock, rng=Always0())
    assert await rooms.allocate() == "0000"
    assert await rooms.allocate() == "AAAA"
    with pytest.raises(RoomIdsExhausted):
        await rooms.allocate()


@pytest_twisted.ensureDeferred
async def test_allocate_tries_the_configured_number_of_candidates(
    store: MemoryStore, clock: Clock
) -> None:
    """numeric_id_attempts bounds the digit batch: with 0 attempts only letters are tried."""
    settings = RoomSettings(numeric_id_attempts=0, alphanumeric_id_attempts=1)
    rooms = Rooms(store, settings, clock, rng=random.Random(1))
    room_id = await rooms.allocate()
    assert not room_id.isdigit()
    none_at_all = Rooms(
        store, RoomSettings(numeric_id_attempts=0, alphanumeric_id_attempts=0), clock
    )
    with pytest.raises(RoomIdsExhausted):
        await none_at_all.allocate()


# -- join --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_join_messages_match_the_node_backend(rooms: Rooms) -> None:
    """The joinResponse texts are what the web client already shows and parses."""
    await rooms.create("AAAA")
    await rooms.create("BBBB")
    joined = await rooms.join("s1", "AAAA", "1.1.1.1")
    assert joined.success and joined.newly_bound
    assert joined.message == "Successfully joined room"
    again = await rooms.join("s1", "AAAA", "1.1.1.1")
    assert again.outcome is JoinOutcome.REJOINED
    assert again.success and not again.newly_bound
    assert again.message == "Successfully joined room"
    other = await rooms.join("s1", "BBBB", "1.1.1.1")
    assert not other.success
    assert other.message == "Socket is already bound to another room"
    assert other.bound_room == "AAAA"
    missing = await rooms.join("s2", "CCCC", "2.2.2.2")
    assert not missing.success
    assert missing.message == "Room does not exist"


@pytest_twisted.ensureDeferred
async def test_rate_limit_message_uses_node_arithmetic(rooms: Rooms, clock: Clock) -> None:
    """A third join within 5 s says exactly when to retry, rounded up like Node."""
    await rooms.create("ROOM")
    assert (await rooms.join("a", "ROOM", "9.9.9.9")).success
    clock.advance(1.2)
    assert (await rooms.join("b", "ROOM", "9.9.9.9")).success
    clock.advance(1.3)
    refused = await rooms.join("c", "ROOM", "9.9.9.9")
    assert refused.outcome is JoinOutcome.RATE_LIMITED
    assert not refused.success
    # oldest at t0, now t0 + 2.5 s: ceil((5000 - 2500) / 1000) = 3
    assert refused.message == "Rate limit exceeded. Try again in 3s. Attempts left: 0."
    assert refused.rate is not None and not refused.rate.allowed
    clock.advance(2.5)  # t0 + 5 s: the first attempt left the window
    late = await rooms.join("d", "ROOM", "9.9.9.9")
    assert late.outcome is JoinOutcome.RATE_LIMITED  # b, c, d are in the window
    clock.advance(3)
    assert (await rooms.join("e", "ROOM", "9.9.9.9")).success


@pytest_twisted.ensureDeferred
async def test_successful_join_reports_remaining_attempts(rooms: Rooms) -> None:
    """The rate verdict of a successful join is available for logging and headers."""
    await rooms.create("ROOM")
    decision = await rooms.join("a", "ROOM", "8.8.8.8")
    assert decision.rate is not None
    assert (decision.rate.allowed, decision.rate.remaining, decision.rate.reset_after_s) == (
        True,
        1,
        5,
    )


@pytest_twisted.ensureDeferred
async def test_join_rate_limit_can_be_switched_off(store: MemoryStore, clock: Clock) -> None:
    """With the limit disabled (tests, trusted deployments) bursts of joins all succeed."""
    rooms = Rooms(store, RoomSettings(join_rate_limit_enabled=False), clock)
    await rooms.create("ROOM")
    for n in range(10):
        decision = await rooms.join(f"s{n}", "ROOM", "7.7.7.7")
        assert decision.success and decision.rate is None
    assert await store.ttl(keys.join_rate("7.7.7.7")) is None


@pytest_twisted.ensureDeferred
async def test_join_refreshes_the_room_and_binds_with_the_longer_socket_ttl(
    rooms: Rooms, store: MemoryStore, clock: Clock
) -> None:
    """Active rooms stay alive; the socket binding outlives the room by an hour."""
    await rooms.create("ROOM")
    clock.advance(5 * 3600)
    await rooms.join("s1", "ROOM", "1.1.1.1")
    assert await store.ttl(keys.room("ROOM")) == 24 * 3600
    assert await store.ttl(keys.socket("s1")) == 25 * 3600
    assert await rooms.room_of("s1") == "ROOM"
    assert await rooms.members("ROOM") == {"s1"}


# -- leave -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_last_leave_gives_the_room_fifteen_minutes(
    rooms: Rooms, store: MemoryStore, clock: Clock
) -> None:
    """An emptied room can still be re-entered for 15 minutes, then it is gone."""
    await rooms.create("ROOM")
    await rooms.join("s1", "ROOM", "1.1.1.1")
    await rooms.join("s2", "ROOM", "2.2.2.2")
    first = await rooms.leave("s1")
    assert (first.room_id, first.remaining, first.removed) == ("ROOM", 1, True)
    with capturedLogs() as events:
        last = await rooms.leave("s2", "ROOM")
        assert (last.room_id, last.remaining, last.removed) == ("ROOM", 0, True)
    assert [(e["room_id"], e["ttl_s"]) for e in events if "ttl_s" in e] == [("ROOM", 900)]
    assert await store.ttl(keys.room("ROOM")) == 900
    clock.advance(900)
    assert await rooms.is_available("ROOM")


@pytest_twisted.ensureDeferred
async def test_leave_of_an_unbound_socket_is_harmless(rooms: Rooms) -> None:
    """A disconnect before any join changes nothing."""
    assert await rooms.leave("nobody") == LeaveResult(None, 0)
    assert await rooms.room_of("nobody") is None
