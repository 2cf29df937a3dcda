"""Prometheus metrics scraped over a real socket after real clients did real work.

The whole service tree runs on loopback with the test Redis and
C{METRICS_LISTEN} on a port of its own; the official socket.io-client
(Node, tests/interop/js) connects over WebSocket and polling, joins, relays
and misbehaves, the REST API is called over HTTP, Redis is stalled once,
and C{/metrics} is scraped before and after: every figure must have moved
by exactly what happened. The public port must not serve C{/metrics}.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.web.client import HTTPConnectionPool

from tests.integration.test_twistd import (
    TWISTD,
    child_env,
    ended_within,
    reactor_pid,
    spawn,
    wait_for_health,
)
from tests.interop.js_clients import JsClients
from tests.interop.service_tree import RunningTree, start_tree, tree_settings
from tests.redis_server import RedisServer, free_port

OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n"}
ANSWER = {"type": "answer", "sdp": "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\n"}
CANDIDATE = {"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host", "sdpMid": "0"}

#: Each client's address, as nginx would forward it (loopback is a trusted proxy).
HOME = {"X-Forwarded-For": "203.0.113.10"}
ELSEWHERE = {"X-Forwarded-For": "198.51.100.20"}
THIRD = {"X-Forwarded-For": "192.0.2.30"}


@attrs.frozen
class Scrape:
    """One scrape: sample values by (name, labels)."""

    values: dict[tuple[str, frozenset[tuple[str, str]]], float]
    content_type: str

    def __call__(self, name: str, **labels: str) -> float:
        return self.values.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """Sum over every series of C{name} whose labels include C{labels}."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.values.items() if n == name and wanted <= ls)

    def names(self) -> set[str]:
        return {name for name, _ in self.values}


async def scrape(pool: HTTPConnectionPool, url: str) -> Scrape:
    response = await treq.get(url, pool=pool)
    body = (await treq.content(response)).decode("utf-8")
    assert response.code == 200, body
    values = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }
    content_type = response.headers.getRawHeaders(b"content-type")[0].decode()
    return Scrape(values, content_type)


@attrs.define
class Instrumented:
    tree: RunningTree
    metrics_url: str
    pool: HTTPConnectionPool

    async def scrape(self) -> Scrape:
        return await scrape(self.pool, self.metrics_url + "/metrics")

    async def request(self, method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
        response = await treq.request(method, url, data=body, pool=self.pool)
        return response.code, await treq.content(response)


@pytest_twisted.async_yield_fixture
async def instrumented(redis_server: RedisServer, redis_db: int) -> AsyncIterator[Instrumented]:
    settings = tree_settings(
        redis_server,
        redis_db,
        METRICS_LISTEN="tcp:0:interface=127.0.0.1",
        METRICS_LAG_INTERVAL="0.05",
        # Short, so the stalled-Redis join below answers quickly.
        REDIS_COMMAND_TIMEOUT="0.5",
    )
    running = await start_tree(settings, reactor)
    listener = running.service.getServiceNamed("metrics").getServiceNamed("listener")
    port = await listener._waitingForPort  # the endpoint service's listening port
    pool = HTTPConnectionPool(reactor, persistent=False)
    try:
        yield Instrumented(running, f"http://127.0.0.1:{port.getHost().port}", pool)
    finally:
        await pool.closeCachedConnections()
        await running.stop()


@pytest_twisted.async_yield_fixture
async def js() -> AsyncIterator[JsClients]:
    clients = JsClients.spawn(reactor)
    try:
        yield clients
    finally:
        await clients.quit()


@pytest_twisted.ensureDeferred
async def test_scraped_metrics_follow_what_real_clients_did(
    instrumented: Instrumented, js: JsClients, redis_server: RedisServer
) -> None:
    """After users joined, signalled, misbehaved and called the API, /metrics says so.

    If this breaks, an operator's dashboard shows numbers that are not what
    the server did: joins, relayed messages, refused input, API traffic,
    Redis latency and failures, open connections.
    """
    url = instrumented.tree.url
    before = await instrumented.scrape()
    assert before.content_type.startswith("text/plain")

    # -- the REST API -------------------------------------------------------------
    room = (await js.fetch("GET", url + "/api/get_room"))["body"]["roomId"]
    other_room = "metrics-other-room"
    created = await js.fetch("POST", url + "/api/create_room", {"roomId": other_room})
    assert created["status"] == 200
    checked = await js.fetch("POST", url + "/api/check_room", {"roomId": room})
    assert checked["body"] == {"available": False}
    assert (await js.fetch("GET", url + "/api/no_such_route"))["status"] == 404
    assert (await js.fetch("GET", url + "/health"))["status"] == 200
    # A body over MAX_BODY_BYTES is refused at the HTTP edge, before routing.
    code, _ = await instrumented.request(
        "POST", url + "/api/create_room", b'{"roomId": "' + b"x" * 200_000 + b'"}'
    )
    assert code == 413
    # An Engine.IO session that posts garbage is closed (input refused by Engine.IO).
    code, body = await instrumented.request("GET", url + "/socket.io/?EIO=4&transport=polling")
    assert code == 200
    sid = json.loads(body[1:])["sid"]
    code, _ = await instrumented.request(
        "POST", url + f"/socket.io/?EIO=4&transport=polling&sid={sid}", b"not a packet"
    )
    assert code == 400
    # A session whose Socket.IO packet is of no known type is closed (input
    # refused by Socket.IO): Engine.IO message "4", Socket.IO type "9".
    code, body = await instrumented.request("GET", url + "/socket.io/?EIO=4&transport=polling")
    sid = json.loads(body[1:])["sid"]
    code, _ = await instrumented.request(
        "POST", url + f"/socket.io/?EIO=4&transport=polling&sid={sid}", b"49"
    )
    assert code == 200
    # Its next poll collects the close packet, and the session is gone.
    code, body = await instrumented.request(
        "GET", url + f"/socket.io/?EIO=4&transport=polling&sid={sid}"
    )
    assert (code, body) == (200, b"1")

    # -- real socket.io-client users ------------------------------------------------
    a = (await js.connect("a", url, "websocket", HOME))["id"]
    b = (await js.connect("b", url, "websocket", HOME))["id"]
    await js.connect("c", url, "polling", ELSEWHERE)

    await js.emit("a", "join", {"roomId": room})
    assert (await js.next("a", "joinResponse"))["success"] is True
    await js.emit("b", "join", {"roomId": room})
    assert (await js.next("b", "joinResponse"))["success"] is True
    assert await js.next("a", "ready") == {"peerId": b}

    await js.emit("a", "offer", {"peerId": b, "offer": OFFER})
    assert (await js.next("b", "offer"))["offer"] == OFFER
    await js.emit("b", "answer", {"peerId": a, "answer": ANSWER})
    assert (await js.next("a", "answer"))["answer"] == ANSWER
    for _ in range(2):
        await js.emit("a", "ice-candidate", {"peerId": b, "candidate": CANDIDATE})
        assert (await js.next("b", "ice-candidate"))["candidate"] == CANDIDATE
    await js.emit("a", "initiator-online", {"roomId": room})
    assert await js.next("b", "initiator-online") == {"roomId": room}
    await js.emit("b", "recipient-ready", {"roomId": room, "peerId": b})
    assert await js.next("a", "recipient-ready") == {"peerId": b}

    # Refused joins: bound elsewhere, no such room (twice), then over the
    # rate limit (the third fresh join from one address in 5 s), invalid.
    await js.emit("a", "join", {"roomId": other_room})
    assert (await js.next("a", "joinResponse"))["message"].startswith("Socket is already bound")
    for _ in range(2):
        await js.emit("c", "join", {"roomId": "no-such-room"})
        assert (await js.next("c", "joinResponse"))["message"] == "Room does not exist"
    await js.emit("c", "join", {"roomId": "no-such-room"})
    assert (await js.next("c", "joinResponse"))["message"].startswith("Rate limit exceeded")
    await js.emit("c", "join", {"roomId": ""})
    assert (await js.next("c", "joinResponse"))["message"] == "Invalid roomId"

    # Dropped input: an offer without its description, and one from a socket
    # in no room (each handled once its acknowledgement is back).
    await js.emit("a", "offer", {"peerId": b}, ack=True)
    await js.emit("c", "offer", {"peerId": b, "offer": OFFER}, ack=True)

    # A join while Redis does not answer fails on the server's side.
    await js.connect("d", url, "websocket", THIRD)
    redis_server.pause()
    try:
        await js.emit("d", "join", {"roomId": room})
        assert (await js.next("d", "joinResponse"))["message"] == "Server error while joining room"
    finally:
        redis_server.resume()

    during = await instrumented.scrape()

    def moved(name: str, **labels: str) -> float:
        return during(name, **labels) - before(name, **labels)

    # Joins by outcome.
    assert moved("privydrop_joins_total", outcome="success") == 2
    assert moved("privydrop_joins_total", outcome="bound_elsewhere") == 1
    assert moved("privydrop_joins_total", outcome="no_room") == 2
    assert moved("privydrop_joins_total", outcome="rate_limited") == 1
    assert moved("privydrop_joins_total", outcome="invalid") == 1
    assert moved("privydrop_joins_total", outcome="error") == 1

    # Relayed messages by event; the two refused offers are not among them.
    for event, count in (
        ("offer", 1), ("answer", 1), ("ice-candidate", 2),
        ("initiator-online", 1), ("recipient-ready", 1),
    ):
        assert moved("privydrop_signaling_relayed_total", event=event) == count, event

    # Input refused, by layer and reason.
    dropped = "privydrop_inputs_dropped_total"
    assert moved(dropped, layer="signaling", reason="missing_field") == 1
    assert moved(dropped, layer="signaling", reason="not_in_room") == 1
    assert moved(dropped, layer="signaling", reason="empty") == 1
    assert moved(dropped, layer="engineio", reason="bad_payload") == 1
    assert moved(dropped, layer="http", reason="too_large") == 1
    assert moved(dropped, layer="socketio", reason="unknown_packet_type") == 1

    # API requests by route and status; Engine.IO's polling requests are not
    # API requests (they would have counted as "other").
    api = "privydrop_api_requests_total"
    assert moved(api, route="/api/get_room", status="200") == 1
    assert moved(api, route="/api/create_room", status="200") == 1
    assert moved(api, route="/api/check_room", status="200") == 1
    assert moved(api, route="/health", status="200") == 1
    assert moved(api, route="other", status="404") == 1
    assert during.total(api) - before.total(api) == 5

    # Open connections, sessions, joined sockets and rooms of this process.
    assert during("privydrop_connections", transport="websocket") == 3
    assert during("privydrop_connections", transport="polling") == 1
    assert during("privydrop_engineio_sessions") == 4
    assert during("privydrop_joined_sockets") == 2
    assert during("privydrop_joined_rooms") == 1

    # Redis: the store's scripts were timed; the stalled one failed.
    latency = "privydrop_redis_command_seconds_count"
    assert during.total(latency) - before.total(latency) >= 8
    assert during.total("privydrop_redis_command_errors_total", error="ReplyTimeout") >= 1

    # The cluster adapter publishes only to processes holding members: every
    # member of the room is on this one, so nothing went to Redis.
    assert moved("privydrop_cluster_publications_total") == 0
    assert moved("privydrop_cluster_publication_failures_total") == 0

    # The reactor lag histogram and the process figures are there.
    assert "privydrop_reactor_lag_seconds_count" in during.names()
    assert during("process_resident_memory_bytes") > 0

    # Everyone leaves: once signaling has cleaned up, no socket is in a room.
    for name in ("a", "b", "c", "d"):
        await js.call("disconnect", name=name)
    await instrumented.tree.realtime.signaling.wait_idle()
    after = await instrumented.scrape()
    assert after("privydrop_joined_sockets") == 0
    assert after("privydrop_joined_rooms") == 0


@pytest_twisted.ensureDeferred
async def test_public_port_serves_no_metrics(instrumented: Instrumented) -> None:
    """The figures stay on the metrics listener: clients of the public port get the API's 404."""
    code, body = await instrumented.request("GET", instrumented.tree.url + "/metrics")
    assert code == 404
    assert json.loads(body) == {"error": "Not found"}
    # And the metrics listener serves /metrics only.
    code, _ = await instrumented.request("GET", instrumented.metrics_url + "/")
    assert code == 404
    code, _ = await instrumented.request("POST", instrumented.metrics_url + "/metrics")
    assert code == 405


@pytest_twisted.ensureDeferred
async def test_metrics_listener_is_off_by_default(redis_server: RedisServer, redis_db: int) -> None:
    """Without METRICS_LISTEN nothing but the public port listens, and it has no /metrics."""
    running = await start_tree(tree_settings(redis_server, redis_db), reactor)
    pool = HTTPConnectionPool(reactor, persistent=False)
    try:
        assert "metrics" not in [child.name for child in running.service]
        response = await treq.get(running.url + "/metrics", pool=pool)
        assert response.code == 404
        await treq.content(response)
    finally:
        await pool.closeCachedConnections()
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_twistd_serves_metrics_on_metrics_listen(tmp_path: Path) -> None:
    """C{twistd privydrop --metrics-listen ...}, as the units run it, answers /metrics there."""
    port, metrics_port = free_port(), free_port()
    proc = spawn(
        TWISTD + ["-n", "--pidfile=", "privydrop",
                  "--listen", "tcp:%d:interface=127.0.0.1" % port,
                  "--metrics-listen", "tcp:%d:interface=127.0.0.1" % metrics_port],
        tmp_path, child_env(),
    )
    pool = HTTPConnectionPool(reactor, persistent=False)
    try:
        await wait_for_health("http://127.0.0.1:%d/health" % port, proc)
        scraped = await scrape(pool, "http://127.0.0.1:%d/metrics" % metrics_port)
        assert scraped("privydrop_api_requests_total", route="/health", status="200") >= 1
        assert "privydrop_connections" in scraped.names()
        assert scraped("process_resident_memory_bytes") > 0
    finally:
        await pool.closeCachedConnections()
        if not proc.ended.called:
            os.kill(reactor_pid(proc), signal.SIGTERM)
    assert await ended_within(proc, 15) in (0, -signal.SIGTERM), proc.output[-2000:]
    assert b"Prometheus metrics at /metrics on tcp:%d" % metrics_port in proc.output
