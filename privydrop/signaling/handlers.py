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
    C{peer-disconnected {peerId: <socket id>}} to the room, then the socket
    is unbound in the store; a room left empty expires after 900 s. With
    connection state recovery on (the default), that happens at once only
    when the client left on purpose (its Socket.IO DISCONNECT, an Engine.IO
    close packet, a WebSocket close frame 1000/1001/none); a connection
    that was lost keeps the socket in its room, silently, for
    C{SOCKETIO_RECOVERY_WINDOW_MS}, and this runs only if the client has
    not recovered it by then. A recovered socket keeps its id, room and
    signaling state: no C{join}, so no rate-limit count and no C{ready}.

C{POST /api/leave_room} sends the same C{peer-disconnected} to the room
before unbinding, through L{peer_left_notifier}.

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

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock, succeed
from twisted.logger import LogLevel

from privydrop.logs.levels import Logger
from privydrop.metrics import SignalingMetrics
from privydrop.rooms import InvalidRoomId, Rooms
from privydrop.settings import Settings
from privydrop.signaling import events
from privydrop.signaling.events import EventLimits, InvalidPayload
from privydrop.socketio.namespace import Namespace
from privydrop.socketio.sockets import Socket
from privydrop.store.interface import StoreUnavailable
from privydrop.turn import IceServerSource
from privydrop.web.clientip import client_ip, rate_limit_key, trusted_proxies

_log = Logger()

JOIN_RESPONSE = "joinResponse"
READY = "ready"
PEER_DISCONNECTED = "peer-disconnected"

#: Joins of one socket waiting behind the one in progress; more are dropped.
#: An honest client has one join in flight at a time.
MAX_WAITING_JOINS = 4

#: Disconnect reason of a detached socket unbound by POST /api/leave_room.
LEFT_BY_API = "left by leave_room"

#: The events handed on to a peer or a room (the C{event} label of the
#: relayed-messages metric).
RELAYED_EVENTS = (*events.SIGNAL_FIELDS, events.INITIATOR_ONLINE, events.RECIPIENT_READY)

INVALID_ROOM_ID = "Invalid roomId"
SERVER_ERROR = "Server error while joining room"

#: Callable giving the client (its rate-limit key) that a socket's joins count against.
ClientIpOf = Callable[[Socket], str]
#: The API's hook: C{notify_peer_left(room_id, socket_id)}.
NotifyPeerLeft = Callable[[str, str], None]


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


class _SocketState:
    """What signaling remembers of one connected socket of this process.

    @ivar room: the room it is in (Socket.IO room and store binding), set
        only once both are done.
    @ivar lock: serialises its joins and its disconnect clean-up.
    """

    __slots__ = ("lock", "room")

    def __init__(self) -> None:
        self.room: str | None = None
        self.lock = DeferredLock()


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
        metrics: SignalingMetrics | None = None,
    ) -> None:
        self._namespace = namespace
        self._ice_servers = ice_servers
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
        ns.on(events.OFFER, self._offer)
        ns.on(events.ANSWER, self._answer)
        ns.on(events.ICE_CANDIDATE, self._ice_candidate)
        ns.on(events.INITIATOR_ONLINE, self._initiator_online)
        ns.on(events.RECIPIENT_READY, self._recipient_ready)
        ns.on_disconnect(self._disconnected)

    def room_of(self, socket_id: str) -> str | None:
        """The room a socket of this process is in, as signaling knows it."""
        state = self._sockets.get(socket_id)
        return None if state is None else state.room

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

    # -- lifecycle -----------------------------------------------------------

    def _state(self, socket: Socket) -> _SocketState:
        state = self._sockets.get(socket.id)
        if state is None:
            state = self._sockets[socket.id] = _SocketState()
        return state

    async def _disconnected(self, socket: Socket, reason: str) -> None:
        # State exists from a socket's first join on; a socket that never
        # asked to join cannot be bound anywhere.
        state = self._sockets.get(socket.id)
        if state is None:
            return
        async with state.lock:
            try:
                await self._leave_after_disconnect(socket.id, state.room)
            finally:
                self._sockets.pop(socket.id, None)
                if not self._sockets:
                    waiters, self._idle_waiters = self._idle_waiters, []
                    for waiter in waiters:
                        waiter.callback(None)

    async def _leave_after_disconnect(self, socket_id: str, room: str | None) -> None:
        if room is not None:
            # Before unbinding, as the Node backend does.
            self._namespace.to(room).emit(PEER_DISCONNECTED, {"peerId": socket_id})
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
            return
        if room is None and result.room_id is not None:
            self._namespace.to(result.room_id).emit(PEER_DISCONNECTED, {"peerId": socket_id})
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
                await self._join_locked(socket, state, request.room_id)

    async def _join_locked(self, socket: Socket, state: _SocketState, room_id: str) -> None:
        ip = self._client_ip_of(socket)
        try:
            decision = await self._rooms.join(socket.id, room_id, ip)
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
        if state.room != room_id:
            try:
                if state.room is not None:
                    # Unbound meanwhile by POST /api/leave_room.
                    socket.leave(state.room)
                socket.join(room_id)
            except Exception:  # noqa: BLE001 - undone below, then answered
                _log.failure(
                    "socket {sid} could not enter room {room_id}", sid=socket.id, room_id=room_id
                )
                await self._undo_binding(socket.id, room_id)
                state.room = None
                self.metrics.join_error.inc()
                socket.emit(JOIN_RESPONSE, _join_response(False, SERVER_ERROR, room_id))
                return
            state.room = room_id
            self._warnings.lifecycle(
                LogLevel.info,
                _log,
                "joined",
                "socket {sid} joined room {room_id}",
                sid=socket.id,
                room_id=room_id,
            )
        response = _join_response(True, decision.message, room_id)
        if self._ice_servers is not None:
            # Only sockets that got into a room receive relay credentials.
            response["iceServers"] = self._ice_servers(socket.id).as_json()["iceServers"]
        self.metrics.join_success.inc()
        socket.emit(JOIN_RESPONSE, response)
        socket.to(room_id).emit(READY, {"peerId": socket.id})

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

    def _relay(self, event: str, socket: Socket, args: tuple[Any, ...]) -> None:
        try:
            request = events.parse_signal(event, args, self._limits)
        except InvalidPayload as error:
            self._drop(socket, event, error)
            return
        state = self._sockets.get(socket.id)
        room = None if state is None else state.room
        if room is None:
            self._unroutable(socket, event)
            return
        self._namespace.emit_to_socket(
            request.peer_id,
            event,
            {request.field: request.value, "from": socket.id, "peerId": socket.id},
            only_if_in_room=room,
        )
        self.metrics.relayed[event].inc()

    def _offer(self, socket: Socket, *args: Any) -> None:
        self._relay(events.OFFER, socket, args)

    def _answer(self, socket: Socket, *args: Any) -> None:
        self._relay(events.ANSWER, socket, args)

    def _ice_candidate(self, socket: Socket, *args: Any) -> None:
        self._relay(events.ICE_CANDIDATE, socket, args)

    # -- room announcements ------------------------------------------------------

    def _announcement_room(self, socket: Socket, event: str, room_id: str) -> bool:
        if self.room_of(socket.id) != room_id:
            self._unroutable(socket, event)
            return False
        return True

    def _initiator_online(self, socket: Socket, *args: Any) -> None:
        try:
            request = events.parse_initiator_online(args, self._limits)
        except InvalidPayload as error:
            self._drop(socket, events.INITIATOR_ONLINE, error)
            return
        if self._announcement_room(socket, events.INITIATOR_ONLINE, request.room_id):
            socket.to(request.room_id).emit(events.INITIATOR_ONLINE, {"roomId": request.room_id})
            self.metrics.relayed[events.INITIATOR_ONLINE].inc()

    def _recipient_ready(self, socket: Socket, *args: Any) -> None:
        try:
            request = events.parse_recipient_ready(args, self._limits)
        except InvalidPayload as error:
            self._drop(socket, events.RECIPIENT_READY, error)
            return
        if self._announcement_room(socket, events.RECIPIENT_READY, request.room_id):
            socket.to(request.room_id).emit(events.RECIPIENT_READY, {"peerId": socket.id})
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
    @param metrics: counts joins and relayed messages; nothing when None.
    @return: the installed handlers, whose counters operators and tests read.
    """
    signaling = Signaling(
        namespace,
        rooms,
        settings,
        client_ip_of if client_ip_of is not None else handshake_client_ip(settings),
        ice_servers,
        metrics,
    )
    signaling.install()
    return signaling


def peer_left_notifier(namespace: Namespace) -> NotifyPeerLeft:
    """The hook C{POST /api/leave_room} calls before it unbinds a socket.

    @return: C{notify_peer_left(room_id, socket_id)}, which sends
        C{peer-disconnected {peerId: socket_id}} to everyone in the room
        (in every process, through the adapter), as the Node backend does.
    """

    def notify_peer_left(room_id: str, socket_id: str) -> None:
        if namespace.end_detached(socket_id, LEFT_BY_API):
            # A socket waiting for its client to recover it left on purpose:
            # it ends now, and its disconnect clean-up tells the room once.
            return
        namespace.to(room_id).emit(PEER_DISCONNECTED, {"peerId": socket_id})

    return notify_peer_left
