"""The in-process adapter: room indexes and delivery."""

from __future__ import annotations

from typing import Sequence

from privydrop.socketio.adapter import LocalAdapter
from privydrop.socketio.ids import RoomId, SocketId
from privydrop.socketio.packets import Message, Packet, PacketType


class Recorder:
    def __init__(self) -> None:
        self.delivered: list[tuple[str, SocketId, Sequence[Message]]] = []

    def deliver(self, namespace: str, socket_id: SocketId, messages: Sequence[Message]) -> None:
        self.delivered.append((namespace, socket_id, messages))


def adapter_with(*sids: str) -> tuple[LocalAdapter, Recorder]:
    adapter = LocalAdapter()
    recorder = Recorder()
    adapter.attach(recorder)
    for sid in sids:
        adapter.add_socket("/", SocketId(sid))
    return adapter, recorder


def test_removing_socket_leaves_no_empty_rooms() -> None:
    """Rooms vanish with their last member, so memory follows live sockets."""
    adapter, _ = adapter_with("a", "b")
    adapter.add("/", SocketId("a"), RoomId("r1"))
    adapter.add("/", SocketId("a"), RoomId("r2"))
    adapter.add("/", SocketId("b"), RoomId("r1"))
    adapter.remove_socket("/", SocketId("a"))
    assert adapter.room_members("/", RoomId("r1")) == {"b"}
    assert adapter.room_members("/", RoomId("r2")) == frozenset()
    adapter.remove("/", SocketId("b"), RoomId("r1"))
    assert adapter._namespaces["/"].rooms == {}
    adapter.remove_socket("/", SocketId("b"))
    assert adapter._namespaces["/"].sids == {}


def test_join_after_socket_left_is_ignored() -> None:
    """A slow handler joining a room for a socket that already left must not
    leave a ghost member behind."""
    adapter, recorder = adapter_with()
    adapter.add("/", SocketId("gone"), RoomId("r"))
    assert adapter.room_members("/", RoomId("r")) == frozenset()


def test_broadcast_excludes_and_deduplicates() -> None:
    """Each recipient gets one copy, the excluded get none."""
    adapter, recorder = adapter_with("a", "b", "c")
    for sid in "abc":
        adapter.add("/", SocketId(sid), RoomId("r1"))
    adapter.add("/", SocketId("a"), RoomId("r2"))
    adapter.broadcast(
        Packet(PacketType.EVENT, "/", ["x"]),
        frozenset({RoomId("r1"), RoomId("r2")}),
        frozenset({SocketId("b")}),
    )
    assert sorted(sid for _, sid, _ in recorder.delivered) == ["a", "c"]
    assert recorder.delivered[0][2] is recorder.delivered[1][2]


def test_namespaces_are_separate() -> None:
    """Rooms of one namespace are not rooms of another."""
    adapter, recorder = adapter_with("a")
    adapter.add_socket("/other", SocketId("b"))
    adapter.add("/", SocketId("a"), RoomId("r"))
    adapter.add("/other", SocketId("b"), RoomId("r"))
    adapter.broadcast(Packet(PacketType.EVENT, "/other", ["x"]), frozenset({RoomId("r")}), frozenset())
    assert [(ns, sid) for ns, sid, _ in recorder.delivered] == [("/other", "b")]


def test_send_to_socket_is_by_id_never_by_room() -> None:
    """A room named like a socket id receives nothing addressed to the socket."""
    adapter, recorder = adapter_with("victim", "spy")
    adapter.add("/", SocketId("spy"), RoomId("victim"))
    adapter.send_to_socket(Packet(PacketType.EVENT, "/", ["x"]), SocketId("victim"))
    assert [sid for _, sid, _ in recorder.delivered] == ["victim"]


def test_send_to_socket_only_if_in_room() -> None:
    """Delivery conditional on membership, for signaling between peers."""
    adapter, recorder = adapter_with("a")
    packet = Packet(PacketType.EVENT, "/", ["x"])
    adapter.send_to_socket(packet, SocketId("a"), RoomId("r"))
    assert recorder.delivered == []
    adapter.add("/", SocketId("a"), RoomId("r"))
    adapter.send_to_socket(packet, SocketId("a"), RoomId("r"))
    assert [sid for _, sid, _ in recorder.delivered] == ["a"]
