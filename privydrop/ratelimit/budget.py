"""An in-process call budget: N calls per S seconds per client key.

Used by the REST API (C{API_RATE_LIMIT}). It lives in the process, not in
the store: it protects this process from floods, and a wrong count across
processes costs nothing. Time comes from an C{IReactorTime} so tests drive
it with a C{Clock}.

Two modes:

 - fixed: windows aligned on multiples of S; at most N calls in each, so up
   to 2N in a burst straddling a boundary.
 - sliding (default): the previous window's count, weighted by how much of
   it still overlaps the last S seconds, plus the current window's count
   (the usual two-counter approximation of a sliding log). Still at most N
   per aligned window, and always fewer than 2N in any S seconds; right
   after a full window only the overlap-weighted remainder is allowed. It
   costs two integers per key instead of N timestamps.

Memory is bounded: keys idle for two windows are pruned (at most once per
window, by the call that notices), and at most C{max_keys} keys are kept; when
a flood of distinct keys exceeds that, the least recently admitted keys are
forgotten first.
"""

from __future__ import annotations

import math

import attrs
from twisted.internet.interfaces import IReactorTime


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


@attrs.define
class _Counter:
    window_index: int
    current: int = 0
    previous: int = 0


class CallBudget:
    """Counts calls per client key against N per S seconds.

    Only allowed calls are counted: a client that keeps hammering after being
    refused is refused for the rest of the window, not locked out for ever.
    """

    def __init__(
        self,
        calls: int,
        window_s: float,
        clock: IReactorTime,
        *,
        sliding: bool = True,
        max_keys: int = 100_000,
    ) -> None:
        """
        @param calls: calls allowed per window; 0 turns the budget off.
        @param window_s: the window's length, seconds (> 0).
        @param clock: where "now" comes from.
        @param sliding: sliding-window approximation (True) or fixed windows.
        @param max_keys: most client keys remembered at once (> 0).
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
        self._counters: dict[str, _Counter] = {}
        self._pruned_at_index = 0

    @property
    def enabled(self) -> bool:
        """Whether calls are limited at all."""
        return self._calls > 0

    def __len__(self) -> int:
        """How many client keys are remembered."""
        return len(self._counters)

    def _prune(self, index: int) -> None:
        if index <= self._pruned_at_index:
            return
        self._pruned_at_index = index
        stale = [
            key
            for key, counter in self._counters.items()
            if counter.window_index < index - 1
        ]
        for key in stale:
            del self._counters[key]

    def _roll(self, counter: _Counter, index: int) -> None:
        if counter.window_index == index:
            return
        counter.previous = counter.current if counter.window_index == index - 1 else 0
        counter.current = 0
        counter.window_index = index

    def spend(self, key: str) -> BudgetDecision:
        """Count one call by C{key}, unless it is over budget.

        @param key: who is calling (the client IP).
        """
        if not self.enabled:
            return BudgetDecision(allowed=True, remaining=0, retry_after_s=0)
        now = self._clock.seconds()
        index = math.floor(now / self._window_s)
        elapsed = now - index * self._window_s
        self._prune(index)
        counter = self._counters.get(key)
        if counter is None:
            counter = _Counter(window_index=index)
        else:
            self._roll(counter, index)
        weight = (1.0 - elapsed / self._window_s) if self._sliding else 0.0
        used = counter.previous * weight + counter.current
        if used + 1 > self._calls:
            if self._sliding and counter.current < self._calls:
                # Wait until enough of the previous window has slid out.
                # previous * (1 - (elapsed + t) / S) + current + 1 <= calls
                spare = (self._calls - 1 - counter.current) / counter.previous
                wait = self._window_s * (1 - spare) - elapsed
                wait = min(wait, self._window_s - elapsed)
            else:
                wait = self._window_s - elapsed
            return BudgetDecision(
                allowed=False, remaining=0, retry_after_s=max(1, math.ceil(wait))
            )
        counter.current += 1
        # Re-insert so dict order is least recently admitted first.
        self._counters.pop(key, None)
        self._counters[key] = counter
        while len(self._counters) > self._max_keys:
            del self._counters[next(iter(self._counters))]
        remaining = max(0, math.floor(self._calls - used - 1))
        return BudgetDecision(allowed=True, remaining=remaining, retry_after_s=0)
