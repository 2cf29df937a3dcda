"""Connections to one Redis: a pool that pipelines, and the single ordered connection.

L{ConnectionPool} keeps C{size} connections open on txredisapi's pool (one
reconnecting slot per connection, backing off between attempts) and sends
each command on a ready one (L{ConnectionPool._pick}), written at once,
without waiting for the replies to earlier commands (see
L{privydrop.redis.protocol}).

Bounded waits. Each command has a deadline (C{command_timeout} from now, or
the caller's) covering both waiting for a ready connection and waiting for
the reply. Callers that find no connection ready wait in a list of the
pool's own; the one whose deadline passes leaves it (L{NotConnected}), so an
outage leaves no waiter behind. Instead of one timer per command, one timer
per pool checks the replies owed every quarter of the timeout (at most
0.1 s), so a failure comes at most that much after the deadline; a
connection with an overdue reply is given up at once (L{ReplyTimeout} for
the overdue commands, L{ConnectionLost} for the others on it) and its slot
reconnects. A stalled Redis thus costs at most the commands in flight.

Known to be down. Once an attempt to connect fails (refused, or no answer
within C{connect_timeout}) while no connection is ready, the pool knows
Redis is unreachable, and logs so once (field C{state="unreachable"}). A
pool built with C{fail_fast_when_unreachable=True} then fails the callers
waiting for a connection at once, and every new command at once too, with
L{NotConnected}, until an attempt connects again (logged with
C{state="reachable"}): nothing waits on a server known to be away. The
default waits, each command until its deadline, which suits a store whose
callers answer 503 anyway and may see Redis back within that time.

Handshake refusals (L{privydrop.redis.handshake}) are logged once per
distinct reply. By default callers waiting for a connection then fail at
once with L{HandshakeRefused}, as do later ones until a handshake succeeds:
a request answered 503 now beats one answered 503 later. A pool built with
C{fail_fast_on_refusal=False} lets callers wait until their deadline
instead (failing with L{HandshakeRefused} if none came), for work that is
worth delivering late, such as a publication while a password is rotated.

Sentinel. With Sentinel settings the pool connects through an endpoint that
asks the Sentinels for the master at every attempt
(L{privydrop.redis.endpoint}), the handshake checks the server is the
master, a C{-READONLY} reply gives its connection up
(L{privydrop.redis.protocol}), and a L{SentinelWatcher} gives up the
connections to any other server as soon as the Sentinels announce a new
master. Reconnection attempts are then at most the Sentinel settings'
C{reconnect_max_delay} apart, so the pool finds the new master about that
long after the promotion at worst.

Timing. A pool given a L{CommandTiming} (the metrics' Redis timer) hands
it every command with the time it was given and its reply; without one,
nothing is measured. The service tree gives one to the store's pool only:
the cluster's publications are on the relay path, where the metrics count
publications instead of timing each.

L{OrderedConnection} is a pool of one: commands reach Redis in the order
they were given, which the cluster's publisher needs (an offer before its
ICE candidates). L{privydrop.redis.subscriber} builds on the same machinery.

Reactor. Deadlines and the handshake timer use the reactor given; txredisapi's
pool slots use the global one (the same in production and under
pytest-twisted).

This module knows nothing of what the commands mean, nor of the store or
the cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import txredisapi
from twisted.internet.defer import Deferred, DeferredList, TimeoutError, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from privydrop.compat.txredisapi import forget_queued_connection
from privydrop.logs.levels import Logger
from privydrop.redis.endpoint import ReportingEndpoint, describe, redis_endpoint
from privydrop.redis.errors import ClientClosed, ConnectionLost, HandshakeRefused, NotConnected
from privydrop.redis.handshake import Handshake, HandshakeStep, check_client_name
from privydrop.redis.protocol import PipelinedProtocol
from privydrop.redis.sentinel import SentinelWatcher, format_address
from privydrop.settings import RedisSettings

_log = Logger()

#: C{timing(command, started, reply)}: observes one command (its name, the
#: reactor time it was given, the Deferred of its reply) and returns the reply.
CommandTiming = Callable[[Any, float, "Deferred[Any]"], "Deferred[Any]"]

#: Commands one connection carries before the next one is preferred (see
#: L{ConnectionPool._pick}). Not a limit: past it on every connection,
#: commands go to the least loaded one.
PIPELINE_DEPTH = 32


def _copy(refusal: HandshakeRefused) -> HandshakeRefused:
    # A fresh exception per caller: raising one instance again and again
    # would chain every caller's traceback onto it.
    return HandshakeRefused(refusal.command, refusal.reply, refusal.is_auth)


class _PoolFactory(txredisapi.RedisFactory):
    """txredisapi's pool factory, building our protocol for one pool.

    Built without a password or a database: our protocol does the
    handshake (L{privydrop.redis.protocol}).
    """

    def __init__(
        self, owner: ConnectionPool, protocol: type[PipelinedProtocol], size: int
    ) -> None:
        super().__init__(
            owner.address,
            None,
            size,
            isLazy=True,
            password=None,
            replyTimeout=None,
            convertNumbers=False,
        )
        self.protocol = protocol
        self.owner = owner

    def buildProtocol(self, addr: Any) -> PipelinedProtocol:
        protocol: PipelinedProtocol = super().buildProtocol(addr)
        protocol.owner = self.owner
        return protocol


class ConnectionPool:
    """Connections to one Redis; see the module docstring.

    @ivar name: the connection name (C{CLIENT SETNAME}) of its connections.
    @ivar handshake: what every connection says first.
    @ivar handshake_error: the server's last refusal of the handshake,
        cleared by a success.
    """

    #: The protocol of this pool's connections.
    protocol: type[PipelinedProtocol] = PipelinedProtocol
    #: Told of every command and its reply when set (see the module docstring).
    timing: CommandTiming | None = None

    def __init__(
        self,
        settings: RedisSettings,
        reactor: Any,
        *,
        name: str,
        size: int | None = None,
        db: int | None = None,
        command_timeout: float | None = None,
        fail_fast_on_refusal: bool = True,
        fail_fast_when_unreachable: bool = False,
        reconnect_initial_delay: float = 0.2,
        reconnect_max_delay: float = 5.0,
    ) -> None:
        """
        @param settings: where Redis is, the password, the database, the
            timeouts and the pool size.
        @param reactor: provides C{IReactorTime} (deadlines) and
            C{IReactorTCP} (connections).
        @param name: the connection name (see
            L{privydrop.redis.handshake.client_name}).
        @param size: connections to keep open; C{settings.pool_size} when None.
        @param db: the database to select; C{settings.db} when None.
        @param command_timeout: seconds a command may take by default;
            C{settings.command_timeout} when None.
        @param fail_fast_on_refusal: whether a refused handshake fails the
            callers waiting for a connection at once (see the module docstring).
        @param fail_fast_when_unreachable: whether commands fail at once while
            Redis is known to be unreachable (see the module docstring).
        @param reconnect_initial_delay: seconds before the first reconnection
            attempt of a slot; later ones back off exponentially.
        @param reconnect_max_delay: longest wait between reconnection
            attempts; with Sentinel, at most the Sentinel settings'
            C{reconnect_max_delay}.
        @raise ValueError: a name Redis would refuse, or a size below 1.
        """
        size = settings.pool_size if size is None else size
        if size < 1:
            raise ValueError(f"a Redis connection pool needs at least one connection, not {size}")
        self.settings = settings
        self.clock: IReactorTime = reactor
        self._reactor = reactor
        self.name = check_client_name(name)
        self.size = size
        self.handshake = Handshake(
            password=settings.password,
            db=settings.db if db is None else db,
            name=self.name,
            # An address from Sentinel may be out of date (a failover under
            # way): only the master will do.
            verify_master=settings.sentinel is not None,
        )
        self.handshake_timeout = settings.connect_timeout
        self.command_timeout = (
            settings.command_timeout if command_timeout is None else command_timeout
        )
        self.address = describe(settings)
        self._fail_fast_on_refusal = fail_fast_on_refusal
        self._fail_fast_when_unreachable = fail_fast_when_unreachable
        #: Why the last attempt to connect failed, while no attempt has
        #: connected since and no connection is ready; None otherwise.
        self.unreachable: str | None = None
        self._initial_delay = reconnect_initial_delay
        if settings.sentinel is not None:
            # Each attempt asks the Sentinels first, so a short wait finds
            # the new master soon after a failover.
            reconnect_max_delay = min(reconnect_max_delay, settings.sentinel.reconnect_max_delay)
        self._max_delay = reconnect_max_delay
        #: Conditions already logged since the last successful handshake.
        self._reported: set[str] = set()
        self._factory: _PoolFactory | None = None
        #: With Sentinel: hears the Sentinels switch the master.
        self._watcher: SentinelWatcher | None = None
        self._connections: list[PipelinedProtocol] = []
        self._waiters: list[Deferred[PipelinedProtocol]] = []
        self._closed = False
        self.handshake_error: HandshakeRefused | None = None
        self._skipped: set[tuple[str, str]] = set()
        #: The timer that looks for overdue replies while any are owed.
        self._watchdog: IDelayedCall | None = None
        self._watch_interval = max(0.01, min(0.1, self.command_timeout / 4))

    # -- state --------------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether connections were asked for (L{start})."""
        return self._factory is not None

    @property
    def closed(self) -> bool:
        """Whether L{close} was called; a closed pool sends nothing."""
        return self._closed

    @property
    def connections(self) -> Sequence[PipelinedProtocol]:
        """The connections whose handshake succeeded and that were not lost."""
        return tuple(self._connections)

    @property
    def waiting(self) -> int:
        """Callers waiting for a connection to become ready."""
        return len(self._waiters)

    @property
    def replies_owed(self) -> int:
        """Replies owed on the ready connections, all together."""
        return sum(len(conn.owed) for conn in self._connections)

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        """Start opening the connections (idempotent; not after L{close})."""
        if self._factory is not None or self._closed:
            return
        factory = self._factory = _PoolFactory(self, self.protocol, self.size)
        factory.initialDelay = self._initial_delay
        factory.maxDelay = self._max_delay
        factory.startConnecting(
            ReportingEndpoint(
                redis_endpoint(self.settings, self._reactor),
                self.connection_attempt_succeeded,
                self.connection_attempt_failed,
            )
        )
        if self.settings.sentinel is not None:
            watcher = self._watcher = SentinelWatcher(
                self.settings.sentinel, self._reactor, self._master_switched
            )
            watcher.start()

    def close(self) -> Deferred[None]:
        """Close every connection and stop reconnecting (idempotent).

        Callers still waiting for a connection fail at once with
        L{ClientClosed} rather than at their deadline, so no timer outlives
        the pool; commands in flight fail with L{ConnectionLost}.

        @return: fires once every connection is closed.
        """
        if self._closed:
            return succeed(None)
        self._closed = True
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and watchdog.active():
            watchdog.cancel()
        self._fail_waiters(lambda: ClientClosed(f"the connection pool {self.name} is closed"))
        closing: list[Deferred[Any]] = []
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            closing.append(watcher.stop())
        if self._factory is not None:
            closing.append(self._factory.disconnect())
        return DeferredList(closing, consumeErrors=True).addCallback(lambda _: None)

    # -- commands ------------------------------------------------------------------

    def deadline(self) -> float:
        """The default deadline of a command given now."""
        return self._reactor.seconds() + self.command_timeout

    def execute(self, args: Sequence[Any], deadline: float | None = None) -> Deferred[Any]:
        """Send one command, pipelined on a ready connection, before the deadline.

        Starts the pool when it was not started.

        @param args: the command name and its arguments.
        @param deadline: the reactor time by which the reply must be in;
            C{command_timeout} from now when None.
        @return: a Deferred firing with the reply, or failing with
            L{NotConnected} (no connection in time; L{HandshakeRefused} when
            Redis refuses the handshake), L{ReplyTimeout}, L{ConnectionLost},
            L{ClientClosed}, C{txredisapi.ResponseError} (an error reply) or
            C{txredisapi.InvalidData} (an argument that cannot be encoded;
            nothing was sent).
        """
        if self.timing is not None:
            return self.timing(args[0], self._reactor.seconds(), self._execute(args, deadline))
        return self._execute(args, deadline)

    def _execute(self, args: Sequence[Any], deadline: float | None) -> Deferred[Any]:
        if self._closed:
            return fail(ClientClosed(f"the connection pool {self.name} is closed"))
        if deadline is None:
            deadline = self._reactor.seconds() + self.command_timeout
        conn = self._pick()
        if conn is None:
            if self.unreachable is not None and self._fail_fast_when_unreachable:
                return fail(self._unreachable_error())
            self.start()
            return Deferred.fromCoroutine(self._execute_when_ready(args, deadline))
        return self._send(conn, args, deadline)

    def _unreachable_error(self) -> NotConnected:
        return NotConnected(f"redis at {self.address} is unreachable ({self.unreachable})")

    async def _execute_when_ready(self, args: Sequence[Any], deadline: float) -> Any:
        conn = await self._ready_connection(deadline)
        return await self._send(conn, args, deadline)

    def _send(self, conn: PipelinedProtocol, args: Sequence[Any], deadline: float) -> Deferred[Any]:
        try:
            reply = conn.send(args, deadline)
        except (txredisapi.InvalidData, ConnectionLost) as e:
            return fail(e)
        if self._watchdog is None:
            self._watch()
        return reply

    def _pick(self) -> PipelinedProtocol | None:
        """The connection for the next command, or None when none is ready.

        The first ready one with fewer than L{PIPELINE_DEPTH} replies owed,
        so a light load stays on few connections (fewer writes and reads per
        reactor turn); past that depth, the least loaded.
        """
        best: PipelinedProtocol | None = None
        for conn in self._connections:
            if conn.usable:
                owed = len(conn.owed)
                if owed < PIPELINE_DEPTH:
                    return conn
                if best is None or owed < len(best.owed):
                    best = conn
        return best

    async def _ready_connection(self, deadline: float) -> PipelinedProtocol:
        """A ready connection, waiting for one until the deadline."""
        if self.handshake_error is not None and self._fail_fast_on_refusal:
            raise _copy(self.handshake_error)
        waiter: Deferred[PipelinedProtocol] = Deferred(self._forget_waiter)
        self._waiters.append(waiter)
        try:
            await waiter.addTimeout(max(0.0, deadline - self._reactor.seconds()), self._reactor)
        except TimeoutError:
            # The timeout cancelled the waiter, which took it off the list.
            if self.handshake_error is not None:
                raise _copy(self.handshake_error) from None
            raise NotConnected("no connection available in time") from None
        conn = self._pick()
        if conn is None:
            raise NotConnected("not connected (the new connection was lost)")
        return conn

    def _forget_waiter(self, waiter: Deferred[Any]) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)

    def _fail_waiters(self, error: Callable[[], Exception]) -> None:
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(error())

    # -- deadlines -------------------------------------------------------------------

    def _watch(self) -> None:
        """Make sure the overdue-reply check runs while replies are owed."""
        if self._watchdog is None and not self._closed:
            self._watchdog = self._reactor.callLater(self._watch_interval, self._check_overdue)

    def _check_overdue(self) -> None:
        """Give up the connections that owe an overdue reply (a timer callback)."""
        self._watchdog = None
        try:
            now = self._reactor.seconds()
            owing = False
            for conn in list(self._connections):
                overdue = conn.overdue(now)
                if overdue:
                    _log.warn(
                        "redis command {command} on {name} timed out (command timeout"
                        " {timeout}s); connection dropped with {pending} replies owed",
                        command=_text(overdue[0].command),
                        name=self.name,
                        timeout=self.command_timeout,
                        pending=len(conn.owed),
                    )
                    conn.give_up(overdue)
                elif conn.owed:
                    owing = True
            if owing:
                self._watch()
        except Exception:  # noqa: BLE001 - a timer callback is an error boundary
            _log.failure("checking redis replies for timeouts failed")
            self._watch()

    # -- what the connections report (ConnectionOwner) -------------------------------

    def connection_ready(self, conn: PipelinedProtocol) -> None:
        """A connection finished its handshake: use it, wake the waiting callers."""
        if self._closed:
            conn.transport.loseConnection()
            return
        self._connections.append(conn)
        self._reported.clear()
        if self.handshake_error is not None:
            _log.info(
                "redis at {address} accepted the {name} connection's handshake again",
                address=self.address,
                name=self.name,
            )
            self.handshake_error = None
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(conn)

    def connection_attempt_succeeded(self) -> None:
        """An attempt to connect succeeded: Redis is reachable (again)."""
        if self.unreachable is None:
            return
        self.unreachable = None
        _log.info(
            "redis at {address} is reachable again; connection {name} reconnects",
            address=self.address,
            name=self.name,
            state="reachable",
        )

    def connection_attempt_failed(self, reason: Failure) -> None:
        """An attempt to connect failed: unless a connection is ready, Redis
        is known to be unreachable until an attempt succeeds."""
        if self._closed or any(conn.usable for conn in self._connections):
            return
        error = reason.getErrorMessage()
        known, self.unreachable = self.unreachable, error
        if self._fail_fast_when_unreachable:
            self._fail_waiters(self._unreachable_error)
        if known is None:
            _log.warn(
                "redis at {address} is unreachable ({error}); connection {name} "
                "{consequence} until it is back",
                address=self.address,
                error=error,
                name=self.name,
                consequence="fails its commands at once"
                if self._fail_fast_when_unreachable
                else "keeps retrying",
                state="unreachable",
            )

    def connection_lost(self, conn: PipelinedProtocol) -> None:
        """A connection closed: stop using it."""
        if conn in self._connections:
            self._connections.remove(conn)
        if self._factory is not None:
            forget_queued_connection(self._factory, conn)

    def handshake_refused(self, refusal: HandshakeRefused) -> None:
        """Report a refusal once per distinct reply; fail the waiting callers."""
        previous = self.handshake_error
        if previous is None or previous.reply != refusal.reply:
            _log.error(
                "redis at {address} refused connection {name}: authentication failed"
                " at {command} ({error}); check the password; retrying with back-off"
                if refusal.is_auth
                else "redis at {address} refused the {command} of connection {name}:"
                " {error}; retrying with back-off",
                address=self.address,
                command=refusal.command,
                name=self.name,
                error=refusal.reply,
            )
        self.handshake_error = refusal
        if self._fail_fast_on_refusal:
            self._fail_waiters(lambda: _copy(refusal))

    def handshake_stalled(self) -> None:
        """A handshake got no answer within C{connect_timeout}."""
        _log.warn(
            "redis at {address} did not answer the handshake of connection {name}"
            " within {timeout}s; reconnecting",
            address=self.address,
            name=self.name,
            timeout=self.handshake_timeout,
        )

    def handshake_step_skipped(self, step: HandshakeStep, reply: str) -> None:
        """An optional step was refused: say so once."""
        key = (step.command, reply)
        if key not in self._skipped:
            self._skipped.add(key)
            _log.warn(
                "redis at {address} refused {command} ({error}); connection {name}"
                " is used without it",
                address=self.address,
                command=step.command,
                error=reply,
                name=self.name,
            )

    def _master_switched(self, master: tuple[str, int]) -> None:
        """The Sentinels named a new master: leave every other server now.

        Connections to the old master that a failover did not close (it is
        paused, or cut off from the Sentinels) would otherwise stay there:
        commands until their deadline, a subscriber for ever. A master
        named by host name rather than address matches no connection, so
        every connection reconnects: slower, never wrong.
        """
        stale = [conn for conn in self._connections if conn.peer != master]
        if not stale:
            return
        _log.info(
            "connection pool {name} leaves {count} connection(s) to the old redis master",
            name=self.name,
            count=len(stale),
        )
        for conn in stale:
            conn.give_up(reason=f"Sentinel switched the master to {format_address(master)}")

    def handshake_wrong_role(self, role: str, server: str) -> None:
        """The server reached is not the master: say so once until a
        connection succeeds (a failover takes a few attempts)."""
        if "role" not in self._reported:
            self._reported.add("role")
            _log.warn(
                "redis at {server} ({address}) answered as a {role}, not the master,"
                " to connection {name} (a failover under way?); retrying",
                server=server,
                address=self.address,
                role=role,
                name=self.name,
            )

    def read_only_reply(self, reply: str, server: str) -> None:
        """A connection's server became a replica: say so once until a
        connection succeeds."""
        if "read-only" not in self._reported:
            self._reported.add("read-only")
            _log.warn(
                "redis at {server} ({address}) is a replica now ({error}); connection"
                " {name} reconnects to the master",
                server=server,
                address=self.address,
                error=reply,
                name=self.name,
            )


class OrderedConnection(ConnectionPool):
    """One connection to Redis: commands reach Redis in the order they were given.

    While the connection is down, commands wait for it (each until its
    deadline) and are written in the order they came once it is back. A
    command whose reply is overdue gives the connection up, so later ones
    never queue behind a stalled server; they wait for a fresh connection.
    """

    def __init__(
        self,
        settings: RedisSettings,
        reactor: Any,
        *,
        name: str,
        db: int | None = None,
        command_timeout: float | None = None,
        fail_fast_on_refusal: bool = True,
        fail_fast_when_unreachable: bool = False,
        reconnect_initial_delay: float = 0.2,
        reconnect_max_delay: float = 5.0,
    ) -> None:
        """See L{ConnectionPool.__init__}; there is always one connection."""
        super().__init__(
            settings,
            reactor,
            name=name,
            size=1,
            db=db,
            command_timeout=command_timeout,
            fail_fast_on_refusal=fail_fast_on_refusal,
            fail_fast_when_unreachable=fail_fast_when_unreachable,
            reconnect_initial_delay=reconnect_initial_delay,
            reconnect_max_delay=reconnect_max_delay,
        )


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
