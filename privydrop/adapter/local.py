"""The in-process adapter: rooms and delivery for one process's sockets.

Two indexes per namespace, kept in step: room -> socket ids (to find a
broadcast's recipients) and socket id -> rooms (to answer C{rooms_of} and
to clean up on disconnect without scanning every room).
"""

from __future__ import annotations

from typing import Iterable

from privydrop.adapter.interface import SocketDelivery
from privydrop.socketio.ids import RoomId, SocketId
from privydrop.socketio.packets import Packet, encode


class _NamespaceRooms:
    __slots__ = ("rooms", "sids")

    def __init__(self) -> None:
        self.rooms: dict[RoomId, set[SocketId]] = {}
        self.sids: dict[SocketId, set[RoomId]] = {}


class LocalAdapter:
    """Implements L{privydrop.adapter.interface.Adapter} for one process."""

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
        self._ns(namespace).sids.setdefault(socket_id, set())

    def remove_socket(self, namespace: str, socket_id: SocketId) -> None:
        ns = self._namespaces.get(namespace)
        if ns is None:
            return
        joined = ns.sids.pop(socket_id, None)
        if not joined:
            return
        for room in joined:
            self._discard(ns, socket_id, room)

    def add(self, namespace: str, socket_id: SocketId, room: RoomId) -> None:
        ns = self._ns(namespace)
        joined = ns.sids.get(socket_id)
        if joined is None:
            # Only connected (added) sockets have rooms; a late join from a
            # handler that outlived its socket must not leave a stray entry.
            return
        joined.add(room)
        ns.rooms.setdefault(room, set()).add(socket_id)

    def remove(self, namespace: str, socket_id: SocketId, room: RoomId) -> None:
        ns = self._namespaces.get(namespace)
        if ns is None:
            return
        joined = ns.sids.get(socket_id)
        if joined is not None:
            joined.discard(room)
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
        ns = self._namespaces.get(packet.namespace)
        delivery = self._delivery
        if ns is None or delivery is None:
            return
        joined = ns.sids.get(socket_id)
        if joined is None:
            return
        if only_if_in_room is not None and only_if_in_room not in joined:
            return
        delivery.deliver(packet.namespace, socket_id, encode(packet))
