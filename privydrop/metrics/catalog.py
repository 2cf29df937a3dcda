"""Every metric this server exposes, named and explained once.

L{CATALOG} is the one list of them: L{privydrop.metrics.registry} builds
the metrics from it, the scrape-time readings
(L{privydrop.metrics.readings}) take their names and help from it, and the
README's metrics table mirrors it (C{tests/unit/test_metrics.py} compares
them row by row). Names carry the C{privydrop_} prefix; counters end in
C{_total}, as exposed. Beside these, the registry exposes prometheus_client's
standard C{process_*} figures (CPU, memory, open files) and C{python_info}.

Label values are bounded by the code, never taken from what a client sends:
routes are the API's own paths (anything else is C{other}), reasons and
events are names the code defines.

This module imports nothing of the package.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class MetricSpec:
    """One metric: its exposed name, type, label names and meaning.

    @ivar kind: C{"counter"}, C{"gauge"} or C{"histogram"}.
    @ivar read_at_scrape: read from the server's own state when scraped
        (costs nothing per event) rather than counted as events happen.
    """

    name: str
    kind: str
    labels: tuple[str, ...]
    help: str
    read_at_scrape: bool = False

    @property
    def base_name(self) -> str:
        """The name prometheus_client is given (counters without C{_total})."""
        if self.kind == "counter" and self.name.endswith("_total"):
            return self.name[: -len("_total")]
        return self.name


CONNECTIONS = MetricSpec(
    "privydrop_connections", "gauge", ("transport",),
    "Open Engine.IO connections of this process by current transport "
    "(polling, websocket).",
    read_at_scrape=True,
)
ENGINEIO_SESSIONS = MetricSpec(
    "privydrop_engineio_sessions", "gauge", (),
    "Open Engine.IO sessions of this process.",
    read_at_scrape=True,
)
ENGINEIO_PENDING_SESSIONS = MetricSpec(
    "privydrop_engineio_pending_sessions", "gauge", (),
    "Open Engine.IO sessions that have sent nothing since their handshake "
    "(ENGINE_MAX_PENDING_SESSIONS caps them).",
    read_at_scrape=True,
)
JOINED_SOCKETS = MetricSpec(
    "privydrop_joined_sockets", "gauge", (),
    "Connected sockets of this process that are in a room.",
    read_at_scrape=True,
)
JOINED_ROOMS = MetricSpec(
    "privydrop_joined_rooms", "gauge", (),
    "Rooms that sockets of this process are in (a room spread over two "
    "processes counts in both).",
    read_at_scrape=True,
)
JOINS = MetricSpec(
    "privydrop_joins_total", "counter", ("outcome",),
    "Socket.IO joins answered, by outcome: success, rate_limited, no_room, "
    "bound_elsewhere, invalid, error.",
)
RELAYED = MetricSpec(
    "privydrop_signaling_relayed_total", "counter", ("event",),
    "Signaling messages handed on to their peer or room, by event.",
)
INPUTS_DROPPED = MetricSpec(
    "privydrop_inputs_dropped_total", "counter", ("layer", "reason"),
    "Client input refused, by layer (http, engineio, socketio, signaling) and "
    "reason (the limit passed, or what was wrong).",
    read_at_scrape=True,
)
API_REQUESTS = MetricSpec(
    "privydrop_api_requests_total", "counter", ("route", "status"),
    "REST API requests answered, by route (other: no such route) and HTTP "
    "status; 413s refused before routing are in privydrop_inputs_dropped_total.",
)
REDIS_COMMAND_SECONDS = MetricSpec(
    "privydrop_redis_command_seconds", "histogram", ("command",),
    "Round trip of the store's Redis commands that were answered, seconds, by "
    "command.",
)
REDIS_COMMAND_ERRORS = MetricSpec(
    "privydrop_redis_command_errors_total", "counter", ("command", "error"),
    "Store Redis commands that failed, by command and error (ReplyTimeout, "
    "NotConnected, ConnectionLost, ResponseError, ...).",
)
CLUSTER_PUBLICATIONS = MetricSpec(
    "privydrop_cluster_publications_total", "counter", (),
    "Messages published to the other processes through Redis.",
    read_at_scrape=True,
)
CLUSTER_PUBLICATION_FAILURES = MetricSpec(
    "privydrop_cluster_publication_failures_total", "counter", (),
    "Publications that failed or timed out (those messages were lost).",
    read_at_scrape=True,
)
CLUSTER_RECEIVED = MetricSpec(
    "privydrop_cluster_received_total", "counter", (),
    "Publications of other processes handled here.",
    read_at_scrape=True,
)
CLUSTER_DROPPED = MetricSpec(
    "privydrop_cluster_dropped_total", "counter", (),
    "Publications received that could not be read or arrived on the wrong "
    "channel.",
    read_at_scrape=True,
)
REACTOR_LAG = MetricSpec(
    "privydrop_reactor_lag_seconds", "histogram", (),
    "How late a timer set every METRICS_LAG_INTERVAL fired, seconds: time the "
    "event loop was busy (or blocked) when it was due.",
)

#: Every metric, in the order the README lists them.
CATALOG: tuple[MetricSpec, ...] = (
    CONNECTIONS,
    ENGINEIO_SESSIONS,
    ENGINEIO_PENDING_SESSIONS,
    JOINED_SOCKETS,
    JOINED_ROOMS,
    JOINS,
    RELAYED,
    INPUTS_DROPPED,
    API_REQUESTS,
    REDIS_COMMAND_SECONDS,
    REDIS_COMMAND_ERRORS,
    CLUSTER_PUBLICATIONS,
    CLUSTER_PUBLICATION_FAILURES,
    CLUSTER_RECEIVED,
    CLUSTER_DROPPED,
    REACTOR_LAG,
)

#: The C{outcome} label values of L{JOINS}.
JOIN_OUTCOMES = ("success", "rate_limited", "no_room", "bound_elsewhere", "invalid", "error")

#: Join refusals of the store (C{JoinOutcome} values) -> the L{JOINS} outcome.
JOIN_REFUSALS: dict[str, str] = {
    "rate_limited": "rate_limited",
    "no_room": "no_room",
    "other_room": "bound_elsewhere",
}

#: The C{route} label of API requests to a path that is no route.
OTHER_ROUTE = "other"

#: The C{transport} label values of L{CONNECTIONS} (always exposed, 0 or not).
TRANSPORTS = ("polling", "websocket")

#: Upper bounds of the L{REDIS_COMMAND_SECONDS} buckets, seconds: a loopback
#: Redis answers in well under a millisecond; the command timeout is 2 s.
REDIS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

#: Upper bounds of the L{REACTOR_LAG} buckets, seconds.
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
