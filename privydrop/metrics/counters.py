"""What components are handed to count events: label children bound once.

A component never looks a label up per event (prometheus_client's
C{labels()} builds a key and takes a lock); it is handed children bound to
their labels when the tree is built, and an event costs one C{inc()} (or
one C{observe()}). Without metrics (C{METRICS_LISTEN} unset) the same
objects count into L{UNCOUNTED}, which does nothing.

The counters are L{TallyCounter}s rather than prometheus_client's
C{Counter}: every event of this server happens in the reactor thread, and
C{/metrics} is rendered there too (L{privydrop.metrics.web}), so a child is
a plain number with no lock (prometheus_client's takes one per increment,
which costs several times the addition). A L{TallyCounter} is a
prometheus_client collector exposing its children as one counter family.

  - L{SignalingMetrics}: joins by outcome and relayed messages by event, for
    signaling's handlers (the relay path: one dictionary look-up and one
    C{inc()} per message).
  - L{ApiRequests}: called by the site once per finished API request.
  - L{RedisCommandTimer}: times the store's Redis commands.

Nothing here knows the components; they are described by the strings they
pass (event names, the store's join outcomes, command names).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import Histogram
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from privydrop.metrics.catalog import (
    JOIN_OUTCOMES,
    JOIN_REFUSALS,
    OTHER_ROUTE,
    MetricSpec,
)


class Counting(Protocol):
    """A counter bound to its labels: a L{Tally}, or L{UNCOUNTED}."""

    def inc(self, amount: float = 1) -> None:
        """Count C{amount} more."""


class _Uncounted:
    """Counts nothing: the counter of components built without metrics."""

    __slots__ = ()

    def inc(self, amount: float = 1) -> None:
        pass


#: The counter that counts nothing.
UNCOUNTED: Counting = _Uncounted()


class Tally:
    """One child of a L{TallyCounter}: a number only the reactor thread touches."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        """Count C{amount} more."""
        self.value += amount


class TallyCounter:
    """A labelled counter of L{Tally} children; a prometheus_client collector.

    Children are exposed in the order they were first asked for.
    """

    def __init__(self, spec: MetricSpec) -> None:
        """
        @param spec: the counter's name, help and label names.
        """
        self._spec = spec
        self._children: dict[tuple[str, ...], Tally] = {}

    def labels(self, *values: str) -> Tally:
        """The child for these label values (in the spec's label order), made once."""
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self._spec.labels):
                raise ValueError(
                    "%s takes labels %r, not %r" % (self._spec.name, self._spec.labels, values)
                )
            child = self._children[values] = Tally()
        return child

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self._spec.name, self._spec.help, labels=self._spec.labels)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._spec.name, self._spec.help, labels=self._spec.labels)
        for values, child in self._children.items():
            family.add_metric(values, child.value)
        yield family


class _Children(dict[str, Counting]):
    """The children of a labelled counter with one label, by label value.

    The expected values are bound up front (so they are exposed as 0 from
    the start); a value nobody expected, always one the code wrote, gets
    its child on first use instead of failing the event that counts it.
    """

    def __init__(self, counter: TallyCounter | None, values: Iterable[str]) -> None:
        super().__init__()
        self._counter = counter
        for value in values:
            self.__missing__(value)

    def __missing__(self, value: str) -> Counting:
        child: Counting = UNCOUNTED if self._counter is None else self._counter.labels(value)
        self[value] = child
        return child


class SignalingMetrics:
    """The counters signaling's handlers increment.

    @ivar relayed: by event name (C{offer}, C{ice-candidate}, ...): messages
        handed on to their peer or room.
    @ivar join_success: joins answered with success.
    @ivar join_invalid: joins refused for their payload or room id.
    @ivar join_error: joins that failed on the server's side (store down,
        a bug).
    @ivar join_refused: by the store's refusal (its C{JoinOutcome} value:
        C{rate_limited}, C{no_room}, C{other_room}), each counted under its
        L{privydrop.metrics.catalog.JOIN_REFUSALS} outcome.
    """

    def __init__(
        self, joins: TallyCounter | None, relayed: TallyCounter | None, events: Iterable[str] = ()
    ) -> None:
        """
        @param joins: the joins counter (label C{outcome}); None counts nothing.
        @param relayed: the relayed-messages counter (label C{event}); None
            counts nothing.
        @param events: the relayed event names, bound up front.
        """
        outcomes = _Children(joins, JOIN_OUTCOMES)
        self.join_success = outcomes["success"]
        self.join_invalid = outcomes["invalid"]
        self.join_error = outcomes["error"]
        self.join_refused: dict[str, Counting] = _Refusals(outcomes)
        self.relayed: dict[str, Counting] = _Children(relayed, events)

    @classmethod
    def disabled(cls) -> SignalingMetrics:
        """Counters that count nothing (no metrics configured)."""
        return cls(None, None)


class _Refusals(dict[str, Counting]):
    """The store's refusals -> the child of their outcome (L{JOIN_REFUSALS});
    a refusal the store may add later is counted as an outcome of its own."""

    def __init__(self, outcomes: _Children) -> None:
        super().__init__()
        self._outcomes = outcomes
        for refusal in JOIN_REFUSALS:
            self.__missing__(refusal)

    def __missing__(self, refusal: str) -> Counting:
        child = self[refusal] = self._outcomes[JOIN_REFUSALS.get(refusal, refusal)]
        return child


class ApiRequests:
    """Counts finished API requests by route and status (the site calls it).

    The route is the request's path when it is one of the API's routes,
    C{other} otherwise, so a client probing paths cannot create series.
    """

    def __init__(self, counter: TallyCounter, routes: Iterable[str]) -> None:
        """
        @param counter: the API requests counter (labels C{route}, C{status}).
        @param routes: the API's paths (C{/api/get_room}, C{/health}, ...).
        """
        self._counter = counter
        self._routes = {route.encode("utf-8"): route for route in routes}
        self._children: dict[tuple[str, int], Counting] = {}

    def __call__(self, request: Any) -> None:
        """Count one finished request (its C{path} and C{code})."""
        route = self._routes.get(request.path, OTHER_ROUTE)
        key = (route, request.code)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._counter.labels(route, str(request.code))
        child.inc()


class RedisCommandTimer:
    """Times Redis commands: the round trip of each answered one, and failures.

    Handed to a connection pool (L{privydrop.redis.pool.ConnectionPool.timing}),
    which calls it with every command it is given.
    """

    def __init__(self, seconds: Histogram, errors: TallyCounter, clock: IReactorTime) -> None:
        """
        @param seconds: the latency histogram (label C{command}).
        @param errors: the failures counter (labels C{command}, C{error}).
        @param clock: the time the pool's deadlines are measured in.
        """
        self._seconds = seconds
        self._errors = errors
        self._clock = clock
        self._latency: dict[str, Any] = {}
        self._failures: dict[tuple[str, str], Counting] = {}

    def __call__(self, command: Any, started: float, reply: Deferred[Any]) -> Deferred[Any]:
        """Observe C{reply}, the answer to C{command} sent at C{started}.

        @return: C{reply}, whose result is passed on unchanged.
        """
        name = command.decode("ascii", "replace") if isinstance(command, bytes) else str(command)
        reply.addCallbacks(
            self._answered,
            self._failed,
            callbackArgs=(name.upper(), started),
            errbackArgs=(name.upper(),),
        )
        return reply

    def _answered(self, result: Any, name: str, started: float) -> Any:
        histogram = self._latency.get(name)
        if histogram is None:
            histogram = self._latency[name] = self._seconds.labels(name)
        histogram.observe(max(0.0, self._clock.seconds() - started))
        return result

    def _failed(self, failure: Failure, name: str) -> Failure:
        key = (name, type(failure.value).__name__)
        child = self._failures.get(key)
        if child is None:
            child = self._failures[key] = self._errors.labels(*key)
        child.inc()
        return failure
