"""The metrics package and its wiring, without sockets: catalog, counters,
scrape-time readings, the lag probe, the settings and the service tree.

Scraping a real server after real clients is in
C{tests/integration/test_metrics.py}.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger, LogLevel, capturedLogs

from privydrop.cluster.bus import MemoryBus
from privydrop.cluster.routing import ClusterAdapter
from privydrop.logs import levels
from privydrop.logs.throttle import MAX_CAUSES, OTHER_CAUSE, WarningThrottle
from privydrop.metrics import LagProbeService, ProcessMetrics, SignalingMetrics
from privydrop.metrics.catalog import CATALOG, JOIN_OUTCOMES, JOIN_REFUSALS
from privydrop.metrics.process import ProcessFigures
from privydrop.metrics.readings import MAX_REASON_LENGTH, reason_label
from privydrop.metrics.web import MetricsResource
from privydrop.redis.errors import ReplyTimeout
from privydrop.service import build_service
from privydrop.settings import ConfigError, MetricsSettings, Settings, SocketIOSettings
from privydrop.settings.sources import settings_from_options
from privydrop.signaling import events
from privydrop.signaling.handlers import RELAYED_EVENTS
from privydrop.socketio.ids import RoomId
from privydrop.socketio.server import SocketIOServer
from privydrop.store.interface import JoinOutcome

README = Path(__file__).resolve().parents[2] / "README.md"
_log = Logger()


def samples(metrics: ProcessMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """What a scrape of C{metrics} shows: (sample name, sorted labels) -> value."""
    text = generate_latest(metrics.registry).decode("utf-8")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: ProcessMetrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, tuple(sorted(labels.items()))))


# -- the catalog and the README ----------------------------------------------------


def readme_row(spec: Any) -> str:
    """A metric's row of the README's metrics table, as the table writes it."""
    labels = ", ".join("`%s`" % label for label in spec.labels) or "—"
    return "| `%s` | %s | %s | %s |" % (spec.name, spec.kind, labels, spec.help)


def test_readme_metrics_table_is_the_catalog() -> None:
    """An operator reading the README finds every metric, its labels and meaning, as exposed."""
    table = README.read_text().split("| Metric | Type | Labels | Meaning |", 1)[1]
    rows = [
        line for line in table.split("\n\n", 1)[0].splitlines()
        if line.startswith("| ") and "---" not in line
    ]
    assert rows == [readme_row(spec) for spec in CATALOG]


def test_every_metric_is_prefixed_and_counters_end_in_total() -> None:
    """Names follow Prometheus's conventions, so dashboards can find them by prefix."""
    for spec in CATALOG:
        assert spec.name.startswith("privydrop_")
        assert spec.name.endswith("_total") == (spec.kind == "counter"), spec.name
    assert len({spec.name for spec in CATALOG}) == len(CATALOG)


def fully_read(metrics: ProcessMetrics) -> ProcessMetrics:
    """C{metrics} reading every scrape-time figure, from stand-ins."""

    @attrs.define
    class Session:
        transport_name: str

    @attrs.define
    class Engine:
        pending_count: int = 0

        def sessions(self) -> list[Session]:
            return [Session("websocket")]

    @attrs.define
    class Cluster:
        published: int = 0
        publish_failures: int = 0
        received: int = 0
        dropped: int = 0

    metrics.readings.read_engine(Engine())
    metrics.readings.read_rooms(lambda: ["r"])
    metrics.readings.read_drops("http", dict)
    metrics.readings.read_cluster(Cluster())
    return metrics


def test_what_a_fully_wired_registry_exposes_is_the_catalog() -> None:
    """Every privydrop_ metric exposed is documented, and every documented one is exposed."""
    metrics = fully_read(ProcessMetrics(Clock()))
    metrics.signaling(RELAYED_EVENTS)
    exposed = {
        family.name
        for family in text_string_to_metric_families(
            generate_latest(metrics.registry).decode("utf-8")
        )
        if family.name.startswith("privydrop_")
        # The text format shows a counter's or histogram's creation time as
        # a gauge of its own.
        and not family.name.endswith("_created")
    }
    documented = {spec.base_name for spec in CATALOG}
    assert exposed == documented


def test_two_trees_have_independent_metrics() -> None:
    """Each service tree counts for itself (tests build many in one process)."""
    first, second = ProcessMetrics(Clock()), ProcessMetrics(Clock())
    first.signaling(RELAYED_EVENTS).join_success.inc()
    second.signaling(RELAYED_EVENTS)
    assert value(first, "privydrop_joins_total", outcome="success") == 1
    assert value(second, "privydrop_joins_total", outcome="success") == 0


# -- signaling's counters ------------------------------------------------------------


def test_every_join_outcome_is_exposed_from_the_start() -> None:
    """Dashboards see every outcome at 0 before the first join, not a missing series."""
    metrics = ProcessMetrics(Clock())
    metrics.signaling(RELAYED_EVENTS)
    for outcome in JOIN_OUTCOMES:
        assert value(metrics, "privydrop_joins_total", outcome=outcome) == 0
    for event in RELAYED_EVENTS:
        assert value(metrics, "privydrop_signaling_relayed_total", event=event) == 0


def test_every_store_refusal_has_its_outcome() -> None:
    """Each way the store refuses a join is counted under the outcome the README names."""
    refusals = {o.value for o in JoinOutcome} - {JoinOutcome.JOINED.value, JoinOutcome.REJOINED.value}
    assert set(JOIN_REFUSALS) == refusals
    metrics = ProcessMetrics(Clock())
    counters = metrics.signaling(RELAYED_EVENTS)
    counters.join_refused[JoinOutcome.OTHER_ROOM.value].inc()
    counters.join_refused[JoinOutcome.RATE_LIMITED.value].inc(2)
    assert value(metrics, "privydrop_joins_total", outcome="bound_elsewhere") == 1
    assert value(metrics, "privydrop_joins_total", outcome="rate_limited") == 2
    # A refusal the store may add one day is counted, as itself, not lost.
    counters.join_refused["room_full"].inc()
    assert value(metrics, "privydrop_joins_total", outcome="room_full") == 1


def test_relayed_events_are_signalings_own() -> None:
    """The event label names what signaling relays, and the children are bound once."""
    assert set(RELAYED_EVENTS) == {
        events.OFFER, events.ANSWER, events.ICE_CANDIDATE,
        events.INITIATOR_ONLINE, events.RECIPIENT_READY,
    }
    counters = ProcessMetrics(Clock()).signaling(RELAYED_EVENTS)
    child = counters.relayed[events.OFFER]
    assert counters.relayed[events.OFFER] is child


def test_disabled_signaling_counters_count_nothing_and_never_fail() -> None:
    """Without METRICS_LISTEN, signaling runs the same code, counting into nothing."""
    counters = SignalingMetrics.disabled()
    counters.relayed[events.OFFER].inc()
    counters.join_refused[JoinOutcome.NO_ROOM.value].inc()
    counters.join_success.inc()
    counters.join_error.inc()


# -- API requests ----------------------------------------------------------------------


@attrs.define
class FinishedRequest:
    path: bytes
    code: int


def test_api_requests_are_counted_by_route_and_status_and_probes_are_other() -> None:
    """A client probing random paths adds to one series, not one per path."""
    metrics = ProcessMetrics(Clock())
    count = metrics.api_requests(["/api/get_room", "/health"])
    count(FinishedRequest(b"/api/get_room", 200))
    count(FinishedRequest(b"/api/get_room", 200))
    count(FinishedRequest(b"/api/get_room", 429))
    for n in range(50):
        count(FinishedRequest(b"/wp-admin/%d.php" % n, 404))
    assert value(metrics, "privydrop_api_requests_total", route="/api/get_room", status="200") == 2
    assert value(metrics, "privydrop_api_requests_total", route="/api/get_room", status="429") == 1
    assert value(metrics, "privydrop_api_requests_total", route="other", status="404") == 50
    assert [k for k in samples(metrics) if k[0] == "privydrop_api_requests_total"] == [
        ("privydrop_api_requests_total", (("route", r), ("status", s)))
        for r, s in (("/api/get_room", "200"), ("/api/get_room", "429"), ("other", "404"))
    ]


# -- Redis commands --------------------------------------------------------------------


def test_redis_round_trips_are_timed_on_the_clock_and_failures_counted_by_error() -> None:
    """Operators see how long Redis takes to answer, and why commands fail."""
    clock = Clock()
    metrics = ProcessMetrics(clock)
    timer = metrics.redis_commands()
    reply: Deferred[Any] = Deferred()
    passed_on = timer(b"EVALSHA", clock.seconds(), reply)
    clock.advance(0.003)
    reply.callback("ok")
    assert passed_on.result == "ok"
    assert value(metrics, "privydrop_redis_command_seconds_count", command="EVALSHA") == 1
    assert value(metrics, "privydrop_redis_command_seconds_sum", command="EVALSHA") == pytest.approx(0.003)
    assert value(metrics, "privydrop_redis_command_seconds_bucket", command="EVALSHA", le="0.0025") == 0
    assert value(metrics, "privydrop_redis_command_seconds_bucket", command="EVALSHA", le="0.005") == 1

    failed = timer("ping", clock.seconds(), fail(ReplyTimeout("no answer in time")))
    failures: list[Any] = []
    failed.addErrback(failures.append)
    assert failures[0].check(ReplyTimeout)
    assert value(metrics, "privydrop_redis_command_errors_total", command="PING", error="ReplyTimeout") == 1
    # A failed command is not a round trip.
    assert value(metrics, "privydrop_redis_command_seconds_count", command="PING") is None
    timer("PING", clock.seconds(), succeed("PONG"))
    assert value(metrics, "privydrop_redis_command_seconds_count", command="PING") == 1


# -- scrape-time readings --------------------------------------------------------------


def test_rejection_causes_become_bounded_label_values() -> None:
    """Causes written as sentences or with dashes become one label each, never unbounded."""
    assert reason_label("max_payload") == "max_payload"
    assert reason_label("slow-headers") == "slow_headers"
    assert reason_label("packet larger than max_packet_bytes") == "packet_larger_than_max_packet_bytes"
    assert reason_label("") == "unknown"
    assert len(reason_label("x " * 200)) == MAX_REASON_LENGTH


def test_dropped_input_is_read_per_layer_and_reason_at_scrape_time() -> None:
    """The tallies the layers keep show up as one counter, summed where causes meet."""
    metrics = ProcessMetrics(Clock())
    engine = {"bad payload": 2, "max_payload": 1}
    metrics.readings.read_drops("engineio", lambda: engine)
    metrics.readings.read_drops("signaling", lambda: {"not_in_room": 4, "NOT in room": 1})
    assert value(metrics, "privydrop_inputs_dropped_total", layer="engineio", reason="bad_payload") == 2
    assert value(metrics, "privydrop_inputs_dropped_total", layer="signaling", reason="not_in_room") == 5
    engine["bad payload"] = 7
    assert value(metrics, "privydrop_inputs_dropped_total", layer="engineio", reason="bad_payload") == 7


def test_connections_by_transport_are_read_from_the_sessions() -> None:
    """Both transports are always shown; the gauges follow the sessions as they are."""

    @attrs.define
    class Session:
        transport_name: str

    @attrs.define
    class Engine:
        open: list[Session]
        pending_count: int = 1

        def sessions(self) -> list[Session]:
            return self.open

    engine = Engine([Session("polling"), Session("websocket"), Session("websocket")])
    metrics = ProcessMetrics(Clock())
    metrics.readings.read_engine(engine)
    rooms: list[str | None] = ["a", "a", "b", None]
    metrics.readings.read_rooms(lambda: rooms)
    assert value(metrics, "privydrop_connections", transport="websocket") == 2
    assert value(metrics, "privydrop_connections", transport="polling") == 1
    assert value(metrics, "privydrop_engineio_sessions") == 3
    assert value(metrics, "privydrop_engineio_pending_sessions") == 1
    assert value(metrics, "privydrop_joined_sockets") == 3
    assert value(metrics, "privydrop_joined_rooms") == 2
    engine.open = []
    rooms.clear()
    assert value(metrics, "privydrop_connections", transport="websocket") == 0
    assert value(metrics, "privydrop_joined_rooms") == 0


def test_cluster_tallies_are_read_from_the_real_cluster_adapter() -> None:
    """Publications, failures, receptions and unreadable messages, as the adapter counts them."""
    clock = Clock()
    bus = MemoryBus()
    a = ClusterAdapter("node-a", bus.publish, clock=clock)
    b = ClusterAdapter("node-b", bus.publish, clock=clock)
    bus.subscribe(b.channel_prefix + "#", b.receive)
    SocketIOServer(clock, SocketIOSettings(), adapter=b)
    SocketIOServer(clock, SocketIOSettings(), adapter=a).of("/").to(RoomId("r")).emit("hi")
    bus.flush()
    bus.publish(b.channel_prefix + "#/#", b"not a cluster message")
    bus.flush()
    down = ClusterAdapter("node-c", lambda channel, payload: fail(RuntimeError("down")), clock=clock)
    SocketIOServer(clock, SocketIOSettings(), adapter=down).of("/").to(RoomId("r")).emit("hi")

    figures = {}
    for name, adapter in (("a", a), ("b", b), ("c", down)):
        metrics = ProcessMetrics(clock)
        metrics.readings.read_cluster(adapter)
        figures[name] = {
            key: value(metrics, "privydrop_cluster_%s_total" % key)
            for key in ("publications", "publication_failures", "received", "dropped")
        }
    assert figures["a"] == {"publications": 1, "publication_failures": 0, "received": 0, "dropped": 0}
    assert figures["b"] == {"publications": 0, "publication_failures": 0, "received": 1, "dropped": 1}
    assert figures["c"] == {"publications": 1, "publication_failures": 1, "received": 0, "dropped": 0}


def test_warning_throttle_counts_every_rejection_logged_or_not() -> None:
    """The count behind the dropped-input metric includes the warnings the throttle kept quiet."""
    clock = Clock()
    throttle = WarningThrottle(clock, 10.0)
    for _ in range(3):
        throttle.warn(_log, "max_payload", "refused")
    throttle.warn(_log, "bad payload", "refused")
    assert throttle.counts() == {"max_payload": 3, "bad payload": 1}


def test_warning_throttle_tallies_quiet_levels_but_not_lifecycle_events() -> None:
    """A rejection logged at debug is counted even while debug is not
    recorded (the metric must not depend on LOG_LEVEL); a connection's life
    events (opened, closed) are not rejections and are not counted."""
    throttle = WarningThrottle(Clock(), 10.0)
    levels.set_minimum(LogLevel.warn)
    try:
        throttle.debug(_log, "unconnected-namespace", "ignored")
        throttle.info(_log, "connect-timeout", "closed")
    finally:
        levels.set_minimum(None)
    throttle.lifecycle(LogLevel.info, _log, "opened", "session opened")
    assert throttle.counts() == {"unconnected-namespace": 1, "connect-timeout": 1}
    with capturedLogs() as events:
        throttle.warn(_log, "taken", "all {count} candidates were taken", count=10)
    assert [e["count"] for e in events] == [10]


def test_warning_throttle_tells_apart_a_bounded_number_of_causes() -> None:
    """Causes the code writes from error texts cannot grow the tally without bound."""
    throttle = WarningThrottle(Clock(), 10.0)
    for n in range(MAX_CAUSES + 5):
        throttle.warn(_log, "cause %d" % n, "refused")
    counts = throttle.counts()
    assert len(counts) == MAX_CAUSES + 1
    assert counts[OTHER_CAUSE] == 5


# -- the reactor lag probe ---------------------------------------------------------------


def test_lag_probe_measures_how_late_its_timer_fires() -> None:
    """A blocked event loop shows up as lag, in seconds, and an idle one as none."""
    clock = Clock()
    lags: list[float] = []
    probe = LagProbeService(clock, 1.0, lags.append)
    probe.startService()
    clock.advance(1.0)
    assert lags == [0.0]
    # The loop was busy for 0.3 s past the next due time: that is the lag.
    clock.advance(1.3)
    assert lags == [0.0, pytest.approx(0.3)]
    # Measured from when it fired, the next one is due a second later.
    clock.advance(0.9)
    assert len(lags) == 2
    clock.advance(0.1)
    assert lags[2] == pytest.approx(0.0)
    probe.stopService()
    assert clock.getDelayedCalls() == []


def test_lag_probe_feeds_the_histogram() -> None:
    """The lag reaches /metrics as a histogram of seconds."""
    clock = Clock()
    metrics = ProcessMetrics(clock)
    probe = metrics.lag_probe(0.5)
    probe.startService()
    clock.advance(0.5)
    clock.advance(0.75)
    probe.stopService()
    assert value(metrics, "privydrop_reactor_lag_seconds_count") == 2
    assert value(metrics, "privydrop_reactor_lag_seconds_sum") == pytest.approx(0.25)
    assert value(metrics, "privydrop_reactor_lag_seconds_bucket", le="0.1") == 1


# -- process figures ----------------------------------------------------------------------------


def test_process_figures_are_read_from_this_process() -> None:
    """CPU, memory and file descriptors, under the standard names dashboards know."""
    metrics = ProcessMetrics(Clock())
    assert (value(metrics, "process_cpu_seconds_total") or 0) > 0
    assert (value(metrics, "process_resident_memory_bytes") or 0) > 1_000_000
    assert (value(metrics, "process_virtual_memory_bytes") or 0) > 1_000_000
    assert (value(metrics, "process_open_fds") or 0) >= 3
    assert (value(metrics, "process_max_fds") or 0) >= 3
    assert value(metrics, "process_start_time_seconds") is not None


def test_process_figures_do_not_need_what_the_sandbox_hides(tmp_path: Path) -> None:
    """Under ProcSubset=pid (or without /proc) the figures that can be read still are."""
    figures = {family.name: family for family in ProcessFigures(str(tmp_path / "gone"), 5.0).collect()}
    assert set(figures) == {"process_cpu_seconds", "process_start_time_seconds", "process_max_fds"}
    assert figures["process_start_time_seconds"].samples[0].value == 5.0


# -- the /metrics resource -------------------------------------------------------------------


@attrs.define
class RenderedRequest:
    accept: bytes | None = None
    code: int = 200
    headers: dict[bytes, bytes] = attrs.Factory(dict)

    def getHeader(self, name: bytes) -> bytes | None:
        return self.accept if name.lower() == b"accept" else None

    def setHeader(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def setResponseCode(self, code: int) -> None:
        self.code = code


def test_metrics_resource_speaks_text_or_openmetrics_as_asked() -> None:
    """Prometheus gets OpenMetrics when it asks for it, anything else the text format."""
    metrics = ProcessMetrics(Clock())
    resource = MetricsResource(metrics.registry)
    plain = RenderedRequest()
    body = resource.render_GET(plain)
    assert plain.headers[b"content-type"].startswith(b"text/plain; version=0.0.4")
    assert b"privydrop_reactor_lag_seconds_count" in body
    open_metrics = RenderedRequest(b"application/openmetrics-text; version=1.0.0")
    body = resource.render_GET(open_metrics)
    assert open_metrics.headers[b"content-type"].startswith(b"application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    # A nonsense version is not an error: the text format.
    odd = RenderedRequest(b"text/plain; version=banana")
    resource.render_GET(odd)
    assert odd.code == 200 and odd.headers[b"content-type"].startswith(b"text/plain")


def test_a_failing_reading_fails_the_scrape_not_the_process() -> None:
    """A bug in a reading answers 500 for that scrape and is logged."""
    metrics = ProcessMetrics(Clock())

    def broken() -> dict[str, int]:
        raise RuntimeError("bug")

    metrics.readings.read_drops("http", broken)
    request = RenderedRequest()
    with capturedLogs() as logged:
        body = MetricsResource(metrics.registry).render_GET(request)
    assert request.code == 500 and body == b"metrics unavailable\n"
    assert any(e.get("log_failure") is not None for e in logged)


# -- settings ---------------------------------------------------------------------------------


def settings(environ: dict[str, str] | None = None, options: dict[str, str] | None = None) -> Settings:
    return settings_from_options(options or {}, environ or {}, cwd=str(Path(__file__).parent))


def test_metrics_are_off_by_default() -> None:
    assert settings().metrics == MetricsSettings()
    assert settings().metrics.enabled is False
    assert settings({"METRICS_LISTEN": "  "}).metrics.enabled is False


def test_metrics_listen_comes_from_the_environment_or_the_option() -> None:
    s = settings({"METRICS_LISTEN": "tcp:9101:interface=127.0.0.1"})
    assert s.metrics.listen == "tcp:9101:interface=127.0.0.1"
    s = settings({"METRICS_LISTEN": "tcp:9101"}, {"metrics-listen": "tcp:9102:interface=10.0.0.5"})
    assert s.metrics.listen == "tcp:9102:interface=10.0.0.5"
    assert settings({"METRICS_LAG_INTERVAL": "0.25"}).metrics.lag_interval_s == 0.25
    with pytest.raises(ConfigError, match="METRICS_LAG_INTERVAL"):
        settings({"METRICS_LAG_INTERVAL": "0"})


@pytest.mark.parametrize(
    ("environ", "options"),
    [
        ({"METRICS_LISTEN": "tcp:3001"}, {}),
        ({"BACKEND_PORT": "4000", "METRICS_LISTEN": "tcp:port=4000:interface=127.0.0.1"}, {}),
        ({"METRICS_LISTEN": "tcp6:3005"}, {"listen": "tcp:3005:interface=127.0.0.1"}),
    ],
)
def test_metrics_cannot_share_the_public_port(
    environ: dict[str, str], options: dict[str, str]
) -> None:
    """Metrics on the public port would publish them to every client: refused at start-up."""
    with pytest.raises(ConfigError, match="METRICS_LISTEN.*public port"):
        settings(environ, options)


def test_other_ports_and_endpoint_types_are_accepted() -> None:
    assert settings({"METRICS_LISTEN": "tcp:9101"}).metrics.listen == "tcp:9101"
    # Ephemeral ports never clash; endpoints without a port cannot be compared.
    assert settings({"METRICS_LISTEN": "tcp:0"}, {"listen": "tcp:0"}).metrics.enabled
    assert settings({"METRICS_LISTEN": "unix:/run/privydrop/metrics.sock"}).metrics.enabled


# -- the service tree -----------------------------------------------------------------------------


def test_tree_has_no_metrics_without_metrics_listen() -> None:
    """Off by default: no listener, and nothing counts."""
    reactor = MemoryReactorClock()
    tree = build_service(Settings(listen="tcp:3456"), reactor)
    assert "metrics" not in [child.name for child in tree]
    tree.startService()
    assert len(reactor.tcpServers) == 1
    tree.stopService()


def test_tree_with_metrics_listen_has_a_metrics_child_listening_apart() -> None:
    """The metrics listener is its own child, after the public one, on its own endpoint."""
    reactor = MemoryReactorClock()
    tree = build_service(
        Settings(
            listen="tcp:3456:interface=0.0.0.0",
            metrics=MetricsSettings(listen="tcp:9101:interface=127.0.0.1"),
        ),
        reactor,
    )
    assert [child.name for child in tree] == ["store", "realtime", "http", "metrics"]
    metrics = tree.getServiceNamed("metrics")
    assert [child.name for child in metrics] == ["lag", "listener"]
    tree.startService()
    ports = {(port, interface): factory for port, factory, _, interface in reactor.tcpServers}
    assert set(ports) == {(3456, "0.0.0.0"), (9101, "127.0.0.1")}
    assert type(ports[(9101, "127.0.0.1")]).__name__ == "MetricsSite"
    tree.stopService()


def test_bad_metrics_listen_string_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="METRICS_LISTEN"):
        build_service(
            Settings(listen="tcp:0", metrics=MetricsSettings(listen="nonsense:1")),
            MemoryReactorClock(),
        )


# -- the deployment guide ---------------------------------------------------------------------------

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"


def guide_metrics_section() -> str:
    return GUIDE.read_text().split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]


def test_guide_metrics_settings_are_valid_and_stay_off_the_public_interface() -> None:
    """Each METRICS_LISTEN the guide shows is accepted, on loopback, and for
    workers (%i: the worker's port) on the ports its scrape configuration names."""
    section = guide_metrics_section()
    values = re.findall(r"METRICS_LISTEN[=:] ?\"?([^\s\"]+)", section)
    assert len(values) == 3, values
    ports = set()
    for value_ in values:
        for worker in ("3001", "3002"):
            endpoint = value_.replace("%i", worker)
            listen = "tcp:%s:interface=127.0.0.1" % worker
            parsed = settings({"METRICS_LISTEN": endpoint}, {"listen": listen}).metrics
            assert parsed.listen == endpoint
            if "%i" in value_:
                assert endpoint.endswith(":interface=127.0.0.1")
                ports.add(int(endpoint.split(":")[1]))
    scrape_config = yaml.safe_load(section.split("```yaml\n", 1)[1].split("```", 1)[0])
    [job] = scrape_config["scrape_configs"]
    [static] = job["static_configs"]
    assert {target.split(":")[0] for target in static["targets"]} == {"127.0.0.1"}
    assert {int(target.split(":")[1]) for target in static["targets"]} == ports
    # Prometheus's default path is the one served.
    assert job.get("metrics_path", "/metrics") == "/metrics"
