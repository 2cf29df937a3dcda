"""The Sentinel settings: REDIS_SENTINELS, REDIS_SENTINEL_MASTER and the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from privydrop.redis.endpoint import describe
from privydrop.settings import ConfigError, SentinelSettings
from privydrop.tap import settings_for
from tests.unit.test_config import settings
from tests.unit.test_tap import parsed

SENTINELS = {"REDIS_SENTINELS": "s1:26379,s2:26380", "REDIS_SENTINEL_MASTER": "mymaster"}


def test_sentinels_name_the_master_and_redis_password_and_db_stay_the_masters() -> None:
    """An operator's Sentinel deployment is read as given: the Sentinels in
    order, the master's name, the Sentinels' own password apart from the
    master's, and the master's database."""
    s = settings({**SENTINELS, "REDIS_SENTINEL_PASSWORD": "sentinel-pw",
                  "REDIS_PASSWORD": "master-pw", "REDIS_DB": "2"})
    assert s.redis is not None
    assert s.redis.sentinel == SentinelSettings(
        addresses=(("s1", 26379), ("s2", 26380)), master="mymaster", password="sentinel-pw"
    )
    assert (s.redis.password, s.redis.db) == ("master-pw", 2)
    assert "sentinel-pw" not in repr(s.redis.sentinel)
    assert describe(s.redis) == "master mymaster (Sentinels s1:26379,s2:26380)"


def test_sentinel_addresses_default_port_ipv6_and_options() -> None:
    """Port 26379 when left out; bracketed IPv6; the options override the
    environment like every other setting."""
    s = settings({"REDIS_SENTINELS": " a , [::1]:5000,10.0.0.3:1 ", "REDIS_SENTINEL_MASTER": "m",
                  "REDIS_SENTINEL_TIMEOUT": "0.25",
                  "REDIS_SENTINEL_RECONNECT_MAX_DELAY": "2"})
    assert s.redis is not None and s.redis.sentinel is not None
    assert s.redis.sentinel.addresses == (("a", 26379), ("::1", 5000), ("10.0.0.3", 1))
    assert (s.redis.sentinel.timeout, s.redis.sentinel.reconnect_max_delay) == (0.25, 2.0)
    assert describe(s.redis) == "master m (Sentinels a:26379,[::1]:5000,10.0.0.3:1)"
    s = settings(SENTINELS, ["--redis-sentinels", "opt:1", "--redis-sentinel-master", "other",
                             "--redis-sentinel-timeout", "0.1"])
    assert s.redis is not None and s.redis.sentinel is not None
    assert (s.redis.sentinel.addresses, s.redis.sentinel.master) == ((("opt", 1),), "other")
    assert s.redis.sentinel.timeout == 0.1


def test_defaults_keep_discovery_and_reconnection_short() -> None:
    """Each Sentinel gets half a second; reconnection attempts are at most a
    second apart, so a failover costs about a second beyond the promotion."""
    s = settings(SENTINELS)
    assert s.redis is not None and s.redis.sentinel is not None
    assert (s.redis.sentinel.timeout, s.redis.sentinel.reconnect_max_delay) == (0.5, 1.0)


@pytest.mark.parametrize(
    "environ, argv, named",
    [
        ({"REDIS_HOST": "redis"}, [], ["REDIS_SENTINELS", "REDIS_HOST"]),
        ({"REDIS_URL": "redis://redis:6379/0"}, [], ["REDIS_SENTINELS", "REDIS_URL"]),
        ({}, ["--redis", "redis://redis"], ["REDIS_SENTINELS", "--redis"]),
    ],
)
def test_sentinels_and_a_fixed_address_together_are_refused_naming_both(
    environ: dict[str, str], argv: list[str], named: list[str]
) -> None:
    """Two answers to "where is Redis" is a mistake: start-up says which two."""
    with pytest.raises(ConfigError, match="both set") as caught:
        settings({**SENTINELS, **environ}, argv)
    for name in named:
        assert name in str(caught.value)


def test_a_conflict_across_sources_names_the_file(tmp_path: Path) -> None:
    """REDIS_URL in the .env file and REDIS_SENTINELS in the environment:
    the message says where each one is."""
    (tmp_path / ".env.development").write_text("REDIS_URL=redis://old:6379/0\n")
    with pytest.raises(ConfigError) as caught:
        settings(SENTINELS, cwd=tmp_path)
    assert "REDIS_URL (in .env.development)" in str(caught.value)


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINEL_MASTER is set but REDIS_SENTINELS"),
        ({"REDIS_SENTINEL_PASSWORD": "pw"}, "REDIS_SENTINEL_PASSWORD is set but REDIS_SENTINELS"),
        ({"REDIS_SENTINELS": "s1"}, "REDIS_SENTINEL_MASTER is empty"),
        ({**SENTINELS, "REDIS_SENTINEL_MASTER": "my master"}, "'my master'"),
        ({**SENTINELS, "REDIS_SENTINELS": "s1:abc"}, "REDIS_SENTINELS: 's1:abc' is not a Sentinel"),
        ({**SENTINELS, "REDIS_SENTINELS": "s1:0"}, "'s1:0' is not a Sentinel address"),
        ({**SENTINELS, "REDIS_SENTINELS": "s1:65536"}, "'s1:65536'"),
        ({**SENTINELS, "REDIS_SENTINELS": "http://s1"}, "'http://s1'"),
        ({**SENTINELS, "REDIS_SENTINELS": "s1,s1:26379"}, "'s1:26379' is named twice"),
        ({**SENTINELS, "REDIS_SENTINELS": ", ,"}, "expected host:port,host:port"),
        ({**SENTINELS, "REDIS_SENTINEL_TIMEOUT": "0"}, "REDIS_SENTINEL_TIMEOUT: must be at least"),
        ({**SENTINELS, "REDIS_SENTINEL_RECONNECT_MAX_DELAY": "soon"},
         "REDIS_SENTINEL_RECONNECT_MAX_DELAY: expected a number"),
        ({**SENTINELS, "REDIS_DB": "x"}, "REDIS_DB: expected an integer"),
    ],
)
def test_bad_sentinel_settings_name_the_variable(environ: dict[str, str], message: str) -> None:
    """Every mistake stops start-up with the variable and what is wrong with it."""
    with pytest.raises(ConfigError) as caught:
        settings(environ)
    assert message in str(caught.value)


def test_an_empty_sentinel_list_means_no_sentinel() -> None:
    """REDIS_SENTINELS= (empty, as a template leaves it) is no setting, like
    an empty REDIS_HOST."""
    s = settings({"REDIS_SENTINELS": "", "REDIS_HOST": "redis"})
    assert s.redis is not None and s.redis.sentinel is None and s.redis.host == "redis"


def test_production_without_redis_mentions_sentinel(capsys: pytest.CaptureFixture[str]) -> None:
    """An operator who forgets Redis in production learns that Sentinel is a way too."""
    with pytest.raises(SystemExit):
        settings_for(parsed("--env-file", "/dev/null"), {"NODE_ENV": "production"})
    err = capsys.readouterr().err
    assert "REDIS_SENTINELS" in err and "REDIS_SENTINEL_MASTER" in err


def test_production_with_sentinels_needs_no_redis_host() -> None:
    """Sentinels are a complete answer to "where is Redis" for production."""
    chosen = settings_for(
        parsed("--env-file", "/dev/null"), {"NODE_ENV": "production", **SENTINELS}
    )
    assert chosen.production and chosen.redis is not None
