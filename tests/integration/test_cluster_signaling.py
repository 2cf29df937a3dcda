"""PrivyDrop signaling across two server processes that share one Redis.

Two complete service trees (store, cluster adapter, Engine.IO + Socket.IO +
signaling, REST API, one HTTP port each), built by
L{privydrop.service.build_service} from the settings an operator would give
and pointed at the same real Redis, play two processes or hosts behind a
load balancer. The official JavaScript ``socket.io-client`` (Node.js, through
L{tests.interop.js_clients.JsClients}) connects one user to node A and the
other to node B, so every event between them has to travel through Redis
pub/sub, and the store decisions (room exists, join rate limit) are made by
whichever node the user reached.

Every client connects from 127.0.0.1, a trusted proxy by default, and names
its address in X-Forwarded-For as nginx would, so each user of a test has an
address of its own for the join rate limit.

"Nothing arrives" is proven with a later message on the same route: one
process publishes in order on one connection and a client receives in
order, so once a later message arrived, an earlier one would have too.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from tests.interop.js_clients import JsClients
from tests.interop.service_tree import RunningTree, start_tree, tree_settings
from tests.redis_server import RedisServer

#: Longest wait for anything the server side should do; a failure, not a hang.
WAIT_S = 10.0

#: Where the two users of a transfer and the others come from.
SENDER = {"X-Forwarded-For": "203.0.113.1"}
RECEIVER = {"X-Forwarded-For": "203.0.113.2"}
STRANGER = {"X-Forwarded-For": "198.51.100.7"}

OFFER = {"type": "offer", "sdp": "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\n"}
ANSWER = {"type": "answer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n"}
CANDIDATE_1 = {
    "candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host",
    "sdpMid": "0",
    "sdpMLineIndex": 0,
}
CANDIDATE_2 = {
    "candidate": "candidate:2 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active",
    "sdpMid": "0",
    "sdpMLineIndex": 0,
}
JOINED = "Successfully joined room"
RATE_LIMITED = re.compile(r"^Rate limit exceeded\. Try again in [1-5]s\. Attempts left: 0\.$")


def within(d: Deferred[Any]) -> Deferred[Any]:
    """C{d}, failing with TimeoutError if it has not fired within L{WAIT_S}."""
    return d.addTimeout(WAIT_S, reactor)


@attrs.define
class Cluster:
    """Two nodes sharing one Redis, and that Redis for reading keys back."""

    a: RunningTree
    b: RunningTree
    redis: RedisServer
    db: int

    def key(self, *args: Any) -> Any:
        """One Redis command on the nodes' database, by a client independent of ours."""
        return self.redis.command(*args, db=self.db)

    async def wait_idle(self) -> None:
        """Wait until both nodes have finished every socket's disconnect clean-up."""
        for node in (self.a, self.b):
            await within(node.realtime.signaling.wait_idle())


async def _start_subscribed(redis_server: RedisServer, db: int, **overrides: str) -> RunningTree:
    """A started tree whose cluster subscription is in place.

    Until the subscription exists, what other nodes publish does not reach
    this one; a test that did not wait for it would race Redis.
    """
    running = await start_tree(tree_settings(redis_server, db, **overrides), reactor)
    try:
        await within(running.service.getServiceNamed("adapter").wait_subscribed())
    except BaseException:
        await running.stop()
        raise
    return running


@pytest_twisted.async_yield_fixture
async def cluster(
    redis_server: RedisServer, redis_db: int, request: pytest.FixtureRequest
) -> AsyncIterator[Cluster]:
    overrides = {}
    if request.node.get_closest_marker("recovery_off") is not None:
        overrides["SOCKETIO_RECOVERY_WINDOW_MS"] = "0"
    a = await _start_subscribed(redis_server, redis_db, **overrides)
    try:
        b = await _start_subscribed(redis_server, redis_db, **overrides)
    except BaseException:
        await a.stop()
        raise
    try:
        yield Cluster(a, b, redis_server, redis_db)
    finally:
        # A test may have stopped a node already (a process shutting down).
        try:
            if b.service.running:
                await b.stop()
        finally:
            if a.service.running:
                await a.stop()


@pytest_twisted.async_yield_fixture
async def js(cluster: Cluster) -> AsyncIterator[JsClients]:
    """The Node process holding every socket.io-client of a test.

    Teardown disconnects every client, waits for Node to exit and for both
    nodes to finish the server-side clean-up of every socket that joined,
    before the trees stop.
    """
    clients = JsClients.spawn(reactor)
    try:
        yield clients
    finally:
        await clients.quit()
        await cluster.wait_idle()


def _until(condition: Callable[[], bool]) -> Deferred[None]:
    """Fires once C{condition()} holds, checked on each reactor turn."""
    d: Deferred[None] = Deferred()

    def check() -> None:
        if d.called:
            return
        if condition():
            d.callback(None)
        else:
            reactor.callLater(0, check)

    check()
    return d


async def _create_room(js: JsClients, node: RunningTree, room: str) -> None:
    created = await js.fetch("POST", node.url + "/api/create_room", {"roomId": room})
    assert created["status"] == 200
    assert created["body"] == {"success": True, "message": "create room success"}


async def _join(js: JsClients, name: str, room: str) -> dict[str, Any]:
    await js.emit(name, "join", {"roomId": room})
    response: dict[str, Any] = await js.next(name, "joinResponse")
    return response


async def _pair(
    cluster: Cluster, js: JsClients, room: str, transport: str = "websocket"
) -> tuple[str, str]:
    """Create C{room} on node A, connect "sender" to A and "receiver" to B,
    join both, and check the sender hears the receiver is ready.

    @return: the sender's and the receiver's socket ids.
    """
    await _create_room(js, cluster.a, room)
    sender = await js.connect("sender", cluster.a.url, transport, SENDER)
    receiver = await js.connect("receiver", cluster.b.url, transport, RECEIVER)
    assert sender["transport"] == receiver["transport"] == transport
    sender_id, receiver_id = sender["id"], receiver["id"]
    assert sender_id != receiver_id

    assert await _join(js, "sender", room) == {"success": True, "message": JOINED, "roomId": room}
    # Node B finds the room node A created: the store is shared.
    assert await _join(js, "receiver", room) == {
        "success": True,
        "message": JOINED,
        "roomId": room,
    }
    assert await js.next("sender", "ready") == {"peerId": receiver_id}
    return sender_id, receiver_id


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest_twisted.ensureDeferred
async def test_peers_on_two_nodes_signal_a_whole_transfer(
    transport: str, cluster: Cluster, js: JsClients
) -> None:
    """Two users served by different processes find each other and exchange
    offer, answer, ICE candidates and the reconnect hand-shake.

    If this breaks, a deployment with more than one process (or host) only
    works for users who happen to land on the same one: the others wait in
    a room for a peer that never becomes ready, or for an answer that never
    comes.
    """
    room = "cluster-" + transport
    sender, receiver = await _pair(cluster, js, room, transport)

    # The store holds both sockets, bound by two different processes.
    assert set(cluster.key("SMEMBERS", f"room:{room}:sockets")) == {sender, receiver}
    assert cluster.key("GET", "socket:" + sender) == room
    assert cluster.key("GET", "socket:" + receiver) == room

    # A -> B and B -> A, with from/peerId set by the server whatever the
    # client wrote.
    await js.emit("sender", "offer", {"peerId": receiver, "offer": OFFER, "from": "forged"})
    assert await js.next("receiver", "offer") == {"offer": OFFER, "from": sender, "peerId": sender}
    await js.emit("receiver", "answer", {"peerId": sender, "answer": ANSWER, "from": "forged"})
    assert await js.next("sender", "answer") == {
        "answer": ANSWER,
        "from": receiver,
        "peerId": receiver,
    }
    # Candidates keep their order across processes.
    await js.emit("sender", "ice-candidate", {"peerId": receiver, "candidate": CANDIDATE_1})
    await js.emit("sender", "ice-candidate", {"peerId": receiver, "candidate": CANDIDATE_2})
    await js.emit("receiver", "ice-candidate", {"peerId": sender, "candidate": CANDIDATE_2})
    assert await js.next("receiver", "ice-candidate") == {
        "candidate": CANDIDATE_1,
        "from": sender,
        "peerId": sender,
    }
    assert await js.next("receiver", "ice-candidate") == {
        "candidate": CANDIDATE_2,
        "from": sender,
        "peerId": sender,
    }
    assert await js.next("sender", "ice-candidate") == {
        "candidate": CANDIDATE_2,
        "from": receiver,
        "peerId": receiver,
    }

    # The reconnect hand-shake, both ways.
    await js.emit("sender", "initiator-online", {"roomId": room})
    assert await js.next("receiver", "initiator-online") == {"roomId": room}
    await js.emit("receiver", "recipient-ready", {"roomId": room, "peerId": "forged"})
    assert await js.next("sender", "recipient-ready") == {"peerId": receiver}

    # Nobody got their own broadcasts back, through Redis or otherwise.
    assert await js.received("sender", "initiator-online") == []
    assert await js.received("receiver", "recipient-ready") == []
    assert await js.received("receiver", "ready") == []

    # The sender closes the tab on node A: the receiver on node B hears it.
    await js.call("disconnect", name="sender")
    assert await js.next("receiver", "peer-disconnected") == {"peerId": sender}
    await within(cluster.a.realtime.signaling.wait_idle())
    assert cluster.key("EXISTS", "socket:" + sender) == 0
    assert set(cluster.key("SMEMBERS", f"room:{room}:sockets")) == {receiver}


@pytest_twisted.ensureDeferred
async def test_stranger_on_other_node_cannot_signal_into_a_room(
    cluster: Cluster, js: JsClients
) -> None:
    """Someone in another room, on another process, who learned a user's
    socket id cannot push an offer, answer, candidate or announcement to it.

    If this breaks, anyone connected to any node of a deployment can inject
    their own WebRTC session description into a stranger's transfer.
    """
    room = "cluster-victims"
    sender, receiver = await _pair(cluster, js, room)
    other_room = "cluster-strangers"
    await _create_room(js, cluster.b, other_room)
    stranger = (await js.connect("stranger", cluster.b.url, "websocket", STRANGER))["id"]
    assert (await _join(js, "stranger", other_room))["success"] is True

    # Each acknowledgement comes back once node B has handled the event,
    # so anything it published for them is in Redis before what follows.
    await js.emit(
        "stranger", "offer", {"peerId": sender, "offer": OFFER, "from": receiver}, ack=True
    )
    await js.emit("stranger", "answer", {"peerId": sender, "answer": ANSWER}, ack=True)
    await js.emit(
        "stranger", "ice-candidate", {"peerId": sender, "candidate": CANDIDATE_1}, ack=True
    )
    await js.emit("stranger", "initiator-online", {"roomId": room}, ack=True)
    await js.emit("stranger", "recipient-ready", {"roomId": room, "peerId": stranger}, ack=True)

    # The real peer, on the same node as the stranger, goes through.
    await js.emit("receiver", "offer", {"peerId": sender, "offer": ANSWER})
    assert await js.next("sender", "offer") == {"offer": ANSWER, "from": receiver, "peerId": receiver}
    for event in ("offer", "answer", "ice-candidate", "initiator-online", "recipient-ready"):
        assert await js.received("sender", event) == [], event
    assert await js.received("receiver", "initiator-online") == []
    assert await js.received("receiver", "recipient-ready") == []


@pytest_twisted.ensureDeferred
async def test_joining_on_b_right_after_a_join_on_a_does_not_get_its_ready(
    cluster: Cluster, js: JsClients
) -> None:
    """A user entering a room through node B right after another entered it
    through node A is not sent A's "ready" (addressed to the room before B's
    user was in it): only the first user is told, so only one starts the
    WebRTC offer.

    Before, node B decided who was in the room when A's broadcast arrived,
    and a join on B a moment after A's got it too (the tests waited for each
    broadcast to settle to avoid it); now "ready" names its recipients.
    """
    for i in range(4):
        room = f"cluster-race-{i}"
        await _create_room(js, cluster.a, room)
        # Addresses of their own: the join rate limit counts per address.
        first_from = {"X-Forwarded-For": f"203.0.113.{20 + i}"}
        second_from = {"X-Forwarded-For": f"203.0.113.{40 + i}"}
        first = (await js.connect(f"s{i}", cluster.a.url, "websocket", first_from))["id"]
        second = (await js.connect(f"r{i}", cluster.b.url, "websocket", second_from))["id"]
        assert (await _join(js, f"s{i}", room))["success"] is True
        assert (await _join(js, f"r{i}", room))["success"] is True
        assert await js.next(f"s{i}", "ready") == {"peerId": second}
        # Once the first user's offer has arrived, a "ready" node A sent
        # earlier would have arrived too (one ordered route).
        await js.emit(f"s{i}", "offer", {"peerId": second, "offer": OFFER})
        assert (await js.next(f"r{i}", "offer"))["from"] == first
        assert await js.received(f"r{i}", "ready") == []


@pytest.mark.parametrize("api_node", ["b", "a"])
@pytest_twisted.ensureDeferred
async def test_leave_room_through_either_node_tells_the_peer_on_the_other(
    api_node: str, cluster: Cluster, js: JsClients
) -> None:
    """C{POST /api/leave_room} for the receiver (connected to node B) tells
    the sender on node A, whichever node the request reaches.

    If this breaks, behind a load balancer the sender keeps waiting for a
    peer that has already left the room, depending on which process the
    frontend's HTTP request happened to reach.
    """
    room = "cluster-leave-" + api_node
    sender, receiver = await _pair(cluster, js, room)
    node = cluster.b if api_node == "b" else cluster.a

    # Someone who knows the room id but names a socket that is not in it
    # reaches no one.
    for made_up in ("made-up-id", sender + "x"):
        outsider = await js.fetch(
            "POST", node.url + "/api/leave_room", {"roomId": room, "socketId": made_up}
        )
        assert outsider["status"] == 200
    left = await js.fetch(
        "POST", node.url + "/api/leave_room", {"roomId": room, "socketId": receiver}
    )
    assert left["status"] == 200
    assert left["body"] == {"success": True, "message": "Successfully left the room"}
    assert await js.next("sender", "peer-disconnected") == {"peerId": receiver}
    assert cluster.key("EXISTS", "socket:" + receiver) == 0
    assert set(cluster.key("SMEMBERS", f"room:{room}:sockets")) == {sender}
    # Node B took the receiver out of the room: the sender's signaling no
    # longer reaches it, and its disconnect is not announced again. (The
    # sender's own later message proves each check.)
    await within(_until(lambda: cluster.b.realtime.signaling.room_of(receiver) is None))
    await js.emit("sender", "initiator-online", {"roomId": room})
    await js.emit("sender", "offer", {"peerId": receiver, "offer": OFFER})
    late = (await js.connect("late", cluster.b.url, "websocket", STRANGER))["id"]
    assert (await _join(js, "late", room))["success"] is True
    assert await js.next("sender", "ready") == {"peerId": late}
    await js.emit("sender", "offer", {"peerId": late, "offer": OFFER})
    assert (await js.next("late", "offer"))["from"] == sender
    assert await js.received("receiver", "initiator-online") == []
    assert await js.received("receiver", "offer") == []
    await js.call("disconnect", name="receiver")
    await within(_until(lambda: not cluster.b.realtime.signaling.knows(receiver)))
    await js.emit("late", "recipient-ready", {"roomId": room, "peerId": late})
    assert await js.next("sender", "recipient-ready") == {"peerId": late}
    assert await js.received("sender", "peer-disconnected") == []


@pytest_twisted.ensureDeferred
async def test_join_rate_limit_is_shared_between_nodes(cluster: Cluster, js: JsClients) -> None:
    """Fresh joins from one address are counted together on every node: the
    third inside the window is refused even on a process that saw none of
    the first two.

    If this breaks, a client can multiply its join budget by the number of
    processes (walking room ids that much faster) just by reconnecting until
    it lands on another one.
    """
    room = "cluster-limited"
    await _create_room(js, cluster.a, room)
    same_address = {"X-Forwarded-For": "192.0.2.50"}
    for name, node in (("first", cluster.a), ("second", cluster.a), ("third", cluster.b)):
        await js.connect(name, node.url, "websocket", same_address)
    other = (await js.connect("other", cluster.b.url, "websocket", STRANGER))["id"]

    assert (await _join(js, "first", room))["success"] is True
    assert (await _join(js, "second", room))["success"] is True
    refused = await _join(js, "third", room)
    assert refused["success"] is False and refused["roomId"] == room
    assert RATE_LIMITED.match(refused["message"]), refused["message"]
    # The limit is per address, not for node B as a whole.
    assert await _join(js, "other", room) == {"success": True, "message": JOINED, "roomId": room}

    assert cluster.key("ZCARD", "ratelimit:join:192.0.2.50") == 3
    members = set(cluster.key("SMEMBERS", f"room:{room}:sockets"))
    assert len(members) == 3 and other in members


@pytest.mark.recovery_off
@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest_twisted.ensureDeferred
async def test_node_shutting_down_tells_peers_on_the_other_node(
    transport: str, cluster: Cluster, js: JsClients
) -> None:
    """Without connection state recovery: when one process stops (a deploy,
    a restart), the users it served are announced as gone to their peers on
    the processes that keep running, and their bindings are removed from
    the store. (With recovery, their clients recover them on the others:
    test_cluster_recovery.py.)

    If this breaks, every rolling restart leaves users on the surviving
    processes waiting for peers that will never answer, and leaves ghost
    members in their rooms until the bindings' 25 h TTL.
    """
    room = "cluster-shutdown-" + transport
    sender, receiver = await _pair(cluster, js, room, transport)

    await within(Deferred.fromCoroutine(cluster.a.stop()))
    assert await js.next("receiver", "peer-disconnected") == {"peerId": sender}
    assert cluster.key("EXISTS", "socket:" + sender) == 0
    assert set(cluster.key("SMEMBERS", f"room:{room}:sockets")) == {receiver}

    # The survivor still serves its room: a user joining there is announced.
    late = (await js.connect("late", cluster.b.url, "websocket", STRANGER))["id"]
    assert (await _join(js, "late", room))["success"] is True
    assert await js.next("receiver", "ready") == {"peerId": late}


@pytest_twisted.ensureDeferred
async def test_a_room_redis_lost_is_over_even_when_its_id_is_issued_again(
    cluster: Cluster, js: JsClients
) -> None:
    """Redis loses its data (FLUSHDB here; a restart without persistence, a
    failover to an empty replica) and the same room id is created again for
    a stranger: the old peers and the newcomer never reach each other, in
    either direction, on any node; an old peer can join the new room like
    anyone else.

    If this breaks, a stranger given a recycled room code receives the
    previous users' signaling (and can answer their offers), while Redis
    lists only the stranger.
    """
    room = "cluster-recycled"
    sender, receiver = await _pair(cluster, js, room)
    cluster.key("FLUSHDB")
    await _create_room(js, cluster.a, room)
    stranger = (await js.connect("stranger", cluster.a.url, "websocket", STRANGER))["id"]
    assert (await _join(js, "stranger", room))["success"] is True
    assert set(cluster.key("SMEMBERS", f"room:{room}:sockets")) == {stranger}

    # Newcomer -> old peers (on its node and the other); each ack comes once
    # node A handled the event, and A's later relay to the receiver proves
    # nothing earlier is still on its way.
    for target in (sender, receiver):
        await js.emit("stranger", "offer", {"peerId": target, "offer": OFFER}, ack=True)
    await js.emit("stranger", "initiator-online", {"roomId": room}, ack=True)
    await js.emit("sender", "ice-candidate", {"peerId": receiver, "candidate": CANDIDATE_1})
    assert (await js.next("receiver", "ice-candidate"))["from"] == sender
    # Old peers -> newcomer, proven the same way on the B -> A route.
    await js.emit("sender", "offer", {"peerId": stranger, "offer": OFFER}, ack=True)
    await js.emit("receiver", "offer", {"peerId": stranger, "offer": OFFER})
    await js.emit("receiver", "recipient-ready", {"roomId": room, "peerId": receiver})
    await js.emit("receiver", "ice-candidate", {"peerId": sender, "candidate": CANDIDATE_2})
    assert (await js.next("sender", "ice-candidate"))["from"] == receiver
    for name in ("sender", "receiver", "stranger"):
        for event in ("offer", "ready", "initiator-online"):
            assert await js.received(name, event) == [], (name, event)
    assert await js.received("stranger", "recipient-ready") == []
    # (The old peers still reach each other until the room check.)
    assert await js.received("sender", "recipient-ready") == [{"peerId": receiver}]

    # An old peer joins the new room of that id: a fresh join, announced.
    assert await _join(js, "receiver", room) == {"success": True, "message": JOINED, "roomId": room}
    assert await js.next("stranger", "ready") == {"peerId": receiver}
    await js.emit("stranger", "offer", {"peerId": receiver, "offer": OFFER})
    assert (await js.next("receiver", "offer"))["from"] == stranger
    assert set(cluster.key("SMEMBERS", f"room:{room}:sockets")) == {stranger, receiver}
    assert await js.received("sender", "ready") == []
