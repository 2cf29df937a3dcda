"""What the Redis client relies on in txredisapi beyond its public API
(L{privydrop.compat.txredisapi.RELIED_ON}), checked against the installed version.

Each test names the behaviour in its failure message, so an upgrade of
txredisapi that changes one says what to revisit. No sockets: connections
are made on in-memory transports; txredisapi's reconnection timers run on
the global reactor, with zero delays.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted
import txredisapi
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from privydrop.compat.txredisapi import RELIED_ON, forget_queued_connection
from privydrop.redis.pool import OrderedConnection
from privydrop.settings import RedisSettings

#: Longest wait for txredisapi to reconnect; a failure, not a hang, past it.
WAIT_S = 10.0


def relied_on(words: str) -> str:
    """The entry of RELIED_ON a test checks, for its failure message."""
    (entry,) = [e for e in RELIED_ON if words in e]
    return f"txredisapi changed: {entry}"


class GatedProtocol(txredisapi.BaseRedisProtocol):
    """A protocol whose C{whenConnected()} fires only when the test says so."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asked: list[Deferred[Any]] = []

    def whenConnected(self) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.asked.append(d)
        return d

    def open(self) -> None:
        asked, self.asked = self.asked, []
        for d in asked:
            d.callback(self)


class MemoryTransport(StringTransport):
    """Loses its connection on the next turn, as a real transport does."""

    protocol: Any

    def loseConnection(self) -> None:
        if self.connected:
            self.connected = False
            reactor.callLater(
                0, self.protocol.connectionLost, Failure(ConnectionDone("closed"))
            )


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    """Connects every attempt at once to an in-memory transport."""

    def __init__(self) -> None:
        self.connected: DeferredQueue[tuple[Any, MemoryTransport]] = DeferredQueue()

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        protocol = factory.buildProtocol(None)
        transport = MemoryTransport()
        transport.protocol = protocol
        protocol.makeConnection(transport)
        # Handed to the test on the next turn, once the pool slot has taken
        # the connection (dropping it before would be an impossible event).
        reactor.callLater(0, self.connected.put, (protocol, transport))
        return succeed(protocol)


def test_txredisapi_handshake_is_left_with_nothing_to_do() -> None:
    """Our handshake replaces txredisapi's: the factory hands the protocol
    its own password and database, and with neither the protocol writes
    nothing when it connects (else AUTH would go out twice, and its
    failure would stop the pool for good)."""
    factory = txredisapi.RedisFactory("x", 3, 1, isLazy=True, password="pw")
    factory.protocol = GatedProtocol
    built = factory.buildProtocol(None)
    message = relied_on("gives the protocol the factory's password")
    assert (built.password, built.dbid) == ("pw", 3), message
    protocol = txredisapi.BaseRedisProtocol(password=None, dbid=None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    assert transport.value() == b"", message


def test_factory_pools_a_connection_only_once_it_is_connected() -> None:
    """The factory asks the protocol C{whenConnected()} and pools it only
    when that fires, so a connection whose handshake fails never counts."""
    factory = txredisapi.RedisFactory("x", None, 1, isLazy=True)
    factory.protocol = GatedProtocol
    built = factory.buildProtocol(None)
    message = relied_on("wait for protocol.whenConnected()")
    assert len(built.asked) == 1, message
    assert factory.pool == [], message


@pytest_twisted.ensureDeferred
async def test_back_off_is_reset_only_when_a_connection_is_connected() -> None:
    """A connection dropped before C{whenConnected()} fired (a refused
    password) makes the next attempt wait longer; one that fired resets the
    back-off. Without this, a wrong password reconnects in a tight loop."""
    message = relied_on("resets its reconnection back-off")
    for connects, expected in ((False, [1, 2, 3]), (True, [1, 1, 1])):
        attempts: list[int] = []

        class Recording(txredisapi.RedisFactory):
            def retryDelay(self, attempt: int) -> float:
                attempts.append(attempt)
                return 0.0

        factory = Recording("x", None, 1, isLazy=True)
        factory.protocol = GatedProtocol
        endpoint = MemoryEndpoint()
        factory.startConnecting(endpoint)
        try:
            for _ in expected:
                proxy, transport = await endpoint.connected.get().addTimeout(WAIT_S, reactor)
                if connects:
                    proxy._protocol.open()
                transport.loseConnection()
            await endpoint.connected.get().addTimeout(WAIT_S, reactor)
        finally:
            await factory.disconnect()
        assert attempts == expected, message


@pytest_twisted.ensureDeferred
async def test_pooled_connections_stay_queued_until_forgotten() -> None:
    """txredisapi queues every pooled connection for C{getConnection()} and
    never lets go of a closed one; the client takes it out when it closes."""
    factory = txredisapi.RedisFactory("x", None, 1, isLazy=True)
    factory.protocol = GatedProtocol
    endpoint = MemoryEndpoint()
    factory.startConnecting(endpoint)
    try:
        proxy, transport = await endpoint.connected.get().addTimeout(WAIT_S, reactor)
        protocol = proxy._protocol
        protocol.open()
        await factory.deferred.addTimeout(WAIT_S, reactor)  # pooled
        closed = protocol.whenDisconnected()
        transport.loseConnection()
        await closed.addTimeout(WAIT_S, reactor)
        message = relied_on("connectionQueue.pending")
        assert protocol not in factory.pool
        assert protocol in factory.connectionQueue.pending, message
        forget_queued_connection(factory, protocol)
        assert protocol not in factory.connectionQueue.pending
    finally:
        await factory.disconnect()


def test_failed_commands_leave_nothing_in_txredisapis_queue() -> None:
    """Commands that found Redis down leave no waiter in txredisapi's queue
    (the client never waits there; it once left one per publication)."""
    clock = MemoryReactorClock()
    connection = OrderedConnection(
        RedisSettings(host="redis.invalid", command_timeout=0.5), clock, name="privydrop:t"
    )
    failed = [connection.execute(("PUBLISH", "c", "m")) for _ in range(10)]
    clock.advance(0.5)
    for d in failed:
        d.addErrback(lambda _: None)
    factory = connection._factory
    assert factory is not None
    assert connection.waiting == 0
    assert factory.connectionQueue.waiting == [] and factory.connectionQueue.peekers == []
    connection.close()
