"""Two Socket.IO servers, as two processes of a cluster, over the in-memory bus.

Each server has a L{ClusterAdapter} publishing to one L{MemoryBus}; clients are
fake Engine.IO connections driven through the server's L{EngineApplication}
methods, as Engine.IO would. The bus delivers only on C{flush()}, like Redis
delivering on a later turn, so each test shows what happens locally at once
and what arrives from the other node.

The rooms here are joined without their members (no store behind them), so
the adapter routes them as untracked rooms: through the channel every node
subscribes to, each node deciding by its own sockets. Tracked rooms (what
signaling uses) are in C{test_cluster_routing.py}.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import orjson
import pytest
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs

from privydrop.cluster.bus import MemoryBus
from privydrop.cluster.messages import ClusterSend, all_channel, encode_message, node_channel
from privydrop.cluster.routing import ClusterAdapter
from privydrop.engineio.interface import CloseKind, EngineSid, Handshake, Message
from privydrop.settings import SocketIOSettings
from privydrop.socketio.ids import SocketId
from privydrop.socketio.server import SocketIOServer
from privydrop.socketio.sockets import Socket


class FakeConnection:
    """An Engine.IO session as the Socket.IO server sees it; records output."""

    def __init__(self, server: SocketIOServer, sid: str) -> None:
        self._server = server
        self.sid = EngineSid(sid)
        self.handshake = Handshake(
            headers={},
            remote_address="127.0.0.1",
            query={"EIO": "4", "transport": "websocket"},
            url="/socket.io/?EIO=4&transport=websocket",
            secure=False,
            issued_ms=0,
        )
        self.transport_name = "websocket"
        self.sent: list[Message] = []
        self.closed: str | None = None
        self.close_kind: CloseKind | None = None

    def send(self, message: Message) -> None:
        self.sent.append(message)

    def send_many(self, messages: Sequence[Message]) -> None:
        self.sent.extend(messages)

    def close(self, reason: str = "forced close", kind: CloseKind = CloseKind.SERVER) -> None:
        """End the session; C{kind} is how (a client leaving, a lost transport, ...)."""
        if self.closed is None:
            self.closed = reason
            self.close_kind = kind
            self._server.on_close(self, reason)

    def receive(self, message: Message) -> None:
        self._server.on_message(self, message)

    def take(self) -> list[Message]:
        sent, self.sent = self.sent, []
        return sent


@attrs.define
class Node:
    """One server process of the cluster."""

    name: str
    server: SocketIOServer
    adapter: ClusterAdapter
    clock: Clock

    def connect(self, engine_sid: str) -> tuple[FakeConnection, Socket]:
        """A client connected to C{"/"}; returns its connection and socket."""
        conn = FakeConnection(self.server, engine_sid)
        self.server.on_open(conn)
        conn.receive("0")
        self.clock.advance(0)
        answer = conn.take()
        assert len(answer) == 1 and isinstance(answer[0], str) and answer[0].startswith("0{")
        socket = self.server.of("/").get_socket(orjson.loads(answer[0][1:])["sid"])
        assert socket is not None
        return conn, socket


@attrs.define
class Cluster:
    bus: MemoryBus
    a: Node
    b: Node


def make_node(name: str, bus: MemoryBus, clock: Clock) -> Node:
    adapter = ClusterAdapter(name, bus.publish, clock=clock)
    bus.attach(adapter)
    server = SocketIOServer(clock, SocketIOSettings(connect_timeout_ms=1000, recovery_window_ms=0), adapter=adapter)
    ns = server.of("/")
    ns.on("join", lambda socket, room: socket.join(room))
    ns.on("leave", lambda socket, room: socket.leave(room))
    ns.on("to-room", lambda socket, room, *args: socket.to(room).emit("room-event", *args))
    ns.on(
        "to-socket",
        lambda socket, target, *args: ns.emit_to_socket(target, "direct", *args),
    )
    ns.on(
        "to-peer-in-room",
        lambda socket, room, target, *args: ns.emit_to_socket(
            target, "direct", *args, only_if_in_room=room
        ),
    )
    return Node(name, server, adapter, clock)


@pytest.fixture
def cluster() -> Cluster:
    clock = Clock()
    bus = MemoryBus()
    return Cluster(bus, make_node("node-a", bus, clock), make_node("node-b", bus, clock))


def emit(conn: FakeConnection, name: str, *args: Any) -> None:
    conn.receive("2" + orjson.dumps([name, *args]).decode())


# -- broadcast -------------------------------------------------------------------


def test_room_broadcast_reaches_both_nodes_once_and_not_the_sender(cluster: Cluster) -> None:
    """Peers of one room connected to different processes would miss each
    other's signaling, or get it twice, or echo it back to the sender."""
    a1, _ = cluster.a.connect("a1")
    a2, _ = cluster.a.connect("a2")
    b1, _ = cluster.b.connect("b1")
    b2, _ = cluster.b.connect("b2")
    outsider, _ = cluster.b.connect("b3")
    for conn in (a1, a2, b1, b2):
        emit(conn, "join", "room-1")
    # The sender is in two rooms with one of the peers: one copy each still.
    emit(a1, "join", "room-2")
    emit(b1, "join", "room-2")

    emit(a1, "to-room", "room-1", {"sdp": "x"})
    assert a2.take() == ['2["room-event",{"sdp":"x"}]']  # local, at once
    assert b1.take() == [] and b2.take() == []  # remote: not before the bus delivers
    assert cluster.bus.flush() == 1  # published once, not per remote socket
    assert b1.take() == ['2["room-event",{"sdp":"x"}]']
    assert b2.take() == ['2["room-event",{"sdp":"x"}]']
    assert a1.take() == [] and a2.take() == [] and outsider.take() == []


def test_broadcast_to_several_rooms_delivers_one_copy_per_remote_socket(cluster: Cluster) -> None:
    """A peer in two targeted rooms must not process the same offer twice."""
    b1, _ = cluster.b.connect("b1")
    emit(b1, "join", "x")
    emit(b1, "join", "y")
    cluster.a.server.of("/").to("x").to("y").emit("both", 1)
    cluster.bus.flush()
    assert b1.take() == ['2["both",1]']


def test_namespace_wide_emit_reaches_every_node(cluster: Cluster) -> None:
    """A server-wide announcement reaches clients of every process."""
    a1, _ = cluster.a.connect("a1")
    b1, _ = cluster.b.connect("b1")
    cluster.b.server.of("/").emit("notice", "maintenance")
    assert b1.take() == ['2["notice","maintenance"]']
    cluster.bus.flush()
    assert a1.take() == ['2["notice","maintenance"]']
    assert b1.take() == []


def test_binary_broadcast_arrives_intact_on_the_other_node(cluster: Cluster) -> None:
    """Binary attachments would be corrupted or lost between processes."""
    b1, _ = cluster.b.connect("b1")
    emit(b1, "join", "r")
    cluster.a.server.of("/").to("r").emit("chunk", b"\x00\xff\x10", {"n": 1})
    cluster.bus.flush()
    assert b1.take() == [
        '51-["chunk",{"_placeholder":true,"num":0},{"n":1}]',
        b"\x00\xff\x10",
    ]


def test_messages_from_one_node_arrive_in_order(cluster: Cluster) -> None:
    """ICE candidates overtaking their offer would break connection set-up."""
    a1, _ = cluster.a.connect("a1")
    b1, _ = cluster.b.connect("b1")
    emit(b1, "join", "r")
    for i in range(5):
        emit(a1, "to-room", "r", i)
    cluster.bus.flush()
    assert b1.take() == [f'2["room-event",{i}]' for i in range(5)]


def test_left_room_receives_no_more_remote_broadcasts(cluster: Cluster) -> None:
    """A peer that left a room must not keep receiving its signaling."""
    a1, _ = cluster.a.connect("a1")
    b1, _ = cluster.b.connect("b1")
    emit(b1, "join", "r")
    emit(b1, "leave", "r")
    emit(a1, "to-room", "r", 1)
    cluster.bus.flush()
    assert b1.take() == []


def test_disconnected_remote_socket_receives_nothing(cluster: Cluster) -> None:
    """Sockets that left must vanish from the remote node's delivery too."""
    a1, _ = cluster.a.connect("a1")
    b1, s_b1 = cluster.b.connect("b1")
    emit(b1, "join", "r")
    b1.close("transport close")
    emit(a1, "to-room", "r", 1)
    cluster.bus.flush()
    assert b1.take() == []
    assert not cluster.b.adapter.is_local("/", s_b1.id)


# -- send to one socket ----------------------------------------------------------


def test_emit_to_socket_on_other_node(cluster: Cluster) -> None:
    """An answer addressed to a peer on another process must reach it."""
    a1, _ = cluster.a.connect("a1")
    b1, s_b1 = cluster.b.connect("b1")
    b2, _ = cluster.b.connect("b2")
    emit(a1, "to-socket", s_b1.id, {"answer": 1})
    assert b1.take() == []
    cluster.bus.flush()
    assert b1.take() == ['2["direct",{"answer":1}]']
    assert b2.take() == [] and a1.take() == []


def test_emit_to_local_socket_does_not_publish(cluster: Cluster) -> None:
    """Peers on the same process talk without a round trip through Redis."""
    a1, _ = cluster.a.connect("a1")
    a2, s_a2 = cluster.a.connect("a2")
    emit(a1, "to-socket", s_a2.id, "hi")
    assert a2.take() == ['2["direct","hi"]']
    assert cluster.bus.published == []


def test_only_if_in_room_is_checked_on_the_node_that_knows_the_room(cluster: Cluster) -> None:
    """A client must not reach a socket on another process by guessing its id
    when that socket is not in the sender's room."""
    a1, _ = cluster.a.connect("a1")
    b1, s_b1 = cluster.b.connect("b1")
    emit(a1, "to-peer-in-room", "room-1", s_b1.id, "guess")
    cluster.bus.flush()
    assert b1.take() == []
    emit(b1, "join", "room-1")
    emit(a1, "to-peer-in-room", "room-1", s_b1.id, "peer")
    cluster.bus.flush()
    assert b1.take() == ['2["direct","peer"]']


def test_room_named_like_a_socket_id_gets_nothing_addressed_to_that_socket(
    cluster: Cluster,
) -> None:
    """Joining a room named after someone's socket id must not let a client
    read messages meant for that socket, on any node; and a broadcast to
    such a room does not reach the socket it is named after."""
    a1, _ = cluster.a.connect("a1")
    target, s_target = cluster.b.connect("b1")
    spy_b, _ = cluster.b.connect("b2")
    spy_a, _ = cluster.a.connect("a2")
    emit(spy_b, "join", s_target.id)
    emit(spy_a, "join", s_target.id)

    emit(a1, "to-socket", s_target.id, "secret")
    cluster.bus.flush()
    assert target.take() == ['2["direct","secret"]']
    assert spy_b.take() == [] and spy_a.take() == []

    cluster.a.server.of("/").to(s_target.id).emit("room-msg")
    cluster.bus.flush()
    assert spy_a.take() == ['2["room-msg"]'] and spy_b.take() == ['2["room-msg"]']
    assert target.take() == []


def test_send_to_unknown_socket_is_dropped_everywhere(cluster: Cluster) -> None:
    """A stale peer id goes nowhere instead of raising or reaching someone."""
    a1, _ = cluster.a.connect("a1")
    b1, _ = cluster.b.connect("b1")
    emit(a1, "to-socket", "no-such-socket", "x")
    cluster.bus.flush()
    assert a1.take() == [] and b1.take() == []


# -- own messages, garbage, failures ------------------------------------------------


def test_node_ignores_its_own_publications(cluster: Cluster) -> None:
    """Redis echoes a publisher's messages back to it; local clients would
    otherwise receive every broadcast twice."""
    a1, _ = cluster.a.connect("a1")
    a2, _ = cluster.a.connect("a2")
    emit(a2, "join", "r")
    emit(a1, "to-room", "r", 1)
    assert a2.take() == ['2["room-event",1]']
    cluster.bus.flush()
    assert a2.take() == []


def test_garbage_on_the_channel_is_dropped_with_a_warning(cluster: Cluster) -> None:
    """Junk from another program or release must not crash delivery, and
    real messages after it still arrive."""
    b1, _ = cluster.b.connect("b1")
    channel = all_channel("privydrop")
    with capturedLogs() as events:
        cluster.bus.publish(channel, b"not json")
        cluster.bus.publish(channel, b'{"v":99,"kind":"socket"}')
        cluster.bus.flush()
    warnings = [e for e in events if e["log_level"] is LogLevel.warn]
    # Both nodes drop both; the clock did not move, so the second warning of
    # each node is throttled and counted.
    assert [e.get("cause") for e in warnings] == ["unreadable", "unreadable"]
    assert "not JSON" in warnings[0]["error"]
    assert cluster.b.adapter.dropped == 2
    cluster.b.clock.advance(61)
    with capturedLogs() as events:
        cluster.bus.publish(channel, b"[]")
        cluster.bus.flush()
    later = [e for e in events if e["log_level"] is LogLevel.warn]
    assert [e["suppressed"] for e in later] == [1, 1]
    cluster.a.server.of("/").emit("still-works")
    cluster.bus.flush()
    assert b1.take() == ['2["still-works"]']


def test_message_on_the_wrong_channel_is_dropped(cluster: Cluster) -> None:
    """A message that arrives on a channel that is not the node's (a
    misconfigured subscriber) is not delivered."""
    b1, s_b1 = cluster.b.connect("b1")
    payload = encode_message(
        ClusterSend(
            namespace="/",
            socket_id=SocketId(s_b1.id),
            only_if_in_room=None,
            messages=('2["x"]',),
            origin="elsewhere",
        )
    )
    cluster.b.adapter.receive(node_channel("privydrop", "node-a"), payload)
    assert b1.take() == []
    assert cluster.b.adapter.dropped == 1
    cluster.bus.publish(node_channel("privydrop", "node-b"), payload)
    cluster.bus.flush()
    assert b1.take() == ['2["x"]']


def test_failed_publish_is_logged_and_local_delivery_still_happens() -> None:
    """With Redis down, clients on the same process keep working and the
    loss is visible in the logs instead of an exception in the emitter."""
    from twisted.internet.defer import fail

    clock = Clock()
    attempts: list[str] = []

    def broken_publish(channel: str, payload: bytes) -> Any:
        attempts.append(channel)
        return fail(ConnectionError("redis down"))

    adapter = ClusterAdapter("solo", broken_publish, clock=clock)
    server = SocketIOServer(clock, SocketIOSettings(recovery_window_ms=0), adapter=adapter)
    node = Node("solo", server, adapter, clock)
    c1, s1 = node.connect("e1")
    s1.join("r")
    with capturedLogs() as events:
        server.of("/").to("r").emit("x")
        server.of("/").to("r").emit("y")
    assert c1.take() == ['2["x"]', '2["y"]']
    assert attempts == ["privydrop#all#", "privydrop#all#"]
    assert adapter.publish_failures == 2
    warned = [e for e in events if e["log_level"] is LogLevel.warn]
    assert len(warned) == 1 and warned[0]["error"] == "redis down"


def test_adapter_requires_a_node_id() -> None:
    """Without a node id a node could not recognise its own messages."""
    with pytest.raises(ValueError):
        ClusterAdapter("", lambda channel, payload: None)


def test_bus_with_clock_delivers_on_the_next_turn() -> None:
    """The bus can stand in for Redis in a running reactor: delivery comes
    later, never inside the publishing call."""
    clock = Clock()
    bus = MemoryBus(clock)
    got: list[tuple[str, Any]] = []
    sub = bus.subscribe("p#", lambda channel, payload: got.append((channel, payload)))
    bus.subscribe("other#", lambda channel, payload: got.append(("wrong", payload)))
    count: list[int] = []
    bus.publish("p#/#", b"1").addCallback(count.append)
    assert got == [] and count == [1]
    clock.advance(0)
    assert got == [("p#/#", b"1")]
    sub.cancel()
    bus.publish("p#/#", b"2")
    clock.advance(0)
    assert got == [("p#/#", b"1")] and bus.pending == 0


def test_bus_keeps_delivering_when_a_subscriber_raises() -> None:
    """One broken node must not stop the others from receiving."""
    bus = MemoryBus()
    got: list[Any] = []

    def broken(channel: str, payload: Any) -> None:
        raise RuntimeError("boom")

    bus.subscribe("p", broken)
    bus.subscribe("p", lambda channel, payload: got.append(payload))
    with capturedLogs() as events:
        bus.publish("p#", b"x")
        bus.flush()
    assert got == [b"x"]
    assert any(e.get("log_failure") is not None for e in events)


# -- the service ---------------------------------------------------------------------


def test_adapter_service_connects_to_the_configured_redis_and_stops_cleanly() -> None:
    """The service tree's adapter must talk to the Redis the settings name
    (one publishing and one subscribing connection) and must not hold up
    shutdown when Redis never answered."""
    from twisted.internet.testing import MemoryReactorClock

    from privydrop.cluster.pubsub import ClusterService
    from privydrop.settings import RedisSettings

    reactor = MemoryReactorClock()
    service = ClusterService(
        RedisSettings(host="10.1.2.3", port=6390),
        reactor,
        node_id="n-1",
        channel_prefix="pd",
        pubsub="classic",
    )
    assert service.name == "adapter"
    assert service.adapter.node_id == "n-1"
    assert service.adapter.channels == ("pd#node#n-1", "pd#all#")
    assert reactor.tcpClients == []
    service.startService()
    # (MemoryReactor resolves every name to 127.0.0.1; the port tells.)
    assert [port for _, port, *_ in reactor.tcpClients] == [6390, 6390]
    assert not service.subscribed
    stopped = service.stopService()
    assert stopped.called
    assert not service.publisher.running


def test_wait_received_fires_once_another_nodes_publication_is_handled(
    cluster: Cluster,
) -> None:
    """A node can tell when another node's broadcast has been settled there;
    if this broke, waiting on it would hang or fire before the broadcast."""
    a1, _ = cluster.a.connect("a1")
    cluster.b.connect("b1")
    before = cluster.b.adapter.received
    waited = cluster.b.adapter.wait_received(before)
    later = cluster.b.adapter.wait_received(before + 1)
    emit(a1, "to-room", "r1", "hello")
    cluster.a.clock.advance(0)
    assert not waited.called
    cluster.bus.flush()
    assert waited.called and cluster.b.adapter.received == before + 1
    assert not later.called
    assert cluster.b.adapter.wait_received(before).called
