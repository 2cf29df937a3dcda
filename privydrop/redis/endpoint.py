"""Where connections to Redis are made: the one client endpoint.

Every connection of the client (the store's pool, the cluster's publisher
and subscriber) is opened through the endpoint returned here, and the
connection pools reconnect through it after every loss. An endpoint is asked
again at each attempt: with Sentinel settings it asks the Sentinels where
the master is at every attempt (L{privydrop.redis.sentinel}), so the pools
follow a failover without knowing about it.

This module knows the settings' address fields and nothing of commands.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.python.failure import Failure
from zope.interface import implementer

from privydrop.redis.sentinel import (
    SentinelMasterEndpoint,
    SentinelResolver,
    describe_sentinels,
    format_address,
)
from privydrop.settings import RedisSettings


def redis_endpoint(settings: RedisSettings, reactor: Any) -> IStreamClientEndpoint:
    """The endpoint of the Redis server the settings name.

    Without Sentinel, the host name is resolved at every attempt (IPv4 and
    IPv6); with Sentinel, the master is looked up at every attempt. A
    connection attempt to the server gives up after C{connect_timeout}
    seconds (asking the Sentinels takes at most their C{timeout} each, on
    top).

    @param reactor: provides C{IReactorTCP} and C{IReactorTime}.
    """
    endpoint: IStreamClientEndpoint
    if settings.sentinel is not None:
        endpoint = SentinelMasterEndpoint(
            SentinelResolver(settings.sentinel, reactor), reactor, settings.connect_timeout
        )
    else:
        endpoint = HostnameEndpoint(
            reactor, settings.host, settings.port, timeout=settings.connect_timeout
        )
    return endpoint


def describe(settings: RedisSettings) -> str:
    """C{host:port}, or C{master <name> (Sentinels h:p,...)}, for messages."""
    if settings.sentinel is not None:
        return describe_sentinels(settings.sentinel)
    return format_address((settings.host, settings.port))


@implementer(IStreamClientEndpoint)
class ReportingEndpoint:
    """An endpoint that tells its owner how each connection attempt went.

    A pool learns this way that Redis cannot be reached at all (an attempt
    refused or timed out), as opposed to not yet or not now; the attempts
    themselves, and their retries, are the wrapped endpoint's and its
    caller's business.
    """

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        succeeded: Callable[[], None],
        failed: Callable[[Failure], None],
    ) -> None:
        """
        @param endpoint: makes the attempts.
        @param succeeded: called when an attempt connected.
        @param failed: called with the reason when one failed (not when it
            was cancelled: the pool is closing).
        """
        self._endpoint = endpoint
        self._succeeded = succeeded
        self._failed = failed

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[Any]:
        attempt: Deferred[Any] = self._endpoint.connect(protocolFactory)
        return attempt.addCallbacks(self._connected, self._not_connected)

    def _connected(self, protocol: Any) -> Any:
        self._succeeded()
        return protocol

    def _not_connected(self, failure: Failure) -> Failure:
        if not failure.check(CancelledError):
            self._failed(failure)
        return failure
