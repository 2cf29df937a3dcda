"""Tracked rooms across nodes: messages go only where the members are.

Three Socket.IO servers with L{ClusterAdapter}s on one L{MemoryBus}, each
subscribed to its own channel and the shared one (as over Redis). Rooms are
joined the way signaling joins them: with the members and nodes the store's
join answered (written out by each test, since no store runs here). The bus
delivers on C{flush()}, so a test can hold a publication "in flight" while
something else happens, which is how the races are shown.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from twisted.internet.task import Clock

from privydrop.cluster.bus import MemoryBus
from privydrop.cluster.messages import all_channel, node_channel
from privydrop.socketio.sockets import Socket
from tests.unit.test_cluster_bus import Node, make_node


@attrs.define
class Three:
    bus: MemoryBus
    a: Node
    b: Node
    c: Node

    def channels(self) -> list[str]:
        """The channels published on so far (and forget them)."""
        published = [channel for channel, _ in self.bus.published]
        self.bus.published.clear()
        return published


@pytest.fixture
def three() -> Three:
    clock = Clock()
    bus = MemoryBus()
    nodes = [make_node(name, bus, clock) for name in ("node-a", "node-b", "node-c")]
    return Three(bus, *nodes)


def join(node: Node, socket: Socket, room: str, members: dict[str, str]) -> None:
    """The socket enters a tracked room whose members the store answered."""
    socket.join(room, members={**members, socket.id: node.adapter.node_id})


def ready(socket: Socket, room: str) -> None:
    socket.to(room).emit("ready", {"peerId": socket.id})


def test_room_broadcast_goes_only_to_the_nodes_holding_members(three: Three) -> None:
    """With many processes, a message to a two-person room must not be
    delivered to every process (each relay would cost N deliveries)."""
    ca, sa = three.a.connect("a1")
    cb, sb = three.b.connect("b1")
    cc, _ = three.c.connect("c1")
    join(three.a, sa, "r:1", {})
    join(three.b, sb, "r:1", {sa.id: "node-a"})
    three.bus.flush()
    three.channels()
    sa.to("r:1").emit("ice", 1)
    assert three.channels() == [node_channel("privydrop", "node-b")]
    three.bus.flush()
    assert cb.take() == ['2["ice",1]']
    assert cc.take() == []
    # A relay to one socket goes to its node only, too.
    three.a.server.of("/").emit_to_socket(sb.id, "offer", {}, only_if_in_room="r:1")
    assert three.channels() == [node_channel("privydrop", "node-b")]
    three.bus.flush()
    assert cb.take() == ['2["offer",{}]']
    assert cc.take() == []


def test_joining_right_after_a_join_elsewhere_does_not_get_its_ready(three: Three) -> None:
    """The old race: a socket that entered the room on B a moment after a
    join on A received A's "ready" (addressed to the room before it was in
    it), so both peers started a WebRTC offer. Now "ready" names its
    recipients, and the newcomer is not among them."""
    ca, sa = three.a.connect("a1")
    cb, sb = three.b.connect("b1")
    join(three.a, sa, "r:1", {})
    ready(sa, "r:1")  # to nobody yet: A knows no other member
    # B's join was answered after A's: B knows A's member, and A learns B's.
    join(three.b, sb, "r:1", {sa.id: "node-a"})
    ready(sb, "r:1")
    three.bus.flush()
    assert cb.take() == []
    assert ca.take() == [f'2["ready",{{"peerId":"{sb.id}"}}]']
    # A now knows B's member (told on the same connection, before "ready").
    sa.to("r:1").emit("offer", 1)
    three.bus.flush()
    assert cb.take() == ['2["offer",1]']


def test_untracked_rooms_still_race(three: Three) -> None:
    """The contrast: a room joined without its members is routed by arrival
    on every node, which is what let the newcomer see the earlier "ready"."""
    _, sa = three.a.connect("a1")
    cb, sb = three.b.connect("b1")
    sa.join("plain")
    ready(sa, "plain")
    sb.join("plain")  # before A's broadcast arrived
    three.bus.flush()
    assert cb.take() == [f'2["ready",{{"peerId":"{sa.id}"}}]']


def test_a_message_for_a_socket_whose_join_is_in_flight_waits_for_it(three: Three) -> None:
    """B's socket joined first in the store, but A's "ready" reaches B before
    B has the store's answer: it is kept until the socket is in the room,
    not dropped (the peer would wait for a "ready" that never comes)."""
    ca, sa = three.a.connect("a1")
    cb, sb = three.b.connect("b1")
    ns_b = three.b.server.of("/")
    ns_b.hold(sb.id)
    # A's join ran after B's in the store: A knows B's member.
    join(three.a, sa, "r:1", {sb.id: "node-b"})
    ready(sa, "r:1")
    three.bus.flush()
    assert cb.take() == []
    join(three.b, sb, "r:1", {})
    assert cb.take() == [f'2["ready",{{"peerId":"{sa.id}"}}]']
    # ... and B learned A's member from the change that came first.
    sb.to("r:1").emit("answer", 2)
    three.bus.flush()
    assert ca.take() == ['2["answer",2]']


def test_a_held_socket_that_does_not_join_drops_what_was_kept(three: Three) -> None:
    """A join that fails releases what was kept: nothing arrives later."""
    _, sa = three.a.connect("a1")
    cb, sb = three.b.connect("b1")
    three.b.server.of("/").hold(sb.id)
    join(three.a, sa, "r:1", {sb.id: "node-b"})
    ready(sa, "r:1")
    three.bus.flush()
    three.b.server.of("/").release(sb.id)
    join(three.b, sb, "other:1", {})
    assert cb.take() == []
    assert three.b.adapter.held_dropped == 1


def test_a_member_that_left_is_not_brought_back_by_a_late_list(three: Three) -> None:
    """A join's answer that was read before someone left (and arrives after
    the leave was announced) must not make the node route to the departed."""
    _, sa = three.a.connect("a1")
    _, sb = three.b.connect("b1")
    _, sb2 = three.b.connect("b2")
    join(three.a, sa, "r:1", {})
    join(three.b, sb2, "r:1", {sa.id: "node-a"})
    three.bus.flush()
    sb2.leave("r:1")
    three.bus.flush()
    assert not three.a.adapter.members("/", "r:1").get(sb2.id)  # type: ignore[arg-type]
    # A late list (read before the leave) still names sb2.
    three.a.server.of("/").note_members(
        "r:1", {sa.id: "node-a", sb2.id: "node-b", sb.id: "node-b"}
    )
    join(three.b, sb, "r:1", {sa.id: "node-a"})
    three.bus.flush()
    assert set(three.a.adapter.members("/", "r:1")) == {sa.id, sb.id}  # type: ignore[arg-type]


def test_send_to_a_socket_not_known_in_the_room_is_dropped_and_counted(three: Three) -> None:
    """Signaling relays only inside a room: a socket id this node does not
    know in that room (a guess, or someone who left) goes nowhere."""
    _, sa = three.a.connect("a1")
    cb, sb = three.b.connect("b1")
    join(three.a, sa, "r:1", {})
    three.channels()
    three.a.server.of("/").emit_to_socket(sb.id, "offer", {}, only_if_in_room="r:1")
    assert three.channels() == []
    assert three.a.adapter.unroutable == 1
    three.bus.flush()
    assert cb.take() == []


def test_explicit_members_are_reached_and_forget_the_departed(three: Three) -> None:
    """The clean-up of another socket (a REST leave, a dead node) tells the
    remaining members wherever they are, once each, and their nodes stop
    routing to the socket that left."""
    ca, sa = three.a.connect("a1")
    cb, sb = three.b.connect("b1")
    cc, sc = three.c.connect("c1")
    join(three.a, sa, "r:1", {})
    join(three.b, sb, "r:1", {sa.id: "node-a"})
    join(three.c, sc, "r:1", {sa.id: "node-a", sb.id: "node-b"})
    three.bus.flush()
    three.channels()
    # Node C announces that a1 left (e.g. through the REST API).
    three.c.server.of("/").emit_to_members(
        "r:1", {sb.id: "node-b", sc.id: "node-c"}, "peer-disconnected", {"peerId": sa.id},
        departed=sa.id,
    )
    assert cc.take() == [f'2["peer-disconnected",{{"peerId":"{sa.id}"}}]']
    assert three.channels() == [node_channel("privydrop", "node-b")]
    three.bus.flush()
    assert cb.take() == [f'2["peer-disconnected",{{"peerId":"{sa.id}"}}]']
    assert ca.take() == []
    assert sa.id not in three.b.adapter.members("/", "r:1")  # type: ignore[comparison-overlap]
    assert sa.id not in three.c.adapter.members("/", "r:1")  # type: ignore[comparison-overlap]


def test_server_events_reach_the_named_node_only(three: Three) -> None:
    """A REST request on one node can make the node holding a socket act on
    it (take it out of its room), and no other node."""
    calls: dict[str, list[tuple[Any, ...]]] = {"node-a": [], "node-b": [], "node-c": []}
    for node in (three.a, three.b, three.c):
        node.server.of("/").on_server(
            "room-left", lambda *args, name=node.name: calls[name].append(args)
        )
    three.a.server.of("/").send_server_event("node-b", "room-left", "s1", "r", 1)
    three.a.server.of("/").send_server_event("node-a", "room-left", "s2", "r", 1)
    assert calls["node-a"] == [("s2", "r", 1)]  # its own: at once
    three.bus.flush()
    assert calls == {"node-a": [("s2", "r", 1)], "node-b": [("s1", "r", 1)], "node-c": []}


def test_renewed_node_follows_its_new_channel(three: Three) -> None:
    """A node that registers again under a new id is reached there (and
    what others send to its old id is not delivered)."""
    _, sa = three.a.connect("a1")
    cb, sb = three.b.connect("b1")
    for subscription in list(three.bus._subscriptions):
        if subscription.prefix == node_channel("privydrop", "node-b"):
            subscription.cancel()
    three.b.adapter.renew("node-b2")
    three.bus.subscribe(three.b.adapter.channel, three.b.adapter.receive, exact=True)
    join(three.b, sb, "r:2", {})
    join(three.a, sa, "r:2", {sb.id: "node-b2"})
    ready(sa, "r:2")
    three.bus.flush()
    assert cb.take() == [f'2["ready",{{"peerId":"{sa.id}"}}]']
    assert three.b.adapter.channels == ("privydrop#node#node-b2", all_channel("privydrop"))

