"""GET /health follows the store, over real HTTP with a real Redis.

Each test starts its own redis-server, a server process's service tree on it
(command timeout 0.5 s), then makes Redis unusable in one of the ways it
happens in production (down, stalled, loading its dataset, refusing the
password after a rotation) and back: /health answers 503 with the reason
while it lasts (a load balancer or Docker takes the process out) and 200
again afterwards; /health/live answers 200 throughout.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest_twisted
import treq
from twisted.internet import reactor, task
from twisted.internet.threads import deferToThread
from twisted.web.client import HTTPConnectionPool

from privydrop.service import build_service
from privydrop.settings import RedisSettings, Settings
from tests.conftest import TEST_REDIS_PASSWORD, redis_settings
from tests.redis_server import RedisServer

LISTEN = "tcp:0:interface=127.0.0.1"
COMMAND_TIMEOUT = 0.5
#: Long enough for a reconnection with back-off, a ping and a timeout.
WITHIN_S = 15.0


@attrs.define
class Running:
    service: Any
    base: str
    pool: HTTPConnectionPool

    async def get(self, path: str) -> tuple[int, dict[str, Any]]:
        response = await treq.get(self.base + path, pool=self.pool)
        return response.code, json.loads(await treq.content(response))

    async def until(self, path: str, code: int, reason: str = "") -> tuple[float, dict[str, Any]]:
        """Poll C{path} until it answers C{code} (with an error matching
        C{reason}); (seconds it took, body)."""
        began = reactor.seconds()
        while True:
            got, body = await self.get(path)
            if got == code and (not reason or re.search(reason, body["errors"][0])):
                return reactor.seconds() - began, body
            if reactor.seconds() - began > WITHIN_S:
                raise AssertionError("%s still %d after %ss: %r" % (path, got, WITHIN_S, body))
            await task.deferLater(reactor, 0.05)


async def start(redis: RedisSettings) -> Running:
    service = build_service(Settings(listen=LISTEN, redis=redis), reactor)
    service.startService()
    port = await service.getServiceNamed("http")._waitingForPort
    running = Running(
        service, "http://127.0.0.1:%d" % port.getHost().port,
        HTTPConnectionPool(reactor, persistent=False),
    )
    await running.until("/health", 200)
    return running


def settings_for(server: RedisServer, **overrides: Any) -> RedisSettings:
    return redis_settings(server, command_timeout=COMMAND_TIMEOUT, connect_timeout=2.0,
                          pool_size=2, **overrides)


@pytest_twisted.async_yield_fixture
async def on_private(private_redis: RedisServer) -> AsyncIterator[tuple[Running, RedisServer]]:
    running = await start(settings_for(private_redis))
    try:
        yield running, private_redis
    finally:
        try:
            private_redis.resume()
        except ProcessLookupError:
            pass
        await running.pool.closeCachedConnections()
        await running.service.stopService()


async def _outage(
    running: Running,
    begin: Callable[[], Any],
    end: Callable[[], Any],
    reason: str,
    docker: bool = False,
) -> None:
    """Make the store unusable, check the answers, end it, check again.

    @param docker: also run the image's HEALTHCHECK command, as Docker runs
        it, before, during and after.
    """
    port = running.base.rsplit(":", 1)[1]
    if docker:
        assert await deferToThread(_docker_healthcheck, port) == 0
    await deferToThread(begin)
    _, body = await running.until("/health", 503, reason)
    if docker:
        assert await deferToThread(_docker_healthcheck, port) != 0
    assert body["status"] == "unhealthy"
    assert body["errors"][0].startswith("store unusable for ")
    live_code, live = await running.get("/health/live")
    assert (live_code, live["status"]) == (200, "healthy")
    assert (await running.get("/api/health"))[0] == 503
    await deferToThread(end)
    _, body = await running.until("/health", 200)
    assert body["status"] == "healthy" and "errors" not in body
    if docker:
        assert await deferToThread(_docker_healthcheck, port) == 0


@pytest_twisted.ensureDeferred
async def test_health_is_503_while_redis_is_down(on_private: tuple[Running, RedisServer]) -> None:
    running, redis = on_private
    await _outage(
        running, redis.kill, redis.start, "Redis at 127.0.0.1:%d" % redis.port, docker=True
    )


def _docker_healthcheck(port: str) -> int:
    """The exit status of the Dockerfile's HEALTHCHECK command."""
    dockerfile = (Path(__file__).resolve().parents[2] / "docker" / "Dockerfile").read_text()
    command = re.search(r'^\s*CMD python -c "(.*)"\s*$', dockerfile, re.MULTILINE)
    assert command is not None, "no HEALTHCHECK CMD python -c ... in the Dockerfile"
    result = subprocess.run(
        ["python3", "-c", command.group(1)], env={"BACKEND_PORT": port, "PATH": "/usr/bin:/bin"},
        capture_output=True, timeout=30,
    )
    return result.returncode


@pytest_twisted.ensureDeferred
async def test_health_is_503_while_redis_is_stalled(
    on_private: tuple[Running, RedisServer],
) -> None:
    """SIGSTOP: nothing answers; every operation times out, first on the
    open connections, then, once those are given up, waiting for a
    reconnection whose handshake gets no answer either (which of the two
    the health reports last depends on timing)."""
    running, redis = on_private
    await _outage(
        running, redis.pause, redis.resume, "no answer in time|no connection available in time"
    )


@pytest_twisted.ensureDeferred
async def test_health_is_503_while_redis_answers_loading(
    on_private: tuple[Running, RedisServer],
) -> None:
    """A restarted Redis answers -LOADING until its dataset is in memory."""
    running, redis = on_private
    loading = _SlowLoading(redis)
    await _outage(running, loading.restart_loading, loading.finish, "LOADING")


@pytest_twisted.ensureDeferred
async def test_health_is_503_after_a_password_rotation_it_does_not_know(
    password_redis: RedisServer,
) -> None:
    """The password changes on Redis and the connections are dropped: every
    reconnection is refused (NOAUTH/WRONGPASS) until the process has the new one."""
    running = await start(settings_for(password_redis))
    redis = password_redis
    try:
        def rotate() -> None:
            redis.command("CONFIG", "SET", "requirepass", "rotated password")
            redis.password = "rotated password"
            redis.command("CLIENT", "KILL", "TYPE", "normal")

        def rotate_back() -> None:
            redis.command("CONFIG", "SET", "requirepass", TEST_REDIS_PASSWORD)
            redis.password = TEST_REDIS_PASSWORD

        await _outage(running, rotate, rotate_back, "authentication failed|WRONGPASS|NOAUTH")
    finally:
        await running.pool.closeCachedConnections()
        await running.service.stopService()


@pytest_twisted.ensureDeferred
async def test_health_checks_cost_redis_no_command_each(
    on_private: tuple[Running, RedisServer],
) -> None:
    """A load balancer polling /health does not make a Redis command per poll:
    the answer comes from the store's own operations and an idle-time PING."""
    running, redis = on_private

    def pings() -> int:
        stats = redis.command("INFO", "commandstats")
        text = stats.decode() if isinstance(stats, bytes) else str(stats)
        found = re.search(r"cmdstat_ping:calls=(\d+)", text)
        return int(found.group(1)) if found else 0

    before = await deferToThread(pings)
    began = reactor.seconds()
    for _ in range(100):
        assert (await running.get("/health"))[0] == 200
    elapsed = reactor.seconds() - began
    # At most one idle-time PING per interval (1 s here), and the one of ours.
    assert await deferToThread(pings) - before <= elapsed / 1.0 + 2


class _SlowLoading:
    """Restarts a Redis with a dataset that takes seconds to load, during
    which it answers -LOADING."""

    def __init__(self, redis: RedisServer) -> None:
        self.redis = redis
        self.process: subprocess.Popen[bytes] | None = None

    def restart_loading(self) -> None:
        redis = self.redis
        pairs = [part for i in range(6000) for part in ("health:%d" % i, "x")]
        redis.command("MSET", *pairs)
        redis.command("SAVE")
        redis.kill()
        argv = redis._argv() + [
            "--dbfilename", "dump.rdb",
            # Redis's own test knobs: a pause per key loaded, and answering
            # clients (with -LOADING) while loading.
            "--key-load-delay", "500",
            "--loading-process-events-interval-bytes", "1024",
        ]
        log = open(redis.workdir / "redis-loading.log", "ab")
        self.process = subprocess.Popen(argv, cwd=redis.workdir, stdout=log,
                                        stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.command("GET", "x", timeout=1.0)
            except Exception as e:  # noqa: BLE001 - waiting for the LOADING answer
                if "LOADING" in str(e):
                    return
            if time.monotonic() > deadline:
                raise AssertionError("the restarted Redis never answered LOADING")
            time.sleep(0.02)

    def finish(self) -> None:
        """Wait for it to finish loading, then hand it back to the fixture."""
        assert self.process is not None
        deadline = time.monotonic() + 30
        while True:
            try:
                self.redis.command("PING", timeout=1.0)
                break
            except Exception:  # noqa: BLE001 - still loading
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.redis._process = self.process

