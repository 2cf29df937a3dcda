"""Warnings about rejected client input, at most one per cause per interval.

A client can make the server reject its input as fast as it can send it; a
flood of bad requests must not become a flood of log lines. The first
rejection of each cause is logged, later ones within C{interval_s} are only
counted, and the count rides on the next one logged (field C{suppressed}).

One L{WarningThrottle} serves every logger of a component: causes are kept
per logger namespace, so each event keeps the namespace of the module that
emits it. It also tallies every rejection by cause, logged or not
(L{WarningThrottle.counts}, read by the metrics). Time comes from an
C{IReactorTime}, so tests drive it with a C{Clock}. Knows nothing of HTTP
or Socket.IO.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

#: Distinct causes remembered; beyond this the oldest are forgotten.
MAX_CAUSES = 1_000

#: The cause rejections are tallied under once L{MAX_CAUSES} others are.
OTHER_CAUSE = "other"

#: Seconds between two warnings of one cause, unless a setting says otherwise.
DEFAULT_INTERVAL_S = 10.0


class WarningThrottle:
    """Log C{warn} events, each (logger, cause) at most once per C{interval_s}."""

    def __init__(self, clock: IReactorTime, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        """
        @param clock: "now".
        @param interval_s: the quiet period after each logged event of a cause.
        """
        self._clock = clock
        self._interval_s = interval_s
        #: (namespace, cause) -> (time last logged, rejections suppressed since)
        self._state: dict[tuple[str, str], tuple[float, int]] = {}
        self._counts: dict[str, int] = {}

    def counts(self) -> dict[str, int]:
        """Every rejection reported so far, logged or not, by cause.

        At most L{MAX_CAUSES} causes are told apart; later new ones are
        tallied under L{OTHER_CAUSE}.
        """
        return dict(self._counts)

    def warn(self, log: Logger, cause: str, format: str, **fields: Any) -> bool:
        """Log C{format} with C{fields} on C{log} unless C{cause} was logged recently.

        The event carries C{cause} and C{suppressed} (how many were dropped
        since the last one of this cause) besides C{fields}.

        @return: whether the event was logged.
        """
        counts = self._counts
        tally = cause if cause in counts or len(counts) < MAX_CAUSES else OTHER_CAUSE
        counts[tally] = counts.get(tally, 0) + 1
        now = self._clock.seconds()
        key = (log.namespace, cause)
        last = self._state.get(key)
        if last is not None and now - last[0] < self._interval_s:
            self._state[key] = (last[0], last[1] + 1)
            return False
        suppressed = last[1] if last is not None else 0
        self._state.pop(key, None)
        self._state[key] = (now, 0)
        while len(self._state) > MAX_CAUSES:
            del self._state[next(iter(self._state))]
        log.warn(format, cause=cause, suppressed=suppressed, **fields)
        return True
