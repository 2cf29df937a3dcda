"""Whether the store has been usable lately, from the operations it already does.

C{GET /health} tells a load balancer or Docker whether to send this process
traffic. Asking Redis on every health check would put a command per check on
Redis and make the answer depend on that one check; instead L{StoreHealth}
watches the outcome of every store operation (each bounded by
C{REDIS_COMMAND_TIMEOUT}) and L{StoreService} adds a PING when the store has
been idle for a while, so an idle process notices too.

The store is I{unusable} from the start of the first operation that failed
after the last one that succeeded, whatever the cause: Redis down or
refusing connections, stalled (the operation timed out), answering
C{-LOADING}, refusing the password after a rotation (C{NOAUTH}, C{WRONGPASS}),
or any other error reply. It is reported once that has lasted the grace
period (the command timeout): one failed operation between successes, as a
restart or a failover causes, does not take the process out.

Time comes from an C{IReactorTime}; this module does no I/O.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime


class StoreHealth:
    """The outcomes of the store's operations, and what they say of the store."""

    def __init__(self, clock: IReactorTime, grace_s: float) -> None:
        """
        @param clock: "now".
        @param grace_s: how long the store may be unusable before it is
            reported (the command timeout).
        """
        self._clock = clock
        self._grace_s = grace_s
        #: Start of the latest operation that succeeded.
        self._ok_started = float("-inf")
        #: Start of the first operation that failed since then; None: none did.
        self._failing_since: float | None = None
        self._reason = ""
        #: When the latest operation ended, either way.
        self._last_outcome = clock.seconds()

    def succeeded(self, started: float) -> None:
        """An operation begun at C{started} got its answer."""
        self._last_outcome = self._clock.seconds()
        if started >= self._ok_started:
            self._ok_started = started
        if self._failing_since is not None and started >= self._failing_since:
            self._failing_since = None

    def failed(self, started: float, reason: str) -> None:
        """An operation begun at C{started} failed: the store was unusable to it.

        A failure of an operation begun before one that has since succeeded
        says nothing new (a stalled reply timing out after Redis recovered).
        """
        self._last_outcome = self._clock.seconds()
        if started < self._ok_started:
            return
        if self._failing_since is None or started < self._failing_since:
            self._failing_since = started
        self._reason = reason

    def idle_for(self) -> float:
        """Seconds since an operation last ended."""
        return self._clock.seconds() - self._last_outcome

    def unusable_for(self) -> float:
        """Seconds the store has been unusable (0 when it is not)."""
        if self._failing_since is None:
            return 0.0
        return max(0.0, self._clock.seconds() - self._failing_since)

    def problem(self) -> str | None:
        """Why the store is to be reported unusable, or None while it is usable
        or has been unusable for less than the grace period."""
        unusable = self.unusable_for()
        if self._failing_since is None or unusable < self._grace_s:
            return None
        return "store unusable for %.1f s: %s" % (unusable, self._reason)
