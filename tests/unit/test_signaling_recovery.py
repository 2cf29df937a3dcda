"""PrivyDrop's signaling with connection state recovery: a lost connection
is not a leave (see the signaling module docstring)."""

from __future__ import annotations

from twisted.internet.defer import Deferred

from privydrop.settings import Settings
from privydrop.signaling.handlers import NotifyPeerLeft, peer_left_notifier
from tests.unit.test_signaling_handlers import ROOM, World, make_world

WINDOW_S = Settings().socketio.recovery_window_ms / 1000.0


def world_with_room() -> World:
    w = make_world()
    w.create_room(ROOM)
    return w


def test_lost_connection_is_silent_and_recovery_replays_relayed_candidates() -> None:
    world = world_with_room()
    a = world.joined(ROOM)
    b = world.joined(ROOM, address="198.51.100.2")
    a.emit("ice-candidate", {"peerId": b.id, "candidate": {"n": 1}})
    offset = b.last_offset()
    b.lose()
    for n in (2, 3):
        a.emit("ice-candidate", {"peerId": b.id, "candidate": {"n": n}})
    assert a.received("peer-disconnected") == []
    answer = b.recover(world.clock, offset)
    assert answer["sid"] == b.id
    assert b.received("ice-candidate") == [
        {"candidate": {"n": n}, "from": a.id, "peerId": a.id} for n in (2, 3)
    ]
    # Both directions work afterwards, and the room never heard of it.
    b.emit("answer", {"peerId": a.id, "answer": {"sdp": "x"}})
    assert a.last("answer") == {"answer": {"sdp": "x"}, "from": b.id, "peerId": b.id}
    a.emit("offer", {"peerId": b.id, "offer": {"sdp": "y"}})
    assert b.last("offer")["offer"] == {"sdp": "y"}
    world.clock.advance(WINDOW_S + 1)
    assert a.received("peer-disconnected") == []
    assert a.received("ready") == [{"peerId": b.id}]
    assert world.stored(world.store.room_sockets(ROOM)) == {a.id, b.id}


def test_window_end_tells_the_room_once_and_unbinds() -> None:
    world = world_with_room()
    a = world.joined(ROOM)
    b = world.joined(ROOM, address="198.51.100.2")
    b.lose()
    world.clock.advance(WINDOW_S - 1)
    assert a.received("peer-disconnected") == []
    assert world.stored(world.store.room_of_socket(b.id)) == ROOM
    world.clock.advance(1)
    assert a.received("peer-disconnected") == [{"peerId": b.id}]
    assert world.stored(world.store.room_of_socket(b.id)) is None
    world.clock.advance(WINDOW_S)
    assert a.received("peer-disconnected") == [{"peerId": b.id}]


def test_recovered_socket_is_not_rate_limited_and_rejoin_still_announces() -> None:
    """The join window allows 2 joins per 5 s per IP: a recovery is no join,
    while an explicit rejoin of its own room re-announces as before."""
    world = world_with_room()
    a = world.joined(ROOM)
    b = world.joined(ROOM, address="198.51.100.2")
    for _ in range(3):
        b.lose()
        b.recover(world.clock)
    assert a.received("ready") == [{"peerId": b.id}]
    b.emit("join", {"roomId": ROOM})
    assert b.last("joinResponse")["success"] is True
    assert a.received("ready") == [{"peerId": b.id}, {"peerId": b.id}]


def test_deliberate_leave_is_announced_at_once() -> None:
    world = world_with_room()
    a = world.joined(ROOM)
    b = world.joined(ROOM, address="198.51.100.2")
    b.disconnect()
    assert a.received("peer-disconnected") == [{"peerId": b.id}]
    c = world.joined(ROOM, address="198.51.100.3")
    world.app.on_message(c.connection, "1")  # Socket.IO DISCONNECT
    assert a.received("peer-disconnected") == [{"peerId": b.id}, {"peerId": c.id}]


def test_leave_room_of_a_detached_socket_announces_once_and_ends_it() -> None:
    world = world_with_room()
    a = world.joined(ROOM)
    b = world.joined(ROOM, address="198.51.100.2")
    b.lose()
    notify: NotifyPeerLeft = peer_left_notifier(world.app.of("/"))
    # As POST /api/leave_room does: unbind in the store, then the hook.
    notify(b.id, world.stored(world.rooms.leave(b.id, ROOM)))
    assert a.received("peer-disconnected") == [{"peerId": b.id}]
    assert world.stored(world.store.room_of_socket(b.id)) is None
    answer = b.recover(world.clock)
    assert answer["sid"] != b.id
    world.clock.advance(WINDOW_S + 1)
    assert a.received("peer-disconnected") == [{"peerId": b.id}]


def test_join_in_flight_when_the_connection_drops_completes() -> None:
    """A join the store carries out after the connection dropped is done:
    the socket is in the room (detached) and its room hears ready; the
    joinResponse waits in its log."""
    world = world_with_room()
    a = world.joined(ROOM)
    world.store.gate = Deferred()
    c = world.client(address="198.51.100.3")
    c.emit("join", {"roomId": ROOM})
    c.lose()
    gate, world.store.gate = world.store.gate, None
    gate.callback(None)
    assert a.received("ready") == [{"peerId": c.id}]
    assert world.signaling.room_of(c.id) == ROOM
    # This client had received no event before: socket.io-client then
    # sends its pid without an offset, which gets a new socket (as with the
    # reference server), and the old one leaves at once.
    answer = c.recover(world.clock, offset="")
    assert answer["sid"] != c.id
    assert a.received("peer-disconnected") == [{"peerId": c.id}]
    assert world.stored(world.store.room_of_socket(c.id)) is None


def test_shutdown_ends_detached_sockets() -> None:
    world = world_with_room()
    a = world.joined(ROOM)
    b = world.joined(ROOM, address="198.51.100.2")
    b.lose()
    idle = world.signaling.wait_idle()
    fired: list[object] = []
    idle.addCallback(fired.append)
    assert world.app.end_all_detached() == 1
    assert a.received("peer-disconnected") == [{"peerId": b.id}]
    a.disconnect()
    assert fired == [None]
