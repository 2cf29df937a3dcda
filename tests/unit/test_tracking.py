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
from privydrop.tracking import InvalidTrack, ReferrerTracker, utc_day, validate_ref

MAR_15_2024 = 1_710_460_800_000  # 2024-03-15T00:00:00Z


@pytest.mark.parametrize(
    ("timestamp", "day"),
    [
        (MAR_15_2024, "2024-03-15"),
        (MAR_15_2024 + 86_399_999, "2024-03-15"),
        (MAR_15_2024 + 86_400_000, "2024-03-16"),
        (MAR_15_2024 - 1, "2024-03-14"),
        (float(MAR_15_2024) + 0.75, "2024-03-15"),
        (1_709_164_800_000, "2024-02-29"),
    ],
)
def test_timestamps_count_on_their_utc_day(timestamp: float, day: str) -> None:
    """Statistics land on the same UTC day as in the Node backend (toISOString)."""
    assert utc_day(timestamp) == day


@pytest.mark.parametrize(
    "timestamp",
    [None, "1710460800000", True, math.nan, math.inf, -math.inf, -1, 0, 1e20, 4_102_444_800_000],
)
def test_unusable_timestamps_are_refused(timestamp: object) -> None:
    """Garbage timestamps get a 400 instead of a 500 or a bogus day key."""
    with pytest.raises(InvalidTrack):
        utc_day(timestamp)


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
def store() -> MemoryStore:
    return MemoryStore(Clock())


@pytest_twisted.ensureDeferred
async def test_track_counts_into_the_day_key_for_thirty_days(store: MemoryStore) -> None:
    """A referral is counted under referrers:daily:<day>, kept 30 days."""
    tracker = ReferrerTracker(store, TrackingSettings())
    assert await tracker.track("producthunt", MAR_15_2024 + 5_000)
    assert await store.ttl(keys.referrers("2024-03-15")) == 30 * 86_400


@pytest_twisted.ensureDeferred
async def test_daily_cap_refuses_new_names_but_keeps_counting_known_ones(
    store: MemoryStore,
) -> None:
    """Someone inventing referrer names cannot grow a day's statistics without bound."""
    tracker = ReferrerTracker(store, TrackingSettings(max_referrers_per_day=2))
    assert await tracker.track("a", MAR_15_2024)
    assert await tracker.track("b", MAR_15_2024)
    with capturedLogs() as events:
        assert await tracker.track("c", MAR_15_2024) is False
    assert [(e["day"], e["limit"]) for e in events if "limit" in e] == [("2024-03-15", 2)]
    assert await tracker.track("a", MAR_15_2024)
    assert await tracker.track("c", MAR_15_2024 + 86_400_000)


@pytest_twisted.ensureDeferred
async def test_invalid_input_writes_nothing(store: MemoryStore) -> None:
    """A refused request leaves no trace in the store."""
    tracker = ReferrerTracker(store, TrackingSettings())
    with pytest.raises(InvalidTrack):
        await tracker.track("ok", "yesterday")
    with pytest.raises(InvalidTrack):
        await tracker.track("", MAR_15_2024)
    assert store.key_count() == 0
