"""The twistd plugin's start-up decisions, in process (the subprocess runs are in integration)."""

from __future__ import annotations

import pytest
from twisted.logger import LogLevel, capturedLogs
from twisted.plugin import IPlugin, getPlugins

from privydrop.tap import Options, settings_for


def parsed(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def test_production_without_redis_exits_naming_the_variables(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An operator who forgets Redis in production is told which variable to set, and nothing starts."""
    with capturedLogs() as events, pytest.raises(SystemExit) as caught:
        settings_for(parsed("--env-file", "/dev/null"), {"NODE_ENV": "production"})
    assert caught.value.code == 1
    err = capsys.readouterr().err
    assert "REDIS_HOST" in err and "REDIS_URL" in err
    critical = [e for e in events if e["log_level"] == LogLevel.critical]
    assert len(critical) == 1 and "REDIS_HOST" in critical[0]["error"]


def test_invalid_value_exits_naming_variable_and_value(capsys: pytest.CaptureFixture[str]) -> None:
    """NODE_ENV=prod is refused with the variable and the value in the message."""
    with pytest.raises(SystemExit):
        settings_for(parsed("--env-file", "/dev/null"), {"NODE_ENV": "prod"})
    err = capsys.readouterr().err
    assert "NODE_ENV" in err and "'prod'" in err


def test_development_without_redis_is_fine() -> None:
    """A developer can start the server with no configuration at all."""
    settings = settings_for(parsed("--env-file", "/dev/null"), {})
    assert settings.redis is None and not settings.production


def test_plugin_is_discoverable() -> None:
    """twistd finds "privydrop" among its plugins."""
    names = {getattr(p, "tapname", None) for p in getPlugins(IPlugin)}
    assert "privydrop" in names


def test_garbage_collector_is_tuned_for_a_server() -> None:
    """Start-up objects are frozen and young collections are rarer than CPython's default."""
    import gc

    from privydrop.tap import GC_YOUNG_THRESHOLD, tune_garbage_collector

    before = gc.get_threshold()
    try:
        tune_garbage_collector()
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD > before[0]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
