"""Prometheus metrics of one process, cheap enough for the relay path.

  - L{privydrop.metrics.catalog}: every metric's name, type, labels and
    meaning, once (the README's table mirrors it);
  - L{privydrop.metrics.registry}: L{ProcessMetrics}, a registry of its own
    per service tree with every metric of the catalog;
  - L{privydrop.metrics.counters}: label children bound once, handed to the
    components that count events (signaling, the site's API requests, the
    store's Redis pool), or counting nothing when metrics are off;
  - L{privydrop.metrics.readings}: figures read from the components' own
    state when Prometheus scrapes, at no cost per event;
  - L{privydrop.metrics.lag}: the reactor lag probe;
  - L{privydrop.metrics.process}: the C{process_*} figures (CPU, memory,
    file descriptors), readable inside the systemd sandbox;
  - L{privydrop.metrics.web}: the C{/metrics} resource and its site.

This package sits low in the layers (docs/architecture.md): it knows no
component, only the strings and small protocols they are described by; the
service tree (L{privydrop.service.metrics}) wires them together.
"""

from privydrop.metrics.counters import (
    UNCOUNTED,
    ApiRequests,
    Counting,
    RedisCommandTimer,
    SignalingMetrics,
    Tally,
    TallyCounter,
)
from privydrop.metrics.lag import LagProbeService
from privydrop.metrics.readings import ClusterCounts, EngineState, StateReadings
from privydrop.metrics.registry import ProcessMetrics
from privydrop.metrics.web import build_metrics_site

__all__ = [
    "UNCOUNTED",
    "ApiRequests",
    "ClusterCounts",
    "Counting",
    "EngineState",
    "LagProbeService",
    "ProcessMetrics",
    "RedisCommandTimer",
    "SignalingMetrics",
    "StateReadings",
    "Tally",
    "TallyCounter",
    "build_metrics_site",
]
