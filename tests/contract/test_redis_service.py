"""StoreService, verify_store and a subscriber with Redis configured (real redis-server)."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from privydrop.redis.subscriber import CHANNEL, Subscriber, Subscription
from privydrop.settings import Settings
from privydrop.store.interface import StoreUnavailable
from privydrop.store.redis import RedisStore
from privydrop.store.service import StoreService, verify_store
from tests.conftest import redis_settings
from tests.redis_server import RedisServer, free_port


@pytest_twisted.ensureDeferred
async def test_redis_service_connects_on_start_and_closes_on_stop(
    redis_server: RedisServer, redis_db: int
) -> None:
    """With Redis configured the service opens the pool on start and releases it on stop."""
    settings = Settings(redis=redis_settings(redis_server, db=redis_db))
    service = StoreService(settings, reactor)
    store = service.store
    assert isinstance(store, RedisStore)
    service.startService()
    await verify_store(store)
    assert await store.create_room("svc", 1, 60)
    await service.stopService()
    with pytest.raises(StoreUnavailable):
        await store.ping()


@pytest_twisted.ensureDeferred
async def test_verify_store_names_the_settings_when_redis_is_unreachable(
    tmp_path: Path,
) -> None:
    """Production start-up fails fast with a message telling the operator what to check."""
    server = RedisServer(tmp_path / "absent")
    server.port = free_port()
    store = RedisStore(redis_settings(server, connect_timeout=0.3), reactor)
    try:
        with pytest.raises(StoreUnavailable, match="REDIS_HOST"):
            await verify_store(store)
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_subscriber_receives_publications_with_the_store_password(
    tmp_path: Path,
) -> None:
    """The cluster adapter's pub/sub connection authenticates like the store and gets messages."""
    server = RedisServer(tmp_path / "pubsub", password="pub secret")
    server.start()
    received: defer.Deferred[tuple[str | bytes, str | bytes]] = defer.Deferred()
    subscribed: defer.Deferred[None] = defer.Deferred()

    def receive(channel: str | bytes, payload: str | bytes) -> None:
        if not received.called:
            received.callback((channel, payload))

    subscriber = Subscriber(
        redis_settings(server),
        reactor,
        name="privydrop:test:subscribe",
        subscriptions=[Subscription(CHANNEL, "privydrop-test")],
        receive=receive,
        on_subscribed=lambda: subscribed.callback(None),
    )
    subscriber.start()
    try:
        await subscribed.addTimeout(5, reactor)
        assert server.command("PUBLISH", "privydrop-test", "hello") == 1
        assert await received.addTimeout(5, reactor) == ("privydrop-test", "hello")
    finally:
        await subscriber.close()
        server.kill()
