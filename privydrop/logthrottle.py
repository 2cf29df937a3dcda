"""Warnings about rejected client input, at most one per cause per interval.

A flood of bad requests must not become a flood of log lines: the first
rejection of each cause is logged, later ones within C{interval_s} are only
counted, and the count is reported with the next logged one. Time comes from
an C{IReactorTime}, so tests drive it with a C{Clock}. Knows nothing of HTTP.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

#: Distinct causes remembered; beyond this the oldest are forgotten.
MAX_CAUSES = 1_000


class ThrottledWarnings:
    """Log C{warn} events, each cause at most once per C{interval_s} seconds."""

    def __init__(self, log: Logger, clock: IReactorTime, interval_s: float = 10.0) -> None:
        """
        @param log: where the events go (the caller's module logger).
        @param clock: "now".
        @param interval_s: the quiet period after each logged event of a cause.
        """
        self._log = log
        self._clock = clock
        self._interval_s = interval_s
        #: cause -> (time last logged, rejections suppressed since)
        self._state: dict[str, tuple[float, int]] = {}

    def warn(self, cause: str, format: str, **fields: Any) -> bool:
        """Log C{format} with C{fields} unless C{cause} was logged recently.

        The event carries C{cause} and C{suppressed} (how many were dropped
        since the last one of this cause).

        @return: whether the event was logged.
        """
        now = self._clock.seconds()
        last = self._state.get(cause)
        if last is not None and now - last[0] < self._interval_s:
            self._state[cause] = (last[0], last[1] + 1)
            return False
        suppressed = last[1] if last is not None else 0
        self._state.pop(cause, None)
        self._state[cause] = (now, 0)
        while len(self._state) > MAX_CAUSES:
            del self._state[next(iter(self._state))]
        self._log.warn(format, cause=cause, suppressed=suppressed, **fields)
        return True
