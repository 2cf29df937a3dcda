"""One client's connection to one namespace, as handlers see it.

A L{Socket} is created when a client asks to connect to a namespace, becomes
connected once every connect handler accepted it, and is disconnected for
good afterwards (a reconnecting client gets a new socket and a new id).
Whatever a connect handler emits before the acceptance is held back and sent
after the CONNECT answer, so the client sees it in order.

With connection state recovery on (L{privydrop.socketio.recovery}), a socket
whose transport was lost (not closed on purpose) is I{detached} instead: it
keeps its id and rooms, events for it go to its log only, and no disconnect
handler runs. Its client may come back within the window with its private
session id: the socket is then I{resumed} over the new connection, with what
it missed. A client that comes back while the server still thinks the old
connection is alive takes the socket over: the old connection is closed
quietly. When the window ends first, the socket leaves as it would have
(disconnecting and disconnect handlers, with the original reason).

Across processes (with a L{privydrop.socketio.recovery.RecoveryBackend}), a
socket may also be I{released}: it leaves this process without leaving its
rooms, because it was recovered on another process or ended there; only the
namespace's released handlers run. A process that adopts the socket of a
dead one keeps it detached without a connection (L{NO_CLIENT}).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import LogLevel

from privydrop.logs import levels as loglevels
from privydrop.logs.levels import Logger
from privydrop.socketio.acks import PendingAcks
from privydrop.socketio.errors import (
    AckTimeout,
    RoomLimitError,
    SocketDisconnected,
)
from privydrop.socketio.ids import RoomId, SocketId
from privydrop.socketio.packets import (
    RESERVED_EVENTS,
    Message,
    Packet,
    PacketType,
    encode,
)
from privydrop.socketio.recovery import Offsets, PacketLog, RecoverySettings

if TYPE_CHECKING:
    from privydrop.socketio.adapter import Adapter
    from privydrop.socketio.client import Client
    from privydrop.socketio.namespace import Namespace

_log = Logger()


@attrs.frozen
class SocketHandshake:
    """What a socket's client said when it connected.

    The CONNECT packet's payload (C{auth}) is not here: it is handed to the
    namespace's connect handlers and not kept for the socket's life.

    @ivar headers: request headers of the Engine.IO handshake, lower-cased.
    @ivar address: the client's address as Engine.IO saw it.
    @ivar query: query parameters of the Engine.IO handshake.
    @ivar issued_ms: when the socket was created, ms since the epoch.
    @ivar url: path and query of the Engine.IO handshake request.
    @ivar secure: whether the handshake came over TLS.
    """

    headers: Mapping[str, str]
    address: str
    query: Mapping[str, str]
    issued_ms: int
    url: str
    secure: bool


class SocketState(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    #: Transport lost; waiting, still in its rooms, for its client to recover it.
    DETACHED = "detached"
    DISCONNECTED = "disconnected"


# As module globals for the delivery path (an Enum member read through its
# class costs several times a global's read).
_DETACHED = SocketState.DETACHED
_DISCONNECTED = SocketState.DISCONNECTED


def check_event_name(event: str) -> None:
    """Refuse event names the server must not emit.

    @raise ValueError: not a string, or a reserved name.
    """
    if not isinstance(event, str):
        raise ValueError("event name must be a string")
    if event in RESERVED_EVENTS:
        raise ValueError("{!r} is a reserved event name".format(event))


class _NoClient:
    """The client of a socket adopted from a dead process: it never had a
    connection here, sends nothing and forgets nothing."""

    transport_name = ""
    closed = True
    sockets: dict[str, Any] = {}
    connecting: dict[str, Any] = {}

    def send(self, messages: Sequence[Message]) -> None:
        pass

    def _forget(self, socket: Any) -> None:
        pass

    def disconnect_all(self) -> None:
        pass


#: The client of every socket kept for a process that died.
NO_CLIENT: Any = _NoClient()


class BroadcastOperator:
    """Emits to the sockets in some rooms of one namespace.

    Built by C{Namespace.to(room)} (everyone in the rooms) or C{Socket.to(room)}
    (everyone but that socket). Chaining C{.to()} adds rooms: a socket in
    several of them still receives one copy.
    """

    def __init__(
        self,
        adapter: Adapter,
        namespace: str,
        rooms: frozenset[RoomId],
        exclude: frozenset[SocketId] = frozenset(),
        offsets: Offsets | None = None,
    ) -> None:
        self._adapter = adapter
        self._namespace = namespace
        self._rooms = rooms
        self._exclude = exclude
        self._offsets = offsets

    def to(self, room: str) -> "BroadcastOperator":
        """The same broadcast, to one more room."""
        return BroadcastOperator(
            self._adapter,
            self._namespace,
            self._rooms | {RoomId(room)},
            self._exclude,
            self._offsets,
        )

    def emit(self, event: str, *args: Any) -> None:
        """Send an event (no acknowledgement) to every socket in the rooms.

        With recovery on, the event carries an offset as its last argument.

        @raise ValueError: a reserved or non-string event name.
        """
        check_event_name(event)
        data = [event, *args]
        if self._offsets is not None:
            data.append(self._offsets.next())
        self._adapter.broadcast(
            Packet(PacketType.EVENT, self._namespace, data),
            self._rooms,
            self._exclude,
        )


class Socket:
    """A client's connection to one namespace.

    @ivar id: the socket id (random; distinct from the Engine.IO session id,
        which is never exposed here).
    @ivar namespace: the L{Namespace} it belongs to.
    @ivar handshake: what the client said when connecting (after a
        recovery: on its new connection).
    @ivar pid: the private session id its client recovers it with (None
        when recovery is off).
    @ivar recovered: whether the socket was resumed over a new connection.
    """

    # One per connected client: slots keep an idle socket small.
    __slots__ = (
        "id",
        "namespace",
        "handshake",
        "pid",
        "recovered",
        "_acks",
        "_adapter",
        "_client",
        "_clock",
        "_closing",
        "_connect_answer_gap_s",
        "_held",
        "_log",
        "_max_rooms",
        "_recovery",
        "_state",
        "_window_call",
        "__weakref__",
    )

    def __init__(
        self,
        socket_id: SocketId,
        namespace: Namespace,
        client: Client,
        handshake: SocketHandshake,
        adapter: Adapter,
        acks: PendingAcks,
        max_rooms: int,
        clock: IReactorTime,
        connect_answer_gap_s: float = 0.0,
        recovery: RecoverySettings | None = None,
        pid: str | None = None,
    ) -> None:
        self.id = socket_id
        self.namespace = namespace
        self.handshake = handshake
        self._client = client
        self._adapter = adapter
        self._acks = acks
        self._max_rooms = max_rooms
        self._clock = clock
        self._connect_answer_gap_s = connect_answer_gap_s
        self._state = SocketState.CONNECTING
        self._closing = False
        # Messages wait here while connect handlers run, and until the turn
        # after the CONNECT answer (see _accept).
        self._held: list[Message] | None = []
        self._recovery = recovery
        self.pid = pid
        self.recovered = False
        #: Every event delivered, for replay after a recovery (None: off).
        self._log = (
            None if recovery is None else PacketLog(recovery.max_packets, recovery.max_bytes)
        )
        self._window_call: IDelayedCall | None = None

    def __repr__(self) -> str:
        return "<Socket {} {} {}>".format(self.namespace.name, self.id, self._state.value)

    @property
    def connected(self) -> bool:
        """Whether the socket is connected (False while connect handlers run,
        and while detached)."""
        return self._state is SocketState.CONNECTED

    @property
    def state(self) -> SocketState:
        return self._state

    @property
    def disconnected(self) -> bool:
        """Whether the socket left for good (a detached socket has not: it
        keeps its rooms, and what is sent to it is replayed on recovery)."""
        return self._state is SocketState.DISCONNECTED

    @property
    def transport(self) -> str:
        """The client's current transport, C{"polling"} or C{"websocket"}."""
        return self._client.transport_name

    @property
    def rooms(self) -> frozenset[RoomId]:
        """The rooms this socket is in (its own id is not one of them)."""
        return self._adapter.rooms_of(self.namespace.name, self.id)

    # Sending

    def emit(
        self,
        event: str,
        *args: Any,
        callback: Callable[..., Any] | None = None,
    ) -> None:
        """Send an event to this socket's client.

        Bytes anywhere in C{args} travel as binary attachments.

        @param callback: called with the client's acknowledgement arguments;
            dropped silently if the socket disconnects first.
        @raise ValueError: a reserved or non-string event name.
        @raise AckLimitError: a callback was given while C{max_pending_acks}
            acknowledgements are already awaited from this client.
        """
        check_event_name(event)
        if self._state is SocketState.DISCONNECTED:
            return
        if callback is not None:
            ack_id = self._acks.register(callback)
            self._send(Packet(PacketType.EVENT, self.namespace.name, [event, *args], ack_id))
            return
        data = [event, *args]
        offsets = self.namespace.offsets
        if offsets is not None:
            data.append(offsets.next())
        self._deliver(encode(Packet(PacketType.EVENT, self.namespace.name, data)))

    def emit_with_ack(
        self, event: str, *args: Any, timeout_s: float | None = None
    ) -> Deferred[tuple[Any, ...]]:
        """Send an event and wait for the client's acknowledgement.

        @return: a Deferred firing with the acknowledgement's arguments as a
            tuple, or failing with L{AckTimeout} after C{timeout_s}, or with
            L{SocketDisconnected}.
        @raise ValueError: a reserved or non-string event name.
        @raise AckLimitError: as for L{emit}.
        """
        check_event_name(event)
        result: Deferred[tuple[Any, ...]] = Deferred()
        if self._state is not SocketState.CONNECTED and self._state is not SocketState.CONNECTING:
            result.errback(SocketDisconnected())
            return result
        ack_id = self._acks.register(
            lambda *ack_args: result.callback(ack_args),
            on_drop=lambda: result.errback(SocketDisconnected()),
            timeout_s=timeout_s,
            on_timeout=lambda: result.errback(AckTimeout()),
        )
        self._send(Packet(PacketType.EVENT, self.namespace.name, [event, *args], ack_id))
        return result

    def to(self, room: str) -> BroadcastOperator:
        """Emit to the sockets in C{room}, except this one."""
        return BroadcastOperator(
            self._adapter,
            self.namespace.name,
            frozenset({RoomId(room)}),
            frozenset({self.id}),
            self.namespace.offsets,
        )

    # Rooms

    def join(self, room: str, members: Mapping[str, str] | None = None) -> None:
        """Join a room (joining one it is already in does nothing).

        @param members: the room's members and the node holding each, as
            the store answered the join: the adapter then tracks the room
            (see L{privydrop.socketio.adapter}).
        @raise RoomLimitError: already in C{max_rooms_per_socket} rooms.
        @raise ValueError: the room name is not a string.
        """
        if not isinstance(room, str):
            raise ValueError("room name must be a string")
        if self._state is SocketState.DISCONNECTED:
            return
        current = self.rooms
        if room in current:
            return
        if len(current) >= self._max_rooms:
            raise RoomLimitError("max_rooms_per_socket reached")
        self._adapter.add(
            self.namespace.name,
            self.id,
            RoomId(room),
            None if members is None else {SocketId(k): v for k, v in members.items()},
        )

    def leave(self, room: str) -> None:
        """Leave a room (leaving one it is not in does nothing)."""
        self._adapter.remove(self.namespace.name, self.id, RoomId(room))

    # Ending

    def disconnect(self, close: bool = False) -> None:
        """Disconnect from this namespace (the client is told, and does not
        reconnect on its own).

        @param close: also close the whole Engine.IO connection, which
            disconnects the client's sockets in every namespace.
        """
        if close and self._state is not SocketState.DETACHED:
            self._client.disconnect_all()
            return
        if self._state is SocketState.DISCONNECTED:
            return
        if self._state is SocketState.CONNECTED:
            # What was held for after the CONNECT answer goes first.
            self._release_held()
            self._send(Packet(PacketType.DISCONNECT, self.namespace.name))
        self._on_close("server namespace disconnect")

    # Internals used by the namespace, the server and the adapter.

    def _send(self, packet: Packet) -> None:
        """Send a packet that is not kept for replay (acks, DISCONNECT,
        events awaiting an ack)."""
        if self._state is SocketState.DETACHED:
            return
        self._write(encode(packet))

    def _deliver(self, messages: Sequence[Message]) -> None:
        """An event for this socket (from the adapter, or L{emit}): kept in
        the log when recovery is on, and sent unless detached."""
        state = self._state
        if state is _DISCONNECTED:
            return
        log = self._log
        if log is not None:
            log.add(messages)
            if state is _DETACHED:
                return
        # L{_write}, inlined: the relay's hot path.
        if self._held is not None:
            self._held.extend(messages)
            return
        client = self._client
        if not client.closed:
            if len(messages) == 1:
                client.connection.send(messages[0])
            else:
                client.connection.send_many(messages)

    def _write(self, messages: Sequence[Message]) -> None:
        if self._state is _DISCONNECTED:
            return
        if self._held is not None:
            self._held.extend(messages)
        else:
            self._client.send(messages)

    def _accept(self) -> None:
        """All connect handlers accepted: answer CONNECT now, and what was
        held (or arrives meanwhile) on the next reactor turn.

        Sending the CONNECT answer in a write of its own is what the
        reference server does in effect (its WebSocket transport writes one
        packet at a time), and clients that attach a listener per message,
        like the official socket.io-protocol test-suite, rely on it: two
        messages in one TCP read reach such a client in the same tick and the
        second one is missed.
        """
        self._state = SocketState.CONNECTED
        self._client.send(encode(Packet(PacketType.CONNECT, self.namespace.name, self._answer())))
        self._clock.callLater(self._connect_answer_gap_s, self._release_held)

    def _answer(self) -> dict[str, str]:
        if self.pid is None:
            return {"sid": self.id}
        return {"sid": self.id, "pid": self.pid}

    # Recovery

    @property
    def recoverable(self) -> bool:
        """Whether a lost transport detaches this socket rather than ending it."""
        return self._recovery is not None and self._state is SocketState.CONNECTED

    def _detach(self, reason: str) -> None:
        """The transport was lost: wait for the client, still in the rooms.

        Pending acknowledgements are dropped (their callbacks cannot outlive
        the connection they were asked on).
        """
        assert self._recovery is not None
        self._state = SocketState.DETACHED
        self._held = None
        self._acks.drop_all()
        self.namespace._detached(self)
        self._window_call = self._clock.callLater(
            self._recovery.window_s, self._window_ended, reason
        )
        backend = self.namespace.backend
        if backend is not None:
            backend.detached(self)
        if loglevels.debug:
            _log.debug(
                "socket {sid} detached from its connection: {reason}",
                sid=self.id,
                reason=reason,
            )

    def _window_ended(self, reason: str) -> None:
        self._window_call = None
        backend = self.namespace.backend
        if backend is None:
            self._on_close(reason)
            return
        # Exactly one process ends it (this one unless it was recovered or
        # ended elsewhere meanwhile).
        backend.window_ended(self).addCallback(self._window_decided, reason).addErrback(
            lambda failure: _log.failure("ending socket {sid} failed", failure=failure, sid=self.id)
        )

    def _window_decided(self, ours: bool, reason: str) -> None:
        if self._state is not SocketState.DETACHED:
            return
        if ours:
            self._on_close(reason)
        else:
            self._release(None)

    def _adopt(self, window_s: float) -> None:
        """Kept for a process that died: detached from the start, with a
        custodial log, until its window ends."""
        assert self._recovery is not None
        self._state = SocketState.DETACHED
        self._held = None
        self._log = PacketLog(
            self._recovery.max_packets, self._recovery.max_bytes, custodial=True
        )
        self._window_call = self._clock.callLater(
            max(window_s, 0.0), self._window_ended, "transport close"
        )

    def _handed_over(self, offset: str) -> list[Sequence[Message]] | None:
        """The events after C{offset}, for the process its client came back
        to (None when the offset is not kept)."""
        if self._log is None:
            return None
        return self._log.events_after(offset)

    def _cancel_window(self) -> None:
        """Its recovery window no longer runs here."""
        if self._window_call is not None:
            if self._window_call.active():
                self._window_call.cancel()
            self._window_call = None

    def _release(self, node: str | None) -> None:
        """Leave this process without leaving the rooms: recovered on node
        C{node}, or ended by another process. No disconnect handler runs;
        the namespace's released handlers do."""
        if self._state is SocketState.DISCONNECTED or self._closing:
            return
        self._cancel_window()
        self._state = SocketState.DISCONNECTED
        self._held = None
        self._log = None
        self._adapter.move_socket(self.namespace.name, self.id, node)
        self.namespace._forget(self)
        self._client._forget(self)
        self._acks.drop_all()
        self.namespace._run_released(self)

    def _resume_remote(
        self, client: Client, handshake: SocketHandshake, events: Sequence[Sequence[Message]]
    ) -> None:
        """Recovered from another process: the events it handed over come
        first, then what arrived here meanwhile (held while CONNECTING)."""
        if self._log is not None:
            self._log.put_first(events)
        handed_over = [message for event in events for message in event]
        self._resume(client, handshake, handed_over + (self._held or []))

    def _end_unrecovered(self, reason: str) -> None:
        """Claimed here from another process, but what its client missed is
        unknown: it leaves as a connected socket does (handlers run, rooms
        are left, its peers are told), with no connection to tell."""
        self._state = SocketState.CONNECTED
        self._client = NO_CLIENT
        self._held = None
        self._on_close(reason)

    def _missed(self, offset: str) -> list[Message] | None:
        """What the client missed after C{offset}; None when unknown."""
        if self._log is None:
            return None
        return self._log.after(offset)

    def _resume(self, client: Client, handshake: SocketHandshake, missed: list[Message]) -> None:
        """Go on over C{client}'s connection: answer CONNECT with the same
        id and pid, then replay C{missed} (and whatever arrives meanwhile)
        on the next turn, as after L{_accept}."""
        self._cancel_window()
        self._client = client
        self.handshake = handshake
        self.recovered = True
        self._held = list(missed)
        self._state = SocketState.CONNECTED
        self.namespace._resumed(self)
        self._client.send(encode(Packet(PacketType.CONNECT, self.namespace.name, self._answer())))
        self._clock.callLater(self._connect_answer_gap_s, self._release_held)

    def _release_held(self) -> None:
        held, self._held = self._held, None
        if held and self._state is SocketState.CONNECTED:
            self._client.send(held)

    def _discard(self) -> None:
        """Refused or abandoned before connecting: undo without handlers."""
        self._state = SocketState.DISCONNECTED
        self._held = None
        self._adapter.remove_socket(self.namespace.name, self.id)
        self._acks.drop_all()

    def _on_event(self, packet: Packet) -> None:
        self.namespace._dispatch(self, packet)

    def _on_ack(self, packet: Packet) -> None:
        if packet.ack_id is None or not self._acks.resolve(packet.ack_id, packet.data):
            self.namespace.warnings.debug(
                _log,
                "unexpected-ack",
                "unexpected ack {ack_id} on socket {sid}",
                ack_id=packet.ack_id,
                sid=self.id,
            )

    def _on_close(self, reason: str) -> None:
        """Leave the namespace: disconnecting handlers (rooms still known),
        rooms, pending acks, then disconnect handlers."""
        state = self._state
        if state is SocketState.CONNECTING:
            self._discard()
            self.namespace._forget(self)
            self._client._forget(self)
            return
        if (
            state is not SocketState.CONNECTED and state is not SocketState.DETACHED
        ) or self._closing:
            # Also when a disconnecting handler disconnects the socket again.
            return
        self._closing = True
        self._cancel_window()
        self._log = None
        self.namespace._run_disconnecting(self, reason)
        self._state = SocketState.DISCONNECTED
        self._adapter.remove_socket(self.namespace.name, self.id)
        self.namespace._forget(self)
        self._client._forget(self)
        self._acks.drop_all()
        # Per-connection lifecycle is debug (room joins and leaves are info):
        # building these events is a measurable share of a join's CPU
        # (docs/performance.md).
        if loglevels.debug:
            self.namespace.warnings.lifecycle(
                LogLevel.debug,
                _log,
                "disconnected",
                "socket {sid} left namespace {namespace}: {reason}",
                sid=self.id,
                namespace=self.namespace.name,
                reason=reason,
            )
        self.namespace._run_disconnect(self, reason)
