"""The Socket.IO v5 server: an Engine.IO application with namespaces.

L{SocketIOServer} receives whole Engine.IO messages from each client
(L{privydrop.engineio.interface.EngineApplication}), turns them into packets
with L{privydrop.socketio.packets.BinaryReassembler}, and routes them to the
client's socket in the packet's namespace. Room membership and delivery by
room or by id go through an adapter
(L{privydrop.socketio.adapter.Adapter}; in-process by default).

This layer knows nothing of PrivyDrop; the layers above use L{SocketIOServer.of},
L{Namespace} and L{Socket}. It knows Engine.IO only through
C{privydrop.engineio.interface}.

Error boundary (socket.io-protocol v5): a packet that breaks the protocol or a
limit closes that client's Engine.IO connection and nothing else; a handler's
exception is logged and affects only its event.

Connection state recovery (C{settings.recovery_window_ms} > 0, every
namespace): the CONNECT answer carries a private session id, events carry
offsets (L{privydrop.socketio.recovery}). A connection that Engine.IO reports
lost (L{CloseKind.LOST}) or shut down detaches its sockets instead of ending
them; a CONNECT whose auth carries a known C{pid} and an C{offset} found in
that socket's log resumes the socket (same id and rooms, C{recovered}, the
missed events replayed, connect handlers not run, as the reference server
with C{skipMiddlewares}). When that socket still has a connection (the
server has not noticed its loss yet), the old connection is closed and the
socket goes on over the new one. A C{pid} whose offset is not found ends its
socket at once: its client is back, under a new socket.

Across processes (L{SocketIOServer.set_recovery_backend}, with a cluster):
a C{pid} not known here is claimed through the backend (the store moves
the socket to this process atomically), the socket is rebuilt here with
the same id in its rooms (their other members' processes are told), and
the process that held it is asked for the events after the client's
offset, and to close its old connection if still open (a takeover across
processes). What arrives here meanwhile waits behind those events. No
answer in time: the socket is recovered without them (counted in
C{handover_lost}). An offset the old process does not know ends the
socket (its peers are told) and the client gets a new one.

The one exception is a CONNECT whose payload (C{auth}) passes
C{max_auth_bytes}: it is answered with CONNECT_ERROR C{{message: "auth payload
too large"}} for its namespace, without the payload being parsed, and the
connection stays open. socket.io-client then reports C{connect_error} and
leaves that socket disconnected, where a closed connection would make it
reconnect, and send the same payload, again and again. (The reference server
has no such cap: a CONNECT is bounded only by C{maxHttpBufferSize}, past which
the transport is closed.) The payload goes to the connect handlers and is not
kept afterwards (L{SocketHandshake} has no C{auth}); a few KiB leave room for
what connection-state recovery puts there (C{{pid, offset}}).

Namespace state, as the reference server's C{Client}: a client may send
CONNECT for a namespace it has no socket in (none connected, none being
accepted), and anything but CONNECT for one it is connected to. Any other
packet (an event or ack before CONNECT or after the client's DISCONNECT, a
second CONNECT) closes the Engine.IO connection.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from privydrop.engineio.interface import CloseKind, EngineConnection, EngineSid, Message
from privydrop.logs import levels as loglevels
from privydrop.logs.levels import Logger
from privydrop.logs.throttle import WarningThrottle
from privydrop.settings import SocketIOSettings
from privydrop.socketio.acks import PendingAcks
from privydrop.socketio.adapter import Adapter, LocalAdapter
from privydrop.socketio.client import CLOSE_FORCED, NO_NAMESPACES, Client
from privydrop.socketio.ids import SocketId, new_socket_id
from privydrop.socketio.namespace import Namespace
from privydrop.socketio.packets import (
    MAIN_NAMESPACE,
    AuthTooLarge,
    Packet,
    PacketLimits,
    PacketType,
    SocketIOProtocolError,
    decode,
    encode,
)
from privydrop.socketio.recovery import (
    LogStatus,
    RecoveryBackend,
    RecoverySettings,
    RemoteClaim,
    RemoteLog,
    new_pid,
)
from privydrop.socketio.sockets import NO_CLIENT, Socket, SocketHandshake, SocketState

_log = Logger()
_EVENT = PacketType.EVENT

#: Engine.IO close reason when a client sends an invalid packet.
CLOSE_PARSE_ERROR = "parse error"
#: Engine.IO close reason when no namespace was joined within connect_timeout_ms.
CLOSE_CONNECT_TIMEOUT = "connect timeout"
#: Engine.IO close reason of a connection whose socket another one took over.
CLOSE_TAKEN_OVER = "taken over"
#: Disconnect reason of a detached socket whose client came back with a
#: private session id but an offset no longer known.
REASON_NOT_RECOVERED = "recovery failed"

#: Longest offset a client may present (ours are far shorter).
MAX_OFFSET_LENGTH = 64

#: What L{SocketIOServer._recover} found for a CONNECT with a pid.
_RESUMED = "resumed"
_ENDED = "ended"
_NOT_HERE = "not here"

#: Engine.IO ends that leave sockets recoverable.
_RECOVERABLE = frozenset({CloseKind.LOST, CloseKind.SHUTDOWN})
#: The CONNECT_ERROR message for a CONNECT to a namespace nobody registered.
INVALID_NAMESPACE = "Invalid namespace"
#: The CONNECT_ERROR message for a CONNECT payload over max_auth_bytes.
AUTH_TOO_LARGE = "auth payload too large"
#: Engine.IO close reason when a packet does not fit its namespace's state
#: (the reference server's, which closes with C{"forced server close"}).
CLOSE_INVALID_STATE = CLOSE_FORCED


class InvalidState(SocketIOProtocolError):
    """A well-formed packet that the state of its namespace does not allow."""


def _done_recovering(result: Any, client: Client, name: str) -> Any:
    """The claim of a socket for C{client} in namespace C{name} is over
    (recovered, or a new socket made): a CONNECT is checked as usual again."""
    rest = client.recovering - {name}
    client.recovering = rest if rest else NO_NAMESPACES
    return result


class SocketIOServer:
    """A Socket.IO v5 server; implements L{EngineApplication}.

    @ivar recoveries: sockets resumed by a recovery, takeovers included.
    @ivar takeovers: recoveries of a socket whose old connection was still open.

    @param clock: for the connect timeout and ack timeouts.
    @param settings: the Socket.IO limits.
    @param adapter: rooms and delivery; a new L{LocalAdapter} when None.
    """

    def __init__(
        self,
        clock: IReactorTime,
        settings: SocketIOSettings,
        adapter: Adapter | None = None,
    ) -> None:
        self._clock = clock
        self._settings = settings
        self._limits = PacketLimits(
            max_attachments=settings.max_attachments,
            max_ack_id_digits=settings.max_ack_id_digits,
            max_packet_bytes=settings.max_packet_bytes,
            max_auth_bytes=settings.max_auth_bytes,
        )
        self._adapter: Adapter = adapter if adapter is not None else LocalAdapter()
        self._adapter.attach(self)
        self._namespaces: dict[str, Namespace] = {}
        self._clients: dict[EngineSid, Client] = {}
        self._warnings = WarningThrottle(clock, settings.rejection_log_interval_s)
        self._recovery = (
            RecoverySettings(
                window_s=settings.recovery_window_ms / 1000.0,
                max_packets=settings.recovery_max_packets,
                max_bytes=settings.recovery_max_bytes,
            )
            if settings.recovery_enabled
            else None
        )
        self.recoveries = 0
        self.takeovers = 0
        #: Recoveries of sockets another process held (in recoveries too).
        self.remote_recoveries = 0
        #: Remote recoveries whose old process did not hand its log over.
        self.handover_lost = 0
        #: Sockets this process let go to another one that recovered them.
        self.handed_over = 0
        self._backend: RecoveryBackend | None = None
        self.of(MAIN_NAMESPACE)

    @property
    def adapter(self) -> Adapter:
        return self._adapter

    @property
    def warnings(self) -> WarningThrottle:
        """The throttle of every log line about this server's clients; counts
        the rejections among them by cause."""
        return self._warnings

    def of(self, name: str) -> Namespace:
        """The namespace called C{name}, registered on first use.

        @raise ValueError: the name does not start with C{"/"}.
        """
        if not isinstance(name, str) or not name.startswith("/"):
            raise ValueError("namespace names start with '/'")
        namespace = self._namespaces.get(name)
        if namespace is None:
            namespace = self._namespaces[name] = Namespace(
                name, self._adapter, self._warnings, self._recovery
            )
            if self._recovery is not None:
                namespace.backend = self._backend
        return namespace

    def set_recovery_backend(self, backend: RecoveryBackend | None) -> None:
        """Recover sockets across processes through C{backend} (ignored
        when recovery is off)."""
        if self._recovery is None:
            return
        self._backend = backend
        for namespace in self._namespaces.values():
            namespace.backend = backend

    def wait_no_detached(self) -> Deferred[Any]:
        """Fires once no socket of any namespace waits for its client here."""
        return DeferredList(
            [ns.wait_no_detached() for ns in self._namespaces.values()], consumeErrors=True
        )

    def adopt(
        self,
        namespace: str,
        socket_id: str,
        pid: str,
        rooms: Mapping[str, Mapping[str, str]],
        window_s: float,
    ) -> bool:
        """Keep, detached, a socket whose process died, in its rooms, until
        its window ends (C{window_s} from now) or its client recovers it.

        @return: False when recovery is off or the socket is here already.
        """
        ns = self._namespaces.get(namespace)
        if ns is None or ns.recovery is None or ns._local_socket(SocketId(socket_id)) is not None:
            return False
        socket = self._new_socket(SocketId(socket_id), ns, NO_CLIENT, None, pid)
        ns._register(socket)
        for room, members in rooms.items():
            socket.join(room, members)
        socket._adopt(window_s)
        return True

    def connection_count(self) -> int:
        """Clients (Engine.IO connections) currently open on this process."""
        return len(self._clients)

    def socket_count(self) -> int:
        """Connected sockets over all namespaces of this process."""
        return sum(len(ns.sockets) for ns in self._namespaces.values())

    def disconnect_all(self) -> None:
        """Disconnect every client (e.g. on shutdown)."""
        for client in list(self._clients.values()):
            client.disconnect_all()

    def detached_count(self) -> int:
        """Sockets over all namespaces waiting for their client to recover them."""
        return sum(ns.detached_count() for ns in self._namespaces.values())

    def end_all_detached(self, reason: str = "server shutting down") -> int:
        """End every detached socket now, in every namespace (when nobody
        could recover them any more, as on a shutdown).

        @return: how many were ended.
        """
        return sum(ns.end_all_detached(reason) for ns in list(self._namespaces.values()))

    # SocketDelivery (called by the adapter)

    def deliver(
        self, namespace: str, socket_id: SocketId, messages: Sequence[Message]
    ) -> None:
        ns = self._namespaces.get(namespace)
        if ns is None:
            return
        socket = ns._all.get(socket_id)  # L{Namespace._local_socket}, inlined
        if socket is not None:
            socket._deliver(messages)

    def server_event(self, namespace: str, event: str, args: Sequence[Any]) -> None:
        ns = self._namespaces.get(namespace)
        if ns is not None:
            ns._server_event(event, args)

    def hand_over(
        self, namespace: str, pid: str, offset: str, node: str
    ) -> tuple[str, list[Sequence[Message]]]:
        ns = self._namespaces.get(namespace)
        socket = None if ns is None else ns._recoverable(pid)
        if socket is None:
            return LogStatus.MISSING.value, []
        events = None
        if isinstance(offset, str) and len(offset) <= MAX_OFFSET_LENGTH:
            events = socket._handed_over(offset)
        if socket.state is SocketState.CONNECTED:
            # Its client came back elsewhere before this process noticed
            # the loss: the old connection goes, quietly.
            self._take_over(socket)
            self.takeovers += 1
        socket._release(node)
        self.handed_over += 1
        _log.info(
            "socket {sid} handed over to node {node}",
            sid=socket.id,
            node=node,
        )
        if events is None:
            return LogStatus.OFFSET_UNKNOWN.value, []
        return LogStatus.FOUND.value, events

    # EngineApplication

    def on_open(self, connection: EngineConnection) -> None:
        client = Client(self, connection, self._limits)
        self._clients[connection.sid] = client
        client.connect_timer = self._clock.callLater(
            self._settings.connect_timeout_ms / 1000.0, self._connect_timeout, client
        )

    def on_message(self, connection: EngineConnection, message: Message) -> None:
        client = self._clients.get(connection.sid)
        if client is None or client.closed:
            return
        try:
            reassembler = client.reassembler
            if (
                message.__class__ is str
                and message[:2] == "2["
                and reassembler.pending_header is None
            ):
                # The relay's hot path: an event of the main namespace
                # without an ack id, dispatched without L{BinaryReassembler.feed}
                # and L{_on_packet} (which do the same for it).
                packet = decode(message, reassembler.limits)
                socket = client.sockets.get(MAIN_NAMESPACE)
                if socket is not None:
                    socket.namespace._dispatch(socket, packet)
                    return
            else:
                fed = reassembler.feed(message)
                if fed is None:
                    return
                packet = fed
            self._on_packet(client, packet)
        except AuthTooLarge as e:
            self._refuse_auth(client, e.namespace)
        except SocketIOProtocolError as e:
            self._warnings.warn(
                _log,
                str(e),
                "closing client {engine_sid}: {error} ({suppressed} similar not logged)",
                engine_sid=connection.sid,
                error=str(e),
            )
            self._close_client(
                client, CLOSE_INVALID_STATE if isinstance(e, InvalidState) else CLOSE_PARSE_ERROR
            )
        except Exception:
            _log.failure("error handling a packet from {engine_sid}", engine_sid=connection.sid)
            self._close_client(client, CLOSE_PARSE_ERROR)

    def on_close(self, connection: EngineConnection, reason: str) -> None:
        client = self._clients.get(connection.sid)
        if client is None or client.connection is not connection:
            return
        self._drop_client(client, reason, connection.close_kind in _RECOVERABLE)

    # Internals

    def _drop_client(self, client: Client, reason: str, recoverable: bool = False) -> None:
        if self._clients.get(client.connection.sid) is client:
            del self._clients[client.connection.sid]
        client.close_sockets(reason, recoverable)

    def _close_client(self, client: Client, reason: str) -> None:
        self._drop_client(client, reason)
        client.connection.close(reason)

    def _connect_timeout(self, client: Client) -> None:
        client.connect_timer = None
        if client.closed or client.sockets:
            return
        self._warnings.info(
            _log,
            "connect-timeout",
            "closing client {engine_sid}: no namespace joined within {timeout_ms} ms",
            engine_sid=client.connection.sid,
            timeout_ms=self._settings.connect_timeout_ms,
        )
        self._close_client(client, CLOSE_CONNECT_TIMEOUT)

    def _on_packet(self, client: Client, packet: Packet) -> None:
        packet_type, name = packet[0], packet[1]
        if packet_type is _EVENT:
            # The usual packet first.
            socket = client.sockets.get(name)
            if socket is not None:
                socket.namespace._dispatch(socket, packet)
                return
        if packet_type is PacketType.CONNECT:
            if name in client.sockets or name in client.connecting or name in client.recovering:
                raise InvalidState("CONNECT to a namespace already connected")
            self._connect(client, packet)
            return
        if packet_type is PacketType.CONNECT_ERROR:
            raise SocketIOProtocolError("CONNECT_ERROR sent by a client")
        socket = client.sockets.get(name)
        if socket is None:
            # Before CONNECT, while connect handlers run, or after a
            # DISCONNECT: the reference server closes the connection too.
            raise InvalidState("packet for a namespace not connected")
        if packet_type is PacketType.EVENT or packet_type is PacketType.BINARY_EVENT:
            socket._on_event(packet)
        elif packet_type is PacketType.ACK or packet_type is PacketType.BINARY_ACK:
            socket._on_ack(packet)
        else:  # DISCONNECT
            socket._on_close("client namespace disconnect")

    def _refuse_auth(self, client: Client, name: str) -> None:
        """Answer a CONNECT whose payload is over C{max_auth_bytes}."""
        if name not in self._namespaces:
            # The answer to any CONNECT of an unknown namespace.
            message = INVALID_NAMESPACE
        else:
            message = AUTH_TOO_LARGE
            self._warnings.warn(
                _log,
                "max_auth_bytes",
                "refused a CONNECT of client {engine_sid} to {namespace}: {limit} exceeded",
                engine_sid=client.connection.sid,
                namespace=name,
                limit="max_auth_bytes",
            )
        client.send(encode(Packet(PacketType.CONNECT_ERROR, name, {"message": message})))

    def _connect(self, client: Client, packet: Packet) -> None:
        name = packet.namespace
        namespace = self._namespaces.get(name)
        if namespace is None:
            client.send(
                encode(
                    Packet(PacketType.CONNECT_ERROR, name, {"message": INVALID_NAMESPACE})
                )
            )
            return
        auth: Mapping[str, Any] = packet.data if packet.data is not None else {}
        engine = client.connection.handshake
        handshake = SocketHandshake(
            headers=engine.headers,
            address=engine.remote_address,
            query=engine.query,
            issued_ms=int(self._clock.seconds() * 1000),
            url=engine.url,
            secure=engine.secure,
        )
        if namespace.recovery is not None and "pid" in auth:
            outcome = self._recover(client, namespace, auth, handshake)
            if outcome is _RESUMED:
                return
            pid, offset = auth.get("pid"), auth.get("offset")
            if (
                outcome is _NOT_HERE
                and self._backend is not None
                and isinstance(pid, str)
                and isinstance(offset, str)
                and len(offset) <= MAX_OFFSET_LENGTH
            ):
                client.recovering = client.recovering | {name}
                Deferred.fromCoroutine(
                    self._recover_remote(client, namespace, auth, handshake, pid, offset)
                ).addBoth(_done_recovering, client, name).addErrback(
                    lambda failure: _log.failure("recovering a socket failed", failure=failure)
                )
                return
        self._connect_new(client, namespace, auth, handshake)

    def _new_socket(
        self,
        socket_id: SocketId,
        namespace: Namespace,
        client: Any,
        handshake: SocketHandshake | None,
        pid: str | None,
    ) -> Socket:
        return Socket(
            socket_id,
            namespace,
            client,
            handshake if handshake is not None else SocketHandshake({}, "", {}, 0, "", False),
            self._adapter,
            PendingAcks(self._clock, self._settings.max_pending_acks),
            self._settings.max_rooms_per_socket,
            self._clock,
            self._settings.connect_answer_gap_ms / 1000.0,
            namespace.recovery,
            pid,
        )

    def _connect_new(
        self,
        client: Client,
        namespace: Namespace,
        auth: Mapping[str, Any],
        handshake: SocketHandshake,
    ) -> None:
        if client.closed:
            return
        name = namespace.name
        socket_id = new_socket_id()
        while namespace._local_socket(socket_id) is not None:
            socket_id = new_socket_id()
        socket = self._new_socket(
            socket_id,
            namespace,
            client,
            handshake,
            None if namespace.recovery is None else new_pid(socket_id),
        )
        client.connecting[name] = socket
        d = namespace._begin(socket, auth)
        d.addCallback(self._connected, client, socket)
        d.addErrback(self._connect_failed, client, socket)

    def _recover(
        self,
        client: Client,
        namespace: Namespace,
        auth: Mapping[str, Any],
        handshake: SocketHandshake,
    ) -> str:
        """Resume the socket C{auth} names, if this process holds it.

        @return: L{_RESUMED}; L{_ENDED} when this process held it but what
            the client missed is unknown (the socket left; the caller makes
            a new one); L{_NOT_HERE} when no socket here is recoverable
            under that pid (another process may hold it).
        """
        pid, offset = auth.get("pid"), auth.get("offset")
        if not isinstance(pid, str):
            return _NOT_HERE
        socket = namespace._recoverable(pid)
        if socket is None:
            return _NOT_HERE
        if not isinstance(offset, str) or len(offset) > MAX_OFFSET_LENGTH:
            missed = None
        else:
            missed = socket._missed(offset)
        if missed is None:
            # The client is back but what it missed is unknown: it gets a new
            # socket, so the old one leaves now rather than at its window's end.
            self._end_replaced(socket)
            return _ENDED
        if socket.state is SocketState.CONNECTED:
            self._take_over(socket)
            self.takeovers += 1
        socket._resume(client, handshake, missed)
        if namespace.backend is not None:
            namespace.backend.resumed(socket)
        self.recoveries += 1
        client.sockets[namespace.name] = socket
        client.cancel_connect_timer()
        _log.info(
            "socket {sid} recovered in {namespace} ({missed} messages replayed)",
            sid=socket.id,
            namespace=namespace.name,
            missed=len(missed),
        )
        return _RESUMED

    async def _recover_remote(
        self,
        client: Client,
        namespace: Namespace,
        auth: Mapping[str, Any],
        handshake: SocketHandshake,
        pid: str,
        offset: str,
    ) -> None:
        """Recover a socket another process held (or kept for a dead one);
        a new socket when it cannot be."""
        assert self._backend is not None
        try:
            claim: RemoteClaim | None = await self._backend.claim(namespace.name, pid)
        except Exception:  # noqa: BLE001 - the client gets a new socket
            _log.failure("claiming socket of pid for recovery failed")
            claim = None
        if claim is None or namespace._local_socket(SocketId(claim.socket_id)) is not None:
            self._connect_new(client, namespace, auth, handshake)
            return
        socket = self._new_socket(SocketId(claim.socket_id), namespace, client, handshake, pid)
        namespace._register(socket)
        # Its rooms here first: their members' processes send to this one
        # from now on, and what they send waits (CONNECTING) behind the log.
        for room, members in claim.rooms.items():
            socket.join(room, members)
        try:
            log: RemoteLog = await self._backend.fetch_log(namespace.name, claim, pid, offset)
        except Exception:  # noqa: BLE001 - recovered without the log
            _log.failure("fetching the log of socket {sid} failed", sid=claim.socket_id)
            log = RemoteLog(LogStatus.MISSING)
        if log.status is LogStatus.OFFSET_UNKNOWN:
            # What the client missed is unknown: the socket leaves (its
            # peers are told) and the client gets a new one.
            socket._end_unrecovered(REASON_NOT_RECOVERED)
            self._connect_new(client, namespace, auth, handshake)
            return
        if log.status is LogStatus.MISSING:
            self.handover_lost += 1
            _log.warn(
                "socket {sid} recovered without the log of node {node} (no answer within "
                "the handover timeout): what was sent to it there is lost",
                sid=claim.socket_id,
                node=claim.old_node,
            )
        socket._resume_remote(client, handshake, log.events)
        self.recoveries += 1
        self.remote_recoveries += 1
        if client.closed:
            # Gone again while it was recovered: it waits for its client here.
            socket._detach("transport close")
            return
        client.sockets[namespace.name] = socket
        client.cancel_connect_timer()
        _log.info(
            "socket {sid} recovered in {namespace} from node {node} ({missed} messages replayed)",
            sid=socket.id,
            namespace=namespace.name,
            node=claim.old_node,
            missed=len(log.events),
        )

    def _take_over(self, socket: Socket) -> None:
        """The client of a still connected socket came back on a new
        connection: close the old one without the socket leaving."""
        old = socket._client
        old._forget(socket)
        # Sockets of other namespaces on that connection leave, as when a
        # server closes a connection.
        self._close_client(old, CLOSE_TAKEN_OVER)
        if loglevels.debug:
            _log.debug("socket {sid} taken over by a new connection", sid=socket.id)

    def _end_replaced(self, socket: Socket) -> None:
        if socket.state is SocketState.CONNECTED:
            old = socket._client
            socket.disconnect()
            if not old.sockets and not old.connecting:
                self._close_client(old, REASON_NOT_RECOVERED)
        else:
            socket._on_close(REASON_NOT_RECOVERED)

    def _connected(self, accepted: bool, client: Client, socket: Socket) -> None:
        name = socket.namespace.name
        if client.connecting.get(name) is socket:
            client.done_connecting(name)
        if not accepted:
            return
        if client.closed:
            socket._on_close("transport close")
            return
        client.sockets[name] = socket
        client.cancel_connect_timer()
        # Per-connection lifecycle is debug (room joins and leaves are info):
        # building these events is a measurable share of a join's CPU
        # (docs/performance.md).
        if loglevels.debug:
            self._warnings.lifecycle(
                LogLevel.debug,
                _log,
                "connected",
                "socket {sid} joined namespace {namespace}",
                sid=socket.id,
                namespace=name,
            )

    def _connect_failed(self, failure: Failure, client: Client, socket: Socket) -> None:
        _log.failure(
            "connecting socket {sid} failed", failure=failure, sid=socket.id
        )
        socket._on_close("server error")
        if not client.closed:
            self._close_client(client, "server error")
