"""The cluster adapter: several processes or hosts share one Redis and route
Socket.IO broadcasts and sends to each other's sockets.

L{ClusterAdapter} implements L{privydrop.socketio.adapter.Adapter}. It keeps
this process's rooms in a L{LocalAdapter} and delivers to this process's
sockets as that does; in addition, every broadcast is published once, and a
send to a socket that is not connected here is published instead of
delivered. It talks to the outside world through two plain callables,
C{publish(channel, payload)} and L{ClusterAdapter.receive}, so the same
adapter runs over Redis (L{privydrop.cluster.pubsub}) or over the in-memory
bus of L{privydrop.cluster.bus} in unit tests. See
L{privydrop.cluster.messages} for channel names and the message format.

Delivery rules on a receiving process: messages whose origin is this node
are ignored (Redis sends a publisher its own messages when it is also
subscribed); a broadcast reaches this process's sockets that are in any of
its rooms (all sockets when it names none), minus its excluded sockets; a
send reaches its socket only when that socket is connected here and, with
C{only_if_in_room}, is in that room. Room names never address sockets.

Failures: a publication that fails or times out is dropped with a warning
(a Redis outage must not block or crash emitters; sockets of this process
keep receiving from each other); a received message that cannot be read is
dropped with a warning. Warnings are throttled per cause.

Scale: every process receives every cluster message of the namespace, and
a send-to-socket is checked against the local socket set by every process.
A broadcast is published even when all members of its rooms are local (no
process knows the others' members); with PrivyDrop's two-peer rooms that is
one PUBLISH per signaling message.
That costs one set lookup per process per message and keeps Redis free of a
socket directory; at a few dozen processes, per-node channels plus a socket
-> node record in the store would cut the fan-out of sends.

What this module must not know: Redis and its connections, PrivyDrop's
events and rules, transports, HTTP.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from typing import Any, Union

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from privydrop.cluster.messages import (
    DEFAULT_CHANNEL_PREFIX,
    DEFAULT_MAX_MESSAGE_BYTES,
    ClusterBroadcast,
    ClusterMessage,
    ClusterMessageError,
    ClusterSend,
    channel_name,
    channel_pattern,
    check_channel_prefix,
    decode_message,
    encode_message,
)
from privydrop.logs.levels import Logger
from privydrop.logs.throttle import WarningThrottle
from privydrop.socketio.adapter import LocalAdapter, SocketDelivery
from privydrop.socketio.ids import RoomId, SocketId
from privydrop.socketio.packets import Message, Packet, encode

_log = Logger()

#: C{publish(channel, payload)}: hands one publication to the transport.
#: Returns a Deferred (its failure means the publication was lost) or None.
Publish = Callable[[str, bytes], Union["Deferred[Any]", None]]

#: Seconds between two warnings of the same cause; the ones in between are
#: counted and the count is reported with the next warning.
WARNING_INTERVAL_S = 60.0


def _describe(failure: Failure) -> str:
    """A failure's message, or its exception's name when the message is empty."""
    return failure.getErrorMessage() or type(failure.value).__name__


def new_node_id() -> str:
    """A random id for this process in the cluster (64 bits, hex)."""
    return secrets.token_hex(8)


class ClusterAdapter:
    """Implements L{privydrop.socketio.adapter.Adapter} for a cluster.

    @ivar node_id: this process's id; it marks what this process publishes.
    @ivar published: publications handed to C{publish} so far.
    @ivar publish_failures: publications that failed or timed out.
    @ivar dropped: received messages dropped because they could not be read.
    """

    def __init__(
        self,
        node_id: str,
        publish: Publish,
        *,
        channel_prefix: str = DEFAULT_CHANNEL_PREFIX,
        clock: IReactorTime | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        """
        @param node_id: unique per process (see L{new_node_id}).
        @param publish: sends a publication to every node
            (L{privydrop.cluster.pubsub.RedisPublisher.publish}, or
            L{privydrop.cluster.bus.MemoryBus.publish}).
        @param channel_prefix: see L{privydrop.cluster.messages}; every node of
            a cluster must use the same one.
        @param clock: for throttling warnings; without one, every warning is logged.
        @param max_message_bytes: received publications larger than this are dropped.
        @raise ValueError: an empty node id or an unusable prefix.
        """
        if not isinstance(node_id, str) or not node_id:
            raise ValueError("node_id must be a non-empty string")
        self.node_id = node_id
        self._publish = publish
        self._prefix = check_channel_prefix(channel_prefix)
        self._max_message_bytes = max_message_bytes
        self._local = LocalAdapter()
        # Which sockets of each namespace are connected (or connecting) here:
        # LocalAdapter answers rooms_of() with an empty set for both an
        # unknown socket and one in no room, and a send must tell them apart.
        self._sockets: dict[str, set[SocketId]] = {}
        self._delivery: SocketDelivery | None = None
        self._warnings = (
            None if clock is None else WarningThrottle(clock, WARNING_INTERVAL_S)
        )
        self.published = 0
        self.publish_failures = 0
        self.dropped = 0
        #: Publications of other nodes handled here (delivered or not).
        self.received = 0
        self._received_waiters: list[tuple[int, Deferred[int]]] = []

    @property
    def channel_prefix(self) -> str:
        """The prefix of every channel this adapter publishes on."""
        return self._prefix

    @property
    def subscription_pattern(self) -> str:
        """The Redis pattern a subscriber must use (C{<prefix>#*})."""
        return channel_pattern(self._prefix)

    # Adapter: membership (this process's sockets only)

    def attach(self, delivery: SocketDelivery) -> None:
        self._delivery = delivery
        self._local.attach(delivery)

    def add_socket(self, namespace: str, socket_id: SocketId) -> None:
        self._sockets.setdefault(namespace, set()).add(socket_id)
        self._local.add_socket(namespace, socket_id)

    def remove_socket(self, namespace: str, socket_id: SocketId) -> None:
        here = self._sockets.get(namespace)
        if here is not None:
            here.discard(socket_id)
            if not here:
                del self._sockets[namespace]
        self._local.remove_socket(namespace, socket_id)

    def add(self, namespace: str, socket_id: SocketId, room: RoomId) -> None:
        self._local.add(namespace, socket_id, room)

    def remove(self, namespace: str, socket_id: SocketId, room: RoomId) -> None:
        self._local.remove(namespace, socket_id, room)

    def rooms_of(self, namespace: str, socket_id: SocketId) -> frozenset[RoomId]:
        """The rooms of a socket connected to this process (other processes'
        sockets are not known here: the answer is empty for them)."""
        return self._local.rooms_of(namespace, socket_id)

    def room_members(self, namespace: str, room: RoomId) -> frozenset[SocketId]:
        """This process's sockets in a room (for tests and diagnostics)."""
        return self._local.room_members(namespace, room)

    def is_local(self, namespace: str, socket_id: SocketId) -> bool:
        """Whether the socket is connected (or connecting) to this process."""
        return socket_id in self._sockets.get(namespace, ())

    # Adapter: delivery

    def broadcast(
        self,
        packet: Packet,
        rooms: frozenset[RoomId],
        exclude: frozenset[SocketId],
    ) -> None:
        """Deliver to this process's sockets, then publish once for the others.

        @raise TypeError: the payload holds something JSON cannot carry.
        """
        messages = tuple(encode(packet))
        self._deliver_broadcast(packet.namespace, rooms, exclude, messages)
        self._send_to_cluster(
            ClusterBroadcast(
                namespace=packet.namespace,
                rooms=rooms,
                exclude=exclude,
                messages=messages,
                origin=self.node_id,
            )
        )

    def send_to_socket(
        self,
        packet: Packet,
        socket_id: SocketId,
        only_if_in_room: RoomId | None = None,
    ) -> None:
        """Deliver here when the socket is connected here, else publish.

        @raise TypeError: the payload holds something JSON cannot carry.
        """
        if self.is_local(packet.namespace, socket_id):
            self._local.send_to_socket(packet, socket_id, only_if_in_room)
            return
        self._send_to_cluster(
            ClusterSend(
                namespace=packet.namespace,
                socket_id=socket_id,
                only_if_in_room=only_if_in_room,
                messages=tuple(encode(packet)),
                origin=self.node_id,
            )
        )

    # Receiving (called by the subscriber: Redis pub/sub or the memory bus)

    def receive(self, channel: str | bytes, payload: bytes | str) -> None:
        """Handle one publication from the cluster. Never raises.

        @param channel: the channel it arrived on.
        @param payload: the publication, as bytes or already decoded text.
        """
        try:
            self._receive(channel, payload)
        except Exception:  # noqa: BLE001 - error boundary: log, drop this message
            _log.failure("delivering a cluster message failed on {channel!r}", channel=channel)

    def _receive(self, channel: str | bytes, payload: bytes | str) -> None:
        if isinstance(channel, bytes):
            channel = channel.decode("utf-8", "replace")
        try:
            message = decode_message(payload, self._max_message_bytes)
        except ClusterMessageError as e:
            self.dropped += 1
            self._warn(
                "unreadable",
                "dropped an unreadable cluster message on {channel}: {error}",
                channel=channel,
                error=str(e),
            )
            return
        if message.origin == self.node_id:
            return
        expected = channel_name(self._prefix, message.namespace)
        if channel != expected:
            self.dropped += 1
            self._warn(
                "misrouted",
                "dropped a cluster message for {namespace} that arrived on {channel}",
                namespace=message.namespace,
                channel=channel,
            )
            return
        if isinstance(message, ClusterBroadcast):
            self._deliver_broadcast(
                message.namespace, message.rooms, message.exclude, message.messages
            )
        else:
            self._deliver_send(message)
        self.received += 1
        if self._received_waiters:
            self._fire_received_waiters()

    def wait_received(self, after: int) -> Deferred[int]:
        """Fires with L{received} once it exceeds C{after}.

        Room membership of a remote broadcast is decided when it arrives, so
        a socket that joins a room here while another node's broadcast to
        that room is still on its way may receive it. Tests that need a
        broadcast to be settled before the next join wait for it with this.
        """
        if self.received > after:
            return succeed(self.received)
        d: Deferred[int] = Deferred()
        self._received_waiters.append((after, d))
        return d

    def _fire_received_waiters(self) -> None:
        ready = [(after, d) for after, d in self._received_waiters if self.received > after]
        if not ready:
            return
        self._received_waiters = [
            (after, d) for after, d in self._received_waiters if self.received <= after
        ]
        for _, d in ready:
            d.callback(self.received)

    # Internals

    def _recipients(
        self, namespace: str, rooms: frozenset[RoomId]
    ) -> Iterable[SocketId]:
        if not rooms:
            return list(self._sockets.get(namespace, ()))
        if len(rooms) == 1:
            (room,) = rooms
            return self._local.room_members(namespace, room)
        found: set[SocketId] = set()
        for room in rooms:
            found.update(self._local.room_members(namespace, room))
        return found

    def _deliver_broadcast(
        self,
        namespace: str,
        rooms: frozenset[RoomId],
        exclude: frozenset[SocketId],
        messages: tuple[Message, ...],
    ) -> None:
        delivery = self._delivery
        if delivery is None or namespace not in self._sockets:
            return
        for socket_id in self._recipients(namespace, rooms):
            if socket_id not in exclude:
                delivery.deliver(namespace, socket_id, messages)

    def _deliver_send(self, message: ClusterSend) -> None:
        delivery = self._delivery
        namespace, socket_id = message.namespace, message.socket_id
        if delivery is None or not self.is_local(namespace, socket_id):
            return
        room = message.only_if_in_room
        if room is not None and room not in self._local.rooms_of(namespace, socket_id):
            return
        delivery.deliver(namespace, socket_id, message.messages)

    def _send_to_cluster(self, message: ClusterMessage) -> None:
        try:
            payload = encode_message(message)
        except ClusterMessageError as e:
            # Delivered locally already; other nodes miss it. A room name with
            # a lone surrogate is the only known way here.
            self.publish_failures += 1
            self._warn(
                "unencodable",
                "could not publish to {namespace}: {error}",
                namespace=message.namespace,
                error=str(e),
            )
            return
        channel = channel_name(self._prefix, message.namespace)
        self.published += 1
        try:
            result = self._publish(channel, payload)
        except Exception:  # noqa: BLE001 - error boundary: log, the message is lost
            self.publish_failures += 1
            _log.failure("publishing on {channel} failed", channel=channel)
            return
        if result is not None:
            result.addErrback(self._publish_failed, channel)

    def _publish_failed(self, failure: Failure, channel: str) -> None:
        self.publish_failures += 1
        self._warn(
            "publish",
            "cluster message on {channel} lost: {error}",
            channel=channel,
            error=_describe(failure),
        )

    def _warn(self, cause: str, fmt: str, **fields: Any) -> None:
        if self._warnings is None:
            _log.warn(fmt, cause=cause, suppressed=0, **fields)
        else:
            self._warnings.warn(_log, cause, fmt, **fields)
