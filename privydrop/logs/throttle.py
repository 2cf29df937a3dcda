"""Log lines a client can cause, at most one per cause per interval.

A client can make the server reject its input, or refuse its joins, as fast
as it can send them; a flood of bad requests must not become a flood of log
lines, at any level. The first event of each cause is logged, later ones
within C{interval_s} are only counted, and the count rides on the next one
logged (field C{suppressed}).

Events of a connection's life (a session opened or closed, a room joined),
which honest clients cause too and an operator debugging wants to see, get a
burst: the first L{LIFECYCLE_BURST} of a cause in an interval are logged,
only those past it are counted.

A cause is a fixed label chosen by the code (C{"slow-headers"},
C{"join-refused:rate_limited"}), never text the client wrote: a client
choosing causes could fill the table and log one line per cause.

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
from twisted.logger import Logger, LogLevel

from privydrop.logs import levels

#: Distinct causes remembered; beyond this the oldest are forgotten.
MAX_CAUSES = 1_000

#: The cause rejections are tallied under once L{MAX_CAUSES} others are.
OTHER_CAUSE = "other"

#: Seconds between two events of one cause, unless a setting says otherwise.
DEFAULT_INTERVAL_S = 10.0

#: Events of one lifecycle cause logged per interval (see the module
#: docstring): every one of a handful of clients, ten a second in a flood.
LIFECYCLE_BURST = 100


class WarningThrottle:
    """Log events, each (logger, cause) at most once per C{interval_s}."""

    def __init__(self, clock: IReactorTime, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        """
        @param clock: "now".
        @param interval_s: the quiet period after each logged event of a cause.
        """
        self._clock = clock
        self._interval_s = interval_s
        #: (namespace, cause) -> [start of the interval, events logged in
        #: it, events suppressed since the last one logged]
        self._state: dict[tuple[str, str], list[Any]] = {}
        self._counts: dict[str, int] = {}

    def counts(self) -> dict[str, int]:
        """Every rejection reported so far, logged or not, by cause.

        At most L{MAX_CAUSES} causes are told apart; later new ones are
        tallied under L{OTHER_CAUSE}.
        """
        return dict(self._counts)

    def emit(
        self,
        level: LogLevel,
        log: Logger,
        cause: str,
        format: str,
        *,
        burst: int = 1,
        tally: bool = True,
        **fields: Any,
    ) -> bool:
        """Log C{format} with C{fields} at C{level} unless C{cause} had its
        C{burst} of events in the current interval.

        The event carries C{cause} and C{suppressed} (how many were dropped
        since the last one of this cause) besides C{fields}. Debug and info
        events are not logged, nor throttled, while their level is not recorded
        (L{privydrop.logs.levels}).

        @param burst: events of this cause logged per interval.
        @param tally: whether the event is a rejection, tallied in
            L{counts} whatever the log level.
        @return: whether the event was logged.
        """
        if tally:
            counts = self._counts
            name = cause if cause in counts or len(counts) < MAX_CAUSES else OTHER_CAUSE
            counts[name] = counts.get(name, 0) + 1
        if (level is LogLevel.debug and not levels.debug) or (
            level is LogLevel.info and not levels.info
        ):
            return False
        now = self._clock.seconds()
        key = (log.namespace, cause)
        state = self._state.get(key)
        if state is None or now - state[0] >= self._interval_s:
            suppressed = 0 if state is None else state[2]
            # Re-inserted, so the table forgets the causes least recently seen.
            self._state.pop(key, None)
            self._state[key] = [now, 1, 0]
            while len(self._state) > MAX_CAUSES:
                del self._state[next(iter(self._state))]
        elif state[1] < burst:
            suppressed = state[2]
            state[1] += 1
            state[2] = 0
        else:
            state[2] += 1
            return False
        log.emit(level, format, cause=cause, suppressed=suppressed, **fields)
        return True

    def warn(self, log: Logger, cause: str, format: str, **fields: Any) -> bool:
        """L{emit} at C{warn}."""
        return self.emit(LogLevel.warn, log, cause, format, **fields)

    def info(self, log: Logger, cause: str, format: str, **fields: Any) -> bool:
        """L{emit} at C{info}."""
        return self.emit(LogLevel.info, log, cause, format, **fields)

    def debug(self, log: Logger, cause: str, format: str, **fields: Any) -> bool:
        """L{emit} at C{debug}."""
        return self.emit(LogLevel.debug, log, cause, format, **fields)

    def lifecycle(
        self, level: LogLevel, log: Logger, cause: str, format: str, **fields: Any
    ) -> bool:
        """L{emit} with a burst of L{LIFECYCLE_BURST}, for a connection's life events."""
        return self.emit(
            level, log, cause, format, burst=LIFECYCLE_BURST, tally=False, **fields
        )
