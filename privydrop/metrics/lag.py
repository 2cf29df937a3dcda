"""How late the reactor runs a timer: the event loop's lag.

Everything this server does runs in one thread, turn by turn; a turn that
takes long (a burst of joins, a slow collection, a blocking call) delays
every connection's next read and every timer. L{LagProbeService} sets a
timer every C{interval_s} and reports how late it fired, which is how long
the loop was busy when it was due.

It re-arms a one-shot timer from each firing rather than using
C{LoopingCall}: a C{LoopingCall} that fired late is re-armed for the next
multiple of its interval from its start, so how late a call is would have
to be reconstructed from its schedule; here the due time of each firing is
simply remembered.

Time comes from the clock handed in, so tests drive it with a C{Clock}.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from privydrop.logs.levels import Logger

_log = Logger()


class LagProbeService(Service):
    """Measures, every C{interval_s} while running, how late a timer fires."""

    def __init__(
        self, clock: IReactorTime, interval_s: float, observe: Callable[[float], None]
    ) -> None:
        """
        @param clock: the reactor whose lag is measured.
        @param interval_s: seconds between two measurements.
        @param observe: told each lag, seconds (0 when on time).
        """
        self._clock = clock
        self._interval_s = interval_s
        self._observe = observe
        self._call: IDelayedCall | None = None
        self._due = 0.0

    def startService(self) -> None:
        super().startService()
        self._arm()

    def stopService(self) -> None:
        super().stopService()
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    def _arm(self) -> None:
        self._due = self._clock.seconds() + self._interval_s
        self._call = self._clock.callLater(self._interval_s, self._fired)

    def _fired(self) -> None:
        self._call = None
        try:
            self._observe(max(0.0, self._clock.seconds() - self._due))
        except Exception:  # noqa: BLE001 - a timer callback is an error boundary
            _log.failure("recording the reactor lag failed")
        if self.running:
            self._arm()
