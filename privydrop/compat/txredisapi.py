"""txredisapi behaviour the Redis client relies on, in one place.

The client (L{privydrop.redis}) sits on txredisapi's connection pool
(C{RedisFactory}: one reconnecting slot per connection, with back-off) and
otherwise uses only its public surface: the factory's constructor,
C{startConnecting(endpoint)}, C{disconnect()}, C{initialDelay}/C{maxDelay},
C{buildProtocol}, and the protocol's C{whenConnected()}/C{connectionMade()}.
What it relies on beyond that is listed in L{RELIED_ON}, and
C{tests/unit/test_compat_txredisapi.py} fails, naming the behaviour, on a
txredisapi version that changes one of them.
"""

from __future__ import annotations

from typing import Any

#: The behaviours of txredisapi the client depends on, beyond its public API.
RELIED_ON = (
    # Our handshake runs after txredisapi's, which must have nothing to do.
    "RedisFactory.buildProtocol() gives the protocol the factory's password and dbid,"
    " and BaseRedisProtocol.connectionMade() writes nothing when both are None",
    # A connection counts (pool, back-off reset) only once our handshake succeeded,
    # so a refused password keeps backing off instead of reconnecting in a loop.
    "RedisFactory.buildProtocol() and the pool slot wait for protocol.whenConnected();"
    " the slot resets its reconnection back-off only when that fires",
    # Left there, every reconnection would leave a dead protocol behind.
    "RedisFactory queues each pooled connection in connectionQueue.pending for"
    " getConnection() and never takes it out by itself",
)


def forget_queued_connection(factory: Any, protocol: Any) -> None:
    """Take a closed connection out of txredisapi's C{getConnection()} queue.

    txredisapi queues every connection it adds to the pool for
    C{getConnection()}, which the client never calls; the queue only grows.
    Called when a connection is lost. A factory without that queue has
    nothing to forget.
    """
    queue = getattr(factory, "connectionQueue", None)
    pending = getattr(queue, "pending", None)
    if pending is not None and protocol in pending:
        pending.remove(protocol)
