"""The Redis client without a server: handshake, pipelining, deadlines, waiters, pub/sub pushes.

Connections are real L{PipelinedProtocol}s on in-memory transports; time is
a C{MemoryReactorClock} (also the reactor the pools would connect with: its
connection attempts never complete, so "Redis is down" unless a test hands
a connection over). What Redis would answer is fed as RESP bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

import pytest
import txredisapi
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.testing import MemoryReactorClock, StringTransportWithDisconnection
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure

from privydrop.redis.errors import (
    ClientClosed,
    ConnectionLost,
    HandshakeRefused,
    NotConnected,
    ReplyTimeout,
)
from privydrop.redis.handshake import Handshake, HandshakeStep, client_name
from privydrop.redis.pool import ConnectionPool, OrderedConnection
from privydrop.redis.protocol import PipelinedProtocol
from privydrop.redis.resp import encode_command
from privydrop.redis.subscriber import CHANNEL, PATTERN, Subscriber, Subscription
from privydrop.settings import RedisSettings

T = TypeVar("T")

SETTINGS = RedisSettings(
    host="redis.invalid", port=6390, command_timeout=1.0, connect_timeout=3.0, pool_size=2
)
NAME = "privydrop:n1:test"
OK = b"+OK\r\n"


def result_of(d: Deferred[T]) -> T:
    """The result of a Deferred that has already fired successfully."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    value: T = results[0]
    return value


def failure_of(d: Deferred[Any]) -> Failure:
    """The failure of a Deferred that has already failed."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    assert isinstance(results[0], Failure), f"succeeded with {results[0]!r}"
    failure: Failure = results[0]
    return failure


def commands(*args: tuple[Any, ...]) -> bytes:
    return b"".join(encode_command(a) for a in args)


def confirmation(kind: str, name: str, count: int) -> bytes:
    """What Redis answers to one (un)subscription: C{[kind, name, count]}."""
    return encode_command((kind, name)).replace(b"*2", b"*3", 1) + b":%d\r\n" % count


def connect(pool: ConnectionPool) -> tuple[PipelinedProtocol, StringTransportWithDisconnection]:
    """A new connection of C{pool}, made (its handshake written, not answered)."""
    conn = pool.protocol()
    conn.owner = pool
    transport = StringTransportWithDisconnection()
    transport.protocol = conn
    conn.makeConnection(transport)
    return conn, transport


def ready(pool: ConnectionPool) -> tuple[PipelinedProtocol, StringTransportWithDisconnection]:
    """A connection of C{pool} whose handshake (CLIENT SETNAME only) succeeded;
    its transport holds what was written after the handshake."""
    conn, transport = connect(pool)
    transport.clear()
    conn.dataReceived(OK)
    assert conn.usable
    return conn, transport


@pytest.fixture
def reactor() -> MemoryReactorClock:
    return MemoryReactorClock()


@pytest.fixture
def pool(reactor: MemoryReactorClock) -> Iterator[ConnectionPool]:
    pool = ConnectionPool(SETTINGS, reactor, name=NAME)
    yield pool
    pool.close()


# -- the handshake (pure) ---------------------------------------------------------


def test_handshake_says_only_what_the_settings_need() -> None:
    """A server without a password in db 0 gets only the connection name; a
    protected one in another database gets AUTH and SELECT first."""
    assert [s.args for s in Handshake(name="n").steps()] == [("CLIENT", "SETNAME", "n")]
    assert Handshake().steps() == ()
    full = Handshake(password="pw", db=3, name="n").steps()
    assert [s.args for s in full] == [
        ("AUTH", "pw"),
        ("SELECT", 3),
        ("CLIENT", "SETNAME", "n"),
    ]
    assert [s.required for s in full] == [True, True, False]


def test_a_refused_connection_name_only_matters_when_it_is_about_credentials() -> None:
    """A Redis that forbids CLIENT must not keep the server from working, but
    a missing password must still be reported as such."""
    setname = HandshakeStep("CLIENT SETNAME", ("CLIENT", "SETNAME", "n"), required=False)
    assert Handshake.refusal(setname, "ERR unknown command 'CLIENT'") is None
    refusal = Handshake.refusal(setname, "NOAUTH Authentication required.")
    assert refusal is not None and refusal.is_auth
    assert "authentication failed" in str(refusal)
    select = Handshake(db=99).steps()[0]
    refusal = Handshake.refusal(select, "ERR DB index is out of range")
    assert refusal is not None and not refusal.is_auth
    assert str(refusal) == (
        "SELECT refused in the connection handshake (ERR DB index is out of range)"
    )


def test_connection_names_say_process_and_role() -> None:
    """Operators read the node and the role off CLIENT LIST."""
    assert client_name("store", "ab12") == "privydrop:ab12:store"
    assert client_name("probe") == "privydrop:probe"
    with pytest.raises(ValueError, match="printable ASCII"):
        client_name("store", "my node")
    with pytest.raises(ValueError):
        ConnectionPool(SETTINGS, MemoryReactorClock(), name="two\nlines")


# -- the handshake on a connection ---------------------------------------------------


def test_handshake_is_one_write_and_the_connection_is_used_only_after_it(
    reactor: MemoryReactorClock,
) -> None:
    """AUTH, SELECT and the name go out in one round trip; until all are
    answered, no command may use the connection (it could land in db 0)."""
    pool = ConnectionPool(
        RedisSettings(host="h", port=1, password="pw", db=4), reactor, name=NAME
    )
    conn, transport = connect(pool)
    assert transport.value() == commands(("AUTH", "pw"), ("SELECT", 4), ("CLIENT", "SETNAME", NAME))
    fired = conn.whenConnected()
    conn.dataReceived(OK + OK)
    assert not fired.called and not conn.usable and pool.connections == ()
    conn.dataReceived(OK)
    assert result_of(fired) is conn
    assert pool.connections == (conn,)
    pool.close()


def test_refused_password_is_reported_once_per_reply_and_the_connection_dropped(
    pool: ConnectionPool,
) -> None:
    """A wrong password is loud (once, not once per reconnection), fails
    callers at once, and the connection never counts as connected, so
    txredisapi keeps backing off instead of reconnecting in a tight loop."""
    waiting = pool.execute(("PING",))
    with capturedLogs() as events:
        for reply in (b"-WRONGPASS invalid password\r\n", b"-WRONGPASS invalid password\r\n"):
            conn, transport = connect(pool)
            fired = conn.whenConnected()
            conn.dataReceived(reply)
            assert not transport.connected and not fired.called
        conn, transport = connect(pool)
        conn.dataReceived(b"-NOAUTH Authentication required.\r\n")
    errors = [e for e in events if e["log_level"] is LogLevel.error]
    assert [e["error"] for e in errors] == [
        "WRONGPASS invalid password",
        "NOAUTH Authentication required.",
    ]
    refusal = failure_of(waiting).value
    assert isinstance(refusal, HandshakeRefused) and refusal.is_auth
    # Later callers fail at once too, until a handshake succeeds.
    assert failure_of(pool.execute(("PING",))).check(HandshakeRefused)
    conn, _ = ready(pool)
    assert pool.handshake_error is None
    assert pool.execute(("PING",)) is not None and conn.owed


def test_a_pool_that_does_not_fail_fast_waits_through_a_refusal(
    reactor: MemoryReactorClock,
) -> None:
    """The publisher's messages wait (until their deadline) for Redis to take
    a rotated password, and say why when it never did."""
    connection = OrderedConnection(SETTINGS, reactor, name=NAME, fail_fast_on_refusal=False)
    delivered = connection.execute(("PUBLISH", "c", "1"))
    lost = connection.execute(("PUBLISH", "c", "2"), deadline=0.5)
    conn, transport = connect(connection)
    conn.dataReceived(b"-WRONGPASS invalid password\r\n")
    assert not delivered.called and not lost.called
    reactor.advance(0.5)
    assert failure_of(lost).check(HandshakeRefused)
    conn, transport = ready(connection)
    assert transport.value() == commands(("PUBLISH", "c", "1"))
    conn.dataReceived(b":0\r\n")
    assert result_of(delivered) == 0
    connection.close()


def test_connection_lost_during_the_handshake_is_only_retried(pool: ConnectionPool) -> None:
    """A blip while connecting is not a configuration error: nothing loud,
    and callers keep waiting for the next connection."""
    waiting = pool.execute(("PING",))
    with capturedLogs() as events:
        conn, transport = connect(pool)
        transport.loseConnection()
    assert not [e for e in events if e["log_level"] >= LogLevel.warn]
    assert pool.handshake_error is None
    assert not waiting.called and pool.waiting == 1
    ready(pool)
    assert not waiting.called  # PING written, reply owed


def test_stalled_handshake_is_dropped_after_the_connect_timeout(
    pool: ConnectionPool, reactor: MemoryReactorClock
) -> None:
    """A Redis that accepts but never answers (frozen) costs a connection
    attempt, not a connection stuck for ever."""
    conn, transport = connect(pool)
    with capturedLogs() as events:
        reactor.advance(SETTINGS.connect_timeout - 0.01)
        assert transport.connected
        reactor.advance(0.01)
    assert not transport.connected
    assert [e["log_level"] for e in events] == [LogLevel.warn]
    assert pool.handshake_error is None


def test_a_server_without_client_setname_is_used_all_the_same(pool: ConnectionPool) -> None:
    """Managed Redis services may rename CLIENT away; the name is a
    convenience, so the connection works and the refusal is said once."""
    with capturedLogs() as events:
        for _ in range(2):
            conn, _ = connect(pool)
            conn.dataReceived(b"-ERR unknown command 'CLIENT'\r\n")
            assert conn.usable
    assert [e["log_level"] for e in events] == [LogLevel.warn]


# -- pipelining and deadlines ---------------------------------------------------------


def test_commands_are_written_at_once_and_answered_in_order(pool: ConnectionPool) -> None:
    """Many callers share a connection, none waits for another's reply, and
    each gets its own answer, even when one of them gave up."""
    conn, transport = ready(pool)
    first = pool.execute(("GET", "a"))
    second = pool.execute(("GET", "b"))
    third = pool.execute(("GET", "c"))
    assert transport.value() == commands(("GET", "a"), ("GET", "b"), ("GET", "c"))
    second.cancel()
    assert failure_of(second).check(CancelledError)
    conn.dataReceived(b"$1\r\nA\r\n$1\r\nB\r\n$1\r\nC\r\n")
    assert result_of(first) == "A"
    assert result_of(third) == "C"
    conn.dataReceived(b"-ERR wrong type\r\n")  # nobody asked: the connection is out of step
    assert not transport.connected


def test_overdue_reply_fails_the_command_and_retires_its_connection(
    pool: ConnectionPool, reactor: MemoryReactorClock
) -> None:
    """A frozen Redis gives a bounded failure, and its late reply can never
    be read as the answer to somebody else's later command."""
    conn, transport = ready(pool)
    late = pool.execute(("GET", "a"))
    reactor.advance(SETTINGS.command_timeout / 2)
    other = pool.execute(("GET", "b"))
    reactor.advance(SETTINGS.command_timeout / 2 - 0.01)
    assert not late.called
    reactor.advance(0.11)  # the check runs every 0.1 s at most
    assert failure_of(late).check(ReplyTimeout)
    assert failure_of(other).check(ConnectionLost)
    assert not transport.connected and pool.connections == ()
    after = pool.execute(("GET", "b"))
    assert pool.waiting == 1
    fresh, fresh_transport = ready(pool)
    assert fresh_transport.value() == commands(("GET", "b"))
    fresh.dataReceived(b"$1\r\nB\r\n")
    assert result_of(after) == "B"


def test_waiting_for_a_connection_is_bounded_and_leaves_no_waiter(
    pool: ConnectionPool, reactor: MemoryReactorClock
) -> None:
    """With Redis down, every command fails within its deadline and nothing
    is left queued behind (an outage must not grow memory)."""
    pending = [pool.execute(("PUBLISH", "c", str(i))) for i in range(5)]
    assert pool.waiting == 5
    reactor.advance(SETTINGS.command_timeout)
    for d in pending:
        assert failure_of(d).check(NotConnected)
    assert pool.waiting == 0


def _refused() -> Failure:
    from twisted.internet.error import ConnectionRefusedError

    return Failure(ConnectionRefusedError("Connection refused"))


def test_a_pool_that_fails_fast_when_unreachable_leaves_nothing_waiting(
    reactor: MemoryReactorClock,
) -> None:
    """Once an attempt to connect failed (Redis known to be away), the callers
    waiting fail at once and so does every new command, until an attempt
    connects again; then commands wait for the handshake as usual."""
    pool = OrderedConnection(SETTINGS, reactor, name=NAME, fail_fast_when_unreachable=True)
    waiting = pool.execute(("PUBLISH", "c", "0"))
    assert pool.waiting == 1
    with capturedLogs() as events:
        pool.connection_attempt_failed(_refused())
        pool.connection_attempt_failed(_refused())
    failed = failure_of(waiting)
    assert failed.check(NotConnected) and "unreachable" in str(failed.value)
    assert [e["state"] for e in events if "state" in e] == ["unreachable"]  # once per outage
    timers = len(reactor.getDelayedCalls())
    later = pool.execute(("PUBLISH", "c", "1"))
    assert failure_of(later).check(NotConnected) and pool.waiting == 0
    assert len(reactor.getDelayedCalls()) == timers  # no deadline timer either
    with capturedLogs() as events:
        pool.connection_attempt_succeeded()
    assert [e["state"] for e in events if "state" in e] == ["reachable"]
    after = pool.execute(("PUBLISH", "c", "2"))
    assert pool.waiting == 1 and not after.called
    conn, transport = ready(pool)
    assert transport.value() == commands(("PUBLISH", "c", "2"))
    conn.dataReceived(b":0\r\n")
    assert result_of(after) == 0
    pool.close()


def test_a_failed_attempt_of_one_slot_is_no_outage_while_another_connection_works(
    reactor: MemoryReactorClock,
) -> None:
    """A pool with a working connection keeps using it whatever another
    slot's reconnection attempts say."""
    pool = ConnectionPool(SETTINGS, reactor, name=NAME, fail_fast_when_unreachable=True)
    conn, transport = ready(pool)
    pool.connection_attempt_failed(_refused())
    assert pool.unreachable is None
    d = pool.execute(("GET", "k"))
    conn.dataReceived(b"$-1\r\n")
    assert result_of(d) is None
    pool.close()


def test_a_pool_that_waits_keeps_waiting_while_unreachable(
    pool: ConnectionPool, reactor: MemoryReactorClock
) -> None:
    """By default (the store) a command still waits its deadline for Redis
    to come back."""
    waiting = pool.execute(("PING",))
    pool.connection_attempt_failed(_refused())
    assert pool.unreachable is not None and not waiting.called and pool.waiting == 1
    reactor.advance(SETTINGS.command_timeout)
    assert failure_of(waiting).check(NotConnected) and pool.waiting == 0


def test_closing_fails_waiting_callers_at_once(pool: ConnectionPool) -> None:
    """Shutdown does not wait for the deadlines of requests that wait for Redis."""
    waiting = pool.execute(("PING",))
    result_of(pool.close())
    assert failure_of(waiting).check(ClientClosed)
    assert failure_of(pool.execute(("PING",))).check(ClientClosed)
    assert pool.waiting == 0


def test_unencodable_argument_fails_without_writing(pool: ConnectionPool) -> None:
    """A lone surrogate in an argument is the caller's error, not a broken connection."""
    conn, transport = ready(pool)
    assert failure_of(pool.execute(("GET", "\udc80"))).check(txredisapi.InvalidData)
    assert transport.value() == b"" and conn.usable


def test_ordered_connection_sends_waiting_commands_in_the_order_given(
    reactor: MemoryReactorClock,
) -> None:
    """Publications made while the connection is down reach Redis in the
    order they were made once it is back (an offer before its candidates)."""
    connection = OrderedConnection(SETTINGS, reactor, name=NAME)
    waiting = [connection.execute(("PUBLISH", "c", str(i))) for i in range(3)]
    conn, transport = ready(connection)
    later = connection.execute(("PUBLISH", "c", "3"))
    assert transport.value() == commands(*[("PUBLISH", "c", str(i)) for i in range(4)])
    conn.dataReceived(b":1\r\n:1\r\n:1\r\n:1\r\n")
    assert [result_of(d) for d in (*waiting, later)] == [1, 1, 1, 1]
    connection.close()


# -- the subscriber -----------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.received: list[tuple[Any, Any]] = []
        self.events: list[str] = []

    def receive(self, channel: Any, payload: Any) -> None:
        self.received.append((channel, payload))

    def subscriber(self, reactor: MemoryReactorClock, *subscriptions: Subscription) -> Subscriber:
        return Subscriber(
            SETTINGS,
            reactor,
            name=NAME,
            subscriptions=subscriptions,
            receive=self.receive,
            on_subscribed=lambda: self.events.append("subscribed"),
            on_lost=lambda: self.events.append("lost"),
        )


def test_subscriber_subscribes_on_every_connection_and_hands_on_publications(
    reactor: MemoryReactorClock,
) -> None:
    """Redis forgets subscriptions with the connection: after a reconnection
    the process must subscribe again or it stops hearing the cluster."""
    recorder = Recorder()
    subscriber = recorder.subscriber(
        reactor, Subscription(PATTERN, "p#*"), Subscription(CHANNEL, "direct")
    )
    for round_ in (1, 2):
        conn, transport = ready(subscriber)
        assert transport.value() == commands(("PSUBSCRIBE", "p#*"), ("SUBSCRIBE", "direct"))
        conn.dataReceived(confirmation("psubscribe", "p#*", 1))
        assert subscriber.subscriptions == round_ - 1  # both must be confirmed
        conn.dataReceived(confirmation("subscribe", "direct", 2))
        assert subscriber.subscriptions == round_ and subscriber.subscribed
        conn.dataReceived(
            commands(("pmessage", "p#*", "p#/#", "hello"))
            + commands(("message", "direct", "hi"))
            + commands(("smessage", "shard", b"\xff"))
        )
        transport.loseConnection()
        assert not subscriber.subscribed
    assert recorder.events == ["subscribed", "lost"] * 2
    assert recorder.received == [("p#/#", "hello"), ("direct", "hi"), ("shard", b"\xff")] * 2
    subscriber.close()


def test_subscription_refused_or_unconfirmed_drops_the_connection(
    reactor: MemoryReactorClock,
) -> None:
    """A subscription that does not take must not leave a connection that
    looks fine but hears nothing: it is dropped and retried."""
    recorder = Recorder()
    subscriber = recorder.subscriber(reactor, Subscription(PATTERN, "p#*"))
    conn, transport = ready(subscriber)
    with capturedLogs() as events:
        conn.dataReceived(b"-ERR pattern refused\r\n")
    assert not transport.connected
    assert [e["log_level"] for e in events] == [LogLevel.warn]
    conn, transport = ready(subscriber)
    reactor.advance(SETTINGS.command_timeout + 0.25)
    assert not transport.connected
    assert recorder.events == [] and subscriber.subscriptions == 0
    subscriber.close()


def test_a_failing_receiver_does_not_stop_later_publications(reactor: MemoryReactorClock) -> None:
    """One bad message handler must not cost the process its subscription."""
    got: list[Any] = []

    def receive(channel: Any, payload: Any) -> None:
        got.append(payload)
        if payload == "bad":
            raise RuntimeError("boom")

    subscriber = Subscriber(
        SETTINGS, reactor, name=NAME, subscriptions=[Subscription(CHANNEL, "c")], receive=receive
    )
    conn, transport = ready(subscriber)
    conn.dataReceived(confirmation("subscribe", "c", 1))
    with capturedLogs() as events:
        conn.dataReceived(commands(("message", "c", "bad"), ("message", "c", "good")))
    assert got == ["bad", "good"] and transport.connected
    assert any(e.get("log_failure") is not None for e in events)
    subscriber.close()
