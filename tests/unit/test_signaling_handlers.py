"""PrivyDrop's signaling handlers over the real Socket.IO server and rooms.

Each test drives the real L{SocketIOServer} through in-memory Engine.IO
connections (no sockets), with the real L{Rooms} rules over a L{MemoryStore}
on a C{Clock}. The memory store never waits, so a handler's answer is there
as soon as the packet was fed in; a store that must wait or fail is the same
memory store behind a gate the test opens.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from privydrop.cluster.bus import MemoryBus
from privydrop.cluster.routing import ClusterAdapter
from privydrop.engineio.interface import CloseKind, EngineSid, Handshake, Message
from privydrop.rooms import Rooms
from privydrop.settings import Settings, SocketIOSettings
from privydrop.signaling import events
from privydrop.signaling.handlers import (
    NotifyPeerLeft,
    Signaling,
    install_signaling,
    peer_left_notifier,
)
from privydrop.socketio.packets import Packet, PacketType, encode
from privydrop.socketio.server import SocketIOServer
from privydrop.store import keys
from privydrop.store.interface import JoinResult, RateWindow, StoreUnavailable
from privydrop.store.memory import MemoryStore

ROOM = "1234"
OTHER_ROOM = "5678"


class FakeEngineConnection:
    """An Engine.IO session as the Socket.IO server sees it, kept in memory."""

    def __init__(self, app: SocketIOServer, sid: str, address: str, headers: dict[str, str]) -> None:
        self._app = app
        self._sid = EngineSid(sid)
        self._handshake = Handshake(
            headers=headers,
            remote_address=address,
            query={"EIO": "4", "transport": "websocket"},
            url="/socket.io/?EIO=4&transport=websocket",
            secure=False,
            issued_ms=0,
        )
        self.sent: list[Message] = []
        self.closed: str | None = None
        self.close_kind: CloseKind | None = None

    @property
    def sid(self) -> EngineSid:
        return self._sid

    @property
    def handshake(self) -> Handshake:
        return self._handshake

    @property
    def transport_name(self) -> str:
        return "websocket"

    def send(self, message: Message) -> None:
        self.sent.append(message)

    def send_many(self, messages: Any) -> None:
        self.sent.extend(messages)

    def close(self, reason: str = "forced close", kind: CloseKind = CloseKind.SERVER) -> None:
        """End the session; C{kind} is how (a client leaving, a lost transport, ...)."""
        if self.closed is None:
            self.closed = reason
            self.close_kind = kind
            self._app.on_close(self, reason)


class Client:
    """One browser's Socket.IO client, speaking packets to the server."""

    def __init__(
        self, app: SocketIOServer, clock: Clock, sid: str, address: str, headers: dict[str, str]
    ) -> None:
        self.app = app
        self.connection = FakeEngineConnection(app, sid, address, headers)
        app.on_open(self.connection)
        self.app.on_message(self.connection, "0")
        # The server releases what follows the CONNECT answer on the next turn.
        clock.advance(0)
        first = self.connection.sent[0]
        assert isinstance(first, str) and first.startswith("0")
        self.id: str = json.loads(first[1:])["sid"]
        #: The offset sent in the last recovery.
        self.offset: str | None = None

    def emit(self, event: str, *args: Any) -> None:
        for message in encode(Packet(PacketType.EVENT, "/", [event, *args])):
            self.app.on_message(self.connection, message)

    def received(self, event: str) -> list[Any]:
        """Payloads of every C{event} received so far, in order."""
        found = []
        for message in self.connection.sent:
            if isinstance(message, str) and message.startswith("2"):
                name, *args = json.loads(message[1:])
                if name == event:
                    found.append(args[0] if args else None)
        return found

    def last(self, event: str) -> Any:
        got = self.received(event)
        assert got, f"no {event} received"
        return got[-1]

    def disconnect(self) -> None:
        """The browser leaves on purpose (a page closing its WebSocket)."""
        self.connection.close("transport close", CloseKind.CLIENT)

    def lose(self, reason: str = "ping timeout") -> None:
        """The connection is lost (network change, ping timeout)."""
        self.connection.close(reason, CloseKind.LOST)

    def last_offset(self) -> str:
        """The offset of the last event received (what socket.io-client keeps)."""
        for message in reversed(self.connection.sent):
            if isinstance(message, str) and message.startswith("2"):
                offset = json.loads(message[1:])[-1]
                assert isinstance(offset, str)
                return offset
        if self.offset is None:
            raise AssertionError("no event received")
        return self.offset

    def recover(self, clock: Clock, offset: str | None = None) -> dict[str, Any]:
        """Come back on a new connection with C{{pid, offset}} (the last
        offset received unless given; none at all with C{""}); return the
        CONNECT answer. Later events are received on the new connection."""
        answer = json.loads(str(self.connection.sent[0])[1:])
        auth = {"pid": answer["pid"]}
        if offset != "":
            auth["offset"] = self.offset = offset or self.last_offset()
        self.connection = FakeEngineConnection(
            self.app, self.connection.sid + "+", self.connection.handshake.remote_address, {}
        )
        self.app.on_open(self.connection)
        self.app.on_message(self.connection, "0" + json.dumps(auth))
        clock.advance(0)
        reply: dict[str, Any] = json.loads(str(self.connection.sent[0])[1:])
        return reply


class GatedStore(MemoryStore):
    """The memory store, whose join_room can be held or made to fail."""

    gate: Deferred[None] | None = None
    fail_joins = False

    async def join_room(
        self,
        socket_id: str,
        room_id: str,
        now_ms: int,
        room_ttl_s: int,
        socket_ttl_s: int,
        rate: RateWindow | None,
        **options: Any,
    ) -> JoinResult:
        if self.gate is not None:
            await self.gate
        if self.fail_joins:
            raise StoreUnavailable("redis did not answer within 2.0 s")
        return await super().join_room(
            socket_id, room_id, now_ms, room_ttl_s, socket_ttl_s, rate, **options
        )


@attrs.define
class World:
    clock: Clock
    store: GatedStore
    rooms: Rooms
    app: SocketIOServer
    signaling: Signaling
    _count: int = 0

    def client(self, address: str = "198.51.100.1", headers: dict[str, str] | None = None) -> Client:
        self._count += 1
        return Client(self.app, self.clock, f"engine-{self._count}", address, headers or {})

    def create_room(self, room_id: str) -> None:
        created = self.rooms.create(room_id)
        result = _result(Deferred.fromCoroutine(created))
        assert result.success

    def joined(self, room_id: str, address: str = "198.51.100.1") -> Client:
        client = self.client(address)
        client.emit("join", {"roomId": room_id})
        assert client.last("joinResponse")["success"] is True
        return client

    def stored(self, coroutine: Any) -> Any:
        return _result(Deferred.fromCoroutine(coroutine))


def rooms_of(world: World, socket_id: str) -> frozenset[str]:
    """The rooms of a connected socket, as the server keeps them (the
    Socket.IO room of room R created at T is C{R:T}; T is left out here)."""
    socket = world.app.of("/").get_socket(socket_id)
    assert socket is not None
    return frozenset(room.rsplit(":", 1)[0] for room in socket.rooms)


def _result(d: Deferred[Any]) -> Any:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the memory store was expected to answer at once"
    if hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


def make_world(
    settings: Settings | None = None, socketio: SocketIOSettings | None = None
) -> World:
    settings = settings or Settings()
    clock = Clock()
    clock.advance(1_700_000_000)
    store = GatedStore(clock)
    rooms = Rooms(store, settings.rooms, clock)
    app = SocketIOServer(clock, socketio or settings.socketio)
    signaling = install_signaling(app.of("/"), rooms, settings, clock=clock)
    return World(clock, store, rooms, app, signaling)


@pytest.fixture
def world() -> World:
    w = make_world()
    w.create_room(ROOM)
    w.create_room(OTHER_ROOM)
    return w


def test_join_answers_the_joiner_and_tells_the_room_it_is_ready(world: World) -> None:
    """The sender learns that a receiver arrived, which starts the WebRTC offer."""
    a = world.joined(ROOM)
    assert a.received("joinResponse") == [
        {"success": True, "message": "Successfully joined room", "roomId": ROOM}
    ]
    b = world.client(address="198.51.100.2")
    b.emit("join", {"roomId": ROOM})
    assert b.last("joinResponse") == {
        "success": True,
        "message": "Successfully joined room",
        "roomId": ROOM,
    }
    assert a.received("ready") == [{"peerId": b.id}]
    assert b.received("ready") == []
    assert world.stored(world.store.room_sockets(ROOM)) == {a.id, b.id}
    assert world.stored(world.store.room_of_socket(b.id)) == ROOM
    assert world.signaling.room_of(b.id) == ROOM


def test_join_of_a_missing_room_is_refused(world: World) -> None:
    """A mistyped room code says so instead of leaving the user waiting."""
    c = world.client()
    c.emit("join", {"roomId": "9999"})
    assert c.last("joinResponse") == {
        "success": False,
        "message": "Room does not exist",
        "roomId": "9999",
    }
    assert world.stored(world.store.room_of_socket(c.id)) is None


@pytest.mark.parametrize(
    "payload, echoed",
    [
        ("1234", None),
        ({"roomId": 1234}, None),
        ({}, None),
        ({"roomId": "x" * 65}, "x" * 65),
        ({"roomId": "abc:sockets"}, "abc:sockets"),
        ({"roomId": "ab\ncd"}, "ab\ncd"),
    ],
)
def test_join_with_a_malformed_room_id_answers_invalid_room_id(
    world: World, payload: Any, echoed: str | None
) -> None:
    """A broken client gets a clear refusal; nothing is bound or counted against its IP."""
    c = world.client()
    c.emit("join", payload)
    expected: dict[str, Any] = {"success": False, "message": "Invalid roomId"}
    if echoed is not None:
        expected["roomId"] = echoed
    assert c.received("joinResponse") == [expected]
    assert world.signaling.dropped.count(events.JOIN) == 1
    assert world.stored(world.store.room_of_socket(c.id)) is None
    assert world.stored(world.store.ttl(keys.join_rate("198.51.100.1"))) is None


def test_second_room_for_the_same_socket_is_refused(world: World) -> None:
    """A socket cannot sit in two rooms and receive both rooms' signaling."""
    a = world.joined(ROOM)
    a.emit("join", {"roomId": OTHER_ROOM})
    assert a.last("joinResponse") == {
        "success": False,
        "message": "Socket is already bound to another room",
        "roomId": OTHER_ROOM,
    }
    assert rooms_of(world, a.id) == {ROOM}
    assert world.stored(world.store.room_of_socket(a.id)) == ROOM
    assert world.stored(world.store.room_sockets(OTHER_ROOM)) == set()


def test_third_fresh_join_from_one_ip_is_rate_limited_but_a_rejoin_is_not(world: World) -> None:
    """Room codes cannot be brute-forced by joining, while reconnecting users still get in."""
    a = world.joined(ROOM)
    world.clock.advance(1)
    world.joined(OTHER_ROOM)
    world.clock.advance(1)
    a.emit("join", {"roomId": ROOM})
    assert a.last("joinResponse")["success"] is True
    c = world.client()
    c.emit("join", {"roomId": ROOM})
    assert c.last("joinResponse") == {
        "success": False,
        "message": "Rate limit exceeded. Try again in 3s. Attempts left: 0.",
        "roomId": ROOM,
    }
    assert world.stored(world.store.room_of_socket(c.id)) is None
    # Another address has its own window.
    d = world.client(address="198.51.100.9")
    d.emit("join", {"roomId": ROOM})
    assert d.last("joinResponse")["success"] is True
    # Once the first attempts leave the window, joins are allowed again.
    world.clock.advance(5)
    c.emit("join", {"roomId": ROOM})
    assert c.last("joinResponse")["success"] is True


def test_join_rate_limit_can_be_turned_off() -> None:
    """DISABLE_JOIN_RATE_LIMIT=1 lets a test lab join as often as it likes."""
    base = Settings()
    w = make_world(attrs.evolve(base, rooms=attrs.evolve(base.rooms, join_rate_limit_enabled=False)))
    w.create_room(ROOM)
    for _ in range(5):
        w.joined(ROOM)


def test_join_rate_limit_uses_the_right_most_untrusted_forwarded_address(world: World) -> None:
    """Behind our proxy a client cannot escape the limit by writing X-Forwarded-For itself."""
    for forged in ("10.9.9.1", "10.9.9.2"):
        c = world.client(address="127.0.0.1", headers={"x-forwarded-for": forged + ", 203.0.113.7"})
        c.emit("join", {"roomId": ROOM})
        assert c.last("joinResponse")["success"] is True
    third = world.client(address="127.0.0.1", headers={"x-forwarded-for": "10.9.9.3, 203.0.113.7"})
    third.emit("join", {"roomId": ROOM})
    assert third.last("joinResponse")["message"].startswith("Rate limit exceeded.")
    assert world.stored(world.store.ttl(keys.join_rate("203.0.113.7"))) == 5
    # From a peer that is not a trusted proxy, the header is not believed.
    direct = world.client(address="198.51.100.50", headers={"x-forwarded-for": "203.0.113.7"})
    direct.emit("join", {"roomId": ROOM})
    assert direct.last("joinResponse")["success"] is True
    assert world.stored(world.store.ttl(keys.join_rate("198.51.100.50"))) == 5


@pytest.mark.parametrize(
    "event, field", [("offer", "offer"), ("answer", "answer"), ("ice-candidate", "candidate")]
)
def test_signaling_reaches_the_peer_with_the_sender_id_set_by_the_server(
    world: World, event: str, field: str
) -> None:
    """The receiving browser answers the right peer, whatever the sender claimed to be."""
    a = world.joined(ROOM)
    b = world.joined(ROOM, address="198.51.100.2")
    value = {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"}
    a.emit(event, {"peerId": b.id, field: value, "from": "somebody-else"})
    assert b.received(event) == [{field: value, "from": a.id, "peerId": a.id}]
    assert a.received(event) == []


def test_signaling_to_a_socket_of_another_room_is_not_delivered(world: World) -> None:
    """A stranger who learned a socket id cannot inject offers into someone's transfer."""
    a = world.joined(ROOM)
    stranger = world.joined(OTHER_ROOM, address="198.51.100.3")
    outsider = world.client(address="198.51.100.4")
    stranger.emit("offer", {"peerId": a.id, "offer": {"sdp": "x"}})
    outsider.emit("ice-candidate", {"peerId": a.id, "candidate": {"candidate": "x"}})
    a.emit("answer", {"peerId": stranger.id, "answer": {"sdp": "y"}})
    assert a.received("offer") == []
    assert a.received("ice-candidate") == []
    assert stranger.received("answer") == []
    # Only the outsider is refused here (it is in no room); the others are
    # filtered by the adapter's membership check on delivery.
    assert world.signaling.unroutable == 1


def test_oversized_or_malformed_signaling_is_dropped_and_counted(world: World) -> None:
    """A client flooding huge SDPs or junk cannot push them into another browser."""
    a = world.joined(ROOM)
    b = world.joined(ROOM, address="198.51.100.2")
    a.emit("offer", {"peerId": b.id, "offer": {"sdp": "x" * (64 * 1024)}})
    a.emit("ice-candidate", "not an object")
    a.emit("answer", {"peerId": 42, "answer": {}})
    a.emit("ice-candidate", {"peerId": b.id, "candidate": b"binary"})
    assert b.received("offer") == b.received("ice-candidate") == b.received("answer") == []
    dropped = world.signaling.dropped
    assert dropped.count(events.OFFER, events.Reason.TOO_LARGE) == 1
    assert dropped.count(events.ICE_CANDIDATE) == 2
    assert dropped.count(events.ANSWER, events.Reason.NOT_A_STRING) == 1
    # The connection survives: a proper candidate still goes through.
    a.emit("ice-candidate", {"peerId": b.id, "candidate": {"candidate": "c"}})
    assert b.received("ice-candidate") == [{"candidate": {"candidate": "c"}, "from": a.id, "peerId": a.id}]


def test_initiator_online_and_recipient_ready_reach_only_the_room(world: World) -> None:
    """Reconnect hand-shakes reach the peer in the room and nobody else."""
    a = world.joined(ROOM)
    b = world.joined(ROOM, address="198.51.100.2")
    c = world.joined(OTHER_ROOM, address="198.51.100.3")
    a.emit("initiator-online", {"roomId": ROOM})
    assert b.received("initiator-online") == [{"roomId": ROOM}]
    assert a.received("initiator-online") == c.received("initiator-online") == []
    b.emit("recipient-ready", {"roomId": ROOM, "peerId": "forged"})
    assert a.received("recipient-ready") == [{"peerId": b.id}]
    assert c.received("recipient-ready") == []
    # Naming a room one is not in reaches nobody.
    a.emit("initiator-online", {"roomId": OTHER_ROOM})
    b.emit("recipient-ready", {"roomId": OTHER_ROOM, "peerId": b.id})
    assert c.received("initiator-online") == c.received("recipient-ready") == []


def test_disconnect_tells_the_room_and_empty_room_expires_in_15_minutes(world: World) -> None:
    """The peer sees the other side leave, and an abandoned room goes away soon."""
    a = world.joined(ROOM)
    b = world.joined(ROOM, address="198.51.100.2")
    b.disconnect()
    assert a.received("peer-disconnected") == [{"peerId": b.id}]
    assert world.stored(world.store.room_of_socket(b.id)) is None
    assert world.stored(world.store.room_sockets(ROOM)) == {a.id}
    assert world.stored(world.store.ttl(keys.room(ROOM))) == 24 * 3600
    a.disconnect()
    assert world.stored(world.store.room_sockets(ROOM)) == set()
    assert world.stored(world.store.ttl(keys.room(ROOM))) == 900
    assert world.signaling.room_of(a.id) is None


def test_store_failure_during_join_answers_server_error_and_binds_nothing(world: World) -> None:
    """When Redis is down the user is told, and no half-joined socket receives room traffic."""
    a = world.joined(ROOM)
    world.store.fail_joins = True
    c = world.client(address="198.51.100.3")
    c.emit("join", {"roomId": ROOM})
    assert c.received("joinResponse") == [
        {"success": False, "message": "Server error while joining room", "roomId": ROOM}
    ]
    assert a.received("ready") == []
    assert rooms_of(world, c.id) == frozenset()
    a.emit("initiator-online", {"roomId": ROOM})
    c.emit("offer", {"peerId": a.id, "offer": {}})
    assert c.received("initiator-online") == a.received("offer") == []
    world.store.fail_joins = False
    c.emit("join", {"roomId": ROOM})
    assert c.last("joinResponse")["success"] is True


def test_socketio_room_failure_after_binding_undoes_the_binding() -> None:
    """If the socket cannot enter the room, the store does not keep it as a member."""
    w = make_world(socketio=attrs.evolve(Settings().socketio, max_rooms_per_socket=0))
    w.create_room(ROOM)
    c = w.client()
    c.emit("join", {"roomId": ROOM})
    assert c.last("joinResponse") == {
        "success": False,
        "message": "Server error while joining room",
        "roomId": ROOM,
    }
    assert w.stored(w.store.room_of_socket(c.id)) is None
    assert w.stored(w.store.room_sockets(ROOM)) == set()


def test_disconnect_while_join_waits_for_the_store_leaves_nothing_bound(world: World) -> None:
    """A user who closes the tab mid-join does not linger as a ghost member of the room."""
    a = world.joined(ROOM)
    world.store.gate = Deferred()
    c = world.client(address="198.51.100.3")
    c.emit("join", {"roomId": ROOM})
    assert c.received("joinResponse") == []
    c.disconnect()
    gate, world.store.gate = world.store.gate, None
    gate.callback(None)
    assert world.stored(world.store.room_of_socket(c.id)) is None
    assert world.stored(world.store.room_sockets(ROOM)) == {a.id}
    assert a.received("ready") == []
    assert world.signaling.room_of(c.id) is None


def test_leave_room_tells_the_room_once_and_takes_the_socket_out(world: World) -> None:
    """POST /api/leave_room makes the other browser notice the peer left;
    the socket that left gets no more room traffic, and its later
    disconnect is not announced a second time."""
    a = world.joined(ROOM)
    b = world.joined(ROOM, address="198.51.100.2")
    notify: NotifyPeerLeft = peer_left_notifier(world.app.of("/"))
    result = world.stored(world.rooms.leave(b.id, ROOM))
    notify(b.id, result)
    assert a.received("peer-disconnected") == [{"peerId": b.id}]
    assert rooms_of(world, b.id) == frozenset()
    assert world.signaling.room_of(b.id) is None
    a.emit("initiator-online", {"roomId": ROOM})
    a.emit("offer", {"peerId": b.id, "offer": {}})
    assert b.received("initiator-online") == b.received("offer") == []
    b.disconnect()
    assert a.received("peer-disconnected") == [{"peerId": b.id}]


def test_leave_room_of_an_outsider_changes_nothing(world: World) -> None:
    """A made-up socket id in a REST leave neither reaches the room nor
    takes anyone out."""
    a = world.joined(ROOM)
    result = world.stored(world.rooms.leave("made-up", ROOM))
    peer_left_notifier(world.app.of("/"))("made-up", result)
    assert a.received("peer-disconnected") == []
    assert rooms_of(world, a.id) == {ROOM}


def test_a_room_that_ended_is_over_for_its_old_peers(world: World) -> None:
    """When a room's keys vanish (TTL) and its id is issued to a stranger,
    the old peers and the newcomer never share the room: no "ready", no
    relay either way. An old peer can then join the new room like anyone."""
    a = world.joined(ROOM, address="198.51.100.1")
    b = world.joined(ROOM, address="198.51.100.2")
    world.clock.advance(24 * 3600)  # the room's TTL; bindings live an hour longer
    world.create_room(ROOM)
    c = world.joined(ROOM, address="198.51.100.3")
    assert a.received("ready") == [{"peerId": b.id}]  # only b's, from before
    assert b.received("ready") == []
    for old, new in ((a, c), (c, a)):
        old.emit("offer", {"peerId": new.id, "offer": {"sdp": "x"}})
    assert a.received("offer") == c.received("offer") == []
    c.emit("initiator-online", {"roomId": ROOM})
    assert a.received("initiator-online") == b.received("initiator-online") == []
    # Old peers still reach each other until the room check takes them out.
    a.emit("offer", {"peerId": b.id, "offer": {"sdp": "y"}})
    assert b.received("offer") == [{"offer": {"sdp": "y"}, "from": a.id, "peerId": a.id}]
    # An old peer joins the new room like a fresh socket (counted, announced).
    a.emit("join", {"roomId": ROOM})
    assert a.last("joinResponse")["success"] is True
    assert c.received("ready") == [{"peerId": a.id}]
    assert b.received("ready") == []
    a.emit("offer", {"peerId": c.id, "offer": {"sdp": "z"}})
    assert c.received("offer") == [{"offer": {"sdp": "z"}, "from": a.id, "peerId": a.id}]
    assert world.stored(world.store.room_sockets(ROOM)) == {a.id, c.id}


def test_room_check_takes_sockets_out_of_ended_rooms_without_a_notice(world: World) -> None:
    """The periodic check ends the signaling of a room that ended: its old
    peers stop reaching each other, and nobody is told a peer left."""
    a = world.joined(ROOM, address="198.51.100.1")
    b = world.joined(ROOM, address="198.51.100.2")
    live = world.joined(OTHER_ROOM, address="198.51.100.3")
    world.clock.advance(24 * 3600 - 1)
    live.emit("join", {"roomId": OTHER_ROOM})  # a rejoin keeps that room alive
    world.clock.advance(1)
    assert world.stored(world.signaling.check_rooms()) == 2
    assert rooms_of(world, a.id) == rooms_of(world, b.id) == frozenset()
    assert rooms_of(world, live.id) == {OTHER_ROOM}
    a.emit("offer", {"peerId": b.id, "offer": {}})
    assert b.received("offer") == []
    assert a.received("peer-disconnected") == b.received("peer-disconnected") == []
    a.disconnect()
    assert b.received("peer-disconnected") == []


def test_room_check_runs_on_its_interval(world: World) -> None:
    """ROOM_CHECK_INTERVAL: the check happens on its own."""
    a = world.joined(ROOM)
    world.signaling.start_room_checks(60)
    world.clock.advance(24 * 3600)
    assert rooms_of(world, a.id) == frozenset()
    world.signaling.stop_room_checks()


def test_room_check_takes_out_a_socket_the_room_no_longer_lists(world: World) -> None:
    """A socket removed from its room elsewhere (a REST leave whose message
    to this process was lost) is taken out at the next check."""
    a = world.joined(ROOM)
    b = world.joined(ROOM, address="198.51.100.2")
    world.stored(world.rooms.leave(b.id, ROOM))
    assert world.stored(world.signaling.check_rooms()) == 1
    assert rooms_of(world, b.id) == frozenset() and rooms_of(world, a.id) == {ROOM}


def test_disconnect_from_an_ended_room_tells_only_its_old_peers(world: World) -> None:
    """Peers connected when their room expired still learn that one of them
    left; the stranger who was given the same id does not."""
    a = world.joined(ROOM, address="198.51.100.1")
    b = world.joined(ROOM, address="198.51.100.2")
    world.clock.advance(24 * 3600)
    world.create_room(ROOM)
    c = world.joined(ROOM, address="198.51.100.3")
    b.disconnect()
    assert a.received("peer-disconnected") == [{"peerId": b.id}]
    assert c.received("peer-disconnected") == []


def test_shutdown_waits_until_every_socket_was_cleaned_up(world: World) -> None:
    """A restart does not leave departed users bound to rooms for a day."""
    assert _result(world.signaling.wait_idle()) is None
    a = world.joined(ROOM)
    b = world.joined(ROOM, address="198.51.100.2")
    idle = world.signaling.wait_idle()
    fired: list[object] = []
    idle.addCallback(fired.append)
    a.disconnect()
    assert fired == []
    b.disconnect()
    assert fired == [None]
    assert world.stored(world.store.room_sockets(ROOM)) == set()


def test_signaling_crosses_processes_that_share_the_store_and_the_bus() -> None:
    """Two users served by different server processes still find each other.

    Two Socket.IO servers (two processes of a cluster) share one store and
    one publish/subscribe bus (Redis' role); only the bus connects them.
    """
    settings = Settings()
    clock = Clock()
    clock.advance(1_700_000_000)
    store = GatedStore(clock)
    bus = MemoryBus()
    worlds = []
    for node in ("node-1", "node-2"):
        adapter = ClusterAdapter(node, bus.publish, clock=clock)
        bus.attach(adapter)
        app = SocketIOServer(clock, settings.socketio, adapter=adapter)
        # Each process records its sockets under its adapter's node id.
        rooms = Rooms(store, settings.rooms, clock, node_id=lambda node=node: node)
        signaling = install_signaling(app.of("/"), rooms, settings)
        worlds.append(World(clock, store, rooms, app, signaling))
    one, two = worlds
    one.create_room(ROOM)
    one.create_room(OTHER_ROOM)
    a = one.joined(ROOM, address="198.51.100.1")
    b = two.joined(ROOM, address="198.51.100.2")
    stranger = two.joined(OTHER_ROOM, address="198.51.100.3")
    bus.flush()
    assert a.received("ready") == [{"peerId": b.id}]

    a.emit("offer", {"peerId": b.id, "offer": {"sdp": "o"}, "from": "forged"})
    stranger.emit("offer", {"peerId": a.id, "offer": {"sdp": "x"}})
    b.emit("answer", {"peerId": a.id, "answer": {"sdp": "a"}})
    bus.flush()
    assert b.received("offer") == [{"offer": {"sdp": "o"}, "from": a.id, "peerId": a.id}]
    assert a.received("offer") == []
    assert a.received("answer") == [{"answer": {"sdp": "a"}, "from": b.id, "peerId": b.id}]

    b.emit("recipient-ready", {"roomId": ROOM, "peerId": b.id})
    bus.flush()
    assert a.received("recipient-ready") == [{"peerId": b.id}]

    # The REST API of process one removes a peer of process two: the room
    # hears it once, and process two takes the socket out of the room.
    peer_left_notifier(one.app.of("/"))(b.id, one.stored(one.rooms.leave(b.id, ROOM)))
    bus.flush()
    assert a.received("peer-disconnected") == [{"peerId": b.id}]
    assert two.signaling.room_of(b.id) is None
    a.emit("offer", {"peerId": b.id, "offer": {"sdp": "late"}})
    bus.flush()
    assert b.received("offer") == [{"offer": {"sdp": "o"}, "from": a.id, "peerId": a.id}]
    b.disconnect()
    bus.flush()
    assert a.received("peer-disconnected") == [{"peerId": b.id}]
    assert one.stored(store.room_sockets(ROOM)) == {a.id}


def test_join_flood_from_one_socket_is_not_queued_without_bound(world: World) -> None:
    """A client spamming joins while the store is slow cannot pile up work on the server."""
    world.store.gate = Deferred()
    c = world.client()
    for _ in range(50):
        c.emit("join", {"roomId": ROOM})
    assert world.signaling.dropped.count(events.JOIN, events.Reason.BUSY) == 50 - 1 - 4
    gate, world.store.gate = world.store.gate, None
    gate.callback(None)
    answers = c.received("joinResponse")
    assert len(answers) == 5
    assert answers[0]["success"] is True
    assert all(answer["success"] is True for answer in answers[1:])
