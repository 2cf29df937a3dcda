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
    (L{privydrop.redis.subscriber.Subscriber}) on the node's own channel and
    the shared one, which re-subscribes after every reconnection, and hands
    what arrives to the adapter.

Sharded or classic pub/sub. On Redis 7 and later the channels are sharded
(C{SSUBSCRIBE}/C{SPUBLISH}, which a Redis Cluster spreads over its shards);
older servers get classic C{SUBSCRIBE}/C{PUBLISH}. The two are separate
worlds in Redis (a C{SPUBLISH} never reaches a C{SUBSCRIBE}), so every node
of a cluster must use the same: with C{pubsub="auto"} each node asks the
server (C{INFO server}) once at start-up, before it subscribes, and
publications wait (within their deadline) for the answer.

The connections are named C{privydrop:<node>:publish} and
C{privydrop:<node>:subscribe} (C{CLIENT LIST}).

What this module must not know: the message format (L{privydrop.cluster.messages})
and the routing rules (L{privydrop.cluster.routing}); PrivyDrop's events.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from typing import Any

import txredisapi
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import deferLater
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
from privydrop.redis.subscriber import CHANNEL, SHARD, Subscriber, Subscription
from privydrop.settings import RedisSettings

_log = Logger()


class PublishError(Exception):
    """A publication could not be handed to Redis (not running, no
    connection in time, no answer in time, refused)."""


class PubSubMode(enum.Enum):
    """Which pub/sub commands a cluster uses."""

    #: C{SSUBSCRIBE}/C{SPUBLISH} (Redis 7 and later).
    SHARDED = "sharded"
    #: C{SUBSCRIBE}/C{PUBLISH}.
    CLASSIC = "classic"

    @property
    def publish_command(self) -> str:
        return "SPUBLISH" if self is PubSubMode.SHARDED else "PUBLISH"


#: First Redis major version with sharded pub/sub.
SHARDED_SINCE_MAJOR = 7

_VERSION_LINE = re.compile(r"^redis_version:(\d+)\.", re.MULTILINE)


def mode_for_server(info: str | bytes) -> PubSubMode:
    """The pub/sub mode for the server whose C{INFO server} answer this is
    (classic when the version cannot be read)."""
    text = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
    match = _VERSION_LINE.search(text)
    if match is not None and int(match.group(1)) >= SHARDED_SINCE_MAJOR:
        return PubSubMode.SHARDED
    return PubSubMode.CLASSIC


class RedisPublisher:
    """One Redis connection that publishes, in order, with bounded waits.

    While the connection is down, or refused by Redis, publications wait for
    it to come back, at most C{timeout} seconds each, then fail with
    L{PublishError}; once Redis is known to be unreachable (an attempt to
    reconnect failed), they fail at once, leaving nothing waiting, until an
    attempt connects again. A PUBLISH
    whose answer does not come in time aborts the connection (it reconnects
    by itself), so later publications do not queue behind a stalled server.
    Until its L{mode} is set, publications wait for it (in order, within
    the same deadline).
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
        self._mode: PubSubMode | None = None
        self._waiting: list[tuple[str, bytes, Deferred[int], IDelayedCall]] = []

    @property
    def mode(self) -> PubSubMode | None:
        """The pub/sub commands used; None until known."""
        return self._mode

    @mode.setter
    def mode(self, mode: PubSubMode) -> None:
        self._mode = mode
        waiting, self._waiting = self._waiting, []
        for channel, payload, d, timer in waiting:
            if timer.active():
                timer.cancel()
            self._send(channel, payload).chainDeferred(d)

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
        if self._connection is None:
            return fail(PublishError("the cluster publisher is not running"))
        if self._mode is None:
            d: Deferred[int] = Deferred()
            timer = self._reactor.callLater(self._timeout, self._mode_unknown, d)
            self._waiting.append((channel, payload, d, timer))
            return d
        return self._send(channel, payload)

    def _send(self, channel: str, payload: bytes) -> Deferred[int]:
        connection = self._connection
        if connection is None or self._mode is None:
            return fail(PublishError("the cluster publisher is not running"))
        reply = connection.execute((self._mode.publish_command, channel, payload))
        return reply.addCallbacks(int, self._failed)

    def _mode_unknown(self, d: Deferred[int]) -> None:
        self._waiting = [entry for entry in self._waiting if entry[2] is not d]
        d.errback(PublishError(f"the Redis version was not known within {self._timeout}s"))

    async def ask_mode(self) -> PubSubMode:
        """Ask the server which pub/sub it has (C{INFO server}), within the timeout.

        @raise PublishError: when it does not answer.
        """
        connection = self._connection
        if connection is None:
            raise PublishError("the cluster publisher is not running")
        try:
            info = await connection.execute(("INFO", "server"))
        except (NotConnected, ReplyTimeout, ConnectionLost, ClientClosed) as e:
            raise PublishError(f"INFO server: {e or type(e).__name__}") from None
        except txredisapi.ResponseError as e:
            raise PublishError(f"Redis refused INFO server ({e})") from None
        return mode_for_server(info)

    def close(self) -> Deferred[None]:
        """Close the connection and stop reconnecting (idempotent)."""
        waiting, self._waiting = self._waiting, []
        for _, _, d, timer in waiting:
            if timer.active():
                timer.cancel()
            d.errback(PublishError("the cluster publisher was closed"))
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
        pubsub: str = "auto",
        reconnect_initial_delay: float = 0.2,
        reconnect_max_delay: float = 5.0,
    ) -> None:
        """
        @param settings: the same Redis settings as the store.
        @param reactor: provides C{IReactorTime} and C{IReactorTCP}.
        @param node_id: a fresh random one when None.
        @param channel_prefix: the same on every node of the cluster.
        @param pubsub: C{"auto"} (sharded on Redis 7 and later), C{"sharded"}
            or C{"classic"}; every node of a cluster must end up the same.
        @param reconnect_initial_delay: seconds before the first reconnection
            attempt after a loss; later attempts back off up to
            C{reconnect_max_delay}.
        @raise ValueError: an unknown C{pubsub}.
        """
        if pubsub not in ("auto", "sharded", "classic"):
            raise ValueError(f"pubsub must be auto, sharded or classic, not {pubsub!r}")
        self._settings = settings
        self.clock: IReactorTime = reactor
        self._reactor = reactor
        self._forced = None if pubsub == "auto" else PubSubMode(pubsub)
        node_id = node_id if node_id is not None else new_node_id()
        self.publisher = RedisPublisher(
            settings,
            reactor,
            name=client_name("publish", node_id),
            reconnect_initial_delay=reconnect_initial_delay,
            reconnect_max_delay=reconnect_max_delay,
        )
        self.adapter = ClusterAdapter(
            node_id,
            self.publisher.publish,
            channel_prefix=channel_prefix,
            clock=reactor,
        )
        self._initial_delay = reconnect_initial_delay
        self._max_delay = reconnect_max_delay
        self._subscriber: Subscriber | None = None
        self._asking: Deferred[Any] | None = None
        self.subscriptions = 0
        self._waiters: list[tuple[int, Deferred[int]]] = []
        self._resubscribed_hooks: list[Callable[[], None]] = []

    @property
    def node_id(self) -> str:
        """This process's id in the cluster (it changes with L{renew})."""
        return self.adapter.node_id

    @property
    def mode(self) -> PubSubMode | None:
        """Sharded or classic pub/sub; None until known."""
        return self.publisher.mode

    @property
    def subscribed(self) -> bool:
        """Whether a subscription is in place right now."""
        return self._subscriber is not None and self._subscriber.subscribed

    def on_resubscribed(self, hook: Callable[[], None]) -> None:
        """Call C{hook} each time the subscription is back after it was lost
        (messages published meanwhile never arrived)."""
        self._resubscribed_hooks.append(hook)

    def startService(self) -> None:
        super().startService()
        _log.info(
            "cluster node {node_id} joining channel {channel} on redis {address}",
            node_id=self.node_id,
            channel=self.adapter.channel,
            address=describe(self._settings),
        )
        self.publisher.start()
        if self._forced is not None:
            self._mode_known(self._forced)
        else:
            self._asking = Deferred.fromCoroutine(self._ask_mode())
            self._asking.addErrback(self._ask_failed)

    async def _ask_mode(self) -> None:
        delay = self._initial_delay
        while self.running:
            try:
                mode = await self.publisher.ask_mode()
            except PublishError as e:
                _log.warn(
                    "cluster node {node_id} could not ask Redis for its version: {error}; "
                    "trying again in {delay}s",
                    node_id=self.node_id,
                    error=str(e),
                    delay=delay,
                )
                await deferLater(self._reactor, delay, lambda: None)
                delay = min(delay * 2, self._max_delay)
                continue
            if self.running:
                self._mode_known(mode)
            return

    @staticmethod
    def _ask_failed(failure: Failure) -> None:
        if not failure.check(CancelledError):
            _log.failure("asking Redis for its pub/sub mode failed", failure=failure)

    def _mode_known(self, mode: PubSubMode) -> None:
        self.publisher.mode = mode
        _log.info(
            "cluster node {node_id} uses {mode} pub/sub", node_id=self.node_id, mode=mode.value
        )
        self._start_subscriber()

    def _start_subscriber(self) -> None:
        mode = self.publisher.mode
        if self._subscriber is not None or mode is None:
            return
        kind = SHARD if mode is PubSubMode.SHARDED else CHANNEL
        # A closed subscriber does not reopen: a new one per start.
        subscriber = self._subscriber = Subscriber(
            self._settings,
            self._reactor,
            name=client_name("subscribe", self.node_id),
            subscriptions=[Subscription(kind, channel) for channel in self.adapter.channels],
            receive=self._received,
            on_subscribed=self._subscribed,
            on_lost=self._lost,
            reconnect_initial_delay=self._initial_delay,
            reconnect_max_delay=self._max_delay,
        )
        subscriber.start()

    def renew(self, node_id: str) -> Deferred[None]:
        """Go on under a new node id: the adapter marks and addresses with it
        and a new subscription follows its channel (the old one ends).

        @return: fires once the old subscription is closed.
        """
        old, self._subscriber = self._subscriber, None
        self.adapter.renew(node_id)
        if self.running:
            self._start_subscriber()
        if old is None:
            return succeed(None)
        return old.close()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        asking, self._asking = self._asking, None
        if asking is not None and not asking.called:
            asking.cancel()
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
                "cluster node {node_id} subscribed to {channel}",
                node_id=self.node_id,
                channel=self.adapter.channel,
            )
        else:
            _log.info(
                "cluster node {node_id} subscribed again to {channel} (subscription {count})",
                node_id=self.node_id,
                channel=self.adapter.channel,
                count=self.subscriptions,
            )
            for hook in list(self._resubscribed_hooks):
                try:
                    hook()
                except Exception:  # noqa: BLE001 - error boundary: one hook must not stop the rest
                    _log.failure("a resubscription hook failed")
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
