"""The cluster adapter: several processes or hosts share one Redis and route
Socket.IO broadcasts and sends to each other's sockets.

L{ClusterAdapter} implements L{privydrop.socketio.adapter.Adapter}. It keeps
this process's rooms in a L{LocalAdapter} and delivers to this process's
sockets as that does. It talks to the outside world through two plain
callables, C{publish(channel, payload)} and L{ClusterAdapter.receive}, so
the same adapter runs over Redis (L{privydrop.cluster.pubsub}) or over the
in-memory bus of L{privydrop.cluster.bus} in unit tests. See
L{privydrop.cluster.messages} for the channels and the message format.

Where messages go
=================
Each node has a channel of its own. A room joined with its members (what
the store's join answered: each member and the node holding it) is
I{tracked}: for as long as a local socket is in it, this node knows its
remote members and their nodes. So:

  - a broadcast to a tracked room is published once to each node holding
    one of its recipients, naming them (C{to}): the receiving node delivers
    only to those, if still connected there and in the room. A socket that
    enters the room on another node a moment later is not among them, so it
    never receives what was addressed to the room before it was in it;
  - a send to a socket of a tracked room (C{only_if_in_room}) goes to the
    node holding it; to a socket this node does not know in that room, it
    is dropped and counted (L{ClusterAdapter.unroutable}): signaling only
    relays inside a room;
  - when a local socket enters or leaves a tracked room, the nodes holding
    its other members are told (a C{members} message), on the same ordered
    connection as the messages that follow, so they know the newcomer
    before anything it sends arrives.
Members that left are remembered per room (bounded), so a stale list that
arrives late (a join's answer racing a leave) does not bring them back.

A broadcast to a room no local socket tracks, or to a whole namespace, and
a send without a room condition to a socket that is not local, go to the
channel every node subscribes to, and every node decides by its own
sockets (as before tracked rooms existed; signaling does not rely on it).

Joins in flight. The store's answer to a join and another node's message
about the same room travel on different connections: a node may hear of a
room (a member entering, a broadcast naming the joining socket) before its
own socket's join is answered. While a local socket's join is in flight
(L{ClusterAdapter.hold}), messages for it and member changes of rooms not
tracked yet are kept (bounded) and applied once the socket enters the room.

Failures: a publication that fails or times out is dropped with a warning
(a Redis outage must not block or crash emitters; sockets of this process
keep receiving from each other); a received message that cannot be read is
dropped with a warning. Warnings are throttled per cause.

What this module must not know: Redis and its connections, PrivyDrop's
events and rules, transports, HTTP.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Union

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from privydrop.cluster.messages import (
    DEFAULT_CHANNEL_PREFIX,
    DEFAULT_MAX_MESSAGE_BYTES,
    ClusterBroadcast,
    ClusterHandover,
    ClusterLog,
    ClusterMembers,
    ClusterMessage,
    ClusterMessageError,
    ClusterSend,
    ClusterServerEvent,
    all_channel,
    check_channel_prefix,
    decode_message,
    encode_message,
    node_channel,
)
from privydrop.logs.levels import Logger
from privydrop.logs.throttle import WarningThrottle
from privydrop.socketio.adapter import LocalAdapter, RoomMembers, SocketDelivery
from privydrop.socketio.ids import RoomId, SocketId
from privydrop.socketio.packets import Message, Packet, encode

_log = Logger()

#: C{publish(channel, payload)}: hands one publication to the transport.
#: Returns a Deferred (firing with the number of receivers, or failing when
#: the publication was lost) or None.
Publish = Callable[[str, bytes], Union["Deferred[Any]", None]]

#: Seconds between two warnings of the same cause; the ones in between are
#: counted and the count is reported with the next warning.
WARNING_INTERVAL_S = 60.0

#: Members that left a tracked room, remembered per room.
MAX_DEPARTED_PER_ROOM = 256
#: Messages kept for one socket whose join is in flight.
MAX_HELD_PER_SOCKET = 32
#: Member changes of untracked rooms kept while joins are in flight, and
#: for how long (seconds) at most.
MAX_EARLY_CHANGES = 1024
EARLY_CHANGES_TTL_S = 30.0


#: A message kept for a socket whose join is in flight: the rooms it was
#: addressed to, and the encoded packet.
_HeldMessage = tuple[frozenset[RoomId], tuple[Message, ...]]


def _describe(failure: Failure) -> str:
    """A failure's message, or its exception's name when the message is empty."""
    return failure.getErrorMessage() or type(failure.value).__name__


def new_node_id() -> str:
    """A random id for this process in the cluster (64 bits, hex)."""
    return secrets.token_hex(8)


class _TrackedRoom:
    """What this node knows of a tracked room's remote members."""

    __slots__ = ("departed", "remote")

    def __init__(self) -> None:
        #: socket id -> node id, for members on other nodes.
        self.remote: dict[SocketId, str] = {}
        #: members that left (insertion-ordered, bounded).
        self.departed: dict[SocketId, None] = {}

    def nodes(self) -> set[str]:
        return set(self.remote.values())

    def add(self, socket_id: SocketId, node: str) -> None:
        self.departed.pop(socket_id, None)
        self.remote[socket_id] = node

    def forget(self, socket_id: SocketId) -> None:
        self.remote.pop(socket_id, None)
        self.departed[socket_id] = None
        if len(self.departed) > MAX_DEPARTED_PER_ROOM:
            del self.departed[next(iter(self.departed))]


class ClusterAdapter:
    """Implements L{privydrop.socketio.adapter.Adapter} for a cluster.

    @ivar node_id: this process's id; it names its channel and marks what it
        publishes (it changes when the process registers again, L{renew}).
    @ivar published: publications handed to C{publish} so far.
    @ivar deliveries: receivers Redis reported for them (the sum of its
        C{PUBLISH} answers): deliveries caused by this node.
    @ivar publish_failures: publications that failed or timed out.
    @ivar dropped: received messages dropped because they could not be read.
    @ivar unroutable: sends dropped because the target is not known in the room.
    @ivar received: publications of other nodes handled here.
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
        @param publish: sends a publication on a channel
            (L{privydrop.cluster.pubsub.RedisPublisher.publish}, or
            L{privydrop.cluster.bus.MemoryBus.publish}).
        @param channel_prefix: see L{privydrop.cluster.messages}; every node of
            a cluster must use the same one.
        @param clock: for throttling warnings and ageing held changes;
            without one, every warning is logged.
        @param max_message_bytes: received publications larger than this are dropped.
        @raise ValueError: an empty node id or an unusable prefix.
        """
        if not isinstance(node_id, str) or not node_id:
            raise ValueError("node_id must be a non-empty string")
        self.node_id = node_id
        self._publish = publish
        self._prefix = check_channel_prefix(channel_prefix)
        self._max_message_bytes = max_message_bytes
        self._clock = clock
        self._local = LocalAdapter()
        # Which sockets of each namespace are connected (or connecting) here:
        # LocalAdapter answers rooms_of() with an empty set for both an
        # unknown socket and one in no room, and a send must tell them apart.
        self._sockets: dict[str, set[SocketId]] = {}
        self._tracked: dict[tuple[str, RoomId], _TrackedRoom] = {}
        # Joins in flight: what arrived for each such socket meanwhile.
        self._held: dict[tuple[str, SocketId], list[_HeldMessage]] = {}
        # Member changes of rooms not tracked yet, while joins are in flight.
        self._early: list[tuple[float, ClusterMembers]] = []
        self._delivery: SocketDelivery | None = None
        self._warnings = (
            None if clock is None else WarningThrottle(clock, WARNING_INTERVAL_S)
        )
        self.published = 0
        self.deliveries = 0
        self.publish_failures = 0
        self.dropped = 0
        self.unroutable = 0
        self.held_dropped = 0
        self.received = 0
        self._received_waiters: list[tuple[int, Deferred[int]]] = []
        # Log requests this node sent, by request id, awaiting their answer.
        self._log_requests: dict[str, Deferred[ClusterLog | None]] = {}

    @property
    def channel_prefix(self) -> str:
        """The prefix of every channel this adapter publishes on."""
        return self._prefix

    @property
    def channel(self) -> str:
        """This node's own channel."""
        return node_channel(self._prefix, self.node_id)

    @property
    def shared_channel(self) -> str:
        """The channel every node subscribes to."""
        return all_channel(self._prefix)

    @property
    def channels(self) -> tuple[str, str]:
        """What a subscriber for this node must subscribe to."""
        return (self.channel, self.shared_channel)

    def renew(self, node_id: str) -> None:
        """This process registered again under a new id (its subscriber must
        follow L{channels})."""
        if not isinstance(node_id, str) or not node_id:
            raise ValueError("node_id must be a non-empty string")
        self.node_id = node_id

    # Adapter: membership

    def attach(self, delivery: SocketDelivery) -> None:
        self._delivery = delivery
        self._local.attach(delivery)

    def add_socket(self, namespace: str, socket_id: SocketId) -> None:
        self._sockets.setdefault(namespace, set()).add(socket_id)
        self._local.add_socket(namespace, socket_id)

    def _forget_local(self, namespace: str, socket_id: SocketId) -> frozenset[RoomId]:
        """This process no longer holds the socket; the rooms it was in."""
        rooms = self._local.rooms_of(namespace, socket_id)
        here = self._sockets.get(namespace)
        if here is not None:
            here.discard(socket_id)
            if not here:
                del self._sockets[namespace]
        self._local.remove_socket(namespace, socket_id)
        return rooms

    def remove_socket(self, namespace: str, socket_id: SocketId) -> None:
        for room in self._forget_local(namespace, socket_id):
            self._left(namespace, socket_id, room)
        self.release(namespace, socket_id)

    def move_socket(self, namespace: str, socket_id: SocketId, node: str | None) -> None:
        for room in self._forget_local(namespace, socket_id):
            key = (namespace, room)
            tracked = self._tracked.get(key)
            if tracked is None:
                continue
            if not self._local.has_members(namespace, room):
                del self._tracked[key]
            elif node:
                tracked.add(socket_id, node)
        self.release(namespace, socket_id)

    def add(
        self,
        namespace: str,
        socket_id: SocketId,
        room: RoomId,
        members: RoomMembers | None = None,
    ) -> None:
        self._local.add(namespace, socket_id, room)
        if not self._local.in_room(namespace, socket_id, room):
            return
        key = (namespace, room)
        tracked = self._tracked.get(key)
        if members is not None and tracked is None:
            tracked = self._tracked[key] = _TrackedRoom()
            self._merge(namespace, tracked, members)
            self._apply_early(key, tracked)
        elif members is not None and tracked is not None:
            self._merge(namespace, tracked, members)
        if tracked is not None:
            entered = ClusterMembers(
                namespace, room, {socket_id: self.node_id}, frozenset(), self.node_id
            )
            for node in sorted(tracked.nodes()):
                self._send_to_cluster(entered, node)
        held = self._held.pop((namespace, socket_id), None)
        if held:
            delivery = self._delivery
            for rooms, messages in held:
                if room in rooms and delivery is not None:
                    delivery.deliver(namespace, socket_id, messages)
        self._forget_early_if_idle()

    def remove(self, namespace: str, socket_id: SocketId, room: RoomId) -> None:
        was_in = self._local.in_room(namespace, socket_id, room)
        self._local.remove(namespace, socket_id, room)
        if was_in:
            self._left(namespace, socket_id, room)

    def _left(self, namespace: str, socket_id: SocketId, room: RoomId) -> None:
        key = (namespace, room)
        tracked = self._tracked.get(key)
        if tracked is None:
            return
        left = ClusterMembers(namespace, room, {}, frozenset({socket_id}), self.node_id)
        for node in sorted(tracked.nodes()):
            self._send_to_cluster(left, node)
        if not self._local.has_members(namespace, room):
            del self._tracked[key]

    def _merge(self, namespace: str, tracked: _TrackedRoom, members: RoomMembers) -> None:
        """Add the remote members of a list (departed ones stay out)."""
        for socket_id, node in members.items():
            if (
                not node
                or node == self.node_id
                or socket_id in tracked.departed
                or self.is_local(namespace, socket_id)
            ):
                continue
            tracked.remote[socket_id] = node

    def rooms_of(self, namespace: str, socket_id: SocketId) -> frozenset[RoomId]:
        """The rooms of a socket connected to this process (other processes'
        sockets are not known here: the answer is empty for them)."""
        return self._local.rooms_of(namespace, socket_id)

    def room_members(self, namespace: str, room: RoomId) -> frozenset[SocketId]:
        """This process's sockets in a room (for tests and diagnostics)."""
        return self._local.room_members(namespace, room)

    def members(self, namespace: str, room: RoomId) -> RoomMembers:
        found: dict[SocketId, str] = {
            sid: self.node_id for sid in self._local.room_members(namespace, room)
        }
        tracked = self._tracked.get((namespace, room))
        if tracked is not None:
            found.update(tracked.remote)
        return found

    def note_members(self, namespace: str, room: RoomId, members: RoomMembers) -> None:
        if not self._local.has_members(namespace, room):
            return
        tracked = self._tracked.get((namespace, room))
        if tracked is None:
            tracked = self._tracked[(namespace, room)] = _TrackedRoom()
        tracked.remote = {}
        self._merge(namespace, tracked, members)

    def is_local(self, namespace: str, socket_id: SocketId) -> bool:
        """Whether the socket is connected (or connecting) to this process."""
        return socket_id in self._sockets.get(namespace, ())

    # Adapter: joins in flight

    def hold(self, namespace: str, socket_id: SocketId) -> None:
        self._held.setdefault((namespace, socket_id), [])

    def release(self, namespace: str, socket_id: SocketId) -> None:
        held = self._held.pop((namespace, socket_id), None)
        if held:
            self.held_dropped += len(held)
        self._forget_early_if_idle()

    def _keep(
        self,
        namespace: str,
        socket_id: SocketId,
        rooms: frozenset[RoomId],
        messages: tuple[Message, ...],
    ) -> bool:
        """Keep a message for a socket whose join is in flight; False when it is not held."""
        held = self._held.get((namespace, socket_id))
        if held is None:
            return False
        if len(held) >= MAX_HELD_PER_SOCKET:
            held.pop(0)
            self.held_dropped += 1
        held.append((rooms, messages))
        return True

    def _keep_early(self, change: ClusterMembers) -> None:
        if not self._held:
            return
        now = self._clock.seconds() if self._clock is not None else 0.0
        self._early = [
            (t, c)
            for t, c in self._early[-(MAX_EARLY_CHANGES - 1):]
            if self._clock is None or now - t <= EARLY_CHANGES_TTL_S
        ]
        self._early.append((now, change))

    def _apply_early(self, key: tuple[str, RoomId], tracked: _TrackedRoom) -> None:
        if not self._early:
            return
        kept = []
        for when, change in self._early:
            if (change.namespace, change.room) == key:
                self._apply_change(tracked, change)
            else:
                kept.append((when, change))
        self._early = kept

    def _forget_early_if_idle(self) -> None:
        if not self._held:
            self._early = []

    # Adapter: delivery

    def broadcast(
        self,
        packet: Packet,
        rooms: frozenset[RoomId],
        exclude: frozenset[SocketId],
    ) -> None:
        """Deliver to this process's sockets, then to the nodes holding the
        other recipients (see the module docstring).

        @raise TypeError: the payload holds something JSON cannot carry.
        """
        namespace = packet.namespace
        messages = tuple(encode(packet))
        self._deliver_broadcast(namespace, rooms, exclude, messages)
        if not rooms:
            self._send_to_cluster(
                ClusterBroadcast(namespace, rooms, exclude, messages, self.node_id)
            )
            return
        by_node: dict[str, set[SocketId]] = {}
        untracked: set[RoomId] = set()
        for room in rooms:
            tracked = self._tracked.get((namespace, room))
            if tracked is None:
                untracked.add(room)
                continue
            for socket_id, node in tracked.remote.items():
                if socket_id not in exclude:
                    by_node.setdefault(node, set()).add(socket_id)
        for node, recipients in sorted(by_node.items()):
            self._send_to_cluster(
                ClusterBroadcast(
                    namespace,
                    rooms,
                    frozenset(),
                    messages,
                    self.node_id,
                    recipients=frozenset(recipients),
                ),
                node,
            )
        if untracked:
            reached = frozenset(sid for sids in by_node.values() for sid in sids)
            self._send_to_cluster(
                ClusterBroadcast(
                    namespace, frozenset(untracked), exclude | reached, messages, self.node_id
                )
            )

    def send_to_socket(
        self,
        packet: Packet,
        socket_id: SocketId,
        only_if_in_room: RoomId | None = None,
    ) -> None:
        """Deliver here when the socket is connected here, else to its node.

        @raise TypeError: the payload holds something JSON cannot carry.
        """
        namespace = packet[1]
        if socket_id in self._sockets.get(namespace, ()):  # is_local, inlined
            self._local.send_to_socket(packet, socket_id, only_if_in_room)
            return
        node = None
        if only_if_in_room is not None:
            tracked = self._tracked.get((namespace, only_if_in_room))
            if tracked is not None:
                node = tracked.remote.get(socket_id)
                if node is None:
                    self.unroutable += 1
                    return
        self._send_to_cluster(
            ClusterSend(
                namespace=namespace,
                socket_id=socket_id,
                only_if_in_room=only_if_in_room,
                messages=tuple(encode(packet)),
                origin=self.node_id,
            ),
            node,
        )

    def send_to_members(
        self,
        packet: Packet,
        room: RoomId,
        members: RoomMembers,
        departed: SocketId | None = None,
    ) -> None:
        namespace = packet.namespace
        messages = tuple(encode(packet))
        tracked = self._tracked.get((namespace, room))
        if departed is not None and tracked is not None:
            tracked.forget(departed)
        delivery = self._delivery
        by_node: dict[str, set[SocketId]] = {}
        for socket_id, node in members.items():
            if self.is_local(namespace, socket_id):
                if delivery is not None and self._local.in_room(namespace, socket_id, room):
                    delivery.deliver(namespace, socket_id, messages)
            elif node and node != self.node_id:
                by_node.setdefault(node, set()).add(socket_id)
        gone = frozenset() if departed is None else frozenset({departed})
        for node, recipients in sorted(by_node.items()):
            self._send_to_cluster(
                ClusterBroadcast(
                    namespace,
                    frozenset({room}),
                    frozenset(),
                    messages,
                    self.node_id,
                    recipients=frozenset(recipients),
                    departed=gone,
                ),
                node,
            )

    def server_event(
        self, node: str, namespace: str, event: str, args: Sequence[Any]
    ) -> None:
        if node == self.node_id:
            if self._delivery is not None:
                self._delivery.server_event(namespace, event, args)
            return
        self._send_to_cluster(ClusterServerEvent(namespace, event, tuple(args), self.node_id), node)

    # Connection state recovery across processes

    def request_log(
        self, node: str, namespace: str, pid: str, offset: str, timeout_s: float
    ) -> Deferred[ClusterLog | None]:
        """Ask node C{node} for the log of the socket C{pid} names after
        C{offset}, and to let that socket go (L{ClusterHandover}).

        @return: fires with its answer, or with None when none came within
            C{timeout_s} (the node is presumed dead).
        """
        request_id = secrets.token_hex(8)
        answer: Deferred[ClusterLog | None] = Deferred()
        self._log_requests[request_id] = answer
        if self._clock is not None:
            timer = self._clock.callLater(timeout_s, self._log_timed_out, request_id)

            def answered(result: ClusterLog | None) -> ClusterLog | None:
                if timer.active():
                    timer.cancel()
                return result

            answer.addCallback(answered)
        self._send_to_cluster(
            ClusterHandover(namespace, request_id, pid, offset, self.node_id), node
        )
        return answer

    def _log_timed_out(self, request_id: str) -> None:
        waiting = self._log_requests.pop(request_id, None)
        if waiting is not None:
            waiting.callback(None)

    def _serve_handover(self, message: ClusterHandover) -> None:
        status: str = "missing"
        events: list[Sequence[Message]] = []
        if self._delivery is not None:
            status, events = self._delivery.hand_over(
                message.namespace, message.pid, message.offset, message.origin
            )
        self._send_to_cluster(
            ClusterLog(
                message.namespace,
                message.request_id,
                status,
                tuple(tuple(event) for event in events),
                self.node_id,
            ),
            message.origin,
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
        if channel != self.channel and channel != self.shared_channel:
            self.dropped += 1
            self._warn(
                "misrouted",
                "dropped a cluster message for {namespace} that arrived on {channel}",
                namespace=message.namespace,
                channel=channel,
            )
            return
        if isinstance(message, ClusterBroadcast):
            self._receive_broadcast(message)
        elif isinstance(message, ClusterSend):
            self._deliver_send(message)
        elif isinstance(message, ClusterMembers):
            tracked = self._tracked.get((message.namespace, message.room))
            if tracked is not None:
                self._apply_change(tracked, message)
            else:
                self._keep_early(message)
        elif isinstance(message, ClusterHandover):
            self._serve_handover(message)
        elif isinstance(message, ClusterLog):
            waiting = self._log_requests.pop(message.request_id, None)
            if waiting is not None:
                waiting.callback(message)
        else:
            if self._delivery is not None:
                self._delivery.server_event(message.namespace, message.event, message.args)
        self.received += 1
        if self._received_waiters:
            self._fire_received_waiters()

    def _apply_change(self, tracked: _TrackedRoom, change: ClusterMembers) -> None:
        for socket_id in change.removed:
            tracked.forget(socket_id)
        for socket_id, node in change.added.items():
            if node and node != self.node_id and not self.is_local(change.namespace, socket_id):
                tracked.add(socket_id, node)

    def _receive_broadcast(self, message: ClusterBroadcast) -> None:
        namespace = message.namespace
        for socket_id in message.departed:
            for room in message.rooms:
                tracked = self._tracked.get((namespace, room))
                if tracked is not None:
                    tracked.forget(socket_id)
                else:
                    self._keep_early(
                        ClusterMembers(namespace, room, {}, frozenset({socket_id}), message.origin)
                    )
        if message.recipients is None:
            self._deliver_broadcast(namespace, message.rooms, message.exclude, message.messages)
            return
        delivery = self._delivery
        if delivery is None:
            return
        for socket_id in message.recipients:
            if socket_id in message.exclude or not self.is_local(namespace, socket_id):
                continue
            if self._local.rooms_of(namespace, socket_id) & message.rooms:
                delivery.deliver(namespace, socket_id, message.messages)
            else:
                self._keep(namespace, socket_id, message.rooms, message.messages)

    def wait_received(self, after: int) -> Deferred[int]:
        """Fires with L{received} once it exceeds C{after} (for tests)."""
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
            self._keep(namespace, socket_id, frozenset({room}), message.messages)
            return
        delivery.deliver(namespace, socket_id, message.messages)

    def _send_to_cluster(self, message: ClusterMessage, node: str | None = None) -> None:
        """Publish to one node's channel, or (C{node} None) to every node."""
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
        channel = self.shared_channel if node is None else node_channel(self._prefix, node)
        self.published += 1
        try:
            result = self._publish(channel, payload)
        except Exception:  # noqa: BLE001 - error boundary: log, the message is lost
            self.publish_failures += 1
            _log.failure("publishing on {channel} failed", channel=channel)
            return
        if result is not None:
            result.addCallbacks(self._published, self._publish_failed, errbackArgs=(channel,))

    def _published(self, receivers: Any) -> None:
        if isinstance(receivers, int):
            self.deliveries += receivers

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

