"""The metrics of one service tree: one registry, every metric of the catalog.

L{ProcessMetrics} owns a C{CollectorRegistry} of its own rather than
prometheus_client's process-global C{REGISTRY}: each service tree (and so
each test) has independent metrics, and nothing else in the process can
add series to what this server exposes. It builds the counted metrics of
L{privydrop.metrics.catalog} (L{TallyCounter}s, and prometheus_client
histograms) and hands out the bound views components use
(L{SignalingMetrics}, L{ApiRequests}, L{RedisCommandTimer}), the
scrape-time readings (L{StateReadings}), the process figures and the
reactor lag probe.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.platform_collector import PlatformCollector
from twisted.internet.interfaces import IReactorTime

from privydrop.metrics.catalog import (
    API_REQUESTS,
    JOINS,
    LAG_BUCKETS,
    REACTOR_LAG,
    REDIS_BUCKETS,
    REDIS_COMMAND_ERRORS,
    REDIS_COMMAND_SECONDS,
    RELAYED,
    MetricSpec,
)
from privydrop.metrics.counters import (
    ApiRequests,
    RedisCommandTimer,
    SignalingMetrics,
    TallyCounter,
)
from privydrop.metrics.lag import LagProbeService
from privydrop.metrics.process import ProcessFigures
from privydrop.metrics.readings import StateReadings


class ProcessMetrics:
    """Every metric of one service tree, on its own registry.

    @ivar registry: what C{/metrics} renders.
    @ivar readings: the figures read at scrape time; the service tree tells
        it what to read.
    """

    def __init__(self, clock: IReactorTime) -> None:
        """
        @param clock: the reactor: the time of Redis round trips and of the
            lag probe.
        """
        self._clock = clock
        self.registry = CollectorRegistry()
        self._joins = self._counter(JOINS)
        self._relayed = self._counter(RELAYED)
        self._api_requests = self._counter(API_REQUESTS)
        self._redis_errors = self._counter(REDIS_COMMAND_ERRORS)
        self._redis_seconds = self._histogram(REDIS_COMMAND_SECONDS, REDIS_BUCKETS)
        self._lag = self._histogram(REACTOR_LAG, LAG_BUCKETS)
        self.readings = StateReadings()
        self.registry.register(self.readings)
        # The usual process_* figures (CPU, memory, file descriptors) and
        # python_info, read at scrape time.
        self.registry.register(ProcessFigures())
        PlatformCollector(registry=self.registry)

    def _counter(self, spec: MetricSpec) -> TallyCounter:
        counter = TallyCounter(spec)
        self.registry.register(counter)
        return counter

    def _histogram(self, spec: MetricSpec, buckets: tuple[float, ...]) -> Histogram:
        return Histogram(
            spec.name, spec.help, spec.labels, buckets=buckets, registry=self.registry
        )

    def signaling(self, events: Iterable[str]) -> SignalingMetrics:
        """The counters for signaling's handlers.

        @param events: the names of the events signaling relays.
        """
        return SignalingMetrics(self._joins, self._relayed, events)

    def api_requests(self, routes: Iterable[str]) -> ApiRequests:
        """The counter the site calls for each finished API request.

        @param routes: the API's paths; any other path counts as C{other}.
        """
        return ApiRequests(self._api_requests, routes)

    def redis_commands(self) -> RedisCommandTimer:
        """The timer of a connection pool's commands."""
        return RedisCommandTimer(self._redis_seconds, self._redis_errors, self._clock)

    def lag_probe(self, interval_s: float) -> LagProbeService:
        """A service measuring the reactor lag every C{interval_s} seconds."""
        return LagProbeService(self._clock, interval_s, self._lag.observe)
