"""The Redis client against a real redis-server: connection names, handshake
refusal versus loss, re-subscription after a lost connection.

Deadlines, stalls (SIGSTOP), restarts and wrong passwords as the store sees
them are in C{test_redis_faults.py}; as the cluster sees them in
C{tests/integration/test_cluster_redis.py}.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import LogLevel, globalLogPublisher

from privydrop.cluster.pubsub import ClusterService
from privydrop.redis.errors import HandshakeRefused, NotConnected
from privydrop.redis.handshake import NAME_PREFIX
from privydrop.redis.pool import ConnectionPool
from privydrop.redis.subscriber import CHANNEL, Subscriber, Subscription
from privydrop.settings import RedisSettings
from privydrop.store.redis import RedisStore
from tests.conftest import redis_settings
from tests.redis_server import RedisServer

#: Longest wait for anything a test expects; a failure, not a hang, past it.
WAIT_S = 10.0


def within(d: Deferred[Any]) -> Deferred[Any]:
    return d.addTimeout(WAIT_S, reactor)


def client_list(server: RedisServer) -> list[dict[str, str]]:
    """C{CLIENT LIST} as one dict per connection (the asking one excluded)."""
    rows = []
    for line in server.command("CLIENT", "LIST").splitlines():
        fields = dict(field.split("=", 1) for field in line.split() if "=" in field)
        if fields.get("cmd") != "client|list":
            rows.append(fields)
    return rows


def local_address(conn: Any) -> str:
    host = conn.transport.getHost()
    return f"{host.host}:{host.port}"


class ErrorLog:
    """Collects the error-level events logged while it is installed."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("log_level") is not None and event["log_level"] >= LogLevel.error:
            self.events.append(event)


@pytest.fixture
def error_log() -> Any:
    log = ErrorLog()
    globalLogPublisher.addObserver(log)
    yield log
    globalLogPublisher.removeObserver(log)


@pytest_twisted.ensureDeferred
async def test_every_connection_is_named_after_its_process_and_role(
    redis_server: RedisServer, redis_db: int
) -> None:
    """An operator looking at CLIENT LIST sees which process and which part of
    it holds each connection (to find the one that leaks or floods)."""
    settings = redis_settings(redis_server, db=redis_db, pool_size=2)
    store = RedisStore(settings, reactor, node_id="n0de")
    service = ClusterService(settings, reactor, node_id="n0de", channel_prefix="named-test")
    try:
        await store.connect()
        service.startService()
        await within(service.wait_subscribed())
        assert await within(service.publisher.publish(service.adapter.channel, b"{}")) == 1
        by_address = {row["addr"]: row for row in client_list(redis_server)}
        for conn in store.pool.connections:
            row = by_address[local_address(conn)]
            assert (row["name"], row["db"]) == ("privydrop:n0de:store", str(redis_db))
        names = {row["name"] for row in by_address.values()}
        assert {"privydrop:n0de:publish", "privydrop:n0de:subscribe"} <= names
    finally:
        await store.close()
        await service.stopService()
    assert not [
        row for row in client_list(redis_server) if row.get("name", "").startswith(NAME_PREFIX)
    ]


@pytest_twisted.ensureDeferred
async def test_refused_password_is_reported_once_and_retried_with_back_off(
    password_redis: RedisServer, error_log: ErrorLog
) -> None:
    """A wrong password is said once (not once per reconnection), every
    caller hears it at once, and the pool keeps trying in case the password
    is being rotated."""
    pool = ConnectionPool(
        redis_settings(password_redis, password="wrong", pool_size=1),
        reactor,
        name="privydrop:t:store",
        reconnect_initial_delay=0.01,
        reconnect_max_delay=0.05,
    )
    refusals: DeferredQueue[HandshakeRefused] = DeferredQueue()
    report = pool.handshake_refused

    def count(refusal: HandshakeRefused) -> None:
        report(refusal)
        refusals.put(refusal)

    pool.handshake_refused = count  # type: ignore[method-assign]
    try:
        with pytest.raises(HandshakeRefused, match="authentication failed"):
            await pool.execute(("PING",))
        for _ in range(3):
            refusal = await within(refusals.get())
            assert refusal.is_auth and refusal.command == "AUTH"
        assert len(error_log.events) == 1
        assert "WRONGPASS" in error_log.events[0]["error"]
        with pytest.raises(HandshakeRefused):
            await pool.execute(("PING",))
    finally:
        await pool.close()


class HangUpAfterHandshake(Protocol):
    """Reads what the client says first, then closes: a Redis restarting under it."""

    def dataReceived(self, data: bytes) -> None:
        self.factory.seen.put(data)  # type: ignore[attr-defined]
        self.transport.loseConnection()


@pytest_twisted.async_yield_fixture
async def hang_up_server() -> AsyncIterator[tuple[int, DeferredQueue[bytes]]]:
    factory = Factory.forProtocol(HangUpAfterHandshake)
    factory.seen = DeferredQueue()  # type: ignore[attr-defined]
    port: IListeningPort = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        factory
    )
    try:
        yield port.getHost().port, factory.seen  # type: ignore[attr-defined]
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_connection_lost_mid_handshake_is_retried_quietly(
    hang_up_server: tuple[int, DeferredQueue[bytes]], error_log: ErrorLog
) -> None:
    """A connection that drops while it says hello is a blip, not a wrong
    password: nothing is reported as a refusal and the pool keeps trying."""
    port, seen = hang_up_server
    settings = RedisSettings(host="127.0.0.1", port=port, command_timeout=0.3, pool_size=1)
    pool = ConnectionPool(
        settings, reactor, name="privydrop:t:store",
        reconnect_initial_delay=0.01, reconnect_max_delay=0.05,
    )
    try:
        with pytest.raises(NotConnected, match="no connection available in time") as caught:
            await pool.execute(("PING",))
        assert not isinstance(caught.value, HandshakeRefused)
        for _ in range(3):
            assert b"SETNAME" in await within(seen.get())
        assert pool.handshake_error is None
        assert error_log.events == []
    finally:
        await pool.close()


@pytest_twisted.ensureDeferred
async def test_subscriber_subscribes_again_after_its_connection_is_killed(
    redis_server: RedisServer,
) -> None:
    """An operator's CLIENT KILL, a proxy timeout or a failover closes the
    pub/sub connection; the process must be listening again by itself."""
    received: DeferredQueue[tuple[Any, Any]] = DeferredQueue()
    subscribed: DeferredQueue[int] = DeferredQueue()
    subscriber = Subscriber(
        redis_settings(redis_server),
        reactor,
        name="privydrop:resub:subscribe",
        subscriptions=[Subscription(CHANNEL, "resub-test")],
        receive=lambda channel, payload: received.put((channel, payload)),
        on_subscribed=lambda: subscribed.put(subscriber.subscriptions),
        reconnect_initial_delay=0.01,
        reconnect_max_delay=0.05,
    )
    subscriber.start()
    try:
        assert await within(subscribed.get()) == 1
        (row,) = [r for r in client_list(redis_server) if r.get("name") == subscriber.name]
        assert redis_server.command("CLIENT", "KILL", "ID", row["id"]) == 1
        assert await within(subscribed.get()) == 2
        assert redis_server.command("PUBLISH", "resub-test", "again") == 1
        assert await within(received.get()) == ("resub-test", "again")
    finally:
        await subscriber.close()
    assert redis_server.command("PUBLISH", "resub-test", "gone") == 0
