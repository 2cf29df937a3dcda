"""Where connections to Redis are made: the one client endpoint.

Every connection of the client (the store's pool, the cluster's publisher
and subscriber) is opened through the endpoint returned here, and the
connection pools reconnect through it after every loss. An endpoint is asked
again at each attempt, so an endpoint that resolves the address at connection
time (the master named by Sentinel, say) can replace this one without any
change to the pools.

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

from privydrop.settings import RedisSettings


def redis_endpoint(settings: RedisSettings, reactor: Any) -> IStreamClientEndpoint:
    """The endpoint of the Redis server the settings name.

    The name is resolved at every attempt (IPv4 and IPv6), and an attempt
    gives up after C{connect_timeout} seconds.

    @param reactor: provides C{IReactorTCP} and C{IReactorTime}.
    """
    endpoint: IStreamClientEndpoint = HostnameEndpoint(
        reactor, settings.host, settings.port, timeout=settings.connect_timeout
    )
    return endpoint


def describe(settings: RedisSettings) -> str:
    """C{host:port}, for messages."""
    return f"{settings.host}:{settings.port}"


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
