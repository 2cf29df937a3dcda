"""The "which levels are recorded" flags that hot paths check before building events."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from twisted.logger import LogLevel

from privydrop.logs import levels as loglevels
from privydrop.tap import Options, _twist_log_level


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
