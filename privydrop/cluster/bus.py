"""An in-memory publish/subscribe bus with the semantics the cluster adapter
expects from Redis, for running several servers in one process.

It implements the same seam as the Redis connections of
L{privydrop.cluster.pubsub}: a C{publish(channel, payload)} callable returning
a Deferred that fires with the number of receivers, and subscribers that
receive C{(channel, payload)} for one channel (C{SUBSCRIBE}, L{MemoryBus.attach}
subscribes an adapter to its channels) or for every channel starting with a
prefix (as C{PSUBSCRIBE <prefix>*}). Unit tests wire two
L{privydrop.cluster.routing.ClusterAdapter}s to one L{MemoryBus} and run the
cross-process scenarios without a Redis server.

Like Redis, delivery is never re-entrant: a publication is queued, and
subscribers receive it only when the bus is flushed, either explicitly
(L{MemoryBus.flush}, for deterministic tests) or on the next reactor turn when
the bus was given a clock. Publications are delivered in the order they were
made, and a subscriber receives its own publications too (the adapter ignores
those by their origin node id).

This module knows nothing of Socket.IO or of the message format.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from privydrop.logs.levels import Logger

_log = Logger()

#: What a subscriber is called with: the channel and the payload as published.
Receiver = Callable[[str, bytes | str], None]


class Node(Protocol):
    """What L{MemoryBus.attach} needs of an adapter."""

    @property
    def channels(self) -> tuple[str, ...]: ...

    def receive(self, channel: str | bytes, payload: bytes | str) -> None: ...


@attrs.define(eq=False)
class BusSubscription:
    """One subscriber of a L{MemoryBus}; L{cancel} stops its deliveries."""

    prefix: str
    receiver: Receiver
    _bus: MemoryBus
    active: bool = True
    exact: bool = False

    def matches(self, channel: str) -> bool:
        if self.exact:
            return channel == self.prefix
        return channel.startswith(self.prefix)

    def cancel(self) -> None:
        """Stop receiving; queued publications no longer reach this subscriber."""
        if self.active:
            self.active = False
            self._bus._subscriptions.remove(self)


class MemoryBus:
    """Channels in memory; see the module docstring.

    @ivar published: every C{(channel, payload)} ever published, for tests
        that check what went on the wire.
    """

    def __init__(self, clock: IReactorTime | None = None) -> None:
        """
        @param clock: when given, queued publications are delivered on the
            next turn (C{callLater(0)}); otherwise only by L{flush}.
        """
        self._clock = clock
        self._subscriptions: list[BusSubscription] = []
        self._queue: list[tuple[str, bytes | str]] = []
        self._scheduled: IDelayedCall | None = None
        self._flushing = False
        self.published: list[tuple[str, bytes | str]] = []

    def subscribe(self, prefix: str, receiver: Receiver, *, exact: bool = False) -> BusSubscription:
        """Receive every later publication on a channel starting with
        C{prefix} (with C{exact}, on that one channel)."""
        subscription = BusSubscription(prefix, receiver, self, exact=exact)
        self._subscriptions.append(subscription)
        return subscription

    def attach(self, node: Node) -> list[BusSubscription]:
        """Subscribe an adapter to its channels, as its subscriber does over Redis."""
        return [self.subscribe(channel, node.receive, exact=True) for channel in node.channels]

    def publish(self, channel: str, payload: bytes | str) -> Deferred[int]:
        """Queue a publication.

        @return: a Deferred that has already fired with the number of current
            subscribers of the channel (what Redis's C{PUBLISH} answers).
        """
        self.published.append((channel, payload))
        self._queue.append((channel, payload))
        if self._clock is not None and self._scheduled is None:
            self._scheduled = self._clock.callLater(0, self._scheduled_flush)
        return succeed(sum(1 for s in self._subscriptions if s.matches(channel)))

    @property
    def pending(self) -> int:
        """Publications queued and not yet delivered."""
        return len(self._queue)

    def _scheduled_flush(self) -> None:
        self._scheduled = None
        self.flush()

    def flush(self) -> int:
        """Deliver queued publications, including those made meanwhile by
        subscribers, until the queue is empty.

        A subscriber that raises is logged and does not stop the others.

        @return: how many publications were delivered.
        """
        if self._flushing:
            # A subscriber flushing from inside a delivery: the outer loop
            # delivers what it queued, in order.
            return 0
        self._flushing = True
        delivered = 0
        try:
            while self._queue:
                channel, payload = self._queue.pop(0)
                delivered += 1
                for subscription in list(self._subscriptions):
                    if not subscription.active or not subscription.matches(channel):
                        continue
                    try:
                        subscription.receiver(channel, payload)
                    except Exception:  # noqa: BLE001 - error boundary: log, next subscriber
                        _log.failure(
                            "bus subscriber failed on channel {channel}", channel=channel
                        )
        finally:
            self._flushing = False
        return delivered
