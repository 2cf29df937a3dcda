"""The shared call counts of the API budgets, on MemoryStore and RedisStore.

The budgets (L{privydrop.ratelimit.budget}) count a client's calls in fixed
windows in the store, so every process sharing one Redis sees the calls of
the others; each count answers the totals of its window and the one before.
"""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer

from privydrop.store import keys
from privydrop.store.interface import CallCounts
from privydrop.store.redis import RedisStore
from tests.conftest import Backend
from tests.redis_server import RedisServer

WINDOW_S = 60
TTL_S = 2 * WINDOW_S + 1


@pytest_twisted.ensureDeferred
async def test_counts_add_up_per_window_and_client(backend: Backend) -> None:
    """Every process's calls land in one count per client and window, and
    the answer also gives the previous window's total (the sliding weight)."""
    store = backend.store
    assert await store.count_calls("api", "203.0.113.9", WINDOW_S, 100, 1, TTL_S) == CallCounts(1, 0)
    assert await store.count_calls("api", "203.0.113.9", WINDOW_S, 100, 3, TTL_S) == CallCounts(4, 0)
    assert await store.count_calls("api", "198.51.100.1", WINDOW_S, 100, 1, TTL_S) == CallCounts(1, 0)
    assert await store.count_calls("logs_debug", "203.0.113.9", WINDOW_S, 100, 1, TTL_S) == (
        CallCounts(1, 0)
    )
    assert await store.count_calls("api", "203.0.113.9", WINDOW_S, 101, 2, TTL_S) == CallCounts(2, 4)
    assert await store.count_calls("api", "203.0.113.9", 30, 101, 1, TTL_S) == CallCounts(1, 0)


@pytest_twisted.ensureDeferred
async def test_counts_expire_once_no_window_can_read_them(backend: Backend) -> None:
    """A count is kept while it can still be someone's previous window, then dropped."""
    store = backend.store
    await store.count_calls("api", "2001:db8:1:2::/64", WINDOW_S, 7, 1, TTL_S)
    key = keys.call_count("api", WINDOW_S, 7, "2001:db8:1:2::/64")
    ttl = await store.ttl(key)
    assert ttl is not None and TTL_S - 2 <= ttl <= TTL_S
    await store.count_calls("api", "2001:db8:1:2::/64", WINDOW_S, 7, 1, TTL_S)
    if backend.kind == "memory":
        backend.clock.advance(TTL_S)
        assert await store.ttl(key) is None
        assert await store.count_calls("api", "2001:db8:1:2::/64", WINDOW_S, 8, 1, TTL_S) == (
            CallCounts(1, 0)
        )


@pytest_twisted.ensureDeferred
async def test_concurrent_counts_lose_nothing(backend: Backend) -> None:
    """Counts sent at once (several processes) add up exactly."""
    store = backend.store
    await defer.gatherResults(
        [
            defer.Deferred.fromCoroutine(store.count_calls("api", "k", WINDOW_S, 5, 1, TTL_S))
            for _ in range(50)
        ]
    )
    assert await store.count_calls("api", "k", WINDOW_S, 5, 0, TTL_S) == CallCounts(50, 0)


@pytest_twisted.ensureDeferred
async def test_redis_call_count_keys_are_documented_strings(
    redis_store: RedisStore, redis_server: RedisServer, redis_db: int
) -> None:
    """Operators find a client's count under the documented key."""
    await redis_store.count_calls("api", "2001:db8:1:2::/64", WINDOW_S, 28_333_333, 2, TTL_S)
    key = "ratelimit:api:60:28333333:2001:db8:1:2::/64"
    assert keys.call_count("api", WINDOW_S, 28_333_333, "2001:db8:1:2::/64") == key
    assert redis_server.command("GET", key, db=redis_db) == "2"
