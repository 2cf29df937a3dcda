"""Figures read from the server's own state when Prometheus scrapes.

Open sessions by transport, joined sockets and rooms, and the tallies the
components keep anyway (rejected input per cause, cluster publications)
cost nothing per event: L{StateReadings}, a prometheus_client collector,
reads them when C{/metrics} is rendered. That happens in the reactor thread
(L{privydrop.metrics.web}), the only thread that touches this state, so
nothing is locked and nothing is copied in between scrapes.

What is read is described by small protocols (L{EngineState},
L{ClusterCounts}) and callables; the service tree hands in the real
components (L{privydrop.service.metrics}). A reading that was not handed in
(no Redis: no cluster; an API-only tree: no Engine.IO) is not exposed.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Protocol

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)

from privydrop.metrics.catalog import (
    CATALOG,
    CLUSTER_DROPPED,
    CLUSTER_PUBLICATION_FAILURES,
    CLUSTER_PUBLICATIONS,
    CLUSTER_RECEIVED,
    CONNECTIONS,
    ENGINEIO_PENDING_SESSIONS,
    ENGINEIO_SESSIONS,
    INPUTS_DROPPED,
    JOINED_ROOMS,
    JOINED_SOCKETS,
    TRANSPORTS,
    MetricSpec,
)

#: Longest C{reason} label; longer causes are cut (they are sentences the
#: code wrote, such as a Socket.IO protocol error).
MAX_REASON_LENGTH = 64


class OpenSession(Protocol):
    """An Engine.IO session, as far as the readings look at it."""

    @property
    def transport_name(self) -> str:
        """C{polling} or C{websocket}, the transport it uses now."""


class EngineState(Protocol):
    """The Engine.IO server, as far as the readings look at it."""

    @property
    def pending_count(self) -> int:
        """Open sessions that have sent nothing since their handshake."""

    def sessions(self) -> Sequence[OpenSession]:
        """The open sessions."""


class ClusterCounts(Protocol):
    """The tallies the cluster adapter keeps."""

    published: int
    publish_failures: int
    received: int
    dropped: int


#: Rejections by cause, as a L{privydrop.logs.throttle.WarningThrottle} counts them.
CauseCounts = Callable[[], Mapping[str, int]]


def reason_label(cause: str) -> str:
    """A cause as a label value: lower case, words joined by C{_}, bounded."""
    label = re.sub(r"[^a-z0-9]+", "_", cause.lower()).strip("_")
    return label[:MAX_REASON_LENGTH] or "unknown"


def _family(spec: MetricSpec) -> GaugeMetricFamily | CounterMetricFamily:
    labels = list(spec.labels)
    if spec.kind == "counter":
        return CounterMetricFamily(spec.name, spec.help, labels=labels)
    return GaugeMetricFamily(spec.name, spec.help, labels=labels)


class StateReadings:
    """A collector of the figures read at scrape time (see the module docstring)."""

    def __init__(self) -> None:
        self._engine: EngineState | None = None
        self._rooms: Callable[[], Iterable[str | None]] | None = None
        self._drops: list[tuple[str, CauseCounts]] = []
        self._cluster: ClusterCounts | None = None

    def read_engine(self, engine: EngineState) -> None:
        """Expose the open sessions of C{engine} (connections, sessions, pending)."""
        self._engine = engine

    def read_rooms(self, rooms: Callable[[], Iterable[str | None]]) -> None:
        """Expose joined sockets and rooms.

        @param rooms: gives the room of each connected socket of this
            process (None for one in no room).
        """
        self._rooms = rooms

    def read_drops(self, layer: str, counts: CauseCounts) -> None:
        """Expose the refused input of one layer.

        @param layer: the C{layer} label (C{http}, C{engineio}, ...).
        @param counts: gives how many inputs were refused so far, by cause;
            the counts only grow.
        """
        self._drops.append((layer, counts))

    def read_cluster(self, cluster: ClusterCounts) -> None:
        """Expose the cluster adapter's publication tallies."""
        self._cluster = cluster

    # -- the prometheus_client collector ------------------------------------------

    def describe(self) -> Iterator[Metric]:
        """Every family this collector may yield (so names are checked once,
        when it is registered)."""
        for spec in CATALOG:
            if spec.read_at_scrape:
                yield _family(spec)

    def collect(self) -> Iterator[Metric]:
        """Read the state now."""
        if self._engine is not None:
            yield from self._engine_families(self._engine)
        if self._rooms is not None:
            rooms = [room for room in self._rooms() if room is not None]
            yield GaugeMetricFamily(JOINED_SOCKETS.name, JOINED_SOCKETS.help, value=len(rooms))
            yield GaugeMetricFamily(JOINED_ROOMS.name, JOINED_ROOMS.help, value=len(set(rooms)))
        if self._drops:
            yield self._drops_family()
        if self._cluster is not None:
            cluster = self._cluster
            for spec, value in (
                (CLUSTER_PUBLICATIONS, cluster.published),
                (CLUSTER_PUBLICATION_FAILURES, cluster.publish_failures),
                (CLUSTER_RECEIVED, cluster.received),
                (CLUSTER_DROPPED, cluster.dropped),
            ):
                yield CounterMetricFamily(spec.name, spec.help, value=value)

    def _engine_families(self, engine: EngineState) -> Iterator[Metric]:
        sessions = engine.sessions()
        by_transport = Counter(session.transport_name for session in sessions)
        connections = GaugeMetricFamily(
            CONNECTIONS.name, CONNECTIONS.help, labels=list(CONNECTIONS.labels)
        )
        for transport in sorted(set(TRANSPORTS) | set(by_transport)):
            connections.add_metric([transport], by_transport.get(transport, 0))
        yield connections
        yield GaugeMetricFamily(ENGINEIO_SESSIONS.name, ENGINEIO_SESSIONS.help, value=len(sessions))
        yield GaugeMetricFamily(
            ENGINEIO_PENDING_SESSIONS.name,
            ENGINEIO_PENDING_SESSIONS.help,
            value=engine.pending_count,
        )

    def _drops_family(self) -> CounterMetricFamily:
        totals: Counter[tuple[str, str]] = Counter()
        for layer, counts in self._drops:
            for cause, count in counts().items():
                totals[(layer, reason_label(cause))] += count
        family = CounterMetricFamily(
            INPUTS_DROPPED.name, INPUTS_DROPPED.help, labels=list(INPUTS_DROPPED.labels)
        )
        for (layer, reason), count in sorted(totals.items()):
            family.add_metric([layer, reason], count)
        return family
