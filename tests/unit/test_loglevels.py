"""Which levels are recorded: the package's own filter, the flags hot paths
check, the per-cause throttle, and what of client text reaches a log line."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.logger import Logger as TwistedLogger

from privydrop.logs import levels as loglevels
from privydrop.logs.client_text import clip, redact_uri
from privydrop.logs.levels import Logger
from privydrop.logs.throttle import WarningThrottle
from privydrop.settings import Settings
from privydrop.tap import Options, _twist_log_level, recorded_level

PACKAGE = Path(__file__).resolve().parents[2] / "privydrop"


@pytest.fixture(autouse=True)
def restore() -> Iterator[None]:
    yield
    loglevels.set_minimum(None)


def test_everything_is_emitted_by_default() -> None:
    """Without a known filter (tests, twistd, embedding) no event is skipped."""
    loglevels.set_minimum(None)
    assert loglevels.debug and loglevels.info


@pytest.mark.parametrize(
    "level, debug, info",
    [
        (LogLevel.debug, True, True),
        (LogLevel.info, False, True),
        (LogLevel.warn, False, False),
        (LogLevel.critical, False, False),
    ],
)
def test_levels_below_the_minimum_are_off(level: LogLevel, debug: bool, info: bool) -> None:
    loglevels.set_minimum(level)
    assert (loglevels.debug, loglevels.info) == (debug, info)


def test_the_level_comes_from_twist_options() -> None:
    """Under `twist --log-level warn privydrop`, our options' parent carries the level
    (as TwistOptions stores it; parsing TwistOptions here would install a reactor)."""
    options = Options()
    options.parent = {"logLevel": LogLevel.warn}  # type: ignore[attr-defined]
    assert _twist_log_level(options) is LogLevel.warn
    options.parent = {"logLevel": "warn"}  # type: ignore[attr-defined]
    assert _twist_log_level(options) is None


def test_no_twist_parent_means_unknown() -> None:
    """twistd's options have no log level filter: emit everything."""

    class TwistdOptions(dict[str, object]):
        parent = {"logfile": "-"}

    assert _twist_log_level(TwistdOptions()) is None
    assert _twist_log_level(object()) is None


def test_the_package_logger_drops_events_below_the_minimum() -> None:
    """Filtered at the source: twistd records whatever reaches its observer."""
    log = Logger(namespace="privydrop.test")
    loglevels.set_minimum(LogLevel.info)
    with capturedLogs() as events:
        log.debug("hidden {x}", x=1)
        log.info("shown")
        log.warn("shown too")
        try:
            raise ValueError("boom")
        except ValueError:
            log.failure("a failure is critical")
    assert [e["log_level"] for e in events] == [LogLevel.info, LogLevel.warn, LogLevel.critical]
    loglevels.set_minimum(LogLevel.error)
    with capturedLogs() as events:
        log.info("hidden")
        log.error("shown")
    assert [e["log_format"] for e in events] == ["shown"]


def test_the_package_logger_keeps_its_module_namespace() -> None:
    log = Logger()
    assert log.namespace == __name__

    class Holder:
        log = Logger()

    assert Holder().log.namespace.endswith("Holder")
    assert type(Holder().log) is Logger


def test_every_module_logs_through_the_package_logger() -> None:
    """A plain twisted.logger.Logger would escape LOG_LEVEL."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name == "logs":
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "twisted.logger":
                if any(alias.name == "Logger" for alias in node.names):
                    offenders.append(str(path.relative_to(PACKAGE)))
            if isinstance(node, ast.Attribute) and node.attr == "Logger":
                if isinstance(node.value, ast.Name) and node.value.id == "logger":
                    offenders.append(str(path.relative_to(PACKAGE)))
    assert offenders == []


@pytest.mark.parametrize(
    "log_level, twist, expected",
    [
        (None, None, LogLevel.info),  # twistd: info unless told otherwise
        (None, LogLevel.debug, LogLevel.debug),  # twist --log-level debug
        (None, LogLevel.warn, LogLevel.warn),
        ("debug", None, LogLevel.debug),
        ("error", None, LogLevel.error),
        ("debug", LogLevel.warn, LogLevel.warn),  # twist drops below warn anyway
        ("error", LogLevel.debug, LogLevel.error),
    ],
)
def test_recorded_level(log_level: str | None, twist: LogLevel | None, expected: LogLevel) -> None:
    assert recorded_level(Settings(log_level=log_level), twist) is expected


@pytest.mark.parametrize(
    "name, level",
    [("debug", LogLevel.debug), ("INFO", LogLevel.info), ("warn", LogLevel.warn),
     ("warning", LogLevel.warn), ("Error", LogLevel.error), ("critical", LogLevel.critical)],
)
def test_level_names(name: str, level: LogLevel) -> None:
    assert loglevels.level_named(name) is level


def test_an_unknown_level_name_is_refused() -> None:
    with pytest.raises(ValueError):
        loglevels.level_named("verbose")


def test_the_throttle_logs_each_cause_once_per_interval_at_any_level() -> None:
    clock = Clock()
    throttle = WarningThrottle(clock, interval_s=10)
    log = TwistedLogger(namespace="privydrop.test")
    with capturedLogs() as events:
        for _ in range(1000):
            throttle.debug(log, "drop", "dropped {what}", what="x")
            throttle.info(log, "refused", "refused")
        clock.advance(10)
        throttle.debug(log, "drop", "dropped {what}", what="x")
    assert [(e["log_level"], e["cause"], e["suppressed"]) for e in events] == [
        (LogLevel.debug, "drop", 0),
        (LogLevel.info, "refused", 0),
        (LogLevel.debug, "drop", 999),
    ]


def test_the_throttle_neither_logs_nor_counts_levels_not_recorded() -> None:
    clock = Clock()
    throttle = WarningThrottle(clock)
    log = TwistedLogger(namespace="privydrop.test")
    loglevels.set_minimum(LogLevel.info)
    with capturedLogs() as events:
        assert not throttle.debug(log, "drop", "dropped")
        assert throttle.info(log, "drop", "shown")
    assert [e["suppressed"] for e in events] == [0]


def test_clip_keeps_short_text_and_cuts_long_text() -> None:
    assert clip("join") == "join"
    long = "e" * 1_000_000
    clipped = clip(long)
    assert clipped.startswith("e" * 200) and len(clipped) < 250
    assert "1000000" in clipped
    assert clip(b"\xff" * 10) == "\ufffd" * 10
    assert len(clip(b"x" * 5000)) < 250


@pytest.mark.parametrize(
    "uri",
    [
        b"/socket.io/?EIO=4&transport=polling&sid=SECRETSID",
        b"/socket.io/?sid=SECRETSID&EIO=4",
        b"/socket.io/?EIO=4&%73id=SECRETSID",
        b"/socket.io/?EIO=4&SID=SECRETSID&t=x",
        "/socket.io/?EIO=4&transport=websocket&sid=SECRETSID",
    ],
)
def test_redact_uri_hides_the_engineio_sid(uri: bytes | str) -> None:
    redacted = redact_uri(uri)
    assert "SECRETSID" not in redacted
    assert "<redacted>" in redacted
    assert redacted.startswith("/socket.io/?")


def test_redact_uri_keeps_other_parameters_and_clips() -> None:
    assert redact_uri(b"/api/get_room?x=1&sidx=2") == "/api/get_room?x=1&sidx=2"
    assert len(redact_uri(b"/" + b"a" * 100_000)) < 250
    event = {"log_format": "{uri}", "uri": redact_uri(b"/?sid=abc")}
    assert formatEvent(event) == "/?sid=<redacted>"


def test_lifecycle_events_get_a_burst_per_interval() -> None:
    from privydrop.logs.throttle import LIFECYCLE_BURST

    clock = Clock()
    throttle = WarningThrottle(clock, interval_s=10)
    log = TwistedLogger(namespace="privydrop.test")
    with capturedLogs() as events:
        for _ in range(LIFECYCLE_BURST + 50):
            throttle.lifecycle(LogLevel.info, log, "opened", "session opened")
        clock.advance(10)
        throttle.lifecycle(LogLevel.info, log, "opened", "session opened")
    assert len(events) == LIFECYCLE_BURST + 1
    assert events[-1]["suppressed"] == 50


def test_the_package_logger_never_shows_an_engineio_sid() -> None:
    """The sid is a session's only credential: lines name the session by a label."""
    from privydrop.logs.client_text import sid_label

    log = Logger(namespace="privydrop.test")
    with capturedLogs() as events:
        log.info("engine session {engine_sid} closed", engine_sid="SECRETSID0123456789a")
        log.info("engine session {engine_sid} opened", engine_sid="SECRETSID0123456789a")
        log.info("another {engine_sid}", engine_sid="OTHERSID")
    lines = [formatEvent(e) for e in events]
    assert all("SECRET" not in line for line in lines)
    label = sid_label("SECRETSID0123456789a")
    assert lines[:2] == ["engine session %s closed" % label, "engine session %s opened" % label]
    assert sid_label("OTHERSID") != label
