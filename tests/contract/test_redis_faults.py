"""RedisStore under faults: a stalled server, a restarted one, wrong credentials.

Each test starts its own redis-server (the shared one is never paused or
killed) and a store with short timeouts, then checks that callers get
L{StoreUnavailable} within the configured bound and that the same store
object works again once Redis does.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet import reactor as _reactor

from privydrop.store.interface import StoreUnavailable
from privydrop.store.redis import RedisStore
from tests.conftest import redis_settings
from tests.redis_server import BINARY_VARIABLE, RedisServer, RedisServerError, free_port

NOW = 1_700_000_000_000
COMMAND_TIMEOUT = 0.5
#: Scheduling slack allowed on top of a timeout.
SLACK = 0.75

T = TypeVar("T")


def make_store(server: RedisServer, **overrides: object) -> RedisStore:
    fields: dict[str, object] = {
        "command_timeout": COMMAND_TIMEOUT,
        "connect_timeout": 2.0,
        "pool_size": 1,
        "db": 3,
    }
    fields.update(overrides)
    return RedisStore(
        redis_settings(server, **fields),
        _reactor,
        reconnect_initial_delay=0.05,
        reconnect_max_delay=0.2,
    )


async def eventually(operation: Callable[[], Awaitable[T]], attempts: int = 40) -> T:
    """Retry while the store reports itself unavailable; each try is bounded by its timeout."""
    for _ in range(attempts - 1):
        try:
            return await operation()
        except StoreUnavailable:
            pass
    return await operation()


def client_addresses(server: RedisServer) -> set[str]:
    """Addresses of the clients connected to the server, the asking one excluded."""
    listing = server.command("CLIENT", "LIST")
    return {
        field.split("=", 1)[1]
        for line in listing.splitlines()
        if "cmd=client|list" not in line
        for field in line.split()
        if field.startswith("addr=")
    }


@pytest_twisted.async_yield_fixture
async def stalling_store(private_redis: RedisServer) -> AsyncIterator[RedisStore]:
    store = make_store(private_redis)
    await store.connect()
    try:
        yield store
    finally:
        private_redis.resume()
        await store.close()


@pytest_twisted.ensureDeferred
async def test_stalled_redis_fails_within_the_timeout_and_late_replies_are_not_misread(
    private_redis: RedisServer, stalling_store: RedisStore
) -> None:
    """A frozen Redis gives a 503 in bounded time, and once it thaws no user is
    sent another user's room (a late reply must never answer a newer command)."""
    store = stalling_store
    for room in ("A", "B"):
        await store.create_room(room, NOW, 3600)
        await store.join_room(f"s-{room}", room, NOW, 3600, 7200, None, node_id="n")

    connections_before = client_addresses(private_redis)
    assert len(connections_before) == 1

    private_redis.pause()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="no answer in time"):
        await store.room_of_socket("s-A")
    elapsed = time.monotonic() - started
    assert COMMAND_TIMEOUT - 0.05 <= elapsed <= COMMAND_TIMEOUT + SLACK

    # Still frozen: every caller keeps getting a bounded failure.
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await store.ping()
    assert time.monotonic() - started <= COMMAND_TIMEOUT + SLACK

    private_redis.resume()
    # The pool has one connection: had the timed-out one been reused, the
    # reply to GET socket:s-A would be read as the answer to this GET.
    assert await eventually(lambda: store.room_of_socket("s-B")) == "B"
    assert await store.room_of_socket("s-A") == "A"
    # The connection that timed out was dropped, not put back in the pool.
    connections_after = client_addresses(private_redis)
    assert len(connections_after) == 1
    assert connections_after.isdisjoint(connections_before)


@pytest_twisted.ensureDeferred
async def test_stall_with_many_commands_in_flight_fails_them_all_in_bounded_time(
    private_redis: RedisServer, stalling_store: RedisStore
) -> None:
    """With many users' commands pipelined on one connection when Redis
    freezes, every one of them gets a bounded 503 (none waits for ever), and
    once Redis thaws each new caller reads its own answer."""
    store = stalling_store
    for room in ("A", "B"):
        await store.create_room(room, NOW, 3600)
        await store.join_room(f"s-{room}", room, NOW, 3600, 7200, None, node_id="n")
    private_redis.pause()
    started = time.monotonic()
    outcomes = await defer.DeferredList(
        [defer.Deferred.fromCoroutine(store.room_of_socket("s-A")) for _ in range(20)]
        + [defer.Deferred.fromCoroutine(store.room_exists("B")) for _ in range(20)],
        consumeErrors=True,
    )
    elapsed = time.monotonic() - started
    assert all(not ok and failure.check(StoreUnavailable) for ok, failure in outcomes)
    assert elapsed <= COMMAND_TIMEOUT + SLACK

    private_redis.resume()
    answers = await eventually(
        lambda: defer.gatherResults(
            [
                defer.Deferred.fromCoroutine(store.room_of_socket("s-B")),
                defer.Deferred.fromCoroutine(store.room_of_socket("s-A")),
                defer.Deferred.fromCoroutine(store.room_exists("nowhere")),
            ]
        ).addErrback(lambda f: f.value.subFailure.raiseException())
    )
    assert answers == ["B", "A", False]


@pytest_twisted.ensureDeferred
async def test_store_reconnects_by_itself_after_redis_restarts(
    private_redis: RedisServer,
) -> None:
    """After Redis is restarted the running server works again without a restart of its own."""
    store = make_store(private_redis, pool_size=2)
    try:
        await store.connect()
        assert await store.create_room("before", NOW, 3600)

        private_redis.kill()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.room_exists("before")
        assert time.monotonic() - started <= COMMAND_TIMEOUT + SLACK

        private_redis.start()
        await eventually(store.ping)
        # A fresh server has no scripts cached: EVALSHA falls back to EVAL.
        assert await store.create_room("after", NOW, 3600) is True
        assert await store.room_exists("after")
        assert not await store.room_exists("before")  # no persistence configured
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_wrong_password_is_reported_as_an_authentication_failure(
    password_redis: RedisServer,
) -> None:
    """A mistyped REDIS_PASSWORD stops start-up with a clear message instead of hanging."""
    store = make_store(password_redis, password="wrong", connect_timeout=5.0)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="authentication failed"):
            await store.connect()
        assert time.monotonic() - started < 2.0
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="authentication failed"):
            await store.ping()
        assert time.monotonic() - started <= COMMAND_TIMEOUT + SLACK
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_missing_password_is_reported_as_an_authentication_failure(
    password_redis: RedisServer,
) -> None:
    """Forgetting REDIS_PASSWORD for a protected Redis is named as such."""
    store = make_store(password_redis, password=None)
    try:
        with pytest.raises(StoreUnavailable, match="authentication failed"):
            await store.connect()
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_right_password_and_db_work(password_redis: RedisServer) -> None:
    """With the right password the store works, in the configured database."""
    store = make_store(password_redis, db=5)
    try:
        await store.connect()
        assert await store.create_room("R", NOW, 3600)
        assert password_redis.command("HGET", "room:R", "created_at", db=5) == str(NOW)
        assert password_redis.command("EXISTS", "room:R", db=0) == 0
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_unreachable_redis_fails_connect_within_the_connect_timeout(
    tmp_path: Path,
) -> None:
    """Nothing listening: start-up fails within REDIS connect timeout, naming the address."""
    server = RedisServer(tmp_path / "never-started")
    server.port = free_port()
    store = make_store(server, connect_timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{server.port}"):
            await store.connect()
        assert time.monotonic() - started <= 0.5 + SLACK
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_closed_store_refuses_at_once(private_redis: RedisServer) -> None:
    """After shutdown, stray calls fail immediately instead of waiting for a timeout."""
    store = make_store(private_redis, command_timeout=5.0)
    await store.connect()
    await store.close()
    await store.close()  # idempotent
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.ping()
    assert time.monotonic() - started < 0.5


def test_missing_redis_binary_fails_loudly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without redis-server the Redis tests fail with a clear message instead of being skipped."""
    monkeypatch.setenv(BINARY_VARIABLE, str(tmp_path / "no-such-redis-server"))
    with pytest.raises(RedisServerError, match=BINARY_VARIABLE):
        RedisServer(tmp_path / "never")


@pytest_twisted.ensureDeferred
async def test_start_against_a_frozen_redis_fails_in_time_then_recovers(
    private_redis: RedisServer,
) -> None:
    """Starting while Redis hangs reports it within the connect timeout; no restart needed after."""
    private_redis.pause()
    store = make_store(private_redis, connect_timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.connect()
        assert time.monotonic() - started <= 0.5 + SLACK
        private_redis.resume()
        await eventually(store.ping)
        assert await store.create_room("R", NOW, 60)
    finally:
        private_redis.resume()
        await store.close()


@pytest_twisted.ensureDeferred
async def test_closing_fails_callers_waiting_for_a_connection_at_once(tmp_path: Path) -> None:
    """Shutdown does not hang on requests that are waiting for an unreachable Redis."""
    server = RedisServer(tmp_path / "absent")
    server.port = free_port()
    store = make_store(server, command_timeout=30.0)
    waiting = defer.Deferred.fromCoroutine(store.ping())
    started = time.monotonic()
    await store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        await waiting
    assert time.monotonic() - started < 1.0
