"""The adapter seam: room membership and delivery of packets to sockets.

An adapter keeps, per namespace, which of this process's sockets are in which
rooms, and delivers packets to sockets chosen by room or by id. The in-process
L{LocalAdapter} below is the default; the cluster adapter
(L{privydrop.cluster}) implements the same methods and, in addition, forwards
broadcasts and sends to other processes, each of which delivers to its own
sockets. The Socket.IO layer owns this interface and never imports the
cluster package.

L{LocalAdapter} keeps two indexes per namespace, in step: room -> socket ids
(to find a broadcast's recipients) and socket id -> rooms (to answer
C{rooms_of} and to clean up on disconnect without scanning every room).

Tracked rooms. A room joined with its members known (C{add(...,
members=...)}: who is in it and which node holds each, as the store
answered the join) is I{tracked}: an adapter spanning processes then sends
what is addressed to the room only to the nodes holding its members, and
tells them when a socket of its own enters or leaves it. The in-process
adapter has nothing to track: every member is local. Other methods serve
tracked rooms: L{Adapter.send_to_members} (explicit recipients, e.g. the
members a store operation answered), L{Adapter.note_members} (a fresher
list), L{Adapter.hold} (a socket whose join is in flight), and
L{Adapter.server_event} (a call to the upper layer of one node, e.g. "this
socket left its room through the REST API").

Adapters know Socket.IO packets (they encode a broadcast once for all its
recipients) but nothing of sockets as objects, handlers, or transports: they
hand encoded messages to a L{SocketDelivery}.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Protocol, Sequence

from privydrop.socketio.ids import RoomId, SocketId
from privydrop.socketio.packets import Message, Packet, encode


class SocketDelivery(Protocol):
    """What an adapter delivers to: the sockets connected to this process."""

    def deliver(
        self, namespace: str, socket_id: SocketId, messages: Sequence[Message]
    ) -> None:
        """Send already encoded messages (one packet) to one local socket.

        Does nothing when the socket is not (or no longer) connected here.
        """

    def server_event(self, namespace: str, event: str, args: Sequence[Any]) -> None:
        """Hand a server event (L{Adapter.server_event}) to the namespace's handler."""

    def hand_over(
        self, namespace: str, pid: str, offset: str, node: str
    ) -> tuple[str, list[Sequence[Message]]]:
        """Another process (C{node}) recovered the socket C{pid} names: give
        it the events after C{offset} and let the socket go here.

        @return: a L{privydrop.socketio.recovery.LogStatus} value and the events.
        """


#: Members of a room and the node holding each (C{""}: unknown, or this
#: process for the in-process adapter).
RoomMembers = Mapping[SocketId, str]


class Adapter(Protocol):
    """Rooms and delivery for all namespaces of one server."""

    def attach(self, delivery: SocketDelivery) -> None:
        """Called once by the server, before any other method."""

    def add_socket(self, namespace: str, socket_id: SocketId) -> None:
        """A socket connected to the namespace (it is in no room yet)."""

    def remove_socket(self, namespace: str, socket_id: SocketId) -> None:
        """A socket left the namespace: forget it and take it out of every room."""

    def move_socket(self, namespace: str, socket_id: SocketId, node: str | None) -> None:
        """A socket left this process without leaving its rooms (recovered
        on node C{node}, or ended by another process): forget it here
        without telling anyone it left; rooms still tracked here note it on
        C{node}."""

    def add(
        self,
        namespace: str,
        socket_id: SocketId,
        room: RoomId,
        members: RoomMembers | None = None,
    ) -> None:
        """Put a connected socket into a room.

        With C{members} the room is tracked (module docstring); held
        traffic for the socket (L{hold}) that was addressed to this room is
        delivered now.
        """

    def remove(self, namespace: str, socket_id: SocketId, room: RoomId) -> None:
        """Take a socket out of a room (nothing happens if it is not in it)."""

    def rooms_of(self, namespace: str, socket_id: SocketId) -> frozenset[RoomId]:
        """The rooms a local socket is in."""

    def members(self, namespace: str, room: RoomId) -> RoomMembers:
        """The room's members as known here: the local ones, and for a
        tracked room the remote ones with their nodes."""

    def note_members(self, namespace: str, room: RoomId, members: RoomMembers) -> None:
        """A fresher list of a tracked room's members (ignored for a room
        without local members)."""

    def send_to_members(
        self,
        packet: Packet,
        room: RoomId,
        members: RoomMembers,
        departed: SocketId | None = None,
    ) -> None:
        """Deliver a packet to these members of C{room}, each once (those
        still connected and in the room where they are held).

        @param departed: a socket that left the room; nodes that track the
            room forget it.
        """

    def hold(self, namespace: str, socket_id: SocketId) -> None:
        """A local socket's join is in flight: traffic of a tracked room
        addressed to it before it is in that room waits (bounded) for
        L{add} instead of being dropped."""

    def release(self, namespace: str, socket_id: SocketId) -> None:
        """The join is over without L{add}: drop what was held."""

    def server_event(
        self, node: str, namespace: str, event: str, args: Sequence[Any]
    ) -> None:
        """Call the server-event handler C{event} of C{namespace} on the
        process with node id C{node} (this one included) with C{args}
        (JSON values)."""

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


class _NamespaceRooms:
    __slots__ = ("rooms", "sids")

    def __init__(self) -> None:
        self.rooms: dict[RoomId, set[SocketId]] = {}
        # The rooms of each socket: a tuple, replaced on a join or leave. A
        # socket is in a room or two (max_rooms_per_socket); an empty set
        # alone would cost several times a one-room tuple.
        self.sids: dict[SocketId, tuple[RoomId, ...]] = {}


class LocalAdapter:
    """Implements L{Adapter} for one process."""

    def __init__(self) -> None:
        self._namespaces: dict[str, _NamespaceRooms] = {}
        self._delivery: SocketDelivery | None = None

    def attach(self, delivery: SocketDelivery) -> None:
        self._delivery = delivery

    def _ns(self, namespace: str) -> _NamespaceRooms:
        rooms = self._namespaces.get(namespace)
        if rooms is None:
            rooms = self._namespaces[namespace] = _NamespaceRooms()
        return rooms

    def add_socket(self, namespace: str, socket_id: SocketId) -> None:
        self._ns(namespace).sids.setdefault(socket_id, ())

    def remove_socket(self, namespace: str, socket_id: SocketId) -> None:
        ns = self._namespaces.get(namespace)
        if ns is None:
            return
        joined = ns.sids.pop(socket_id, None)
        if not joined:
            return
        for room in joined:
            self._discard(ns, socket_id, room)

    def move_socket(self, namespace: str, socket_id: SocketId, node: str | None) -> None:
        self.remove_socket(namespace, socket_id)

    def add(
        self,
        namespace: str,
        socket_id: SocketId,
        room: RoomId,
        members: RoomMembers | None = None,
    ) -> None:
        ns = self._ns(namespace)
        joined = ns.sids.get(socket_id)
        if joined is None:
            # Only connected (added) sockets have rooms; a late join from a
            # handler that outlived its socket must not leave a stray entry.
            return
        if room not in joined:
            ns.sids[socket_id] = (*joined, room)
        ns.rooms.setdefault(room, set()).add(socket_id)

    def remove(self, namespace: str, socket_id: SocketId, room: RoomId) -> None:
        ns = self._namespaces.get(namespace)
        if ns is None:
            return
        joined = ns.sids.get(socket_id)
        if joined is not None and room in joined:
            ns.sids[socket_id] = tuple([r for r in joined if r != room])
        self._discard(ns, socket_id, room)

    @staticmethod
    def _discard(ns: _NamespaceRooms, socket_id: SocketId, room: RoomId) -> None:
        members = ns.rooms.get(room)
        if members is None:
            return
        members.discard(socket_id)
        if not members:
            del ns.rooms[room]

    def rooms_of(self, namespace: str, socket_id: SocketId) -> frozenset[RoomId]:
        ns = self._namespaces.get(namespace)
        if ns is None:
            return frozenset()
        return frozenset(ns.sids.get(socket_id, ()))

    def room_members(self, namespace: str, room: RoomId) -> frozenset[SocketId]:
        """The local sockets in a room (for tests and diagnostics)."""
        ns = self._namespaces.get(namespace)
        if ns is None:
            return frozenset()
        return frozenset(ns.rooms.get(room, ()))

    def has_members(self, namespace: str, room: RoomId) -> bool:
        """Whether a local socket is in the room."""
        ns = self._namespaces.get(namespace)
        return ns is not None and room in ns.rooms

    def in_room(self, namespace: str, socket_id: SocketId, room: RoomId) -> bool:
        """Whether a local socket is in the room."""
        ns = self._namespaces.get(namespace)
        return ns is not None and socket_id in ns.rooms.get(room, ())

    def members(self, namespace: str, room: RoomId) -> RoomMembers:
        return {sid: "" for sid in self.room_members(namespace, room)}

    def note_members(self, namespace: str, room: RoomId, members: RoomMembers) -> None:
        """Every member is local: nothing to learn."""

    def send_to_members(
        self,
        packet: Packet,
        room: RoomId,
        members: RoomMembers,
        departed: SocketId | None = None,
    ) -> None:
        ns = self._namespaces.get(packet.namespace)
        delivery = self._delivery
        if ns is None or delivery is None:
            return
        present = ns.rooms.get(room)
        if not present:
            return
        recipients = [sid for sid in members if sid in present]
        if not recipients:
            return
        messages = encode(packet)
        for sid in recipients:
            delivery.deliver(packet.namespace, sid, messages)

    def hold(self, namespace: str, socket_id: SocketId) -> None:
        """Local deliveries happen at once: nothing is ever in flight."""

    def release(self, namespace: str, socket_id: SocketId) -> None:
        """Nothing is held."""

    def server_event(
        self, node: str, namespace: str, event: str, args: Sequence[Any]
    ) -> None:
        """Every socket is here: the event is handled here, now."""
        if self._delivery is not None:
            self._delivery.server_event(namespace, event, args)

    def _recipients(
        self, ns: _NamespaceRooms, rooms: frozenset[RoomId]
    ) -> Iterable[SocketId]:
        if not rooms:
            return list(ns.sids)
        if len(rooms) == 1:
            (room,) = rooms
            return list(ns.rooms.get(room, ()))
        found: set[SocketId] = set()
        for room in rooms:
            found.update(ns.rooms.get(room, ()))
        return found

    def broadcast(
        self,
        packet: Packet,
        rooms: frozenset[RoomId],
        exclude: frozenset[SocketId],
    ) -> None:
        ns = self._namespaces.get(packet.namespace)
        delivery = self._delivery
        if ns is None or delivery is None:
            return
        recipients = [sid for sid in self._recipients(ns, rooms) if sid not in exclude]
        if not recipients:
            return
        # Encoded once, whatever the number of recipients.
        messages = encode(packet)
        for sid in recipients:
            delivery.deliver(packet.namespace, sid, messages)

    def send_to_socket(
        self,
        packet: Packet,
        socket_id: SocketId,
        only_if_in_room: RoomId | None = None,
    ) -> None:
        namespace = packet[1]
        ns = self._namespaces.get(namespace)
        delivery = self._delivery
        if ns is None or delivery is None:
            return
        joined = ns.sids.get(socket_id)
        if joined is None:
            return
        if only_if_in_room is not None and only_if_in_room not in joined:
            return
        delivery.deliver(namespace, socket_id, encode(packet))
