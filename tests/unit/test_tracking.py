"""Referrer tracking: validation, the UTC day, the daily cap (memory store, fake clock)."""

from __future__ import annotations

import math

import pytest
import pytest_twisted
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from privydrop.settings import TrackingSettings
from privydrop.store import keys
from privydrop.store.memory import MemoryStore
from privydrop.tracking import (
    InvalidTrack,
    ReferrerTracker,
    parse_timestamp_ms,
    utc_day,
    validate_ref,
)

MAR_15_2024 = 1_710_460_800_000  # 2024-03-15T00:00:00Z


@pytest.mark.parametrize(
    ("timestamp", "expected_ms"),
    [
        # What the PrivyDrop frontend sends: new Date().toISOString().
        ("2026-12-02T21:33:33.123Z", 1_796_247_213_123),
        ("2024-03-15T00:00:00Z", MAR_15_2024),
        ("2024-03-15T01:00:00+01:00", MAR_15_2024),
        ("2024-03-15T00:00:00.5Z", MAR_15_2024 + 500),
        ("2024-03-15", MAR_15_2024),
        ("Fri, 15 Mar 2024 00:00:00 GMT", MAR_15_2024),
        # Epoch milliseconds, as a number or as a numeric string.
        (MAR_15_2024, MAR_15_2024),
        (float(MAR_15_2024) + 0.75, MAR_15_2024 + 0.75),
        ("1710460800000", MAR_15_2024),
        (" 1710460800000 ", MAR_15_2024),
        (0, 0),
        (-1, -1),
    ],
)
def test_timestamps_are_read_as_javascript_dates_are(timestamp: object, expected_ms: float) -> None:
    """Whatever the frontend's C{new Date(...)} would read as a time is a time here."""
    assert parse_timestamp_ms(timestamp) == expected_ms


@pytest.mark.parametrize(
    "timestamp",
    [None, True, False, "", "   ", "yesterday", "2024-13-45T00:00:00Z", math.nan, math.inf,
     -math.inf, 1e20, "1e400", [], {}, "2024-03-15T00:00:00Zjunk"],
)
def test_things_that_are_not_times_are_refused(timestamp: object) -> None:
    """Only what is not a time at all gets a 400."""
    with pytest.raises(InvalidTrack):
        parse_timestamp_ms(timestamp)


@pytest.mark.parametrize(
    ("now_ms", "day"),
    [
        (MAR_15_2024, "2024-03-15"),
        (MAR_15_2024 + 86_399_999, "2024-03-15"),
        (MAR_15_2024 + 86_400_000, "2024-03-16"),
        (MAR_15_2024 - 1, "2024-03-14"),
        (1_709_164_800_000, "2024-02-29"),
    ],
)
def test_days_are_utc_days(now_ms: int, day: str) -> None:
    """Statistics land on the UTC day, as in the Node backend (toISOString)."""
    assert utc_day(now_ms) == day


@pytest.mark.parametrize(
    ("ref", "fragment"),
    [(None, "string"), (7, "string"), ("", "required"), ("x" * 129, "longer"), ("a\nb", "control")],
)
def test_unusable_referrers_are_refused(ref: object, fragment: str) -> None:
    """Invalid referrer names are a 400 with a message saying why."""
    with pytest.raises(InvalidTrack, match=fragment):
        validate_ref(ref, 128)


def test_referrer_at_the_length_limit_is_accepted() -> None:
    """The longest allowed name still counts."""
    assert validate_ref("x" * 128, 128) == "x" * 128


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.advance(MAR_15_2024 / 1000 + 3600)
    return clock


@pytest.fixture
def store(clock: Clock) -> MemoryStore:
    return MemoryStore(clock)


@pytest_twisted.ensureDeferred
async def test_track_counts_into_the_day_key_for_thirty_days(
    store: MemoryStore, clock: Clock
) -> None:
    """A referral is counted under referrers:daily:<day>, kept 30 days."""
    tracker = ReferrerTracker(store, TrackingSettings(), clock)
    assert await tracker.track("producthunt", "2024-03-15T00:00:05.000Z")
    assert await store.ttl(keys.referrers("2024-03-15")) == 30 * 86_400


@pytest_twisted.ensureDeferred
async def test_the_server_day_counts_whatever_day_the_client_claims(
    store: MemoryStore, clock: Clock
) -> None:
    """A client cannot choose which day's statistics it writes (or create a
    hash for every day from 2000 to 2100): visits count on the server's UTC day."""
    tracker = ReferrerTracker(store, TrackingSettings(), clock)
    for claimed in ("2000-01-01T00:00:00Z", "2099-12-31T00:00:00Z", 0, "1710460800000"):
        assert await tracker.track("a", claimed)
    assert store._hashes == {keys.referrers("2024-03-15"): {"a": "4"}}


@pytest_twisted.ensureDeferred
async def test_daily_cap_refuses_new_names_but_keeps_counting_known_ones(
    store: MemoryStore, clock: Clock
) -> None:
    """Someone inventing referrer names cannot grow a day's statistics without bound."""
    tracker = ReferrerTracker(store, TrackingSettings(max_referrers_per_day=2), clock)
    assert await tracker.track("a", MAR_15_2024)
    assert await tracker.track("b", MAR_15_2024)
    with capturedLogs() as events:
        assert await tracker.track("c", MAR_15_2024) is False
    assert [(e["day"], e["limit"]) for e in events if "limit" in e] == [("2024-03-15", 2)]
    assert await tracker.track("a", MAR_15_2024)
    clock.advance(86_400)
    assert await tracker.track("c", MAR_15_2024)


@pytest_twisted.ensureDeferred
async def test_invalid_input_writes_nothing(store: MemoryStore, clock: Clock) -> None:
    """A refused request leaves no trace in the store."""
    tracker = ReferrerTracker(store, TrackingSettings(), clock)
    with pytest.raises(InvalidTrack):
        await tracker.track("ok", "yesterday")
    with pytest.raises(InvalidTrack):
        await tracker.track("", MAR_15_2024)
    assert store.key_count() == 0
