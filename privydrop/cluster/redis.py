"""The cluster adapter: several processes or hosts share one Redis and route
Socket.IO broadcasts and sends to each other's sockets.

Three parts:

  - L{RedisAdapter} implements L{privydrop.socketio.adapter.Adapter}. It
    keeps this process's rooms in a L{LocalAdapter} and delivers to this
    process's sockets as that does; in addition, every broadcast is published
    once, and a send to a socket that is not connected here is published
    instead of delivered. It talks to the outside world through two plain
    callables, C{publish(channel, payload)} and L{RedisAdapter.receive}, so
    the same adapter runs over Redis (below) or over the in-memory bus of
    L{privydrop.cluster.bus} in unit tests.
  - L{RedisPublisher}: one txredisapi connection that publishes, with a
    bounded wait for each publication. One connection, not a pool, so this
    process's messages reach Redis (and every other process) in the order
    they were sent: signaling relies on an offer arriving before its ICE
    candidates.
  - L{AdapterService}: the Twisted service that owns the publisher and the
    subscriber connection. The subscriber subscribes to C{<prefix>#*} (see
    L{privydrop.cluster.messages} for channel names and the message format)
    every time its connection is (re)established, since Redis forgets
    subscriptions with the connection.

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

What this module must not know: PrivyDrop's events and rules, transports,
HTTP. It imports the store's connection factory only to share its Redis
settings and handshake.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from typing import Any, Union

import txredisapi
from twisted.application.service import Service
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    TimeoutError,
    fail,
    inlineCallbacks,
    succeed,
)
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
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
from privydrop.logs.throttle import WarningThrottle
from privydrop.settings import RedisSettings
from privydrop.socketio.adapter import LocalAdapter, SocketDelivery
from privydrop.socketio.ids import RoomId, SocketId
from privydrop.socketio.packets import Message, Packet, encode
from privydrop.store.redis import (
    FastRepliesMixin,
    PipelinedProtocol,
    RedisSubscriberFactory,
)

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


class RedisAdapter:
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
        @param publish: sends a publication to every node (L{RedisPublisher.publish},
            or L{privydrop.cluster.bus.MemoryBus.publish}).
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


class PublishError(Exception):
    """A publication could not be handed to Redis (not running, no
    connection in time, no answer in time)."""


@inlineCallbacks
def _authenticate(protocol: Any) -> Any:
    """The handshake of a cluster connection: C{AUTH} when a password is set.

    txredisapi's own handshake, on any C{AUTH} failure, stops the connection
    factory for good (this process would stay deaf to the cluster until a
    restart, even once Redis accepts the password) and fails a Deferred that
    nobody holds ("Unhandled error in Deferred"). Here a refusal is logged
    (once per distinct answer) and the connection dropped; the factory keeps
    reconnecting with its back-off, as the store's connections do
    (L{privydrop.store.redis}).

    @param protocol: a C{txredisapi.RedisProtocol} in its C{connectionMade}.
    @return: a Deferred firing True once the connection is usable, False
        when it was dropped.
    """
    factory = protocol.factory
    if protocol.password is not None:
        try:
            reply = yield protocol.auth(protocol.password)
            if isinstance(reply, Exception):
                raise reply
        except txredisapi.ResponseError as e:
            message = str(e)
            if getattr(factory, "auth_error", None) != message:
                _log.error("redis refused the cluster connection's AUTH: {error}", error=message)
            factory.auth_error = message
            protocol.transport.loseConnection()
            return False
        except Exception as e:  # noqa: BLE001 - anything else is transient: reconnect
            _log.debug("cluster connection handshake interrupted: {error}", error=str(e))
            protocol.transport.abortConnection()
            return False
    if not protocol.connected:
        return False
    if getattr(factory, "auth_error", None) is not None:
        _log.info("redis accepted the cluster connection's AUTH again")
    factory.auth_error = None
    # What txredisapi's own handshake does once it succeeds.
    protocol._ready = True
    waiting, protocol._waiting_for_connect = protocol._waiting_for_connect, []
    for d in waiting:
        d.callback(protocol)
    return True


class _PublisherProtocol(PipelinedProtocol):
    """The store's pipelined protocol with L{_authenticate} as its handshake."""

    def connectionMade(self) -> Any:
        return _authenticate(self)


class RedisPublisher:
    """One Redis connection that publishes, in order, with bounded waits.

    While the connection is down, publications wait for it to come back, at
    most C{timeout} seconds each, then fail with L{PublishError}. A PUBLISH
    whose answer does not come in time aborts the connection (it reconnects
    by itself), so later publications do not queue behind a stalled server.
    Delivery is at most once: a publication whose fate is unknown (connection
    lost before the answer) is reported as failed and not retried, since
    Redis may already have delivered it.
    """

    def __init__(
        self,
        settings: RedisSettings,
        reactor: Any,
        *,
        timeout: float | None = None,
        reconnect_initial_delay: float = 0.2,
        reconnect_max_delay: float = 5.0,
    ) -> None:
        """
        @param settings: where Redis is (pub/sub ignores C{db}).
        @param reactor: provides C{IReactorTime} and C{IReactorTCP}.
        @param timeout: seconds one publication may take; C{settings.command_timeout}
            when None.
        """
        self._settings = settings
        self._reactor = reactor
        self._timeout = settings.command_timeout if timeout is None else timeout
        self._initial_delay = reconnect_initial_delay
        self._max_delay = reconnect_max_delay
        self._factory: Any = None

    @property
    def running(self) -> bool:
        """Whether L{start} was called and L{close} was not since."""
        return self._factory is not None

    def start(self) -> None:
        """Start connecting (idempotent; a closed publisher can start again)."""
        if self._factory is not None:
            return
        settings = self._settings
        factory = txredisapi.RedisFactory(
            f"{settings.host}:{settings.port}",
            None,  # pub/sub ignores database indexes: no SELECT
            1,
            isLazy=True,
            password=settings.password,
            replyTimeout=None,
            convertNumbers=False,
        )
        factory.protocol = _PublisherProtocol
        factory.initialDelay = self._initial_delay
        factory.maxDelay = self._max_delay
        factory.startConnecting(_endpoint(settings, self._reactor))
        self._factory = factory

    def publish(self, channel: str, payload: bytes) -> Deferred[int]:
        """Publish one message.

        @return: a Deferred firing with the number of subscribers Redis
            delivered it to, or failing with L{PublishError}.
        """
        factory = self._factory
        if factory is None:
            return fail(PublishError("the cluster publisher is not running"))
        for conn in factory.pool:
            if conn.usable:
                # The common case, without a coroutine: the connection is up.
                return self._send(conn, channel, payload, self._timeout)
        return Deferred.fromCoroutine(self._publish(factory, channel, payload))

    def close(self) -> Deferred[Any]:
        """Close the connection and stop reconnecting (idempotent)."""
        factory, self._factory = self._factory, None
        if factory is None:
            return succeed(None)
        closed: Deferred[Any] = factory.disconnect()
        return closed

    async def _publish(self, factory: Any, channel: str, payload: bytes) -> int:
        """Wait (bounded) for the connection, then publish."""
        clock = self._reactor
        deadline = clock.seconds() + self._timeout
        try:
            conn = await factory.getConnection(peek=True).addTimeout(
                self._timeout, clock
            )
        except TimeoutError:
            raise PublishError(f"no Redis connection within {self._timeout}s") from None
        except txredisapi.ConnectionError as e:
            raise PublishError(f"not connected ({e})") from None
        result: int = await self._send(
            conn, channel, payload, max(0.0, deadline - clock.seconds())
        )
        return result

    def _send(self, conn: Any, channel: str, payload: bytes, timeout: float) -> Deferred[int]:
        """PUBLISH on C{conn}, answered within C{timeout} seconds."""
        try:
            reply = conn.send(("PUBLISH", channel, payload), None)
        except txredisapi.ConnectionError as e:
            return fail(PublishError(f"not connected ({e})"))
        except txredisapi.InvalidData as e:
            return fail(PublishError(f"cannot encode the publication ({e})"))
        reply.addTimeout(timeout, self._reactor)
        return reply.addCallbacks(int, self._send_failed, errbackArgs=(conn,))

    def _send_failed(self, failure: Failure, conn: Any) -> Failure:
        if failure.check(TimeoutError):
            # A reply may still come; later publications must not queue
            # behind a stalled server. Take the connection out of use at once
            # (the abort itself completes on a later turn) so the next
            # publication waits for a fresh one.
            queue = conn.factory.connectionQueue
            if conn in queue.pending:
                queue.remove(conn)
            if not conn.broken:
                conn.give_up(reason="a PUBLISH was not answered in time")
            raise PublishError(f"no answer to PUBLISH within {self._timeout}s")
        if failure.check(txredisapi.ConnectionError):
            raise PublishError(f"connection lost ({failure.value})")
        if failure.check(txredisapi.ResponseError):
            raise PublishError(f"Redis refused PUBLISH ({failure.value})")
        return failure


def _endpoint(settings: RedisSettings, reactor: Any) -> HostnameEndpoint:
    return HostnameEndpoint(reactor, settings.host, settings.port, timeout=settings.connect_timeout)


class _ClusterSubscriberProtocol(FastRepliesMixin, txredisapi.SubscriberProtocol):
    """Subscribes after every (re)connection and hands publications on.

    Replies are parsed by L{FastRepliesMixin}: every node reads every
    publication of the cluster, its own included.
    """

    factory: _ClusterSubscriberFactory

    def connectionMade(self) -> Any:
        # The handshake (AUTH when a password is set) runs first.
        handshake = _authenticate(self)
        handshake.addCallback(lambda ready: self._subscribe(None) if ready else None)
        handshake.addErrback(
            lambda failure: _log.failure("cluster subscription failed", failure=failure)
        )
        return handshake

    def _subscribe(self, _: Any) -> None:
        service = self.factory.service
        if not self.connected or not self._ready or not service.running:
            return
        d = self.psubscribe(service.adapter.subscription_pattern)
        d.addTimeout(service.command_timeout, service.clock)
        d.addCallbacks(self._subscribed, self._subscribe_failed)

    def _subscribed(self, _: Any) -> None:
        if self.connected:
            self.factory.service._subscribed(self)

    def _subscribe_failed(self, failure: Failure) -> None:
        _log.warn(
            "subscribing to the cluster channels failed: {error}; reconnecting",
            error=_describe(failure),
        )
        if self.connected:
            self.transport.abortConnection()

    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
        self.factory.service._received(channel, message)

    def connectionLost(self, why: Failure) -> None:
        super().connectionLost(why)
        self.factory.service._lost(self)


class _ClusterSubscriberFactory(RedisSubscriberFactory):
    protocol = _ClusterSubscriberProtocol

    def __init__(self, settings: RedisSettings, service: AdapterService) -> None:
        super().__init__(settings)
        self.service = service


class AdapterService(Service):
    """Owns the cluster's Redis connections; builds the L{RedisAdapter}.

    Construct it, hand C{service.adapter} to the Socket.IO server, and put
    the service in the tree before anything that emits during shutdown
    (children stop in reverse order, so it stops after them).

    @ivar adapter: the adapter (usable for wiring right after construction).
    @ivar node_id: this process's id in the cluster.
    @ivar subscriptions: how many times the subscription was established;
        more than one means it was renewed after reconnections.
    """

    name = "adapter"

    def __init__(
        self,
        settings: RedisSettings,
        reactor: Any,
        *,
        node_id: str | None = None,
        channel_prefix: str = DEFAULT_CHANNEL_PREFIX,
        reconnect_initial_delay: float = 0.2,
        reconnect_max_delay: float = 5.0,
    ) -> None:
        """
        @param settings: the same Redis settings as the store.
        @param reactor: provides C{IReactorTime} and C{IReactorTCP}.
        @param node_id: a fresh random one when None.
        @param channel_prefix: the same on every node of the cluster.
        @param reconnect_initial_delay: seconds before the first reconnection
            attempt after a loss; later attempts back off up to
            C{reconnect_max_delay}.
        """
        self._settings = settings
        self.clock: IReactorTime = reactor
        self._reactor = reactor
        self.command_timeout = settings.command_timeout
        self.node_id = node_id if node_id is not None else new_node_id()
        self.publisher = RedisPublisher(
            settings,
            reactor,
            reconnect_initial_delay=reconnect_initial_delay,
            reconnect_max_delay=reconnect_max_delay,
        )
        self.adapter = RedisAdapter(
            self.node_id,
            self.publisher.publish,
            channel_prefix=channel_prefix,
            clock=reactor,
        )
        self._initial_delay = reconnect_initial_delay
        self._max_delay = reconnect_max_delay
        self._factory: _ClusterSubscriberFactory | None = None
        self._current: _ClusterSubscriberProtocol | None = None
        self.subscriptions = 0
        self._waiters: list[tuple[int, Deferred[int]]] = []

    @property
    def subscribed(self) -> bool:
        """Whether a subscription is in place right now."""
        return self._current is not None

    def startService(self) -> None:
        super().startService()
        _log.info(
            "cluster node {node_id} joining channels {pattern} on redis {host}:{port}",
            node_id=self.node_id,
            pattern=self.adapter.subscription_pattern,
            host=self._settings.host,
            port=self._settings.port,
        )
        self.publisher.start()
        if self._factory is None:
            # txredisapi factories do not restart once disconnected: a new
            # one per start.
            factory = self._factory = _ClusterSubscriberFactory(self._settings, self)
            factory.initialDelay = self._initial_delay
            factory.maxDelay = self._max_delay
            factory.startConnecting(_endpoint(self._settings, self._reactor))

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        current, self._current = self._current, None
        if current is not None and current.connected:
            # Polite, not required: closing the connection ends the
            # subscription too. Bounded, since Redis may be the problem.
            try:
                await current.punsubscribe(self.adapter.subscription_pattern).addTimeout(
                    self.command_timeout, self.clock
                )
            except Exception as e:  # noqa: BLE001 - best effort: closing unsubscribes too
                _log.debug("cluster unsubscribe failed: {error}", error=str(e))
        closing = [self.publisher.close()]
        factory, self._factory = self._factory, None
        if factory is not None:
            closing.append(factory.disconnect())
        await DeferredList(closing, consumeErrors=True)
        waiters, self._waiters = self._waiters, []
        for _, waiter in waiters:
            waiter.cancel()
        _log.info("cluster node {node_id} left", node_id=self.node_id)

    def wait_subscribed(self, after: int = 0) -> Deferred[int]:
        """Fires with L{subscriptions} once it exceeds C{after}.

        C{wait_subscribed()} waits for the first subscription;
        C{wait_subscribed(n)} with the current count waits for the renewal
        after the next reconnection.
        """
        if self.subscriptions > after:
            return succeed(self.subscriptions)
        d: Deferred[int] = Deferred()
        self._waiters.append((after, d))
        return d

    # Called by the subscriber protocol.

    def _subscribed(self, protocol: _ClusterSubscriberProtocol) -> None:
        if not self.running:
            return
        self._current = protocol
        self.subscriptions += 1
        if self.subscriptions == 1:
            _log.info(
                "cluster node {node_id} subscribed to {pattern}",
                node_id=self.node_id,
                pattern=self.adapter.subscription_pattern,
            )
        else:
            _log.info(
                "cluster node {node_id} subscribed again to {pattern} (subscription {count})",
                node_id=self.node_id,
                pattern=self.adapter.subscription_pattern,
                count=self.subscriptions,
            )
        ready = [(a, d) for a, d in self._waiters if self.subscriptions > a]
        self._waiters = [(a, d) for a, d in self._waiters if self.subscriptions <= a]
        for _, waiter in ready:
            waiter.callback(self.subscriptions)

    def _lost(self, protocol: _ClusterSubscriberProtocol) -> None:
        if self._current is not protocol:
            return
        self._current = None
        if self.running:
            _log.warn(
                "cluster node {node_id} lost its subscription; cross-process "
                "delivery stops until Redis is back",
                node_id=self.node_id,
            )

    def _received(self, channel: Any, message: Any) -> None:
        if self.running:
            self.adapter.receive(channel, message)
