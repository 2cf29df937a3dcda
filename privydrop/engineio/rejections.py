"""Warnings about rejected client input, rate-limited per cause.

A client can make the server reject its input as fast as it can send it;
logging every rejection would let it flood the logs. L{RejectionLog} routes
each warning through the project's L{privydrop.logthrottle.ThrottledWarnings}
(one per emitting logger, so events keep their module's namespace): the first
of each cause per C{rejection_log_interval_s} is logged, the rest are counted
and the count rides on the next one.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from privydrop.logthrottle import ThrottledWarnings


class RejectionLog:
    """Per-cause warning throttle shared by every transport of one server."""

    def __init__(self, clock: IReactorTime, interval_s: float) -> None:
        """
        @param clock: where time comes from.
        @param interval_s: quiet period after each logged warning of a cause.
        """
        self._clock = clock
        self._interval_s = interval_s
        self._throttles: dict[str, ThrottledWarnings] = {}

    def warn(self, logger: Logger, cause: str, format: str, **fields: Any) -> bool:
        """Log C{format} on C{logger} unless C{cause} was logged recently.

        The event carries C{cause} and C{suppressed} besides C{fields}.

        @return: whether it was logged.
        """
        throttle = self._throttles.get(logger.namespace)
        if throttle is None:
            throttle = ThrottledWarnings(logger, self._clock, self._interval_s)
            self._throttles[logger.namespace] = throttle
        return throttle.warn(cause, format, **fields)
