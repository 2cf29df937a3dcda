"""Shared fixtures.

Store fixtures (see ``tests/redis_server.py``):

``redis_server`` (session)
    A real redis-server on a free 127.0.0.1 port, started once, killed at the
    end. Fails (does not skip) when no redis-server binary is available.
``redis_db``
    A database index of that server, flushed before and after the test.
``clock``
    A fresh C{twisted.internet.task.Clock} (memory store TTLs, rate windows).
``memory_store`` / ``redis_store``
    A L{MemoryStore} on ``clock``; a connected L{RedisStore} on ``redis_db``.
``sentinel_group`` (session) / ``password_sentinel_group`` (session) / ``failover_group``
    A master, a replica and three Sentinels (``tests/sentinel_group.py``);
    the second with passwords on Redis and on the Sentinels; the third of
    the test's own, for a test that kills its master.
``backend``
    Parametrised over both: a L{Backend} naming the store and its kind, so
    ``tests/contract/`` runs every test against memory and Redis.

Other fixtures may be added below by the parts that need them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import attrs
import pytest
import pytest_twisted
from twisted.internet.task import Clock

from privydrop.logs import levels as loglevels
from privydrop.settings import RedisSettings
from privydrop.store.interface import IStore
from privydrop.store.memory import MemoryStore
from privydrop.store.redis import RedisStore
from tests.redis_server import RedisServer
from tests.sentinel_group import SentinelGroup


@pytest.fixture(autouse=True)
def _restore_log_levels() -> Iterator[None]:
    """Each test starts with every level recorded and leaves it so: building
    a service tree sets the process-wide minimum from LOG_LEVEL, which would
    otherwise decide what later tests see logged."""
    loglevels.set_minimum(None)
    yield
    loglevels.set_minimum(None)

#: The database index the Redis tests use (the server is private to the run).
TEST_DB = 9


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(Path(tmp_path_factory.mktemp("redis-shared")))
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, for tests that stop, pause or restart it."""
    server = RedisServer(tmp_path / "redis-private")
    server.start()
    try:
        yield server
    finally:
        server.kill()


#: The password of L{password_redis} (with a space, as real passwords may have).
TEST_REDIS_PASSWORD = "s3cret pass"


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own that requires L{TEST_REDIS_PASSWORD}."""
    server = RedisServer(tmp_path / "redis-auth", password=TEST_REDIS_PASSWORD)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="session")
def sentinel_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    """A master, a replica and three Sentinels (``tests/sentinel_group.py``),
    shared by the tests that never fail it over."""
    group = SentinelGroup(Path(tmp_path_factory.mktemp("sentinel-shared")))
    group.start()
    try:
        yield group
    finally:
        group.kill()


#: The Sentinels' own password in L{password_sentinel_group}.
TEST_SENTINEL_PASSWORD = "sentinel pass"


@pytest.fixture(scope="session")
def password_sentinel_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    """Like L{sentinel_group}, with a password on the master and replica
    (L{TEST_REDIS_PASSWORD}) and another on the Sentinels."""
    group = SentinelGroup(
        Path(tmp_path_factory.mktemp("sentinel-auth")),
        password=TEST_REDIS_PASSWORD,
        sentinel_password=TEST_SENTINEL_PASSWORD,
    )
    group.start()
    try:
        yield group
    finally:
        group.kill()


@pytest.fixture
def failover_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A L{SentinelGroup} of this test's own, for a test that fails it over."""
    group = SentinelGroup(tmp_path / "sentinels")
    group.start()
    try:
        yield group
    finally:
        group.kill()


@pytest.fixture
def redis_db(redis_server: RedisServer) -> Iterator[int]:
    redis_server.command("FLUSHDB", db=TEST_DB)
    yield TEST_DB
    redis_server.command("FLUSHDB", db=TEST_DB)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def redis_settings(server: RedisServer, **overrides: object) -> RedisSettings:
    """Settings pointing at a test server; overrides replace any field."""
    fields: dict[str, object] = {
        "host": server.host,
        "port": server.port,
        "password": server.password,
        "command_timeout": 2.0,
        "connect_timeout": 5.0,
        "pool_size": 4,
    }
    fields.update(overrides)
    return RedisSettings(**fields)  # type: ignore[arg-type]


@pytest_twisted.async_yield_fixture
async def redis_store(redis_server: RedisServer, redis_db: int) -> AsyncIterator[RedisStore]:
    from twisted.internet import reactor

    store = RedisStore(redis_settings(redis_server, db=redis_db), reactor)
    await store.connect()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def memory_store(clock: Clock) -> MemoryStore:
    return MemoryStore(clock)


@attrs.frozen
class Backend:
    """A store under test.

    @ivar kind: ``"memory"`` or ``"redis"``.
    @ivar clock: drives the memory store's TTLs (Redis uses real time and is
        only ever checked by reading TTLs back).
    @ivar server: the Redis server, for Redis.
    @ivar db: the Redis database index, for Redis.
    """

    kind: str
    store: IStore
    clock: Clock
    server: RedisServer | None = None
    db: int = 0


@pytest_twisted.async_yield_fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[Backend]:
    if request.param == "memory":
        yield Backend("memory", MemoryStore(clock), clock)
        return
    from twisted.internet import reactor

    server: RedisServer = request.getfixturevalue("redis_server")
    db: int = request.getfixturevalue("redis_db")
    store = RedisStore(redis_settings(server, db=db), reactor)
    await store.connect()
    try:
        yield Backend("redis", store, clock, server, db)
    finally:
        await store.close()


#: A protocol attribute no Autobahn has: adding it to the names the transport
#: relies on makes the check fail as it would after an upgrade.
GONE_AUTOBAHN_INTERNAL = "attribute_removed_by_an_upgrade"


@pytest.fixture
def without_autobahn_internals(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """As on an Autobahn version that lost an internal the WebSocket transport
    uses: the check reports it, and factories built during the test run the
    transport on Autobahn's public API only.

    @return: the name reported missing.
    """
    from privydrop.compat import autobahn as autobahn_compat

    monkeypatch.setattr(
        autobahn_compat,
        "PROTOCOL_INTERNALS",
        autobahn_compat.PROTOCOL_INTERNALS + (GONE_AUTOBAHN_INTERNAL,),
    )
    autobahn_compat._stock_protocol_internals_missing.cache_clear()
    yield GONE_AUTOBAHN_INTERNAL
    autobahn_compat._stock_protocol_internals_missing.cache_clear()


@pytest.fixture(params=["internals", "public"])
def autobahn_api(request: pytest.FixtureRequest) -> str:
    """The Autobahn API the WebSocket transport runs on in this test: with
    the internals its fast paths use (C{"internals"}), then as on a version
    that lost one of them (C{"public"}, see L{without_autobahn_internals})."""
    from privydrop.compat import autobahn as autobahn_compat

    if request.param == "public":
        request.getfixturevalue("without_autobahn_internals")
    assert autobahn_compat.protocol_internals_usable() is (request.param == "internals")
    return str(request.param)
