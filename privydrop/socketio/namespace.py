"""A namespace: its handlers, its connected sockets, and emitting to them.

Handlers are looked up by event name in a dict filled only by L{Namespace.on};
a client-chosen event name can never reach anything else. Handlers may be
plain functions or coroutines; their failures are logged and affect nobody
but the event that raised.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, TypeVar, Union

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from privydrop.logs.client_text import clip
from privydrop.logs.levels import Logger
from privydrop.logs.throttle import WarningThrottle
from privydrop.socketio.acks import as_deferred_if_awaitable
from privydrop.socketio.errors import ConnectionRefused
from privydrop.socketio.ids import RoomId, SocketId
from privydrop.socketio.packets import RESERVED_EVENTS, Packet, PacketType
from privydrop.socketio.recovery import Offsets, RecoveryBackend, RecoverySettings
from privydrop.socketio.sockets import (
    BroadcastOperator,
    Socket,
    SocketState,
    check_event_name,
)

if TYPE_CHECKING:
    from privydrop.socketio.adapter import Adapter

_log = Logger()
# For the emit hot path: a global's read, not an Enum member's through its class.
_EVENT = PacketType.EVENT
_new_tuple = tuple.__new__

#: connect handler: (socket, auth) -> None | False, possibly awaitable; may
#: raise ConnectionRefused.
ConnectHandler = Callable[[Socket, Mapping[str, Any]], Any]
#: event handler: (socket, *args) -> ack value, possibly awaitable.
EventHandler = Callable[..., Any]
#: disconnect / disconnecting handler: (socket, reason).
DisconnectHandler = Callable[[Socket, str], Any]
#: server event handler: (*args) -> None, possibly awaitable.
ServerEventHandler = Callable[..., Any]

F = TypeVar("F", bound=Callable[..., Any])


def _awaited(result: Any) -> Union[Deferred[Any], Any]:
    """Turn a coroutine or other awaitable into a Deferred; leave values alone."""
    return as_deferred_if_awaitable(result)


def ack_arguments(result: Any) -> list[Any]:
    """An event handler's return value as acknowledgement arguments:
    a tuple is several arguments, None is none, anything else is one."""
    if result is None:
        return []
    if isinstance(result, tuple):
        return list(result)
    return [result]


class Namespace:
    """One namespace of a L{privydrop.socketio.server.SocketIOServer}.

    Get it with C{server.of(name)}; C{"/"} always exists.

    @ivar recovery: connection state recovery's settings, None when off.
    @ivar offsets: issues the offsets events carry, None when recovery is off.
    """

    def __init__(
        self,
        name: str,
        adapter: Adapter,
        warnings: WarningThrottle,
        recovery: RecoverySettings | None = None,
    ) -> None:
        """
        @param name: the namespace's name (C{/}, C{/chat}).
        @param adapter: rooms and delivery.
        @param warnings: throttles the log lines its clients cause.
        @param recovery: connection state recovery's settings; None: off.
        """
        self.name = name
        self._adapter = adapter
        self.warnings = warnings
        self.recovery = recovery
        self.offsets = None if recovery is None else Offsets()
        #: Connected and detached sockets by private session id.
        self._by_pid: dict[str, Socket] = {}
        self._connect_handlers: list[ConnectHandler] = []
        self._handlers: dict[str, EventHandler] = {}
        self._disconnecting_handlers: list[DisconnectHandler] = []
        self._disconnect_handlers: list[DisconnectHandler] = []
        self._connected: dict[SocketId, Socket] = {}
        self._all: dict[SocketId, Socket] = {}
        self._server_handlers: dict[str, ServerEventHandler] = {}
        self._released_handlers: list[Callable[[Socket], Any]] = []
        #: Recovery across processes (set by the server), None within one.
        self.backend: RecoveryBackend | None = None
        self._no_detached_waiters: list[Deferred[None]] = []

    def __repr__(self) -> str:
        return "<Namespace {}>".format(self.name)

    # Registration (each returns the function, so it works as a decorator).

    def on_connect(self, fn: F) -> F:
        """Run C{fn(socket, auth)} when a client asks to connect.

        Handlers run in registration order. One that returns (or resolves to)
        C{False}, or raises L{ConnectionRefused}, refuses the connection: the
        client gets CONNECT_ERROR and the socket never counts as connected.
        Events it emits to the socket reach the client right after the
        CONNECT answer, in order.
        """
        self._connect_handlers.append(fn)
        return fn

    def on(self, event: str, handler: EventHandler | None = None) -> Any:
        """Handle an event from clients: C{handler(socket, *args)}.

        If the client asked for an acknowledgement, the handler's return
        value (awaited if it is awaitable) is sent back as the ack: a tuple
        as several arguments, None as none. Usable as C{@ns.on("name")}.

        @raise ValueError: a reserved name, or one that already has a handler.
        """
        if handler is None:
            def register(fn: F) -> F:
                self.on(event, fn)
                return fn

            return register
        check_event_name(event)
        if event in self._handlers:
            raise ValueError("event {!r} already has a handler".format(event))
        self._handlers[event] = handler
        return handler

    def on_disconnecting(self, fn: F) -> F:
        """Run C{fn(socket, reason)} when a connected socket is about to
        leave, while C{socket.rooms} still lists its rooms."""
        self._disconnecting_handlers.append(fn)
        return fn

    def on_disconnect(self, fn: F) -> F:
        """Run C{fn(socket, reason)} after a connected socket left (its rooms
        are gone by then; use L{on_disconnecting} to see them)."""
        self._disconnect_handlers.append(fn)
        return fn

    def on_released(self, fn: F) -> F:
        """Run C{fn(socket)} when a socket leaves this process without
        leaving its rooms (recovered on another process, or ended by one):
        forget it here, announce nothing."""
        self._released_handlers.append(fn)
        return fn

    def on_server(self, event: str, handler: ServerEventHandler) -> ServerEventHandler:
        """Handle a server event sent to this process (L{send_server_event}):
        C{handler(*args)}; failures are logged.

        @raise ValueError: the event already has a handler.
        """
        if event in self._server_handlers:
            raise ValueError("server event {!r} already has a handler".format(event))
        self._server_handlers[event] = handler
        return handler

    # Sockets and emitting

    @property
    def sockets(self) -> Mapping[SocketId, Socket]:
        """The connected sockets of this namespace in this process, by id."""
        return MappingProxyType(self._connected)

    def get_socket(self, socket_id: str) -> Socket | None:
        """The connected socket with that id in this process, or None."""
        return self._connected.get(SocketId(socket_id))

    def detached_count(self) -> int:
        """Sockets of this process waiting for their client to recover them."""
        return sum(1 for s in self._all.values() if s.state is SocketState.DETACHED)

    def end_detached(self, socket_id: str, reason: str = "recovery ended") -> bool:
        """End a detached socket now, as if its window had passed.

        @return: whether a detached socket with that id was here.
        """
        socket = self._all.get(SocketId(socket_id))
        if socket is None or socket.state is not SocketState.DETACHED:
            return False
        socket._on_close(reason)
        return True

    def wait_no_detached(self) -> Deferred[None]:
        """Fires once no socket of this namespace waits for its client here."""
        if self.detached_count() == 0:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._no_detached_waiters.append(waiter)
        return waiter

    def _check_no_detached(self) -> None:
        if self._no_detached_waiters and self.detached_count() == 0:
            waiters, self._no_detached_waiters = self._no_detached_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def end_all_detached(self, reason: str = "recovery ended") -> int:
        """End every detached socket now (no one can recover them any more).

        @return: how many were ended.
        """
        detached = [s for s in self._all.values() if s.state is SocketState.DETACHED]
        for socket in detached:
            socket._on_close(reason)
        return len(detached)

    def to(self, room: str) -> BroadcastOperator:
        """Emit to every socket in C{room}."""
        return BroadcastOperator(
            self._adapter, self.name, frozenset({RoomId(room)}), frozenset(), self.offsets
        )

    def emit(self, event: str, *args: Any) -> None:
        """Emit to every socket of the namespace.

        @raise ValueError: a reserved or non-string event name.
        """
        BroadcastOperator(
            self._adapter, self.name, frozenset(), frozenset(), self.offsets
        ).emit(event, *args)

    def emit_to_socket(
        self,
        socket_id: str,
        event: str,
        *args: Any,
        only_if_in_room: str | None = None,
    ) -> None:
        """Emit to one socket, by id, wherever it is connected.

        This never goes through room names: a room named like the socket id
        receives nothing. With C{only_if_in_room}, the event is delivered only
        when that socket is in that room (so a client cannot reach sockets of
        rooms it is not part of by guessing ids).

        @raise ValueError: a reserved or non-string event name.
        """
        if event.__class__ is not str or event in RESERVED_EVENTS:
            check_event_name(event)
        data = [event, *args]
        offsets = self.offsets
        if offsets is not None:
            # L{Offsets.next}, inlined: one per relayed message.
            number = offsets._next = offsets._next + 1
            data.append(offsets._prefix + "%x" % number)
        self._adapter.send_to_socket(
            _new_tuple(Packet, (_EVENT, self.name, data, None, 0)),
            SocketId(socket_id),
            None if only_if_in_room is None else RoomId(only_if_in_room),
        )

    def emit_to_members(
        self,
        room: str,
        members: Mapping[str, str],
        event: str,
        *args: Any,
        departed: str | None = None,
    ) -> None:
        """Emit to these members of C{room} (socket id -> the node holding
        it), wherever they are connected; each receives it only while in
        the room.

        @param departed: a socket that left the room (processes tracking
            the room forget it).
        @raise ValueError: a reserved or non-string event name.
        """
        check_event_name(event)
        self._adapter.send_to_members(
            Packet(PacketType.EVENT, self.name, [event, *args]),
            RoomId(room),
            {SocketId(sid): node for sid, node in members.items()},
            None if departed is None else SocketId(departed),
        )

    def members(self, room: str) -> Mapping[str, str]:
        """The room's members as this process knows them, with their nodes."""
        return {str(sid): node for sid, node in self._adapter.members(self.name, RoomId(room)).items()}

    def note_members(self, room: str, members: Mapping[str, str]) -> None:
        """A fresher list of a tracked room's members (see the adapter)."""
        self._adapter.note_members(
            self.name, RoomId(room), {SocketId(k): v for k, v in members.items()}
        )

    def hold(self, socket_id: str) -> None:
        """Keep room traffic for a socket whose join is in flight (see the adapter)."""
        self._adapter.hold(self.name, SocketId(socket_id))

    def release(self, socket_id: str) -> None:
        """The join ended without entering a room: drop what was held."""
        self._adapter.release(self.name, SocketId(socket_id))

    def send_server_event(self, node: str, event: str, *args: Any) -> None:
        """Call the server event handler C{event} of this namespace on the
        process with node id C{node} (this one included); C{args} must be
        JSON values."""
        self._adapter.server_event(node, self.name, event, args)

    # Internals used by the server and sockets.

    def _server_event(self, event: str, args: Sequence[Any]) -> None:
        handler = self._server_handlers.get(event)
        if handler is None:
            _log.debug(
                "no handler for server event {event!r} in {namespace}",
                event=event,
                namespace=self.name,
            )
            return
        try:
            result = _awaited(handler(*args))
        except Exception:
            _log.failure("server event handler {event!r} failed", event=event)
            return
        if isinstance(result, Deferred):
            result.addErrback(
                lambda failure: _log.failure(
                    "server event handler {event!r} failed", failure=failure, event=event
                )
            )

    def _local_socket(self, socket_id: SocketId) -> Socket | None:
        """Connected, connecting or detached socket (the adapter delivers to
        all three)."""
        return self._all.get(socket_id)

    def _recoverable(self, pid: str) -> Socket | None:
        """The connected or detached socket with that private session id."""
        return self._by_pid.get(pid)

    def _detached(self, socket: Socket) -> None:
        self._connected.pop(socket.id, None)

    def _resumed(self, socket: Socket) -> None:
        self._connected[socket.id] = socket
        if self._no_detached_waiters:
            self._check_no_detached()

    def _begin(self, socket: Socket, auth: Mapping[str, Any]) -> Deferred[bool]:
        """Register a connecting socket and run the connect handlers.

        @return: a Deferred firing True once the socket is connected, False
            when it was refused or vanished meanwhile.
        """
        self._all[socket.id] = socket
        self._adapter.add_socket(self.name, socket.id)
        return Deferred.fromCoroutine(self._authorize(socket, auth))

    async def _authorize(self, socket: Socket, auth: Mapping[str, Any]) -> bool:
        refusal: ConnectionRefused | None = None
        try:
            for handler in self._connect_handlers:
                result = _awaited(handler(socket, auth))
                if isinstance(result, Deferred):
                    result = await result
                if result is False:
                    refusal = ConnectionRefused("Not authorized")
                    break
                if socket.state is not SocketState.CONNECTING:
                    break
        except ConnectionRefused as e:
            refusal = e
        except Exception:
            _log.failure(
                "connect handler failed for socket {sid} in {namespace}",
                sid=socket.id,
                namespace=self.name,
            )
            refusal = ConnectionRefused("Server error")
        if socket.state is not SocketState.CONNECTING:
            # Disconnected by a handler (the client is told, as for a refusal),
            # or the client went away meanwhile (then nothing is sent).
            socket._client.refuse(socket, ConnectionRefused("Not authorized"))
            self._forget(socket)
            return False
        if refusal is not None:
            socket._client.refuse(socket, refusal)
            socket._discard()
            self._forget(socket)
            return False
        self._connected[socket.id] = socket
        if socket.pid is not None:
            self._by_pid[socket.pid] = socket
        socket._accept()
        return True

    def _forget(self, socket: Socket) -> None:
        self._all.pop(socket.id, None)
        self._connected.pop(socket.id, None)
        if socket.pid is not None and self._by_pid.get(socket.pid) is socket:
            del self._by_pid[socket.pid]
        if self._no_detached_waiters:
            self._check_no_detached()

    def _register(self, socket: Socket) -> None:
        """A socket recovered from, or kept for, another process."""
        self._all[socket.id] = socket
        if socket.pid is not None:
            self._by_pid[socket.pid] = socket
        self._adapter.add_socket(self.name, socket.id)

    def _run_released(self, socket: Socket) -> None:
        for handler in self._released_handlers:
            try:
                result = _awaited(handler(socket))
            except Exception:
                _log.failure("released handler failed for socket {sid}", sid=socket.id)
                continue
            if isinstance(result, Deferred):
                result.addErrback(self._log_handler_failure, "released", socket.id)

    def _dispatch(self, socket: Socket, packet: Packet) -> None:
        data = packet[2]
        event = data[0]
        args = data[1:]
        handler = self._handlers.get(event)
        if handler is None:
            self.warnings.debug(
                _log,
                "no-handler",
                "no handler for event {event!r} in {namespace}",
                event=clip(event),
                namespace=self.name,
            )
            return
        try:
            result = handler(socket, *args)
            if result is not None:
                result = _awaited(result)
        except Exception:
            _log.failure(
                "handler for {event!r} failed on socket {sid}", event=event, sid=socket.id
            )
            return
        ack_id = packet[3]
        if result is None:
            # The usual case (relay handlers return nothing), decided
            # without the isinstance check against Deferred's generic ABC.
            if ack_id is not None:
                try:
                    self._ack(socket, ack_id, None)
                except Exception:
                    _log.failure(
                        "could not acknowledge {event!r} on socket {sid}",
                        event=event,
                        sid=socket.id,
                    )
        elif isinstance(result, Deferred):
            if ack_id is not None:
                result.addCallback(lambda value: self._ack(socket, ack_id, value))
            result.addErrback(self._log_handler_failure, event, socket.id)
        elif ack_id is not None:
            try:
                self._ack(socket, ack_id, result)
            except Exception:
                _log.failure(
                    "could not acknowledge {event!r} on socket {sid}",
                    event=event,
                    sid=socket.id,
                )

    def _ack(self, socket: Socket, ack_id: int, result: Any) -> None:
        if socket.state is not SocketState.CONNECTED:
            return
        socket._send(Packet(PacketType.ACK, self.name, ack_arguments(result), ack_id))

    @staticmethod
    def _log_handler_failure(failure: Failure, event: str, sid: SocketId) -> None:
        _log.failure(
            "handler for {event!r} failed on socket {sid}",
            failure=failure,
            event=event,
            sid=sid,
        )

    def _run_disconnecting(self, socket: Socket, reason: str) -> None:
        self._run_lifecycle(self._disconnecting_handlers, socket, reason)

    def _run_disconnect(self, socket: Socket, reason: str) -> None:
        self._run_lifecycle(self._disconnect_handlers, socket, reason)

    def _run_lifecycle(
        self, handlers: list[DisconnectHandler], socket: Socket, reason: str
    ) -> None:
        for handler in handlers:
            try:
                result = _awaited(handler(socket, reason))
            except Exception:
                _log.failure(
                    "disconnect handler failed for socket {sid}", sid=socket.id
                )
                continue
            if isinstance(result, Deferred):
                result.addErrback(self._log_handler_failure, "disconnect", socket.id)


