"""The cluster's Redis I/O: the publisher, the subscriber, and the service that owns them.

  - L{RedisPublisher} publishes on one connection
    (L{privydrop.redis.pool.OrderedConnection}), so this process's messages
    reach Redis, and every other process, in the order they were sent:
    signaling relies on an offer arriving before its ICE candidates. Each
    publication has a deadline; one that fails is reported, not retried
    (delivery is at most once: Redis may have delivered a publication whose
    answer was lost).
  - L{ClusterService} is the Twisted service that builds the
    L{ClusterAdapter}, starts the publisher and a subscriber
    (L{privydrop.redis.subscriber.Subscriber}) on the pattern C{<prefix>#*},
    which re-subscribes after every reconnection, and hands what arrives to
    the adapter.

The connections are named C{privydrop:<node>:publish} and
C{privydrop:<node>:subscribe} (C{CLIENT LIST}).

What this module must not know: the message format (L{privydrop.cluster.messages})
and the routing rules (L{privydrop.cluster.routing}); PrivyDrop's events.
"""

from __future__ import annotations

from typing import Any

import txredisapi
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from privydrop.cluster.messages import DEFAULT_CHANNEL_PREFIX
from privydrop.cluster.routing import ClusterAdapter, new_node_id
from privydrop.logs.levels import Logger
from privydrop.redis.errors import (
    ClientClosed,
    ConnectionLost,
    HandshakeRefused,
    NotConnected,
    ReplyTimeout,
)
from privydrop.redis.endpoint import describe
from privydrop.redis.handshake import client_name
from privydrop.redis.pool import OrderedConnection
from privydrop.redis.subscriber import PATTERN, Subscriber, Subscription
from privydrop.settings import RedisSettings

_log = Logger()


class PublishError(Exception):
    """A publication could not be handed to Redis (not running, no
    connection in time, no answer in time, refused)."""


class RedisPublisher:
    """One Redis connection that publishes, in order, with bounded waits.

    While the connection is down, or refused by Redis, publications wait for
    it to come back, at most C{timeout} seconds each, then fail with
    L{PublishError}; once Redis is known to be unreachable (an attempt to
    reconnect failed), they fail at once, leaving nothing waiting, until an
    attempt connects again. A PUBLISH
    whose answer does not come in time aborts the connection (it reconnects
    by itself), so later publications do not queue behind a stalled server.
    """

    def __init__(
        self,
        settings: RedisSettings,
        reactor: Any,
        *,
        name: str | None = None,
        timeout: float | None = None,
        reconnect_initial_delay: float = 0.2,
        reconnect_max_delay: float = 5.0,
    ) -> None:
        """
        @param settings: where Redis is (pub/sub ignores C{db}).
        @param reactor: provides C{IReactorTime} and C{IReactorTCP}.
        @param name: the connection name; C{privydrop:publish} when None.
        @param timeout: seconds one publication may take; C{settings.command_timeout}
            when None.
        """
        self._settings = settings
        self._reactor = reactor
        self._name = client_name("publish") if name is None else name
        self._timeout = settings.command_timeout if timeout is None else timeout
        self._initial_delay = reconnect_initial_delay
        self._max_delay = reconnect_max_delay
        self._connection: OrderedConnection | None = None

    @property
    def running(self) -> bool:
        """Whether L{start} was called and L{close} was not since."""
        return self._connection is not None

    @property
    def connection(self) -> OrderedConnection | None:
        """The connection while running (for diagnostics and tests)."""
        return self._connection

    def start(self) -> None:
        """Start connecting (idempotent; a closed publisher can start again)."""
        if self._connection is not None:
            return
        connection = self._connection = OrderedConnection(
            self._settings,
            self._reactor,
            name=self._name,
            db=0,  # pub/sub ignores database indexes: no SELECT
            command_timeout=self._timeout,
            # Redis may take the password again any moment (it is being
            # rotated): a publication waits for that until its deadline.
            fail_fast_on_refusal=False,
            # A publication that cannot be delivered now is lost anyway
            # (at most once): while Redis is known to be away, fail it now
            # rather than hold it, and a timer, until its deadline.
            fail_fast_when_unreachable=True,
            reconnect_initial_delay=self._initial_delay,
            reconnect_max_delay=self._max_delay,
        )
        connection.start()

    def publish(self, channel: str, payload: bytes) -> Deferred[int]:
        """Publish one message.

        @return: a Deferred firing with the number of subscribers Redis
            delivered it to, or failing with L{PublishError}.
        """
        connection = self._connection
        if connection is None:
            return fail(PublishError("the cluster publisher is not running"))
        reply = connection.execute(("PUBLISH", channel, payload))
        return reply.addCallbacks(int, self._failed)

    def close(self) -> Deferred[None]:
        """Close the connection and stop reconnecting (idempotent)."""
        connection, self._connection = self._connection, None
        if connection is None:
            return succeed(None)
        return connection.close()

    def _failed(self, failure: Failure) -> Failure:
        error = failure.value
        if isinstance(error, HandshakeRefused):
            raise PublishError(f"Redis refused the connection: {error}")
        if isinstance(error, NotConnected):
            connection = self._connection
            if connection is not None and connection.unreachable is not None:
                raise PublishError(f"no Redis connection: {error}")
            raise PublishError(f"no Redis connection within {self._timeout}s")
        if isinstance(error, ReplyTimeout):
            raise PublishError(f"no answer to PUBLISH within {self._timeout}s")
        if isinstance(error, ConnectionLost):
            raise PublishError(f"connection lost ({error})")
        if isinstance(error, ClientClosed):
            raise PublishError("the cluster publisher was closed")
        if isinstance(error, txredisapi.ResponseError):
            raise PublishError(f"Redis refused PUBLISH ({error})")
        if isinstance(error, txredisapi.InvalidData):
            raise PublishError(f"cannot encode the publication ({error})")
        return failure


class ClusterService(Service):
    """Owns the cluster's Redis connections; builds the L{ClusterAdapter}.

    Construct it, hand C{service.adapter} to the Socket.IO server, and put
    the service in the tree before anything that emits during shutdown
    (children stop in reverse order, so it stops after them).

    @ivar adapter: the adapter (usable for wiring right after construction).
    @ivar node_id: this process's id in the cluster.
    @ivar publisher: the publishing connection.
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
        self.node_id = node_id if node_id is not None else new_node_id()
        self.publisher = RedisPublisher(
            settings,
            reactor,
            name=client_name("publish", self.node_id),
            reconnect_initial_delay=reconnect_initial_delay,
            reconnect_max_delay=reconnect_max_delay,
        )
        self.adapter = ClusterAdapter(
            self.node_id,
            self.publisher.publish,
            channel_prefix=channel_prefix,
            clock=reactor,
        )
        self._initial_delay = reconnect_initial_delay
        self._max_delay = reconnect_max_delay
        self._subscriber: Subscriber | None = None
        self.subscriptions = 0
        self._waiters: list[tuple[int, Deferred[int]]] = []

    @property
    def subscribed(self) -> bool:
        """Whether a subscription is in place right now."""
        return self._subscriber is not None and self._subscriber.subscribed

    def startService(self) -> None:
        super().startService()
        _log.info(
            "cluster node {node_id} joining channels {pattern} on redis {address}",
            node_id=self.node_id,
            pattern=self.adapter.subscription_pattern,
            address=describe(self._settings),
        )
        self.publisher.start()
        if self._subscriber is None:
            # A closed subscriber does not reopen: a new one per start.
            subscriber = self._subscriber = Subscriber(
                self._settings,
                self._reactor,
                name=client_name("subscribe", self.node_id),
                subscriptions=[Subscription(PATTERN, self.adapter.subscription_pattern)],
                receive=self._received,
                on_subscribed=self._subscribed,
                on_lost=self._lost,
                reconnect_initial_delay=self._initial_delay,
                reconnect_max_delay=self._max_delay,
            )
            subscriber.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        closing: list[Deferred[Any]] = [self.publisher.close()]
        subscriber, self._subscriber = self._subscriber, None
        if subscriber is not None:
            # Unsubscribes first: Redis stops sending before this returns.
            closing.append(subscriber.close())
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

    # Called by the subscriber.

    def _subscribed(self) -> None:
        if not self.running:
            return
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

    def _lost(self) -> None:
        if self.running:
            _log.warn(
                "cluster node {node_id} lost its subscription; cross-process "
                "delivery stops until Redis is back",
                node_id=self.node_id,
            )

    def _received(self, channel: str | bytes, payload: str | bytes) -> None:
        if self.running:
            self.adapter.receive(channel, payload)
