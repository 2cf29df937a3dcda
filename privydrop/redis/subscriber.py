"""A subscriber connection: subscriptions renewed on every connection, publications handed on.

Redis forgets a connection's subscriptions when the connection goes, so
L{Subscriber} subscribes again after every (re)connection, once the
handshake succeeded, within C{command_timeout}; a subscription that fails
or is not confirmed in time drops the connection, and its slot reconnects
with back-off. L{Subscriber.subscriptions} counts the subscriptions
established, so a renewal can be waited for.

Publications arrive as pushes, which L{SubscriberProtocol} reads itself
(with L{privydrop.redis.resp}): C{message} (C{SUBSCRIBE}), C{pmessage}
(C{PSUBSCRIBE}) and C{smessage} (C{SSUBSCRIBE}, sharded pub/sub of Redis 7)
are handed to the C{receive} callable as C{(channel, payload)}; any other
reply answers the oldest command owed, as on every connection
(L{privydrop.redis.protocol}). Each subscription command names one channel
or pattern, so it gets exactly one reply (its confirmation, or an error)
and the FIFO of owed replies stays one entry per command; a push nobody
asked for (Redis Cluster sends C{sunsubscribe} when a shard moves) puts the
connection out of step, so it is dropped and subscribes again. A kind of
subscription is the pair of commands that starts and ends it
(L{SubscriptionKind}): channels (L{CHANNEL}), patterns (L{PATTERN}) and
sharded channels (L{SHARD}, Redis 7 and later).

Payloads are text when they decode as UTF-8, bytes otherwise. Pub/sub ignores
database indexes, so no C{SELECT} is sent.

This module knows nothing of what the channels carry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred, DeferredList
from twisted.python.failure import Failure

from privydrop.logs.levels import Logger
from privydrop.redis.pool import ConnectionPool
from privydrop.redis.protocol import PipelinedProtocol
from privydrop.settings import RedisSettings

_log = Logger()

#: C{receive(channel, payload)}: one publication, as Redis delivered it.
Receive = Callable[[str | bytes, str | bytes], None]

#: Where the channel is in each push that carries a publication; the payload
#: follows it. (C{pmessage} names the pattern first.)
_CHANNEL_AT = {"message": 1, "pmessage": 2, "smessage": 1}


@attrs.frozen
class SubscriptionKind:
    """The commands that start and end one kind of subscription."""

    subscribe: str
    unsubscribe: str


#: C{SUBSCRIBE <channel>}: publications on that channel.
CHANNEL = SubscriptionKind("SUBSCRIBE", "UNSUBSCRIBE")
#: C{PSUBSCRIBE <pattern>}: publications on every channel the glob pattern matches.
PATTERN = SubscriptionKind("PSUBSCRIBE", "PUNSUBSCRIBE")
#: C{SSUBSCRIBE <channel>}: publications made with C{SPUBLISH} on that
#: sharded channel (Redis 7 and later; separate from classic channels).
SHARD = SubscriptionKind("SSUBSCRIBE", "SUNSUBSCRIBE")


@attrs.frozen
class Subscription:
    """One channel or pattern to be subscribed to."""

    kind: SubscriptionKind
    name: str


class SubscriberProtocol(PipelinedProtocol):
    """A connection that hands publications to its L{Subscriber}."""

    owner: Subscriber

    def replyReceived(self, reply: Any) -> None:
        if type(reply) is list and len(reply) >= 3:
            kind = reply[0]
            at = _CHANNEL_AT.get(kind) if type(kind) is str else None
            if at is not None and len(reply) == at + 2:
                if not self.broken:
                    self.owner.message_received(reply[at], reply[at + 1])
                return
        super().replyReceived(reply)


class Subscriber(ConnectionPool):
    """One pub/sub connection that keeps its subscriptions; see the module docstring.

    @ivar subscriptions: how many times the subscriptions were established;
        more than one means they were renewed after reconnections.
    """

    protocol = SubscriberProtocol

    def __init__(
        self,
        settings: RedisSettings,
        reactor: Any,
        *,
        name: str,
        subscriptions: Sequence[Subscription],
        receive: Receive,
        on_subscribed: Callable[[], None] | None = None,
        on_lost: Callable[[], None] | None = None,
        command_timeout: float | None = None,
        reconnect_initial_delay: float = 0.2,
        reconnect_max_delay: float = 5.0,
    ) -> None:
        """
        @param settings: where Redis is (the database index is ignored).
        @param name: the connection name (see
            L{privydrop.redis.handshake.client_name}).
        @param subscriptions: what to subscribe to, on every connection.
        @param receive: called with each publication; what it raises is
            logged, and the next publication is delivered all the same.
        @param on_subscribed: called each time the subscriptions are in place.
        @param on_lost: called when the connection that held them is lost
            (not when L{close} ends them).
        @param command_timeout: seconds a (un)subscription may take;
            C{settings.command_timeout} when None.
        @raise ValueError: no subscriptions, or a name Redis would refuse.
        """
        if not subscriptions:
            raise ValueError("a subscriber needs at least one subscription")
        super().__init__(
            settings,
            reactor,
            name=name,
            size=1,
            db=0,
            command_timeout=command_timeout,
            reconnect_initial_delay=reconnect_initial_delay,
            reconnect_max_delay=reconnect_max_delay,
        )
        self._subscriptions = tuple(subscriptions)
        self._receive = receive
        self._on_subscribed = on_subscribed
        self._on_lost = on_lost
        self._current: PipelinedProtocol | None = None
        self.subscriptions = 0

    @property
    def subscribed(self) -> bool:
        """Whether the subscriptions are in place right now."""
        return self._current is not None and self._current.usable

    def close(self) -> Deferred[None]:
        """Unsubscribe (politely, within C{command_timeout}), then close.

        Closing the connection would end the subscriptions too; saying so
        first means Redis has stopped sending to this process by the time
        the returned Deferred fires.
        """
        return Deferred.fromCoroutine(self._close())

    async def _close(self) -> None:
        current, self._current = self._current, None
        if current is not None and current.usable and not self.closed:
            deadline = self.deadline()
            replies = [
                self._send(current, (s.kind.unsubscribe, s.name), deadline)
                for s in self._subscriptions
            ]
            for ok, result in await DeferredList(replies, consumeErrors=True):
                if not ok:
                    _log.debug(
                        "redis unsubscribe on {name} failed: {error}",
                        name=self.name,
                        error=result.getErrorMessage(),
                    )
        await super().close()

    # -- what the connection reports -----------------------------------------

    def connection_ready(self, conn: PipelinedProtocol) -> None:
        super().connection_ready(conn)
        if self.closed or not conn.usable:
            return
        deadline = self.deadline()
        replies = [
            self._send(conn, (s.kind.subscribe, s.name), deadline).addCallback(
                _check_confirmation, s
            )
            for s in self._subscriptions
        ]
        DeferredList(replies, consumeErrors=True).addCallback(self._subscribe_replied, conn)

    def _subscribe_replied(self, results: list[tuple[bool, Any]], conn: PipelinedProtocol) -> None:
        failures: list[Failure] = [result for ok, result in results if not ok]
        if failures:
            _log.warn(
                "subscribing on {name} failed: {error}; reconnecting",
                name=self.name,
                error=failures[0].getErrorMessage() or type(failures[0].value).__name__,
            )
            if not conn.broken:
                conn.give_up(reason="a subscription failed")
            return
        if self.closed or not conn.usable:
            return
        self._current = conn
        self.subscriptions += 1
        _notify(self._on_subscribed, "subscribed")

    def connection_lost(self, conn: PipelinedProtocol) -> None:
        super().connection_lost(conn)
        if conn is self._current:
            self._current = None
            if not self.closed:
                _notify(self._on_lost, "lost")

    def message_received(self, channel: str | bytes, payload: str | bytes) -> None:
        """One publication arrived (called by the connection)."""
        try:
            self._receive(channel, payload)
        except Exception:  # noqa: BLE001 - error boundary: log, keep the connection
            _log.failure(
                "handling a publication on {channel!r} failed", channel=channel
            )


def _notify(hook: Callable[[], None] | None, what: str) -> None:
    if hook is None:
        return
    try:
        hook()
    except Exception:  # noqa: BLE001 - error boundary: a hook must not break the connection
        _log.failure("the subscriber's {what} hook failed", what=what)


class SubscriptionRefused(Exception):
    """Redis answered a subscription with something else than its confirmation."""


def _check_confirmation(reply: Any, subscription: Subscription) -> Any:
    expected = subscription.kind.subscribe.lower()
    if type(reply) is not list or len(reply) != 3 or reply[:2] != [expected, subscription.name]:
        raise SubscriptionRefused(f"unexpected answer to {subscription.kind.subscribe}: {reply!r}")
    return reply
