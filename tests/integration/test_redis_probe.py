"""The blocking start-up check against a real redis-server (with and without a password)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from privydrop.redis.probe import RedisProbeError, probe_redis
from privydrop.settings import RedisSettings
from tests.redis_server import RedisServer, free_port


@pytest.fixture(scope="module")
def locked_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(Path(tmp_path_factory.mktemp("locked")), password="s3cret")
    server.start()
    try:
        yield server
    finally:
        server.kill()


def test_probe_accepts_right_password_and_db(locked_redis: RedisServer) -> None:
    """A correctly configured production server starts."""
    probe_redis(RedisSettings(host=locked_redis.host, port=locked_redis.port,
                              password="s3cret", db=3))


def test_probe_wrong_password_is_loud(locked_redis: RedisServer) -> None:
    """A wrong password stops production start-up with a message pointing at REDIS_PASSWORD."""
    with pytest.raises(RedisProbeError) as caught:
        probe_redis(RedisSettings(host=locked_redis.host, port=locked_redis.port,
                                  password="wrong"))
    assert "REDIS_PASSWORD" in str(caught.value)
    assert "wrong" not in str(caught.value).replace("WRONGPASS", "")


def test_probe_missing_password_is_loud(locked_redis: RedisServer) -> None:
    """Forgetting the password is reported as a password problem, not as a hang."""
    with pytest.raises(RedisProbeError, match="REDIS_PASSWORD"):
        probe_redis(RedisSettings(host=locked_redis.host, port=locked_redis.port))


def test_probe_unreachable_names_host_settings() -> None:
    """Nothing listening at the address: the message names REDIS_HOST/REDIS_URL and the address."""
    port = free_port()
    with pytest.raises(RedisProbeError) as caught:
        probe_redis(RedisSettings(host="127.0.0.1", port=port, connect_timeout=2))
    message = str(caught.value)
    assert "127.0.0.1:%d" % port in message
    assert "REDIS_HOST" in message and "REDIS_URL" in message
