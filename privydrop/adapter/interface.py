"""The adapter seam: room membership and delivery of packets to sockets.

An adapter keeps, per namespace, which of this process's sockets are in which
rooms, and delivers packets to sockets chosen by room or by id. The in-process
L{privydrop.adapter.local.LocalAdapter} is the default; an adapter for several
processes implements the same methods and, in addition, forwards broadcasts
and sends to other processes, each of which delivers to its own sockets.

Adapters know Socket.IO packets (they encode a broadcast once for all its
recipients) but nothing of sockets as objects, handlers, or transports: they
hand encoded messages to a L{SocketDelivery}.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from privydrop.socketio.ids import RoomId, SocketId
from privydrop.socketio.packets import Message, Packet


class SocketDelivery(Protocol):
    """What an adapter delivers to: the sockets connected to this process."""

    def deliver(
        self, namespace: str, socket_id: SocketId, messages: Sequence[Message]
    ) -> None:
        """Send already encoded messages (one packet) to one local socket.

        Does nothing when the socket is not (or no longer) connected here.
        """


class Adapter(Protocol):
    """Rooms and delivery for all namespaces of one server."""

    def attach(self, delivery: SocketDelivery) -> None:
        """Called once by the server, before any other method."""

    def add_socket(self, namespace: str, socket_id: SocketId) -> None:
        """A socket connected to the namespace (it is in no room yet)."""

    def remove_socket(self, namespace: str, socket_id: SocketId) -> None:
        """A socket left the namespace: forget it and take it out of every room."""

    def add(self, namespace: str, socket_id: SocketId, room: RoomId) -> None:
        """Put a connected socket into a room."""

    def remove(self, namespace: str, socket_id: SocketId, room: RoomId) -> None:
        """Take a socket out of a room (nothing happens if it is not in it)."""

    def rooms_of(self, namespace: str, socket_id: SocketId) -> frozenset[RoomId]:
        """The rooms a local socket is in."""

    def broadcast(
        self,
        packet: Packet,
        rooms: frozenset[RoomId],
        exclude: frozenset[SocketId],
    ) -> None:
        """Deliver a packet to every socket of C{packet.namespace} that is in
        any of C{rooms} (all its sockets when C{rooms} is empty), each once,
        except those in C{exclude}."""

    def send_to_socket(
        self,
        packet: Packet,
        socket_id: SocketId,
        only_if_in_room: RoomId | None = None,
    ) -> None:
        """Deliver a packet to one socket of C{packet.namespace}, by id.

        With C{only_if_in_room}, only when that socket is in that room.
        Room names play no part otherwise: a room named like a socket id is
        just a room.
        """
