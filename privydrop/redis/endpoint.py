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

from typing import Any

from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint

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
