"""Connection state recovery across processes: real C{twistd privydrop}
processes on a real Redis, the official socket.io-client (Node.js) as users.

Client B reaches the processes through L{TcpProxy}, which fails like a
mobile network (drops bytes silently, severs without a close frame) and,
like a load balancer, sends B's reconnection to another process
(L{TcpProxy.retarget}). Meanwhile A keeps sending candidates. B must come
back as the same socket, recovered, with every candidate once and in
order; A must hear nothing of it, unless the window passes: then exactly
one C{peer-disconnected}.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from pathlib import Path

from tests.integration.test_cluster_crash import FAST, Cluster, Server, until
from tests.integration.test_twistd import ended_within
from tests.redis_server import RedisServer
from tests.interop.js_clients import JsClients
from tests.interop.tcp_proxy import TcpProxy
from tests.interop.test_recovery_js import candidate

ROOM = "handover-room"


@pytest_twisted.async_yield_fixture
async def cluster(private_redis: RedisServer, tmp_path: Path) -> AsyncIterator[Cluster]:
    made = Cluster(private_redis, tmp_path)
    try:
        yield made
    finally:
        await made.stop_all()


@pytest_twisted.async_yield_fixture
async def js(cluster: Cluster) -> AsyncIterator[JsClients]:
    clients = JsClients.spawn(reactor)
    try:
        yield clients
    finally:
        await clients.quit()


@pytest_twisted.async_yield_fixture
async def proxy(cluster: Cluster) -> AsyncIterator[TcpProxy]:
    # Started on a dummy target; each test points it at its first process.
    running = TcpProxy(reactor, 1)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def in_room(
    js: JsClients, a_server: Server, b_server: Server, proxy: TcpProxy, transport: str,
    reconnection: bool = True,
) -> tuple[str, str]:
    """A on C{a_server} directly, B on C{b_server} through the proxy; both in ROOM."""
    created = await js.fetch("POST", a_server.url + "/api/create_room", {"roomId": ROOM})
    assert created["body"]["success"] is True
    proxy.retarget(b_server.port)
    a = (await js.connect("a", a_server.url, transport))["id"]
    b = (await js.connect("b", proxy.url, transport, reconnection=reconnection))["id"]
    for name in ("a", "b"):
        await js.emit(name, "join", {"roomId": ROOM})
        assert (await js.next(name, "joinResponse"))["success"] is True
    assert await js.next("a", "ready") == {"peerId": b}
    return a, b


async def send_candidates(js: JsClients, a: str, b: str, numbers: range) -> None:
    for n in numbers:
        await js.emit("a", "ice-candidate", {"peerId": b, "candidate": candidate(n)}, ack=True)


async def assert_recovered_with_every_candidate(
    js: JsClients, a: str, b: str, numbers: range
) -> None:
    assert await js.next("b", "reconnect", timeout_ms=20_000) == {"id": b, "recovered": True}
    for n in numbers:
        got = await js.next("b", "ice-candidate")
        assert got == {"candidate": candidate(n), "from": a, "peerId": a}
    # Relay both ways over the new process.
    await js.emit("b", "answer", {"peerId": a, "answer": {"type": "answer", "sdp": "v=0"}})
    assert (await js.next("a", "answer"))["from"] == b
    await send_candidates(js, a, b, range(100, 101))
    assert (await js.next("b", "ice-candidate"))["candidate"] == candidate(100)
    assert await js.received("b", "ice-candidate") == []
    assert await js.received("b", "ready") == []
    await js.emit("a", "initiator-online", {"roomId": ROOM}, ack=True)
    assert await js.received("a", "peer-disconnected") == []


def holder(cluster: Cluster, sid: str) -> str:
    return str(cluster.key("HGET", "room:%s:nodes" % ROOM, sid))


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest_twisted.ensureDeferred
async def test_reconnection_on_another_process_recovers_the_socket(
    transport: str, cluster: Cluster, js: JsClients, proxy: TcpProxy
) -> None:
    first, second = await cluster.start(), await cluster.start()
    a, b = await in_room(js, first, first, proxy, transport)
    proxy.blackhole()
    # Written by the first process to a connection that no longer reaches B.
    await send_candidates(js, a, b, range(1, 4))
    proxy.hold_new()
    proxy.sever()
    await send_candidates(js, a, b, range(4, 7))
    proxy.retarget(second.port)
    proxy.release()
    await assert_recovered_with_every_candidate(js, a, b, range(1, 7))
    assert holder(cluster, b) == cluster.node_of(second)
    assert cluster.key("SISMEMBER", "cluster:node:%s:sockets" % cluster.node_of(first), b) == 0
    assert cluster.key("ZSCORE", "recovery:deadlines", b) is None


@pytest_twisted.ensureDeferred
async def test_takeover_across_processes_before_the_first_noticed_the_loss(
    cluster: Cluster, js: JsClients, proxy: TcpProxy
) -> None:
    """A phone changed networks: the first process still holds the old
    connection open when the client arrives at the second."""
    first, second = await cluster.start(), await cluster.start()
    a, b = await in_room(js, second, first, proxy, "websocket")
    proxy.blackhole()
    await send_candidates(js, a, b, range(1, 4))
    proxy.hold_new()
    old_server_sides = proxy.sever_client_side()
    assert old_server_sides
    await send_candidates(js, a, b, range(4, 6))
    proxy.retarget(second.port)
    proxy.release()
    await assert_recovered_with_every_candidate(js, a, b, range(1, 6))
    # The first process closed the old connection (no ping timeout needed).
    await until(lambda: all(not t.connected for t in old_server_sides), "old connection closed",
                timeout_s=5)
    assert holder(cluster, b) == cluster.node_of(second)


@pytest_twisted.ensureDeferred
async def test_sigterm_of_the_holder_recovers_elsewhere_and_tells_nobody(
    cluster: Cluster, js: JsClients, proxy: TcpProxy
) -> None:
    first, second = await cluster.start(), await cluster.start()
    a, b = await in_room(js, second, first, proxy, "websocket")
    await send_candidates(js, a, b, range(1, 3))
    for n in range(1, 3):
        assert (await js.next("b", "ice-candidate"))["candidate"] == candidate(n)
    proxy.retarget(second.port)
    cluster.kill(first, signal.SIGTERM)
    await assert_recovered_with_every_candidate(js, a, b, range(0))
    await ended_within(first.process, 20)
    assert holder(cluster, b) == cluster.node_of(second)


@pytest_twisted.ensureDeferred
async def test_kill_9_of_the_holder_recovers_elsewhere_and_tells_nobody(
    cluster: Cluster, js: JsClients, proxy: TcpProxy
) -> None:
    first = await cluster.start(**FAST)
    second = await cluster.start(**FAST)
    a, b = await in_room(js, second, first, proxy, "websocket")
    dead = cluster.node_of(first)
    proxy.hold_new()
    cluster.kill(first)
    # Sent between the crash and its detection: to the dead process's
    # channel, lost (what is measured and documented).
    await send_candidates(js, a, b, range(1, 4))
    assert holder(cluster, b) == dead
    # The second process keeps B's socket once it found the first dead; what
    # A sends from then on waits there for B.
    await until(lambda: holder(cluster, b) == cluster.node_of(second), "custody taken")
    assert dead is not None and cluster.key("HEXISTS", "cluster:heartbeats", dead) == 0
    await send_candidates(js, a, b, range(4, 7))
    proxy.retarget(second.port)
    proxy.release()
    await assert_recovered_with_every_candidate(js, a, b, range(4, 7))


@pytest_twisted.ensureDeferred
async def test_window_end_across_processes_tells_the_peer_exactly_once(
    cluster: Cluster, js: JsClients, proxy: TcpProxy
) -> None:
    """B's process dies; nobody recovers B: the survivor, its custodian,
    announces it once when the window ends, not at detection."""
    window = {"SOCKETIO_RECOVERY_WINDOW_MS": "4000", **FAST}
    first, second = await cluster.start(**window), await cluster.start(**window)
    a, b = await in_room(js, second, first, proxy, "websocket", reconnection=False)
    cluster.kill(first)
    await until(lambda: holder(cluster, b) == cluster.node_of(second), "custody taken")
    assert await js.received("a", "peer-disconnected") == []
    assert await js.next("a", "peer-disconnected", timeout_ms=10_000) == {"peerId": b}
    await js.emit("a", "initiator-online", {"roomId": ROOM}, ack=True)
    assert await js.received("a", "peer-disconnected") == []
    assert cluster.key("GET", "socket:" + b) is None
    assert cluster.key("EXISTS", "recovery:" + b) == 0
