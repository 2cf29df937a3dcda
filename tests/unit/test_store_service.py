"""StoreService with the memory store: building it, sweeping, starting and stopping.

Runs on a C{Clock}; the Redis variant is in ``tests/contract/test_redis_service.py``.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from privydrop.settings import Settings
from privydrop.store.memory import MemoryStore
from privydrop.store.service import StoreService, verify_store


def test_memory_store_is_available_before_start() -> None:
    """Other components can be wired to .store right after construction."""
    service = StoreService(Settings(), Clock())
    assert isinstance(service.store, MemoryStore)
    assert service.name == "store"


@pytest_twisted.ensureDeferred
async def test_memory_sweeper_runs_on_the_clock_and_stops_with_the_service() -> None:
    """Expired keys are freed periodically while running, and no timer outlives the service."""
    clock = Clock()
    service = StoreService(Settings(), clock, sweep_interval_s=60)
    store = service.store
    assert isinstance(store, MemoryStore)
    service.startService()
    await store.create_room("R", 0, 30)
    assert store.key_count() == 1
    clock.advance(59)
    assert store.key_count() == 1  # expired, not yet swept
    clock.advance(1)
    assert store.key_count() == 0
    await service.stopService()
    assert clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_a_failing_sweep_is_logged_and_the_sweeper_keeps_going(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One bad sweep must not stop expiry for the rest of the process's life."""
    clock = Clock()
    service = StoreService(Settings(), clock, sweep_interval_s=10)
    store = service.store
    assert isinstance(store, MemoryStore)
    real_sweep = store.sweep
    calls: list[int] = []

    def sweep_failing_once() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real_sweep()

    monkeypatch.setattr(store, "sweep", sweep_failing_once)
    service.startService()
    with capturedLogs() as events:
        clock.advance(10)
    assert any(e.get("log_failure") is not None for e in events)
    await store.create_room("R", 0, 5)
    clock.advance(10)
    assert len(calls) == 2
    assert store.key_count() == 0
    await service.stopService()


@pytest_twisted.ensureDeferred
async def test_verify_store_accepts_the_memory_store() -> None:
    """Development without Redis starts normally."""
    await verify_store(MemoryStore(Clock()))


# -- the store's health, from its operations ---------------------------------------


def test_store_health_reports_only_a_lasting_failure() -> None:
    from privydrop.store.health import StoreHealth

    clock = Clock()
    health = StoreHealth(clock, grace_s=2.0)
    assert health.problem() is None
    # One failure between successes (a restart, a failover) is not reported.
    health.failed(clock.seconds(), "Redis at x: connection lost")
    clock.advance(1.9)
    assert health.problem() is None
    health.succeeded(clock.seconds())
    clock.advance(5)
    assert health.problem() is None
    # A failure that lasts the grace period is, with its reason.
    began = clock.seconds()
    health.failed(began, "Redis at x: error reply (LOADING Redis is loading)")
    clock.advance(1)
    health.failed(clock.seconds(), "Redis at x: error reply (LOADING Redis is loading)")
    assert health.problem() is None
    clock.advance(1)
    problem = health.problem()
    assert problem is not None and "LOADING" in problem and "2.0 s" in problem
    # The first answer ends it.
    health.succeeded(clock.seconds())
    assert health.problem() is None and health.unusable_for() == 0


def test_a_stalled_operation_counts_from_its_start() -> None:
    """An operation that times out after the command timeout was unusable for
    all of it: reported at once."""
    from privydrop.store.health import StoreHealth

    clock = Clock()
    health = StoreHealth(clock, grace_s=2.0)
    began = clock.seconds()
    clock.advance(2.0)
    health.failed(began, "no answer in time")
    assert health.problem() is not None


def test_a_late_failure_of_an_older_operation_says_nothing_new() -> None:
    from privydrop.store.health import StoreHealth

    clock = Clock()
    health = StoreHealth(clock, grace_s=2.0)
    old = clock.seconds()
    clock.advance(1)
    health.succeeded(clock.seconds())
    clock.advance(1.5)
    health.failed(old, "no answer in time")
    clock.advance(10)
    assert health.problem() is None
    assert health.idle_for() == 10


def test_the_health_ping_interval_is_the_command_timeout_at_most_once_a_second() -> None:
    from privydrop.store.service import health_ping_interval

    assert health_ping_interval(2.0) == 2.0
    assert health_ping_interval(0.001) == 1.0
    assert StoreService(Settings(), Clock()).health is None
