"""One Engine.IO connection as the Socket.IO server sees it: a client.

A client holds its sockets, one per namespace it connected to (and those
still running connect handlers), the reassembler of its binary packets, and
the timer that closes it when no namespace is joined in time. The server
creates one per Engine.IO session and drops it when the session ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from twisted.internet.interfaces import IDelayedCall

from privydrop.engineio.interface import EngineConnection, Message
from privydrop.logs.client_text import clip
from privydrop.logs.levels import Logger
from privydrop.socketio.errors import ConnectionRefused
from privydrop.socketio.packets import (
    BinaryReassembler,
    Packet,
    PacketLimits,
    PacketType,
    encode,
)

if TYPE_CHECKING:
    from privydrop.socketio.server import SocketIOServer
    from privydrop.socketio.sockets import Socket

_log = Logger()

#: Engine.IO close reason when the server disconnects a client on purpose.
CLOSE_FORCED = "forced server close"


#: No namespace (shared by every client that recovers nothing remotely).
NO_NAMESPACES: frozenset[str] = frozenset()


class Client:
    """One Engine.IO connection and the sockets it has in each namespace."""

    # One per connection: slots keep an idle client small.
    __slots__ = (
        "server",
        "connection",
        "reassembler",
        "sockets",
        "connecting",
        "recovering",
        "closed",
        "connect_timer",
    )

    def __init__(
        self,
        server: "SocketIOServer",
        connection: EngineConnection,
        limits: PacketLimits,
    ) -> None:
        self.server = server
        self.connection = connection
        self.reassembler = BinaryReassembler(limits)
        self.sockets: dict[str, Socket] = {}
        self.connecting: dict[str, Socket] = {}
        #: Namespaces whose socket is being claimed from another process
        #: (they count as connecting: no second CONNECT meanwhile).
        self.recovering: frozenset[str] = NO_NAMESPACES
        self.closed = False
        self.connect_timer: IDelayedCall | None = None

    @property
    def transport_name(self) -> str:
        return self.connection.transport_name

    def send(self, messages: Sequence[Message]) -> None:
        if self.closed:
            return
        if len(messages) == 1:
            self.connection.send(messages[0])
        else:
            self.connection.send_many(messages)

    def refuse(self, socket: Socket, refusal: ConnectionRefused) -> None:
        if self.closed:
            return
        data: dict[str, Any] = {"message": refusal.message}
        if refusal.data is not None:
            data["data"] = refusal.data
        self.server.warnings.info(
            _log,
            "refused",
            "connection to {namespace} refused: {message}",
            namespace=socket.namespace.name,
            message=clip(refusal.message),
        )
        self.send(encode(Packet(PacketType.CONNECT_ERROR, socket.namespace.name, data)))

    def _forget(self, socket: Socket) -> None:
        name = socket.namespace.name
        if self.sockets.get(name) is socket:
            del self.sockets[name]
        if self.connecting.get(name) is socket:
            self.done_connecting(name)

    def done_connecting(self, name: str) -> None:
        """The socket of namespace C{name} is no longer being accepted."""
        connecting = self.connecting
        del connecting[name]
        if not connecting:
            # A dict that held an entry keeps a table for eight: an idle
            # client keeps an empty one instead.
            self.connecting = {}

    def cancel_connect_timer(self) -> None:
        timer, self.connect_timer = self.connect_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def close_sockets(self, reason: str, recoverable: bool = False) -> None:
        """The connection ended: every socket leaves with C{reason}.

        @param recoverable: the connection was lost rather than closed on
            purpose: sockets with recovery on are detached and wait for
            their client instead of leaving.
        """
        self.closed = True
        self.cancel_connect_timer()
        for socket in [*self.connecting.values(), *self.sockets.values()]:
            if recoverable and socket.recoverable:
                socket._detach(reason)
            else:
                socket._on_close(reason)
        self.sockets.clear()
        self.connecting.clear()

    def disconnect_all(self) -> None:
        """Server-side close: tell each namespace, then close the connection."""
        if self.closed:
            return
        for socket in list(self.sockets.values()):
            socket.disconnect()
        self.server._drop_client(self, "server namespace disconnect")
        self.connection.close(CLOSE_FORCED)
