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
