"""PrivyDrop's signaling events on the main Socket.IO namespace.

The PrivyDrop frontend (C{socket.io-client} 4.7) talks to these handlers
unchanged; payloads and messages are the Node backend's, with the
differences marked I{(differs)}.

Event table (client -> server, then what the server sends):

C{join {roomId}}
    A malformed payload or room id: the joiner gets C{joinResponse
    {success:false, message:"Invalid roomId", roomId}}. Otherwise one atomic
    store call (L{privydrop.rooms.Rooms.join}) decides, in the Node order:
     1. bound to another room: C{joinResponse {success:false, message:"Socket
        is already bound to another room", roomId}};
     2. unless it is a rejoin of the socket's own room (or the rate limit is
        off, C{DISABLE_JOIN_RATE_LIMIT=1}), the attempt counts against the
        client IP's window; over it: C{joinResponse {success:false,
        message:"Rate limit exceeded. Try again in Ns. Attempts left: M.",
        roomId}};
     3. no such room: C{joinResponse {success:false, message:"Room does not
        exist", roomId}};
     4. otherwise the socket is in the room (Socket.IO room and store, once),
        the room's TTL is refreshed, the joiner gets C{joinResponse
        {success:true, message:"Successfully joined room", roomId}} (with
        TURN configured, also C{iceServers}: short-lived credentials issued
        to the socket id, as from C{GET /api/ice_servers}; clients that do
        not know the field ignore it) and every other socket of the room
        C{ready {peerId: <joiner's socket id>}}.
    A store failure: C{joinResponse {success:false, message:"Server error
    while joining room", roomId}} I{(differs: no internal error text)}, and
    the socket is in no Socket.IO room it was not in before. A timed-out
    store call may still be carried out by Redis afterwards; such a binding
    makes the client's retry a rejoin, and goes away when the socket
    disconnects (the clean-up always asks the store).
    A socket whose room ended (its TTL, Redis losing its data) is in it no
    longer: the Socket.IO room is named C{<room id>:<incarnation>} (the
    room's C{created_at}), so the old members and whoever is given the same
    id later never share one, on any process; the join rule treats the old
    binding as none, so the socket joins the new room, or another, like a
    fresh socket. A rejoin of the same room refreshes what this process
    knows of its members.

C{offer {peerId, offer, from?}}, C{answer {peerId, answer, from?}}, C{ice-candidate {peerId, candidate, from?}}
    Forwarded to socket C{peerId} as the same event with C{{offer|answer|
    candidate, from: <sender id>, peerId: <sender id>}}, only when sender and
    target are in the same room I{(differs: the Node backend forwards to any
    socket id, and forwards C{from} as written by the sender)}. This is the
    hot path: no store round trip, only the sender's room as this process
    knows it and the adapter's membership check.

C{initiator-online {roomId}}
    To the others in that room: C{initiator-online {roomId}}; only when the
    sender is in that room I{(differs)}.

C{recipient-ready {roomId, peerId}}
    To the others in that room: C{recipient-ready {peerId: <sender id>}};
    only when the sender is in that room I{(differs: C{peerId} is the
    sender's id, not what it wrote)}.

disconnect
    The socket is unbound in the store (a room left empty expires after
    900 s); when that took it out of its room's members, the remaining
    members get C{peer-disconnected {peerId: <socket id>}}, wherever they
    are connected (the members the store answered). I{(differs: the Node
    backend tells the room before unbinding, whether or not the socket was
    still a member.)} If the store cannot be reached, the members this
    process knew of are told. If its room had ended meanwhile, its old
    peers (and only they) are told. With connection state recovery on (the
    default), this happens at once only when the client left on purpose
    (its Socket.IO DISCONNECT, an Engine.IO close packet, a WebSocket close
    frame 1000/1001/none); a connection that was lost keeps the socket in
    its room, silently, for C{SOCKETIO_RECOVERY_WINDOW_MS}, and this runs
    only if the client has not recovered it by then. A recovered socket
    keeps its id, room and signaling state: no C{join}, so no rate-limit
    count and no C{ready}.

C{POST /api/leave_room} unbinds the socket the same way, on any process;
when that removed a member, L{peer_left_notifier} tells the remaining
members and asks the process holding the socket (a server event) to take
it out of its Socket.IO room, so it gets no more room traffic and its
later disconnect announces nothing: its peers hear of it exactly once (a
detached socket, waiting for its client to recover it, ends at once). A
request naming a socket that is not a member changes nothing and tells no
one. A process whose sockets were cleaned up after it was judged dead
(L{Signaling.socket_reaped}, called by the cluster's clean-up) has them
announced the same way by the process that reaped them.

Rooms that end. Every C{rooms.check_interval_s} (and when the cluster
subscription comes back after a loss) L{Signaling.check_rooms} asks the
store, in one round trip per batch, whether the rooms this process's
sockets are in still exist with the incarnation they joined and still list
them; sockets of ended rooms, and sockets no longer members, are taken out
of their Socket.IO room without a notice; the members of the others are
refreshed.

Malformed payloads of the relayed events (L{privydrop.signaling.events}) are
dropped with a debug log (one per event and reason per interval) and counted
in L{Signaling.dropped}; nothing of them is broadcast.

The join rate limit keys on the client IP under the REST API's rule
(L{privydrop.web.clientip}): the direct peer, or behind a trusted proxy the
right-most X-Forwarded-For address that is not a trusted proxy; an IPv6
client counts as its network (C{RATE_LIMIT_IPV6_PREFIX}, a /64 by default).
The Node backend takes the first X-Forwarded-For address, which the client
writes itself, so every join could claim a fresh address and escape the
limit.

Per socket, joins and the disconnect clean-up run one at a time (a
L{DeferredLock}), so a disconnect that arrives while a join waits for the
store unbinds I{after} that join was written, never before it. At most
L{MAX_WAITING_JOINS} joins of one socket wait behind the one in progress;
further ones are dropped and counted (reason C{busy}).

This module uses the Socket.IO layer's public API and the room rules; it
knows nothing of Engine.IO, HTTP or the store's backends.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from functools import partial
from types import MappingProxyType
from typing import Any

import orjson
from twisted.internet.defer import Deferred, DeferredLock, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import LogLevel

from privydrop.logs.levels import Logger
from privydrop.metrics import SignalingMetrics
from privydrop.rooms import InvalidRoomId, Rooms
from privydrop.settings import Settings
from privydrop.signaling import events
from privydrop.signaling.events import EventLimits, InvalidPayload
from privydrop.socketio.namespace import Namespace
from privydrop.socketio.sockets import Socket
from privydrop.store.interface import LeaveResult, ReapedSocket, RoomProbe, StoreUnavailable
from privydrop.turn import IceServerSource
from privydrop.web.clientip import client_ip, rate_limit_key, trusted_proxies

_log = Logger()

JOIN_RESPONSE = "joinResponse"
READY = "ready"
PEER_DISCONNECTED = "peer-disconnected"
#: Server event: C{(socket id, room id, incarnation)} left its room through
#: another path (the REST API): the process holding it takes it out.
ROOM_LEFT = "room-left"

#: Rooms asked about in one store round trip by L{Signaling.check_rooms}.
CHECK_BATCH = 200

#: Joins of one socket waiting behind the one in progress; more are dropped.
#: An honest client has one join in flight at a time.
MAX_WAITING_JOINS = 4

#: Disconnect reason of a detached socket unbound by POST /api/leave_room.
LEFT_BY_API = "left by leave_room"

#: The events handed on to a peer or a room (the C{event} label of the
#: relayed-messages metric).
RELAYED_EVENTS = (*events.SIGNAL_FIELDS, events.INITIATOR_ONLINE, events.RECIPIENT_READY)

#: The payload field each relayed event forwards (C{SignalRequest.field}).
_SIGNAL_FIELDS = events.SIGNAL_FIELDS
_fragment = orjson.Fragment

INVALID_ROOM_ID = "Invalid roomId"
SERVER_ERROR = "Server error while joining room"

#: Callable giving the client (its rate-limit key) that a socket's joins count against.
ClientIpOf = Callable[[Socket], str]
#: The API's hook: C{notify_peer_left(socket_id, result)} after
#: C{leave_room} unbound a socket.
NotifyPeerLeft = Callable[[str, LeaveResult], None]


def room_name(room_id: str, incarnation: int | None) -> str:
    """The Socket.IO room of one incarnation of a room (room ids never hold C{:}).

    Interned: the members of a room then hold one string for it, and the
    check that a relayed message's target is in the sender's room matches
    it by identity, without reading the target's own copy.
    """
    return sys.intern(f"{room_id}:{incarnation if incarnation is not None else 0}")


def handshake_client_ip(settings: Settings) -> ClientIpOf:
    """The client of a socket under the REST API's rule, as its rate-limit key.

    Reads the Engine.IO handshake's direct peer address and its
    X-Forwarded-For header (believed only from C{settings.http.trusted_proxies});
    an IPv6 client counts as its network (C{RATE_LIMIT_IPV6_PREFIX},
    L{privydrop.web.clientip.rate_limit_key}).
    """
    proxies = trusted_proxies(tuple(settings.http.trusted_proxies))
    prefix = settings.http.rate_limit_ipv6_prefix

    def client_ip_of(socket: Socket) -> str:
        handshake = socket.handshake
        forwarded = handshake.headers.get("x-forwarded-for")
        address = client_ip(handshake.address, [forwarded] if forwarded else [], proxies)
        return rate_limit_key(address, prefix)

    return client_ip_of


def _join_response(success: bool, message: str, room_id: str | None) -> dict[str, Any]:
    response: dict[str, Any] = {"success": success, "message": message}
    if room_id is not None:
        response["roomId"] = room_id
    return response


#: The members of a socket's state until its disconnect: one shared empty
#: mapping rather than a dict per socket.
_NO_MEMBERS: Mapping[str, str] = MappingProxyType({})


class _SocketState:
    """What signaling remembers of one connected socket of this process.

    @ivar room: the room it is in (Socket.IO room and store binding), set
        only once both are done.
    @ivar incarnation: that room's incarnation (C{created_at}).
    @ivar name: the Socket.IO room of both (L{room_name}), or None; kept
        rather than built again for every message the socket relays.
    @ivar lock: serialises its joins, its disconnect clean-up and changes
        from elsewhere (a REST leave, a room check).
    @ivar members: at disconnect, the members this process knew of (told
        if the store cannot be reached).
    """

    __slots__ = ("incarnation", "lock", "members", "name", "room")

    def __init__(self) -> None:
        self.room: str | None = None
        self.incarnation: int | None = None
        self.name: str | None = None
        self.members: Mapping[str, str] = _NO_MEMBERS
        self.lock = DeferredLock()

    @property
    def room_name(self) -> str | None:
        """Its Socket.IO room, or None."""
        return self.name

    def enter(self, room: str, incarnation: int | None, name: str | None = None) -> None:
        """It is in C{room} now.

        @param name: L{room_name} of both, when the caller has it: the same
            string as the socket's room in the adapter, which a membership
            check then matches by identity.
        """
        self.room = room
        self.incarnation = incarnation
        self.name = room_name(room, incarnation) if name is None else name

    def leave(self) -> None:
        self.room = None
        self.incarnation = None
        self.name = None


class Signaling:
    """The signaling handlers of one namespace (see the module docstring).

    Build it with L{install_signaling}.

    @ivar dropped: payloads refused by validation, by event and reason.
    @ivar unroutable: relayed messages dropped because the sender is in no
        room, or is not in the room it named.
    @ivar metrics: joins by outcome and relayed messages by event.
    """

    def __init__(
        self,
        namespace: Namespace,
        rooms: Rooms,
        settings: Settings,
        client_ip_of: ClientIpOf,
        ice_servers: IceServerSource | None = None,
        clock: IReactorTime | None = None,
        metrics: SignalingMetrics | None = None,
    ) -> None:
        self._namespace = namespace
        self._ice_servers = ice_servers
        self._clock = clock
        self._checker: LoopingCall | None = None
        self._checking = False
        self._rooms = rooms
        self._limits = EventLimits.from_settings(settings)
        self._client_ip_of = client_ip_of
        self._log_ips = settings.http.log_client_ips
        #: Every line a client can cause goes through it (per cause, per interval).
        self._warnings = namespace.warnings
        self._sockets: dict[str, _SocketState] = {}
        self._idle_waiters: list[Deferred[None]] = []
        self.dropped = events.DroppedPayloads()
        self.unroutable = 0
        self.metrics = metrics if metrics is not None else SignalingMetrics.disabled()

    def install(self) -> None:
        """Register every handler on the namespace."""
        ns = self._namespace
        ns.on(events.JOIN, self._join)
        for event in events.SIGNAL_FIELDS:
            # A partial rather than a method per event: one Python call
            # fewer per relayed message.
            ns.on(event, partial(self._relay, event))
        ns.on(events.INITIATOR_ONLINE, self._initiator_online)
        ns.on(events.RECIPIENT_READY, self._recipient_ready)
        ns.on_disconnecting(self._disconnecting)
        ns.on_disconnect(self._disconnected)
        ns.on_server(ROOM_LEFT, self._room_left)
        ns.on_released(self._released)

    def room_of(self, socket_id: str) -> str | None:
        """The room a socket of this process is in, as signaling knows it."""
        state = self._sockets.get(socket_id)
        return None if state is None else state.room

    def knows(self, socket_id: str) -> bool:
        """Whether signaling holds state for a socket of this process (from
        its first join until its disconnect clean-up has finished)."""
        return socket_id in self._sockets

    def wait_idle(self) -> Deferred[None]:
        """Fires once no socket of this process is known to signaling.

        On shutdown, after every session was closed, this is when every
        disconnect clean-up (peer notice, store unbind) has finished.
        """
        if not self._sockets:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._idle_waiters.append(waiter)
        return waiter

    def adopt(self, socket_id: str, room_id: str, incarnation: int) -> None:
        """A socket of another process recovered here (or kept for a dead
        one) is in this room: its state here, as after its join."""
        state = self._sockets.get(socket_id)
        if state is None:
            state = self._sockets[socket_id] = _SocketState()
        state.enter(room_id, incarnation)

    # -- lifecycle -----------------------------------------------------------

    def _released(self, socket: Socket) -> None:
        """The socket lives on in another process (or was ended by one):
        forget it here without unbinding or telling anyone."""
        if self._sockets.pop(socket.id, None) is not None and not self._sockets:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def _state(self, socket: Socket) -> _SocketState:
        state = self._sockets.get(socket.id)
        if state is None:
            state = self._sockets[socket.id] = _SocketState()
        return state

    def _disconnecting(self, socket: Socket, reason: str) -> None:
        state = self._sockets.get(socket.id)
        name = None if state is None else state.room_name
        if state is not None and name is not None:
            # Whom to tell if the store cannot say (it is down).
            state.members = self._namespace.members(name)

    async def _disconnected(self, socket: Socket, reason: str) -> None:
        # State exists from a socket's first join on; a socket that never
        # asked to join cannot be bound anywhere.
        state = self._sockets.get(socket.id)
        if state is None:
            return
        async with state.lock:
            try:
                await self._leave_after_disconnect(socket.id, state)
            finally:
                self._sockets.pop(socket.id, None)
                if not self._sockets:
                    waiters, self._idle_waiters = self._idle_waiters, []
                    for waiter in waiters:
                        waiter.callback(None)

    async def _leave_after_disconnect(self, socket_id: str, state: _SocketState) -> None:
        room, name = state.room, state.room_name
        try:
            # Always asked: a join whose store reply was lost may still have
            # bound the socket, and this is where such a binding goes away.
            result = await self._rooms.leave(socket_id)
        except StoreUnavailable:
            self._warnings.warn(
                _log,
                "store:leave",
                "store unavailable; socket {sid} stays bound to room {room_id} until its TTL",
                sid=socket_id,
                room_id=room,
            )
            if name is not None:
                self._tell_left(name, state.members, socket_id)
            return
        if result.removed and result.room_id is not None:
            self._tell_left(
                room_name(result.room_id, result.incarnation), result.members, socket_id
            )
        elif name is not None and (
            result.room_id != room or result.incarnation != state.incarnation
        ):
            # Its room ended while it was in it: its old peers still count
            # on it (the store knows them no more).
            self._tell_left(name, state.members, socket_id)
        if result.room_id is not None:
            self._warnings.lifecycle(
                LogLevel.info,
                _log,
                "left",
                "socket {sid} left room {room_id} ({remaining} remaining)",
                sid=socket_id,
                room_id=result.room_id,
                remaining=result.remaining,
            )

    def _tell_left(self, name: str, members: Mapping[str, str], socket_id: str) -> None:
        self._namespace.emit_to_members(
            name, members, PEER_DISCONNECTED, {"peerId": socket_id}, departed=socket_id
        )

    def socket_reaped(self, reaped: ReapedSocket) -> None:
        """A socket of a process judged dead was unbound (by this process's
        clean-up): tell its room's remaining members, wherever they are."""
        self._tell_left(
            room_name(reaped.room_id, reaped.incarnation), reaped.members, reaped.socket_id
        )

    async def _room_left(self, socket_id: str, room_id: str, incarnation: int) -> None:
        """Server event: the socket left its room through the REST API."""
        state = self._sockets.get(socket_id)
        if state is None or state.room != room_id or state.incarnation != incarnation:
            return
        async with state.lock:
            if state.room == room_id and state.incarnation == incarnation:
                self._take_out(socket_id, state, "left through the API")
                # A socket waiting for its client to recover it left on
                # purpose: it ends now (its peers were told already).
                self._namespace.end_detached(socket_id, LEFT_BY_API)

    def _take_out(self, socket_id: str, state: _SocketState, why: str) -> None:
        """Out of its Socket.IO room without a notice (the store says it is
        no member, and whoever made it so told the room)."""
        name = state.room_name
        socket = self._namespace.get_socket(socket_id)
        if socket is not None and name is not None:
            socket.leave(name)
        _log.info(
            "socket {sid} is out of room {room_id}: {why}",
            sid=socket_id,
            room_id=state.room,
            why=why,
        )
        state.leave()

    def forget_rooms(self) -> None:
        """Take every socket out of its room without a notice: this process
        was judged dead and its sockets were cleaned up (and announced) by
        another one; their disconnects must announce nothing again."""
        for socket_id, state in list(self._sockets.items()):
            if state.room is not None:
                self._take_out(socket_id, state, "this process was judged dead")

    # -- rooms that end --------------------------------------------------------

    def start_room_checks(self, interval_s: float) -> None:
        """Check every C{interval_s} seconds that the rooms of this
        process's sockets still exist (L{check_rooms}); 0 turns it off."""
        if interval_s <= 0 or self._clock is None or self._checker is not None:
            return
        checker = self._checker = LoopingCall(self.check_rooms_soon)
        checker.clock = self._clock
        checker.start(interval_s, now=False).addErrback(
            lambda failure: _log.failure("room checks stopped", failure=failure)
        )

    def stop_room_checks(self) -> None:
        checker, self._checker = self._checker, None
        if checker is not None and checker.running:
            checker.stop()

    def check_rooms_soon(self) -> None:
        """Start L{check_rooms} unless one is running (errors are logged)."""
        if self._checking:
            return
        Deferred.fromCoroutine(self.check_rooms()).addErrback(
            lambda failure: _log.failure("checking rooms failed", failure=failure)
        )

    async def check_rooms(self) -> int:
        """Take sockets out of rooms that ended or no longer list them, and
        refresh what this process knows of the others' members.

        @return: how many sockets were taken out.
        """
        self._checking = True
        try:
            groups: dict[tuple[str, int], list[str]] = {}
            for socket_id, state in self._sockets.items():
                if state.room is not None and state.incarnation is not None:
                    groups.setdefault((state.room, state.incarnation), []).append(socket_id)
            probes = [RoomProbe(room, inc, tuple(sids)) for (room, inc), sids in groups.items()]
            taken_out = 0
            for start in range(0, len(probes), CHECK_BATCH):
                try:
                    checks = await self._rooms.check(probes[start : start + CHECK_BATCH])
                except StoreUnavailable:
                    _log.warn("store unavailable; room check skipped")
                    return taken_out
                for check in checks:
                    key = (check.room_id, check.incarnation)
                    gone = groups.get(key, []) if not check.alive else sorted(check.missing)
                    for socket_id in gone:
                        taken_out += await self._take_out_if(socket_id, key, check.alive)
                    if check.alive:
                        self._namespace.note_members(room_name(*key), check.members)
            return taken_out
        finally:
            self._checking = False

    async def _take_out_if(self, socket_id: str, key: tuple[str, int], alive: bool) -> int:
        state = self._sockets.get(socket_id)
        if state is None:
            return 0
        async with state.lock:
            if (state.room, state.incarnation) != key:
                return 0  # it moved on meanwhile
            self._take_out(socket_id, state, "no longer a member" if alive else "the room ended")
            return 1

    # -- join ------------------------------------------------------------------

    async def _join(self, socket: Socket, *args: Any) -> None:
        try:
            request = events.parse_join(args, self._limits)
        except InvalidPayload as error:
            self._drop(socket, events.JOIN, error)
            self.metrics.join_invalid.inc()
            socket.emit(JOIN_RESPONSE, _join_response(False, INVALID_ROOM_ID, error.room_id))
            return
        if not socket.connected:
            return
        state = self._state(socket)
        if len(state.lock.waiting) >= MAX_WAITING_JOINS:
            # Each join costs a store round trip; a client cannot queue
            # them without bound.
            self._drop(socket, events.JOIN, InvalidPayload(events.Reason.BUSY))
            return
        async with state.lock:
            if not socket.disconnected:
                # What other processes send to it for the room it may enter
                # waits for the answer (see the cluster adapter).
                self._namespace.hold(socket.id)
                try:
                    await self._join_locked(socket, state, request.room_id)
                finally:
                    self._namespace.release(socket.id)

    async def _join_locked(self, socket: Socket, state: _SocketState, room_id: str) -> None:
        ip = self._client_ip_of(socket)
        known = None
        if state.room is not None and state.incarnation is not None:
            known = (state.room, state.incarnation)
        try:
            decision = await self._rooms.join(socket.id, room_id, ip, known, socket.pid)
        except InvalidRoomId:
            self.dropped.record(events.JOIN, events.Reason.REFUSED_ROOM_ID)
            self._warnings.debug(
                _log, "invalid-room-id", "socket {sid} asked for an invalid room id", sid=socket.id
            )
            self.metrics.join_invalid.inc()
            socket.emit(JOIN_RESPONSE, _join_response(False, INVALID_ROOM_ID, room_id))
            return
        except StoreUnavailable:
            self._warnings.warn(
                _log,
                "store:join",
                "store unavailable while socket {sid} joined room {room_id}",
                sid=socket.id,
                room_id=room_id,
            )
            self.metrics.join_error.inc()
            socket.emit(JOIN_RESPONSE, _join_response(False, SERVER_ERROR, room_id))
            return
        except Exception:  # noqa: BLE001 - error boundary: log, answer, go on
            _log.failure(
                "join of socket {sid} to room {room_id} failed", sid=socket.id, room_id=room_id
            )
            self.metrics.join_error.inc()
            socket.emit(JOIN_RESPONSE, _join_response(False, SERVER_ERROR, room_id))
            return

        if not decision.success:
            # A client can be refused as fast as it can ask (a full rate
            # window): one line per outcome and interval.
            if self._log_ips:
                self._warnings.info(
                    _log,
                    "join-refused:" + decision.outcome.value,
                    "join of socket {sid} from {peer} to room {room_id} refused: {outcome}",
                    sid=socket.id,
                    peer=ip,
                    room_id=room_id,
                    outcome=decision.outcome.value,
                )
            else:
                self._warnings.info(
                    _log,
                    "join-refused:" + decision.outcome.value,
                    "join of socket {sid} to room {room_id} refused: {outcome}",
                    sid=socket.id,
                    room_id=room_id,
                    outcome=decision.outcome.value,
                )
            self.metrics.join_refused[decision.outcome.value].inc()
            socket.emit(JOIN_RESPONSE, _join_response(False, decision.message, room_id))
            return

        if socket.disconnected:
            # Gone while the store answered; the disconnect clean-up waits
            # for this lock and unbinds what was just written. A socket whose
            # connection was lost meanwhile (detached, recoverable) goes on:
            # its joinResponse is replayed when its client recovers it.
            return
        name = room_name(room_id, decision.incarnation)
        if state.room_name != name:
            try:
                if state.room_name is not None:
                    # Its room ended (this is the new one of that id, or
                    # another), or it was unbound meanwhile.
                    socket.leave(state.room_name)
                    state.leave()
                socket.join(name, members=decision.members)
            except Exception:  # noqa: BLE001 - undone below, then answered
                _log.failure(
                    "socket {sid} could not enter room {room_id}", sid=socket.id, room_id=room_id
                )
                await self._undo_binding(socket.id, room_id)
                state.leave()
                self.metrics.join_error.inc()
                socket.emit(JOIN_RESPONSE, _join_response(False, SERVER_ERROR, room_id))
                return
            state.enter(room_id, decision.incarnation, name)
            self._warnings.lifecycle(
                LogLevel.info,
                _log,
                "joined",
                "socket {sid} joined room {room_id}",
                sid=socket.id,
                room_id=room_id,
            )
        else:
            self._namespace.note_members(name, decision.members)
        response = _join_response(True, decision.message, room_id)
        if self._ice_servers is not None:
            # Only sockets that got into a room receive relay credentials.
            response["iceServers"] = self._ice_servers(socket.id).as_json()["iceServers"]
        self.metrics.join_success.inc()
        socket.emit(JOIN_RESPONSE, response)
        socket.to(name).emit(READY, {"peerId": socket.id})

    async def _undo_binding(self, socket_id: str, room_id: str) -> None:
        try:
            await self._rooms.leave(socket_id, room_id)
        except Exception:  # noqa: BLE001 - best effort; the key's TTL is the backstop
            _log.failure(
                "could not unbind socket {sid} from room {room_id}; it expires with its TTL",
                sid=socket_id,
                room_id=room_id,
            )

    # -- relayed events (hot path) ---------------------------------------------

    def _relay(self, event: str, socket: Socket, *args: Any) -> None:
        """C{offer}, C{answer} and C{ice-candidate} (registered with the event
        bound first): hand the description to the target, when the sender
        is in a room and the target is in the same one."""
        try:
            request = events.parse_signal(event, args, self._limits)
        except InvalidPayload as error:
            self._drop(socket, event, error)
            return
        sender = socket.id
        state = self._sockets.get(sender)
        room = None if state is None else state.name
        if room is None:
            self._unroutable(socket, event)
            return
        self._namespace.emit_to_socket(
            request[1],
            event,
            # The value as measured (L{SignalRequest.relayed_value}), inlined.
            {_SIGNAL_FIELDS[event]: _fragment(request[3]), "from": sender, "peerId": sender},
            only_if_in_room=room,
        )
        self.metrics.relayed[event].inc()

    # -- room announcements ------------------------------------------------------

    def _announcement_room(self, socket: Socket, event: str, room_id: str) -> str | None:
        """The Socket.IO room to announce in, when the sender is in C{room_id}."""
        state = self._sockets.get(socket.id)
        if state is None or state.room != room_id:
            self._unroutable(socket, event)
            return None
        return state.room_name

    def _initiator_online(self, socket: Socket, *args: Any) -> None:
        try:
            request = events.parse_initiator_online(args, self._limits)
        except InvalidPayload as error:
            self._drop(socket, events.INITIATOR_ONLINE, error)
            return
        name = self._announcement_room(socket, events.INITIATOR_ONLINE, request.room_id)
        if name is not None:
            socket.to(name).emit(events.INITIATOR_ONLINE, {"roomId": request.room_id})
            self.metrics.relayed[events.INITIATOR_ONLINE].inc()

    def _recipient_ready(self, socket: Socket, *args: Any) -> None:
        try:
            request = events.parse_recipient_ready(args, self._limits)
        except InvalidPayload as error:
            self._drop(socket, events.RECIPIENT_READY, error)
            return
        name = self._announcement_room(socket, events.RECIPIENT_READY, request.room_id)
        if name is not None:
            socket.to(name).emit(events.RECIPIENT_READY, {"peerId": socket.id})
            self.metrics.relayed[events.RECIPIENT_READY].inc()

    # -- bookkeeping -------------------------------------------------------------

    def _drop(self, socket: Socket, event: str, error: InvalidPayload) -> None:
        self.dropped.record(event, error.reason)
        self._warnings.debug(
            _log,
            "dropped:%s:%s" % (event, error.reason.value),
            "dropped {event} from socket {sid}: {reason} ({field})",
            event=event,
            sid=socket.id,
            reason=error.reason.value,
            field=error.field,
        )

    def _unroutable(self, socket: Socket, event: str) -> None:
        self.unroutable += 1
        self._warnings.debug(
            _log,
            "unroutable:" + event,
            "dropped {event} from socket {sid}: not in that room",
            event=event,
            sid=socket.id,
        )


def install_signaling(
    namespace: Namespace,
    rooms: Rooms,
    settings: Settings,
    client_ip_of: ClientIpOf | None = None,
    ice_servers: IceServerSource | None = None,
    clock: IReactorTime | None = None,
    metrics: SignalingMetrics | None = None,
) -> Signaling:
    """Put PrivyDrop's signaling events on a namespace.

    @param namespace: the main namespace (C{server.of("/")}).
    @param rooms: the room rules over the store.
    @param settings: for the payload limits, trusted proxies and log policy.
    @param client_ip_of: how to find a socket's client IP for the join rate
        limit; by default the REST API's rule over the handshake
        (L{handshake_client_ip}).
    @param ice_servers: issues TURN credentials for a successful
        C{joinResponse}; none are sent when None.
    @param clock: for the periodic room checks (L{Signaling.start_room_checks}).
    @param metrics: counts joins and relayed messages; nothing when None.
    @return: the installed handlers, whose counters operators and tests read.
    """
    signaling = Signaling(
        namespace,
        rooms,
        settings,
        client_ip_of if client_ip_of is not None else handshake_client_ip(settings),
        ice_servers,
        clock,
        metrics,
    )
    signaling.install()
    return signaling


def peer_left_notifier(namespace: Namespace) -> NotifyPeerLeft:
    """The hook C{POST /api/leave_room} calls after it unbound a socket.

    @return: C{notify_peer_left(socket_id, result)}: when the leave removed a
        member, sends C{peer-disconnected {peerId: socket_id}} to the room's
        remaining members (in every process, through the adapter) and asks
        the process holding the socket to take it out of its Socket.IO room
        (L{ROOM_LEFT}); otherwise does nothing.
    """

    def notify_peer_left(socket_id: str, result: LeaveResult) -> None:
        if not result.removed or result.room_id is None:
            return
        name = room_name(result.room_id, result.incarnation)
        namespace.emit_to_members(
            name, result.members, PEER_DISCONNECTED, {"peerId": socket_id}, departed=socket_id
        )
        if result.node:
            namespace.send_server_event(
                result.node, ROOM_LEFT, socket_id, result.room_id, result.incarnation or 0
            )

    return notify_peer_left
