"""Connection state recovery with the official socket.io-client (4.7, the
PrivyDrop frontend's, and 4.8) against the real service tree.

Client B reaches the server through L{TcpProxy}, which fails like a mobile
network: it drops bytes silently, then severs the connection without a
close frame. Meanwhile A keeps sending candidates. B's client reconnects on
its own and must come back as the same socket, recovered, with every
candidate once and in order, and A must hear nothing of it. Deliberate
leaves must still be announced at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from tests.interop.js_clients import JsClients
from tests.interop.service_tree import RunningTree, start_tree, tree_settings
from tests.interop.tcp_proxy import TcpProxy
from tests.interop.test_signaling_js import CLIENTS, ELSEWHERE, HOME
from tests.redis_server import RedisServer

ROOM = "recovery-room"


def candidate(n: int) -> dict[str, Any]:
    return {"candidate": f"candidate:{n} 1 udp 2122260223 127.0.0.1 {50000 + n} typ host",
            "sdpMid": "0", "sdpMLineIndex": 0}


async def started(settings: Any) -> RunningTree:
    return await start_tree(settings, reactor)


@pytest_twisted.async_yield_fixture
async def tree(redis_server: RedisServer, redis_db: int) -> AsyncIterator[RunningTree]:
    running = await started(tree_settings(redis_server, redis_db))
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture(params=sorted(CLIENTS))
def client_copy(request: pytest.FixtureRequest) -> Path:
    return CLIENTS[request.param][0]


@pytest_twisted.async_yield_fixture
async def js(client_copy: Path) -> AsyncIterator[JsClients]:
    clients = JsClients.spawn(reactor, client_copy)
    try:
        yield clients
    finally:
        await clients.quit()


@pytest_twisted.async_yield_fixture
async def proxy(tree: RunningTree) -> AsyncIterator[TcpProxy]:
    running = TcpProxy(reactor, tree.port)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def in_room(
    js: JsClients, tree: RunningTree, proxy: TcpProxy, transport: str, reconnection: bool = True
) -> tuple[str, str]:
    """A connects directly, B through the proxy; both join ROOM.

    @return: the socket ids of A and B.
    """
    created = await js.fetch("POST", tree.url + "/api/create_room", {"roomId": ROOM})
    assert created["body"]["success"] is True
    a = (await js.connect("a", tree.url, transport, HOME))["id"]
    b = (
        await js.connect(
            "b", proxy.url, transport, ELSEWHERE, reconnection=reconnection
        )
    )["id"]
    for name in ("a", "b"):
        await js.emit(name, "join", {"roomId": ROOM})
        assert (await js.next(name, "joinResponse"))["success"] is True
    assert await js.next("a", "ready") == {"peerId": b}
    return a, b


async def send_candidates(js: JsClients, a: str, b: str, numbers: range) -> None:
    """A sends candidates to B, each acknowledged once the server relayed it."""
    for n in numbers:
        await js.emit("a", "ice-candidate", {"peerId": b, "candidate": candidate(n)}, ack=True)


async def assert_relay_both_ways(js: JsClients, a: str, b: str) -> None:
    await js.emit("b", "answer", {"peerId": a, "answer": {"type": "answer", "sdp": "v=0"}})
    assert (await js.next("a", "answer"))["from"] == b
    await send_candidates(js, a, b, range(100, 101))
    assert (await js.next("b", "ice-candidate"))["candidate"] == candidate(100)


async def assert_peer_heard_nothing(js: JsClients, a: str) -> None:
    # A round trip through the server first, so anything sent before it is in.
    await js.emit("a", "initiator-online", {"roomId": ROOM}, ack=True)
    assert await js.received("a", "peer-disconnected") == []


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest_twisted.ensureDeferred
async def test_severed_connection_recovers_same_socket_with_every_candidate(
    transport: str, tree: RunningTree, js: JsClients, proxy: TcpProxy
) -> None:
    a, b = await in_room(js, tree, proxy, transport)
    proxy.blackhole()
    # Written by the server to a connection that no longer reaches B.
    await send_candidates(js, a, b, range(1, 4))
    proxy.hold_new()
    proxy.sever()
    await send_candidates(js, a, b, range(4, 7))
    proxy.release()
    back = await js.next("b", "reconnect")
    assert back == {"id": b, "recovered": True}
    for n in range(1, 7):
        got = await js.next("b", "ice-candidate")
        assert got == {"candidate": candidate(n), "from": a, "peerId": a}
    await assert_relay_both_ways(js, a, b)
    assert await js.received("b", "ice-candidate") == []
    await assert_peer_heard_nothing(js, a)
    assert await js.received("b", "ready") == []
    sio = tree.realtime.sio_server
    assert sio.recoveries == 1
    if transport == "websocket":
        # The reset reached the server long before B's reconnection.
        assert sio.takeovers == 0


@pytest_twisted.ensureDeferred
async def test_takeover_while_the_server_still_thinks_the_old_connection_alive(
    tree: RunningTree, js: JsClients, proxy: TcpProxy
) -> None:
    """A phone changed networks: its client knows at once, the server only
    at its ping timeout. The new connection takes the socket over."""
    a, b = await in_room(js, tree, proxy, "websocket")
    proxy.blackhole()
    await send_candidates(js, a, b, range(1, 4))
    proxy.hold_new()
    old_server_sides = proxy.sever_client_side()
    assert old_server_sides
    await send_candidates(js, a, b, range(4, 6))
    proxy.release()
    assert await js.next("b", "reconnect") == {"id": b, "recovered": True}
    for n in range(1, 6):
        assert (await js.next("b", "ice-candidate"))["candidate"] == candidate(n)
    await assert_relay_both_ways(js, a, b)
    await assert_peer_heard_nothing(js, a)
    sio = tree.realtime.sio_server
    assert (sio.recoveries, sio.takeovers) == (1, 1)
    # Only the new connection is left: one for A, one for B.
    assert sio.connection_count() == 2


@pytest_twisted.ensureDeferred
async def test_window_end_tells_the_peer_exactly_once(
    redis_server: RedisServer, redis_db: int, js: JsClients
) -> None:
    running = await started(
        tree_settings(redis_server, redis_db, SOCKETIO_RECOVERY_WINDOW_MS="1000")
    )
    proxy = TcpProxy(reactor, running.port)
    await proxy.start()
    try:
        a, b = await in_room(js, running, proxy, "websocket", reconnection=False)
        proxy.sever()
        assert await js.next("a", "peer-disconnected", timeout_ms=5000) == {"peerId": b}
        await js.emit("a", "initiator-online", {"roomId": ROOM}, ack=True)
        assert await js.received("a", "peer-disconnected") == []
        assert redis_server.command("GET", f"socket:{b}", db=redis_db) is None
    finally:
        await proxy.stop()
        await running.stop()


@pytest.mark.parametrize(
    "leave, transport",
    [
        ("socket.disconnect", "websocket"),
        ("socket.disconnect", "polling"),
        ("engine close", "websocket"),
        ("engine close", "polling"),
        ("leave_room", "websocket"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_deliberate_leave_is_announced_at_once(
    leave: str, transport: str, tree: RunningTree, js: JsClients, proxy: TcpProxy
) -> None:
    """With a 120 s recovery window, the peer still hears of a deliberate
    leave within the 10 s the next event is waited for."""
    a, b = await in_room(js, tree, proxy, transport, reconnection=False)
    if leave == "socket.disconnect":
        await js.call("disconnect", name="b")
    elif leave == "engine close":
        await js.call("closeEngine", name="b")
    else:
        answer = await js.fetch(
            "POST", tree.url + "/api/leave_room", {"roomId": ROOM, "socketId": b}
        )
        assert answer["body"]["success"] is True
    assert await js.next("a", "peer-disconnected") == {"peerId": b}
    await js.emit("a", "initiator-online", {"roomId": ROOM}, ack=True)
    assert await js.received("a", "peer-disconnected") == []
    assert tree.realtime.sio_server.detached_count() == 0
