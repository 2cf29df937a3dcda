"""Warnings about rejected client input, rate-limited per cause.

A client can make the server reject its input as fast as it can send it;
logging every rejection would let it flood the logs. L{RejectionLog} lets
C{burst} warnings per cause through in each window of C{window_s} seconds,
then counts the rest and reports the count once the window ends.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

_log = Logger()


class RejectionLog:
    """Per-cause warning budget on a clock."""

    def __init__(self, clock: IReactorTime, burst: int, window_s: float) -> None:
        """
        @param clock: where time comes from.
        @param burst: warnings logged per cause in one window.
        @param window_s: window length in seconds.
        """
        self._clock = clock
        self._burst = burst
        self._window_s = window_s
        # cause -> [window start, warnings seen in the window]
        self._windows: dict[str, list[float]] = {}

    def warn(self, logger: Logger, cause: str, format: str, **fields: Any) -> bool:
        """Log C{format} as a warning unless C{cause} used up its budget.

        The event carries C{cause} as a field besides C{fields}.

        @return: whether it was logged.
        """
        now = self._clock.seconds()
        window = self._windows.get(cause)
        if window is None or now - window[0] >= self._window_s:
            if window is not None and window[1] > self._burst:
                _log.warn(
                    "{suppressed} more {cause} warnings were not logged",
                    suppressed=int(window[1]) - self._burst,
                    cause=cause,
                )
            window = [now, 0.0]
            self._windows[cause] = window
        window[1] += 1
        if window[1] > self._burst:
            return False
        logger.warn(format, cause=cause, **fields)  # noqa: G010 - twisted.logger has no warning()
        return True
