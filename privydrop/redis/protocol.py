"""One Redis connection: pipelined commands, a FIFO of owed replies, the handshake.

Pipelining. Redis answers a connection's commands in order, so the n-th
reply answers the n-th command written. L{PipelinedProtocol.send} writes a
command at once, whatever is still owed, and appends one entry to the FIFO
of the replies owed; each reply pops the oldest entry. Every command written
goes through L{PipelinedProtocol.send} (the handshake's too), so the FIFO
holds exactly one entry per command. A caller that cancels its Deferred
keeps its entry, which absorbs the late reply.

Deadlines. An entry carries the reactor time its reply is due by; the owner
(L{privydrop.redis.pool}) looks for overdue entries and calls
L{PipelinedProtocol.give_up}, which fails everything owed and aborts the
connection: a late reply is never read as the answer to a newer command.

Handshake (L{privydrop.redis.handshake}). txredisapi's protocol has its own
(AUTH and SELECT, stopping the whole pool for good on any failure); the pool
builds protocols without a password or database, so that one has nothing to
do, and ours runs right after it, with a deadline (C{connect_timeout}). Our
L{PipelinedProtocol.whenConnected} fires only once it succeeded: that is
when txredisapi's pool slot counts the connection and resets its back-off,
so a refused password keeps backing off. A refusal is reported to the owner;
a connection lost or stalled during the handshake is only dropped (its pool
slot reconnects). So is a server of the wrong role when the handshake asks
C{ROLE} (L{privydrop.redis.handshake.Handshake.wrong_role}): a replica is
reported to the owner and dropped, and the next attempt asks the Sentinels
again.

Replicas. A server that became a replica after the connection was made (the
old master after a failover, when Sentinel did not kill our connections)
answers writes with C{-READONLY}: that reply goes to its caller, like any
error reply, and the connection is given up, so the pool reconnects to
whichever server is the master by then.

Replies are parsed by L{privydrop.redis.resp}, not by txredisapi.

This module knows nothing of what the commands mean, nor of the store or the
cluster.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

import txredisapi
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from privydrop.logs.levels import Logger
from privydrop.redis.errors import ConnectionLost, HandshakeRefused, ReplyTimeout
from privydrop.redis.handshake import Handshake, HandshakeStep
from privydrop.redis.resp import ReplyParser, RESPProtocolError, encode_command
from privydrop.redis.sentinel import format_address

_log = Logger()


class ConnectionOwner(Protocol):
    """What a connection needs from the pool it belongs to, and tells it."""

    clock: IReactorTime
    handshake: Handshake
    #: Seconds the handshake may take before the connection is dropped.
    handshake_timeout: float

    def connection_ready(self, conn: PipelinedProtocol) -> None:
        """The handshake succeeded: the connection takes commands."""

    def connection_lost(self, conn: PipelinedProtocol) -> None:
        """The connection closed (after the handshake or during it)."""

    def handshake_refused(self, refusal: HandshakeRefused) -> None:
        """Redis refused the handshake; the connection is being dropped."""

    def handshake_stalled(self) -> None:
        """The handshake did not finish in time; the connection is being dropped."""

    def handshake_step_skipped(self, step: HandshakeStep, reply: str) -> None:
        """Redis refused an optional step; the connection is used without it."""

    def handshake_wrong_role(self, role: str, server: str) -> None:
        """The server (C{host:port}) is not the master; the connection is
        being dropped."""

    def read_only_reply(self, reply: str, server: str) -> None:
        """The server answered C{-READONLY}: it is a replica now; the
        connection is being given up."""


def is_read_only_error(reply: Exception) -> bool:
    """Whether an error reply says the server is a replica (C{-READONLY}, also
    when a script's write was refused, which Redis reports with the same code)."""
    return isinstance(reply, txredisapi.ResponseError) and str(reply).startswith("READONLY")


class _Owed:
    """One reply a connection owes: who waits for it, by when, for which command."""

    __slots__ = ("command", "deadline", "deferred")

    def __init__(self, deferred: Deferred[Any], deadline: float | None, command: Any) -> None:
        self.deferred = deferred
        self.deadline = deadline
        self.command = command


class PipelinedProtocol(txredisapi.BaseRedisProtocol):
    """A Redis connection that pipelines; see the module docstring.

    @ivar owner: the pool this connection belongs to (set by its factory).
    @ivar owed: the replies this connection still owes, oldest first.
    @ivar ready: the handshake succeeded and the connection was not lost.
    @ivar broken: set once the connection was given up (L{give_up});
        nothing is sent on it any more.
    """

    owner: ConnectionOwner
    broken = False
    ready = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owed: deque[_Owed] = deque()
        self._parser = ReplyParser(self.charset)
        self._ready_waiters: list[Deferred[PipelinedProtocol]] = []
        self._handshake_timer: IDelayedCall | None = None

    @property
    def peer(self) -> tuple[str, int] | None:
        """The C{(host, port)} this connection reached, when it is TCP."""
        get_peer = getattr(self.transport, "getPeer", None)
        address = get_peer() if get_peer is not None else None
        host, port = getattr(address, "host", None), getattr(address, "port", None)
        if type(host) is not str or type(port) is not int:
            return None
        return host, port

    @property
    def server(self) -> str:
        """The address this connection reached, C{host:port}, for messages."""
        peer = self.peer
        return "(unknown)" if peer is None else format_address(peer)

    @property
    def usable(self) -> bool:
        """Ready for commands: handshake done, connected, not given up."""
        return self.ready and self.connected and not self.broken

    # -- readiness (what txredisapi's pool waits for) -------------------------

    def whenConnected(self) -> Deferred[PipelinedProtocol]:
        """Fires with this connection once our handshake has succeeded.

        txredisapi's factory and pool slot call this: the pool counts the
        connection, and the slot forgets its failed attempts, only then.
        It never fires for a connection whose handshake fails.
        """
        if self.ready:
            return succeed(self)
        d: Deferred[PipelinedProtocol] = Deferred()
        self._ready_waiters.append(d)
        return d

    def connectionMade(self) -> None:
        # txredisapi's handshake: nothing to send (built without a password
        # or a database), it only marks the transport connected.
        super().connectionMade()
        owner = self.owner
        steps = owner.handshake.steps()
        if not steps:
            self._handshake_succeeded()
            return
        # Written at once: one round trip, whatever the number of steps.
        replies = [self.send(step.args, None) for step in steps]
        self._handshake_timer = owner.clock.callLater(
            owner.handshake_timeout, self._handshake_timed_out
        )
        DeferredList(replies, consumeErrors=True).addCallback(
            self._handshake_replied, steps
        ).addErrback(
            lambda failure: _log.failure("redis handshake failed", failure=failure)
        )

    def _handshake_replied(
        self, results: list[tuple[bool, Any]], steps: Sequence[HandshakeStep]
    ) -> None:
        self._cancel_handshake_timer()
        if not self.connected or self.broken:
            return  # lost or stalled meanwhile; already dropped
        for (ok, value), step in zip(results, steps):
            if ok:
                role = Handshake.wrong_role(step, value)
                if role is not None:
                    self.broken = True
                    self.owner.handshake_wrong_role(role, self.server)
                    self.transport.loseConnection()
                    return
                continue
            failure: Failure = value
            if failure.check(txredisapi.ResponseError):
                reply = str(failure.value)
                refusal = Handshake.refusal(step, reply)
                if refusal is None:
                    self.owner.handshake_step_skipped(step, reply)
                    continue
                self.broken = True
                self.owner.handshake_refused(refusal)
                self.transport.loseConnection()
                return
            _log.debug("redis handshake interrupted: {error}", error=failure.getErrorMessage())
            self.give_up(reason="the handshake was interrupted")
            return
        self._handshake_succeeded()

    def _handshake_succeeded(self) -> None:
        self.ready = True
        waiting, self._ready_waiters = self._ready_waiters, []
        for d in waiting:
            d.callback(self)
        self.owner.connection_ready(self)

    def _handshake_timed_out(self) -> None:
        self._handshake_timer = None
        self.owner.handshake_stalled()
        self.give_up(reason="the handshake was not answered in time")

    def _cancel_handshake_timer(self) -> None:
        timer, self._handshake_timer = self._handshake_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    # -- commands ---------------------------------------------------------------

    def send(self, args: Sequence[Any], deadline: float | None) -> Deferred[Any]:
        """Write one command now; the Deferred fires with its reply.

        An error reply fails it with C{txredisapi.ResponseError}; an overdue
        reply with L{ReplyTimeout}; a lost or given-up connection with
        L{ConnectionLost}.

        @param deadline: reactor time by which the reply is due (checked by
            the owner), or None for none.
        @raise txredisapi.InvalidData: an argument cannot be encoded;
            nothing was written.
        @raise ConnectionLost: not connected.
        """
        if not self.connected or self.broken:
            raise ConnectionLost("not connected")
        self.transport.write(encode_command(args, self.charset or "utf-8"))
        d: Deferred[Any] = Deferred()
        self.owed.append(_Owed(d, deadline, args[0]))
        return d

    def execute_command(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
        # txredisapi's command methods, should anything call one, go through
        # the same FIFO: a command written outside it would shift every reply.
        d = self.send(args, None)
        post_proc = kwargs.get("post_proc")
        if callable(post_proc):
            d.addCallback(post_proc)
        return d

    def dataReceived(self, data: bytes, unpause: bool = False) -> None:
        try:
            replies = self._parser.feed(data)
        except RESPProtocolError as e:
            _log.error("redis sent bytes that are not RESP ({error}); reconnecting", error=str(e))
            self.give_up(reason="bytes that are not RESP")
            return
        for reply in replies:
            if self.broken or self.transport is None:
                return
            self.replyReceived(reply)

    def replyReceived(self, reply: Any) -> None:
        if self.broken:
            # Given up: what it owed has failed already.
            return
        if not self.owed:
            _log.error("redis sent a reply nobody asked for; reconnecting")
            self.give_up(reason="a reply nobody asked for")
            return
        d = self.owed.popleft().deferred
        # A cancelled Deferred ignores this (its place in the FIFO consumed
        # the reply, as it must).
        if isinstance(reply, Exception):
            if is_read_only_error(reply):
                # Given up first: whatever the caller does next goes to
                # another connection.
                self.owner.read_only_reply(str(reply), self.server)
                self.give_up(reason="the server is a replica now (READONLY)")
            d.errback(reply)
        else:
            d.callback(reply)

    def overdue(self, now: float) -> list[_Owed]:
        """The replies owed whose deadline has passed."""
        return [o for o in self.owed if o.deadline is not None and o.deadline <= now]

    def give_up(
        self, overdue: Sequence[_Owed] = (), reason: str = "a reply on it was overdue"
    ) -> None:
        """Never use this connection again: fail what it owes, abort it.

        @param overdue: entries to fail with L{ReplyTimeout}; every other
            one fails with L{ConnectionLost} naming C{reason}.
        """
        self.broken = True
        self._cancel_handshake_timer()
        owed, self.owed = self.owed, deque()
        late = {id(o) for o in overdue}
        for o in owed:
            if id(o) in late:
                o.deferred.errback(ReplyTimeout("no answer in time"))
            else:
                o.deferred.errback(ConnectionLost(f"connection dropped: {reason}"))
        if self.transport is not None:
            self.transport.abortConnection()

    def connectionLost(self, why: Failure) -> None:
        self._cancel_handshake_timer()
        self.ready = False
        super().connectionLost(why)
        owed, self.owed = self.owed, deque()
        for o in owed:
            o.deferred.errback(ConnectionLost("connection lost"))
        self.owner.connection_lost(self)
