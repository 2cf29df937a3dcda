"""PrivyDrop signaling end to end with the official JavaScript socket.io-client.

The real service tree (REST API, Engine.IO, Socket.IO, signaling) listens on
a loopback port with the test Redis behind it; Node.js runs socket.io-client
4.7 (the version the PrivyDrop frontend ships) over one transport at a time,
as the frontend does with ``transports: ["websocket", "polling"]``. Redis is
read back afterwards with a plain RESP client, independently of our store.

All clients connect from 127.0.0.1, which is a trusted proxy by default, so
each states its address in X-Forwarded-For, the way nginx would; that also
proves the join rate limit keys on the forwarded address.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from tests.interop.js_clients import BROWSER_DIR, JS_DIR, JsClients
from tests.interop.service_tree import RunningTree, start_tree, tree_settings
from tests.redis_server import RedisServer

#: Where "users" A, B and C come from (one household behind one address).
HOME = {"X-Forwarded-For": "203.0.113.10"}
#: Another user's address.
ELSEWHERE = {"X-Forwarded-For": "198.51.100.20"}

OFFER = {"type": "offer", "sdp": "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\n"}
ANSWER = {"type": "answer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n"}
CANDIDATES = [
    {"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host", "sdpMid": "0", "sdpMLineIndex": 0},
    {"candidate": "candidate:2 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active", "sdpMid": "0", "sdpMLineIndex": 0},
]
RATE_LIMITED = re.compile(r"^Rate limit exceeded\. Try again in [1-5]s\. Attempts left: 0\.$")


@pytest_twisted.async_yield_fixture
async def tree(redis_server: RedisServer, redis_db: int) -> AsyncIterator[RunningTree]:
    running = await start_tree(tree_settings(redis_server, redis_db), reactor)
    try:
        yield running
    finally:
        await running.stop()


#: socket.io-client copies: the PrivyDrop frontend's 4.7 line (pinned by the
#: browser test's package.json) and the newer one of tests/interop/js/.
CLIENTS = {
    "client-4.7": (BROWSER_DIR / "node_modules" / "socket.io-client", "4.7."),
    "client-js-dir": (JS_DIR / "node_modules" / "socket.io-client", "4."),
}


@pytest.fixture(params=sorted(CLIENTS))
def client_copy(request: pytest.FixtureRequest) -> tuple[Path, str]:
    return CLIENTS[request.param]


@pytest_twisted.async_yield_fixture
async def js(client_copy: tuple[Path, str]) -> AsyncIterator[JsClients]:
    clients = JsClients.spawn(reactor, client_copy[0])
    try:
        yield clients
    finally:
        await clients.quit()


def _redis(server: RedisServer, db: int, *args: Any) -> Any:
    return server.command(*args, db=db)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest_twisted.ensureDeferred
async def test_two_users_signal_a_transfer_through_rooms(
    transport: str,
    tree: RunningTree,
    js: JsClients,
    client_copy: tuple[Path, str],
    redis_server: RedisServer,
    redis_db: int,
) -> None:
    """The PrivyDrop frontend's whole signaling conversation works against this server.

    If this breaks, two users can no longer find each other in a room and set
    up the WebRTC connection that carries their files.
    """
    url = tree.url
    allocated = await js.fetch("GET", url + "/api/get_room")
    assert allocated["status"] == 200
    room = allocated["body"]["roomId"]
    assert isinstance(room, str) and len(room) == 4
    other_room = "interop-" + transport
    created = await js.fetch("POST", url + "/api/create_room", {"roomId": other_room})
    assert created["body"] == {"success": True, "message": "create room success"}

    a_connected = await js.connect("a", url, transport, HOME)
    assert a_connected["version"].startswith(client_copy[1])
    a = a_connected["id"]
    b_connected = await js.connect("b", url, transport, HOME)
    b = b_connected["id"]
    assert b_connected["transport"] == transport
    c = (await js.connect("c", url, transport, HOME))["id"]
    assert len({a, b, c}) == 3

    # A creates the room's presence, B joins; A learns B is ready.
    await js.emit("a", "join", {"roomId": room})
    assert await js.next("a", "joinResponse") == {
        "success": True, "message": "Successfully joined room", "roomId": room,
    }
    await js.emit("b", "join", {"roomId": room})
    assert await js.next("b", "joinResponse") == {
        "success": True, "message": "Successfully joined room", "roomId": room,
    }
    assert await js.next("a", "ready") == {"peerId": b}

    # Offer, answer and candidates, with from/peerId set by the server.
    await js.emit("a", "offer", {"peerId": b, "offer": OFFER, "from": "not-a"})
    assert await js.next("b", "offer") == {"offer": OFFER, "from": a, "peerId": a}
    await js.emit("b", "answer", {"peerId": a, "answer": ANSWER, "from": b})
    assert await js.next("a", "answer") == {"answer": ANSWER, "from": b, "peerId": b}
    for candidate in CANDIDATES:
        await js.emit("a", "ice-candidate", {"peerId": b, "candidate": candidate, "from": a})
    await js.emit("b", "ice-candidate", {"peerId": a, "candidate": CANDIDATES[0], "from": b})
    for candidate in CANDIDATES:
        assert await js.next("b", "ice-candidate") == {"candidate": candidate, "from": a, "peerId": a}
    assert await js.next("a", "ice-candidate") == {"candidate": CANDIDATES[0], "from": b, "peerId": b}

    # The reconnect hand-shake.
    await js.emit("a", "initiator-online", {"roomId": room})
    assert await js.next("b", "initiator-online") == {"roomId": room}
    await js.emit("b", "recipient-ready", {"roomId": room, "peerId": b})
    assert await js.next("a", "recipient-ready") == {"peerId": b}

    # A rejoins its own room (not rate limited) and B hears it is ready again.
    await js.emit("a", "join", {"roomId": room})
    assert (await js.next("a", "joinResponse"))["success"] is True
    assert await js.next("b", "ready") == {"peerId": a}

    # A cannot move to another room while bound.
    await js.emit("a", "join", {"roomId": other_room})
    assert await js.next("a", "joinResponse") == {
        "success": False,
        "message": "Socket is already bound to another room",
        "roomId": other_room,
    }

    # The third fresh join from the same address inside 5 s is refused.
    await js.emit("c", "join", {"roomId": room})
    refused = await js.next("c", "joinResponse")
    assert refused["success"] is False and refused["roomId"] == room
    assert RATE_LIMITED.match(refused["message"]), refused["message"]

    # C is in no room: its offer to B goes nowhere. The server has handled it
    # once the acknowledgement is back, so A's later offer must be B's next one.
    await js.emit("c", "offer", {"peerId": b, "offer": OFFER, "from": c}, ack=True)
    await js.emit("a", "offer", {"peerId": b, "offer": ANSWER, "from": a})
    assert await js.next("b", "offer") == {"offer": ANSWER, "from": a, "peerId": a}

    # The schema, read back from Redis while A and B are in the room.
    created_at = _redis(redis_server, redis_db, "HGET", "room:" + room, "created_at")
    assert created_at is not None and created_at.isdigit()
    assert 86_000 < _redis(redis_server, redis_db, "TTL", "room:" + room) <= 86_400
    members = set(_redis(redis_server, redis_db, "SMEMBERS", "room:" + room + ":sockets"))
    assert members == {a, b}
    assert 86_000 < _redis(redis_server, redis_db, "TTL", "room:" + room + ":sockets") <= 86_400
    assert _redis(redis_server, redis_db, "GET", "socket:" + a) == room
    assert 89_000 < _redis(redis_server, redis_db, "TTL", "socket:" + a) <= 90_000
    assert _redis(redis_server, redis_db, "EXISTS", "socket:" + c) == 0
    rate_key = "ratelimit:join:203.0.113.10"
    assert _redis(redis_server, redis_db, "TYPE", rate_key) == "zset"
    assert _redis(redis_server, redis_db, "ZCARD", rate_key) == 3
    assert 0 < _redis(redis_server, redis_db, "TTL", rate_key) <= 5

    # D, from elsewhere, joins and leaves through the REST API: A hears it.
    d = (await js.connect("d", url, transport, ELSEWHERE))["id"]
    await js.emit("d", "join", {"roomId": room})
    assert (await js.next("d", "joinResponse"))["success"] is True
    assert await js.next("a", "ready") == {"peerId": d}
    left = await js.fetch("POST", url + "/api/leave_room", {"roomId": room, "socketId": d})
    assert left["body"] == {"success": True, "message": "Successfully left the room"}
    assert await js.next("a", "peer-disconnected") == {"peerId": d}
    assert _redis(redis_server, redis_db, "EXISTS", "socket:" + d) == 0

    # B closes the tab: A hears it.
    await js.call("disconnect", name="b")
    assert await js.next("a", "peer-disconnected") == {"peerId": b}

    # Everyone leaves: the room is empty and expires in 15 minutes.
    for name in ("a", "c", "d"):
        await js.call("disconnect", name=name)
    await tree.realtime.signaling.wait_idle()
    assert _redis(redis_server, redis_db, "EXISTS", "room:" + room + ":sockets") == 0
    assert _redis(redis_server, redis_db, "EXISTS", "socket:" + a) == 0
    assert _redis(redis_server, redis_db, "EXISTS", "socket:" + b) == 0
    assert _redis(redis_server, redis_db, "HGET", "room:" + room, "created_at") == created_at
    assert 890 < _redis(redis_server, redis_db, "TTL", "room:" + room) <= 900
    # The other room was created but never joined: its 24 h TTL is untouched.
    assert 86_000 < _redis(redis_server, redis_db, "TTL", "room:" + other_room) <= 86_400


@pytest_twisted.ensureDeferred
async def test_join_while_redis_stalls_answers_server_error_and_binds_nothing_for_good(
    redis_server: RedisServer, redis_db: int
) -> None:
    """While Redis hangs, a joining user is told so at once, and nobody ends up half in a room.

    If this breaks, users wait for ever on a stalled Redis, or a failed join
    leaves a ghost member that the room's peers see as ready.
    """
    settings = tree_settings(redis_server, redis_db, REDIS_COMMAND_TIMEOUT="0.3")
    running = await start_tree(settings, reactor)
    js = JsClients.spawn(reactor, CLIENTS["client-4.7"][0])
    try:
        url = running.url
        room = (await js.fetch("GET", url + "/api/get_room"))["body"]["roomId"]
        a = (await js.connect("a", url, "websocket", HOME))["id"]
        c = (await js.connect("c", url, "websocket", ELSEWHERE))["id"]
        await js.emit("a", "join", {"roomId": room})
        assert (await js.next("a", "joinResponse"))["success"] is True

        redis_server.pause()
        try:
            await js.emit("c", "join", {"roomId": room})
            assert await js.next("c", "joinResponse") == {
                "success": False,
                "message": "Server error while joining room",
                "roomId": room,
            }
        finally:
            redis_server.resume()

        # C is in no Socket.IO room: A's broadcast does not reach it.
        await js.emit("a", "initiator-online", {"roomId": room}, ack=True)
        # Retrying works once Redis is back (the stalled script may have run
        # by then; the retry then counts as a rejoin).
        await js.emit("c", "join", {"roomId": room})
        assert (await js.next("c", "joinResponse"))["success"] is True
        assert await js.received("c", "initiator-online") == []
        assert await js.next("a", "ready") == {"peerId": c}
        await js.emit("c", "initiator-online", {"roomId": room}, ack=True)
        assert await js.next("a", "initiator-online") == {"roomId": room}
        assert await js.received("a", "ready") == []

        for name in ("a", "c"):
            await js.call("disconnect", name=name)
        await running.realtime.signaling.wait_idle()
        assert _redis(redis_server, redis_db, "EXISTS", "socket:" + a) == 0
        assert _redis(redis_server, redis_db, "EXISTS", "socket:" + c) == 0
        assert _redis(redis_server, redis_db, "EXISTS", "room:" + room + ":sockets") == 0
        assert 890 < _redis(redis_server, redis_db, "TTL", "room:" + room) <= 900
    finally:
        await js.quit()
        await running.stop()
