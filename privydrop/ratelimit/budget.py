"""A call budget: N calls per S seconds per client key, across processes.

Used by the REST API (C{API_RATE_LIMIT}, and C{LOGS_DEBUG_RATE_LIMIT} for
C{logs_debug}). Time comes from an C{IReactorTime} so tests drive it with a
C{Clock}; the key is the client's rate-limit key
(L{privydrop.web.clientip.rate_limit_key}).

Two modes:

 - fixed: windows aligned on multiples of S; at most N calls in each, so up
   to 2N in a burst straddling a boundary.
 - sliding (default): the previous window's count, weighted by how much of
   it still overlaps the last S seconds, plus the current window's count
   (the usual two-counter approximation of a sliding log). Still at most N
   per aligned window, and always fewer than 2N in any S seconds; right
   after a full window only the overlap-weighted remainder is allowed. It
   costs two integers per key instead of N timestamps.

Across processes. Given a store (Redis, when configured), the budget holds
for a client's calls to every process sharing it, not N times for N
processes. The decision never waits for the store: the answer the client
waits on costs no Redis round trip. Each allowed call is counted in the
store I{afterwards} (L{IStore.count_calls}: one script adding the call to
the client's count of the window and reading the previous window's), and
the answer tells this process how many calls the other processes made.
A decision adds those to this process's own exact count. The price is a
bounded overshoot: the calls the other processes allowed since this
process's last count answered, that is, at most what all processes together
admit for one client during one Redis round trip (plus one call per process
for a client it has not seen yet). Folding the count into each operation's
script was not possible (C{logs_debug} and C{ice_servers} have no store
operation), and pipelining it with the operation would still make the
refusal wait for Redis, or would run the operation before the refusal. A
count that fails (Redis down) is dropped: the budget then counts per
process, as without Redis, and nothing reaches the request.

Memory is bounded and eviction is O(1) amortised: the table is kept in the
order clients were last seen (an C{OrderedDict}, moved to the end on every
call, allowed or refused), so the clients idle for two windows, whose counts
no longer matter, are at its front: each call drops them from there until it
meets one still in use, and drops each client at most once per entry. At most
C{max_keys} clients are kept; past that the least recently seen go first.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from privydrop.logs.levels import Logger
from privydrop.logs.throttle import WarningThrottle
from privydrop.store.interface import CallCounts, IStore, StoreUnavailable

_log = Logger()


@attrs.frozen
class BudgetDecision:
    """What L{CallBudget.spend} decided.

    @ivar allowed: the call may proceed.
    @ivar remaining: calls left before the limit (0 when refused).
    @ivar retry_after_s: whole seconds after which a refused client may try
        again (0 when allowed).
    """

    allowed: bool
    remaining: int
    retry_after_s: int


class _Counter:
    """One client's calls: its own on this process, and the others' as last
    learned from the store, for the current and the previous window."""

    __slots__ = ("window_index", "current", "previous", "others_current", "others_previous")

    def __init__(self, window_index: int) -> None:
        self.window_index = window_index
        self.current = 0
        self.previous = 0
        self.others_current = 0
        self.others_previous = 0


class CallBudget:
    """Counts calls per client key against N per S seconds.

    Only allowed calls are counted: a client that keeps hammering after being
    refused is refused for the rest of the window, not locked out for ever.

    @ivar keys_examined: table entries looked at to forget idle or surplus
        clients, since creation (diagnostics; it grows with the calls, not
        with the size of the table).
    """

    def __init__(
        self,
        calls: int,
        window_s: float,
        clock: IReactorTime,
        *,
        sliding: bool = True,
        max_keys: int = 100_000,
        store: IStore | None = None,
        name: str = "api",
    ) -> None:
        """
        @param calls: calls allowed per window; 0 turns the budget off.
        @param window_s: the window's length, seconds (> 0; whole seconds
            with a C{store}).
        @param clock: where "now" comes from.
        @param sliding: sliding-window approximation (True) or fixed windows.
        @param max_keys: most client keys remembered at once (> 0).
        @param store: where the processes sharing it count together; None
            counts in this process alone.
        @param name: the budget's name in the store's keys (C{api},
            C{logs_debug}).
        @raise ValueError: on a negative C{calls} or non-positive C{window_s}
            or C{max_keys}.
        """
        if calls < 0:
            raise ValueError(f"calls must be >= 0, not {calls!r}")
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, not {window_s!r}")
        if max_keys <= 0:
            raise ValueError(f"max_keys must be > 0, not {max_keys!r}")
        self._calls = calls
        self._window_s = float(window_s)
        self._clock = clock
        self._sliding = sliding
        self._max_keys = max_keys
        self._store = store
        self._name = name
        self._counters: OrderedDict[str, _Counter] = OrderedDict()
        self._failures = WarningThrottle(clock)
        self.keys_examined = 0

    @property
    def enabled(self) -> bool:
        """Whether calls are limited at all."""
        return self._calls > 0

    def __len__(self) -> int:
        """How many client keys are remembered."""
        return len(self._counters)

    def _forget_idle(self, index: int) -> None:
        """Drop the clients last seen two windows ago or earlier (at the front)."""
        counters = self._counters
        while counters:
            self.keys_examined += 1
            key = next(iter(counters))
            if counters[key].window_index >= index - 1:
                return
            del counters[key]

    @staticmethod
    def _roll(counter: _Counter, index: int) -> None:
        if counter.window_index == index:
            return
        if counter.window_index == index - 1:
            counter.previous = counter.current
            counter.others_previous = counter.others_current
        else:
            counter.previous = counter.others_previous = 0
        counter.current = counter.others_current = 0
        counter.window_index = index

    def spend(self, key: str) -> BudgetDecision:
        """Count one call by C{key}, unless it is over budget.

        Never waits: with a store, the call is counted there afterwards.

        @param key: who is calling (the client's rate-limit key).
        """
        if not self.enabled:
            return BudgetDecision(allowed=True, remaining=0, retry_after_s=0)
        now = self._clock.seconds()
        index = math.floor(now / self._window_s)
        elapsed = now - index * self._window_s
        self._forget_idle(index)
        counters = self._counters
        counter = counters.get(key)
        if counter is None:
            counter = counters[key] = _Counter(index)
            while len(counters) > self._max_keys:
                self.keys_examined += 1
                counters.popitem(last=False)
        else:
            self._roll(counter, index)
            counters.move_to_end(key)
        previous = counter.previous + counter.others_previous
        current = counter.current + counter.others_current
        weight = (1.0 - elapsed / self._window_s) if self._sliding else 0.0
        used = previous * weight + current
        if used + 1 > self._calls:
            if self._sliding and current < self._calls and previous:
                # Wait until enough of the previous window has slid out.
                # previous * (1 - (elapsed + t) / S) + current + 1 <= calls
                spare = (self._calls - 1 - current) / previous
                wait = self._window_s * (1 - spare) - elapsed
                wait = min(wait, self._window_s - elapsed)
            else:
                wait = self._window_s - elapsed
            return BudgetDecision(
                allowed=False, remaining=0, retry_after_s=max(1, math.ceil(wait))
            )
        counter.current += 1
        if self._store is not None:
            self._count_shared(key, counter, index)
        remaining = max(0, math.floor(self._calls - used - 1))
        return BudgetDecision(allowed=True, remaining=remaining, retry_after_s=0)

    # -- across processes ----------------------------------------------------

    def _count_shared(self, key: str, counter: _Counter, index: int) -> None:
        """Add this call to the store's count; learn the others' calls from the answer."""
        store = self._store
        if store is None:
            return
        window_s = int(self._window_s)
        counted: Deferred[CallCounts] = Deferred.fromCoroutine(
            store.count_calls(self._name, key, window_s, index, 1, 2 * window_s + 1)
        )
        counted.addCallback(self._learn, counter, index)
        counted.addErrback(self._count_failed)

    @staticmethod
    def _learn(counts: CallCounts, counter: _Counter, index: int) -> None:
        # The answer's totals hold this process's calls counted so far, and
        # at most the ones it made since (their counts are on the way): so
        # subtracting all of this process's calls never credits the others
        # with more than they made. The totals only grow, hence max().
        if counter.window_index == index:
            counter.others_current = max(counter.others_current, counts.current - counter.current)
            counter.others_previous = max(
                counter.others_previous, counts.previous - counter.previous
            )
        elif counter.window_index == index + 1:
            counter.others_previous = max(
                counter.others_previous, counts.current - counter.previous
            )

    def _count_failed(self, failure: Any) -> None:
        if failure.check(StoreUnavailable):
            self._failures.warn(
                _log,
                "budget-count",
                "the {budget} budget is counted per process: {error}",
                budget=self._name,
                error=failure.getErrorMessage(),
            )
            return
        _log.failure("counting a {budget} call failed", failure=failure, budget=self._name)
