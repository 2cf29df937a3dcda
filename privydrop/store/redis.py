"""The Redis store: L{IStore} over a txredisapi connection pool.

Every operation is one round trip: a plain command, or one Lua script
(``scripts/*.lua``) sent with ``EVALSHA``; only when the server answers
``NOSCRIPT`` (first use after a restart or ``SCRIPT FLUSH``) is the script sent
again with ``EVAL``, which also caches it. Scripts make each operation atomic
across processes sharing the Redis.

Pipelining and bounded waits. Commands are written at once on a pool
connection that is ready (the first one with fewer than L{PIPELINE_DEPTH}
replies owed, else the least loaded), without waiting for the replies to
earlier commands: Redis answers each connection's commands in order, and each
connection keeps a FIFO of the Deferreds it owes, so a reply always goes to
the command that was written in the same position. A caller that gives up
(its route was cancelled) leaves its place in that FIFO, which swallows the
late reply. txredisapi waits for a reply for ever, so each operation gets a
deadline (C{RedisSettings.command_timeout}) covering both waiting for a ready
connection and waiting for the reply; instead of one timer per command, one
timer per store checks the replies owed every quarter of the timeout (at most
0.1 s), so a failure comes at most that much after the deadline. When a
reply is overdue its connection
is aborted at once, never used again: every command still owed on it fails
(the overdue ones with "no answer in time", the others with "connection
lost") and callers get L{StoreUnavailable}. A stalled Redis thus costs at most
the commands in flight on that connection, and a late reply can never be
read as the answer to a newer command. The pool (txredisapi's, one
C{ClientService} per slot) reconnects by itself with a backoff.

Replies are parsed and commands encoded by L{privydrop.redis.resp} rather
than by txredisapi's line-by-line Python parser (see there for why).

Handshake. Our protocol does ``AUTH`` and ``SELECT`` itself so that a server
rejecting them (wrong password, bad db index) is reported loudly: waiting
callers fail at once with "Redis at <host>:<port>: authentication failed
(<the server's reply>)". A connection lost during the handshake, or stalled
for longer than C{connect_timeout}, is only dropped and retried.

Reactor. Deadlines use the reactor given to L{RedisStore}; txredisapi's pool
slots use the global reactor (the same one in production and under
pytest-twisted).

This module knows the key schema and nothing of PrivyDrop's policies, HTTP or
Socket.IO.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from collections import deque
from collections.abc import Sequence
from typing import Any

import attrs
import txredisapi
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import (
    IReactorTCP,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.logger import Logger
from zope.interface import implementer

from privydrop.redis.resp import ReplyParser, RESPProtocolError, encode_command
from privydrop.settings import RedisSettings
from privydrop.store import keys
from privydrop.store.interface import (
    IStore,
    JoinOutcome,
    JoinResult,
    LeaveResult,
    RateResult,
    RateWindow,
    StoreError,
    StoreUnavailable,
)

_log = Logger()

#: Words in the error replies Redis gives when it refuses our credentials
#: (WRONGPASS, NOAUTH, "AUTH <password> called without any password
#: configured", "invalid password" of older servers).
_AUTH_ERROR_MARKERS = ("WRONGPASS", "NOAUTH", "AUTH", "password")


#: Commands one connection carries before the next one is preferred (see
#: L{RedisStore._pick}). Not a limit: past it on every connection, commands
#: go to the least loaded one.
PIPELINE_DEPTH = 32


def _is_auth_error(message: str) -> bool:
    return any(marker in message for marker in _AUTH_ERROR_MARKERS)


@attrs.frozen
class Script:
    """A Lua script and its SHA1 (the name ``EVALSHA`` knows it by)."""

    name: str
    source: bytes
    sha: str

    @classmethod
    def load(cls, name: str, *prelude: str) -> Script:
        """Read ``scripts/<name>.lua``, with shared snippets prepended."""
        directory = importlib.resources.files("privydrop.store") / "scripts"
        parts = [(directory / f"{part}.lua").read_bytes() for part in (*prelude, name)]
        source = b"\n".join(parts)
        return cls(name=name, source=source, sha=hashlib.sha1(source).hexdigest())


CREATE_ROOM = Script.load("create_room")
CREATE_FIRST_FREE_ROOM = Script.load("create_first_free_room")
JOIN_ROOM = Script.load("join_room", "rate_window")
LEAVE_ROOM = Script.load("leave_room")
RECORD_ATTEMPT = Script.load("record_attempt", "rate_window")
TRACK_REFERRER = Script.load("track_referrer")
ALL_SCRIPTS = (
    CREATE_ROOM,
    CREATE_FIRST_FREE_ROOM,
    JOIN_ROOM,
    LEAVE_ROOM,
    RECORD_ATTEMPT,
    TRACK_REFERRER,
)


class _HandshakeRejected(txredisapi.ConnectionError):
    """Redis refused AUTH or SELECT: a configuration problem, not a blip."""


class FastRepliesMixin:
    """Parses replies with L{privydrop.redis.resp} instead of txredisapi's parser.

    Mix into a C{txredisapi.RedisProtocol} subclass (before it): every
    complete reply is handed to C{replyReceived}, as the stock parser does,
    so the protocol's own dispatch (the reply queue, or the pub/sub message
    callbacks of C{SubscriberProtocol}) is unchanged. Bytes that are not RESP
    drop the connection.
    """

    charset: str | None
    transport: Any
    transactions: int
    inTransaction: bool
    _resp_parser: ReplyParser | None = None

    def dataReceived(self, data: bytes, unpause: bool = False) -> None:
        parser = self._resp_parser
        if parser is None:
            parser = self._resp_parser = ReplyParser(self.charset)
        try:
            replies = parser.feed(data)
        except RESPProtocolError as e:
            _log.error("redis sent bytes that are not RESP ({error}); reconnecting", error=str(e))
            self.transport.abortConnection()
            return
        for reply in replies:
            if self.transport is None or self.transport.disconnecting:
                return
            if reply == "QUEUED":
                self.transactions += 1
            elif self.inTransaction and isinstance(reply, list):
                reply = self.handleTransactionData(reply)  # type: ignore[attr-defined]
            self.replyReceived(reply)  # type: ignore[attr-defined]


class _Owed:
    """One reply a connection owes: who waits for it, by when, for which command."""

    __slots__ = ("command", "deadline", "deferred")

    def __init__(self, deferred: defer.Deferred[Any], deadline: float | None, command: Any) -> None:
        self.deferred = deferred
        self.deadline = deadline
        self.command = command


class PipelinedProtocol(FastRepliesMixin, txredisapi.RedisProtocol):
    """A txredisapi protocol that pipelines: commands are written at once and
    a FIFO of the replies owed matches each reply to its command.

    Redis answers a connection's commands in order, so the n-th reply is the
    answer to the n-th command written. Every command written, txredisapi's
    own (AUTH, SELECT, PUBLISH, ...) included, goes through L{send}, so the
    FIFO holds exactly one entry per command. A caller that cancels its
    Deferred keeps its entry, which absorbs the late reply. Used by the
    store's pool and by the cluster adapter's publisher.

    @ivar owed: the replies this connection still owes, oldest first.
    @ivar broken: set once the connection was given up (L{give_up});
        nothing is sent on it any more.
    """

    broken = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owed: deque[_Owed] = deque()

    @property
    def usable(self) -> bool:
        """Ready for commands: handshake done, connected, not given up."""
        return self._ready and self.connected and not self.broken

    def send(self, args: Sequence[Any], deadline: float | None) -> defer.Deferred[Any]:
        """Write one command now; the Deferred fires with its reply.

        An error reply fails it with C{txredisapi.ResponseError}; a lost or
        given-up connection with C{txredisapi.ConnectionError}.

        @param deadline: reactor time by which the reply is due (checked by
            the store's timer), or None for none.
        @raise txredisapi.InvalidData: an argument cannot be encoded;
            nothing was written.
        @raise txredisapi.ConnectionError: not connected.
        """
        if not self.connected or self.broken:
            raise txredisapi.ConnectionError("Not connected")
        self.transport.write(encode_command(args, self.charset or "utf-8"))
        d: defer.Deferred[Any] = defer.Deferred()
        self.owed.append(_Owed(d, deadline, args[0]))
        return d

    def execute_command(self, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        # txredisapi's own command methods (AUTH, SELECT of the handshake)
        # go through the same FIFO.
        d = self.send(args, None)
        post_proc = kwargs.get("post_proc")
        if callable(post_proc):
            d.addCallback(post_proc)
        return d

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

        @param overdue: entries to fail with C{defer.TimeoutError}; every
            other one fails with C{txredisapi.ConnectionError} naming C{reason}.
        """
        self.broken = True
        owed, self.owed = self.owed, deque()
        late = {id(o) for o in overdue}
        for o in owed:
            if id(o) in late:
                o.deferred.errback(defer.TimeoutError())
            else:
                o.deferred.errback(txredisapi.ConnectionError(f"connection dropped: {reason}"))
        if self.transport is not None:
            self.transport.abortConnection()

    def connectionLost(self, why: Any) -> None:
        super().connectionLost(why)
        owed, self.owed = self.owed, deque()
        for o in owed:
            o.deferred.errback(txredisapi.ConnectionError("Lost connection"))


class _StoreProtocol(PipelinedProtocol):
    """The store's connections: L{PipelinedProtocol} with a handshake that
    tells refusal from loss.

    The stock handshake stops the whole pool for good when AUTH or SELECT
    fails for any reason, a connection lost mid-handshake included. Here
    only a refusal by the server is reported (to the factory, which fails
    waiting callers loudly); anything else just drops this connection and
    its pool slot reconnects.
    """

    factory: _StoreFactory
    _waiting_for_connect: list[defer.Deferred[Any]]

    @defer.inlineCallbacks
    def connectionMade(self) -> Any:
        factory = self.factory
        watchdog = factory.clock.callLater(
            factory.handshake_timeout, self._handshake_timed_out
        )
        try:
            if self.password is not None:
                yield self.auth(self.password)
            if self.dbid is not None:
                yield self.select(self.dbid)
        except txredisapi.ResponseError as e:
            factory.handshake_rejected(str(e))
            self.transport.loseConnection()
            return None
        except Exception as e:  # noqa: BLE001 - any other failure is transient here
            _log.debug("redis handshake interrupted: {error}", error=str(e))
            self.transport.abortConnection()
            return None
        finally:
            if watchdog.active():
                watchdog.cancel()
        if not self.connected:
            return None
        factory.handshake_succeeded()
        # What txredisapi's own handshake does once it succeeds.
        self._ready = True
        waiting: list[defer.Deferred[Any]] = self._waiting_for_connect
        self._waiting_for_connect = []
        for d in waiting:
            d.callback(self)
        return None

    def _handshake_timed_out(self) -> None:
        _log.warn("redis handshake timed out; reconnecting")
        self.transport.abortConnection()


class _StoreFactory(txredisapi.RedisFactory):
    """txredisapi's pool factory, plus handshake bookkeeping.

    Connections are not checked out of txredisapi's queue: the store picks
    one of C{pool} for each command (L{RedisStore._pick}). Callers that find
    none ready wait in C{ready_waiters}.
    """

    protocol = _StoreProtocol
    pool: list[_StoreProtocol]

    def __init__(
        self,
        settings: RedisSettings,
        clock: IReactorTime,
        initial_delay: float,
        max_delay: float,
    ) -> None:
        super().__init__(
            f"{settings.host}:{settings.port}",
            # db 0 is every connection's default: no SELECT needed.
            settings.db or None,
            settings.pool_size,
            isLazy=True,
            password=settings.password,
            replyTimeout=None,
            convertNumbers=False,
        )
        self.clock = clock
        self.handshake_timeout = settings.connect_timeout
        self.initialDelay = initial_delay
        self.maxDelay = max_delay
        #: The server's last refusal of AUTH/SELECT, cleared by a success.
        self.handshake_error: str | None = None
        #: Callers waiting for a connection to become ready.
        self.ready_waiters: list[defer.Deferred[Any]] = []

    def addConnection(self, conn: Any) -> None:
        super().addConnection(conn)
        # txredisapi queues the connection for getConnection(), which the
        # store does not use; left there, every reconnection would leave a
        # dead protocol behind.
        queue = self.connectionQueue
        if conn in queue.pending:
            queue.remove(conn)
        if conn in self.pool:
            waiters, self.ready_waiters = self.ready_waiters, []
            for d in waiters:
                d.callback(conn)

    def handshake_rejected(self, message: str) -> None:
        if message != self.handshake_error:
            _log.error(
                "redis refused the connection handshake: {error}", error=message
            )
        self.handshake_error = message
        self.fail_waiting(_HandshakeRejected(message))

    def fail_waiting(self, error: Exception) -> None:
        """Fail every caller waiting for a ready connection with C{error}."""
        waiting, self.connectionQueue.waiting = list(self.connectionQueue.waiting), []
        waiting += self.ready_waiters
        self.ready_waiters = []
        for d in waiting:
            d.errback(error)

    def handshake_succeeded(self) -> None:
        if self.handshake_error is not None:
            _log.info("redis accepted the connection handshake again")
        self.handshake_error = None


def _endpoint(settings: RedisSettings, reactor: Any) -> IStreamClientEndpoint:
    return HostnameEndpoint(
        reactor, settings.host, settings.port, timeout=settings.connect_timeout
    )


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


@implementer(IStore)
class RedisStore:
    """L{IStore} on Redis. Build with L{from_settings}; start with L{connect}."""

    def __init__(
        self,
        settings: RedisSettings,
        reactor: Any,
        *,
        reconnect_initial_delay: float = 0.2,
        reconnect_max_delay: float = 5.0,
    ) -> None:
        """
        @param settings: where Redis is; timeouts; pool size.
        @param reactor: provides C{IReactorTime} (deadlines) and
            C{IReactorTCP} (connections).
        @param reconnect_initial_delay: seconds before the first reconnection
            attempt of a pool slot; later ones back off exponentially.
        @param reconnect_max_delay: longest wait between reconnection attempts.
        """
        self._settings = settings
        self._reactor = reactor
        self._factory = _StoreFactory(
            settings, reactor, reconnect_initial_delay, reconnect_max_delay
        )
        self._started = False
        self._closed = False
        #: The timer that looks for overdue replies while any are owed.
        self._watchdog: Any = None
        self._watch_interval = max(0.01, min(0.1, settings.command_timeout / 4))

    @classmethod
    def from_settings(cls, settings: RedisSettings, reactor: Any) -> RedisStore:
        """A store for these settings; connections open on first use or L{connect}."""
        return cls(settings, reactor)

    @property
    def settings(self) -> RedisSettings:
        return self._settings

    def _where(self) -> str:
        return f"Redis at {self._settings.host}:{self._settings.port}"

    def start(self) -> None:
        """Start opening the pool's connections (idempotent)."""
        if self._started or self._closed:
            return
        self._started = True
        self._factory.startConnecting(_endpoint(self._settings, self._reactor))

    async def connect(self) -> None:
        """Open the pool and check Redis answers, within C{connect_timeout}.

        Also loads the scripts, so the first operations need no ``EVAL``.
        For production start-up: fail fast with a clear message.

        @raise StoreUnavailable: naming the server and why (unreachable,
            authentication failed, no answer in time).
        """
        self.start()
        deadline = self._reactor.seconds() + self._settings.connect_timeout
        await self._command(("PING",), deadline)
        for script in ALL_SCRIPTS:
            await self._command(("SCRIPT", "LOAD", script.source), deadline)
        _log.info(
            "connected to redis {host}:{port} db {db}",
            host=self._settings.host,
            port=self._settings.port,
            db=self._settings.db,
        )

    # -- the bounded command path ---------------------------------------------

    def _unavailable(self, why: str) -> StoreUnavailable:
        return StoreUnavailable(f"{self._where()}: {why}")

    def _refused(self, message: str) -> StoreUnavailable:
        if _is_auth_error(message):
            return self._unavailable(f"authentication failed ({message})")
        return self._unavailable(f"connection handshake refused ({message})")

    def _pick(self) -> _StoreProtocol | None:
        """The connection for the next command, or None when none is ready.

        The first ready one with fewer than L{PIPELINE_DEPTH} replies owed,
        so a light load stays on few connections (fewer writes and reads per
        reactor turn); past that depth, the least loaded.
        """
        best: _StoreProtocol | None = None
        for conn in self._factory.pool:
            if conn.usable:
                owed = len(conn.owed)
                if owed < PIPELINE_DEPTH:
                    return conn
                if best is None or owed < len(best.owed):
                    best = conn
        return best

    async def _acquire(self, deadline: float) -> _StoreProtocol:
        """A ready connection, waiting for one until the deadline."""
        conn = self._pick()
        if conn is not None:
            return conn
        factory = self._factory
        if factory.handshake_error is not None:
            raise self._refused(factory.handshake_error)
        waiter: defer.Deferred[Any] = defer.Deferred(
            lambda d: factory.ready_waiters.remove(d) if d in factory.ready_waiters else None
        )
        factory.ready_waiters.append(waiter)
        try:
            await waiter.addTimeout(max(0.0, deadline - self._reactor.seconds()), self._reactor)
        except _HandshakeRejected as e:
            raise self._refused(str(e)) from None
        except defer.TimeoutError:
            if factory.handshake_error is not None:
                raise self._refused(factory.handshake_error) from None
            raise self._unavailable("no connection available in time") from None
        except txredisapi.ConnectionError as e:
            raise self._unavailable(f"not connected ({e})") from None
        conn = self._pick()
        if conn is None:
            raise self._unavailable("not connected (the new connection was lost)")
        return conn

    def _deadline(self) -> float:
        return self._reactor.seconds() + self._settings.command_timeout

    def _watch(self) -> None:
        """Make sure the overdue-reply check runs while replies are owed."""
        if self._watchdog is None:
            self._watchdog = self._reactor.callLater(self._watch_interval, self._check_overdue)

    def _check_overdue(self) -> None:
        """Give up the connections that owe an overdue reply (a timer callback)."""
        self._watchdog = None
        try:
            now = self._reactor.seconds()
            owing = False
            for conn in list(self._factory.pool):
                overdue = conn.overdue(now)
                if overdue:
                    _log.warn(
                        "redis command {command} timed out (command timeout {timeout}s);"
                        " connection dropped with {pending} replies owed",
                        command=_text(overdue[0].command),
                        timeout=self._settings.command_timeout,
                        pending=len(conn.owed),
                    )
                    conn.give_up(overdue)
                elif conn.owed:
                    owing = True
            if owing and not self._closed:
                self._watch()
        except Exception:  # noqa: BLE001 - a timer callback is an error boundary
            _log.failure("checking redis replies for timeouts failed")
            if not self._closed:
                self._watch()

    async def _command(self, args: Sequence[Any], deadline: float | None = None) -> Any:
        """Send one command, pipelined on a ready connection, before the deadline.

        @param deadline: the reactor time by which the reply must be in
            (by default C{command_timeout} from now).

        @raise StoreUnavailable: on timeout, lost connection, or refusal.
        @raise txredisapi.ResponseError: for ``NOSCRIPT`` (the caller retries
            with ``EVAL``).
        """
        if self._closed:
            raise self._unavailable("the store is closed")
        if deadline is None:
            deadline = self._reactor.seconds() + self._settings.command_timeout
        conn = self._pick()
        if conn is None:
            self.start()
            conn = await self._acquire(deadline)
        try:
            reply = conn.send(args, deadline)
        except txredisapi.InvalidData as e:
            raise StoreError(f"cannot encode a command argument: {e}") from None
        except txredisapi.ConnectionError as e:
            raise self._unavailable(f"not connected ({e})") from None
        if self._watchdog is None:
            self._watch()
        try:
            return await reply
        except defer.TimeoutError:
            raise self._unavailable(
                f"no answer in time (command timeout {self._settings.command_timeout}s)"
            ) from None
        except txredisapi.ResponseError as e:
            message = str(e)
            if message.startswith("NOSCRIPT"):
                raise
            if _is_auth_error(message):
                raise self._refused(message) from None
            raise self._unavailable(f"error reply ({message})") from None
        except txredisapi.ConnectionError as e:
            raise self._unavailable(f"connection lost ({e})") from None

    async def _script(
        self, script: Script, script_keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """Run a script: one round trip, two when Redis has to be sent its source.

        Both share one deadline, so the caller still waits at most
        C{command_timeout}.
        """
        deadline = self._deadline()
        tail = (len(script_keys), *script_keys, *args)
        try:
            return await self._command(("EVALSHA", script.sha, *tail), deadline)
        except txredisapi.ResponseError:
            # NOSCRIPT: Redis restarted or its script cache was flushed.
            _log.debug("redis script {name} not cached; sending it", name=script.name)
        try:
            return await self._command(("EVAL", script.source, *tail), deadline)
        except txredisapi.ResponseError as e:  # pragma: no cover - only NOSCRIPT is re-raised
            raise self._unavailable(f"error reply ({e})") from None

    # -- IStore ----------------------------------------------------------------

    async def room_exists(self, room_id: str) -> bool:
        """Whether the room exists. One round trip (HEXISTS)."""
        reply = await self._command(("HEXISTS", keys.room(room_id), keys.CREATED_AT_FIELD))
        return int(reply) == 1

    async def create_room(self, room_id: str, now_ms: int, ttl_s: int) -> bool:
        """Create the room unless it exists. One round trip (script)."""
        reply = await self._script(
            CREATE_ROOM,
            (keys.room(room_id), keys.room_sockets(room_id)),
            (keys.CREATED_AT_FIELD, now_ms, ttl_s),
        )
        return int(reply) == 1

    async def create_first_free_room(
        self, candidates: Sequence[str], now_ms: int, ttl_s: int
    ) -> str | None:
        """Create the first free candidate. One round trip (script), whatever the count."""
        if not candidates:
            return None
        script_keys: list[str] = []
        for candidate in candidates:
            script_keys += (keys.room(candidate), keys.room_sockets(candidate))
        reply = await self._script(
            CREATE_FIRST_FREE_ROOM,
            script_keys,
            (keys.CREATED_AT_FIELD, now_ms, ttl_s, *candidates),
        )
        return None if reply is None else _text(reply)

    async def join_room(
        self,
        socket_id: str,
        room_id: str,
        now_ms: int,
        room_ttl_s: int,
        socket_ttl_s: int,
        rate: RateWindow | None,
    ) -> JoinResult:
        """The whole join decision. One round trip (script)."""
        script_keys = [keys.socket(socket_id), keys.room(room_id), keys.room_sockets(room_id)]
        args: list[Any] = [
            room_id,
            socket_id,
            keys.CREATED_AT_FIELD,
            now_ms,
            room_ttl_s,
            socket_ttl_s,
        ]
        if rate is None:
            args.append("0")
        else:
            script_keys.append(keys.join_rate(rate.key_suffix))
            args += ("1", rate.member, rate.window_ms, rate.limit, rate.ttl_s)
        outcome, bound, count, oldest = await self._script(JOIN_ROOM, script_keys, args)
        rate_result = None if int(count) < 0 else RateResult(int(count), int(oldest))
        bound_text = _text(bound)
        return JoinResult(
            outcome=JoinOutcome(_text(outcome)),
            bound_room=bound_text or None,
            rate=rate_result,
        )

    async def leave_room(
        self, socket_id: str, room_id: str | None, empty_ttl_s: int
    ) -> LeaveResult:
        """Unbind a socket. One round trip (script).

        The socket's binding is removed only when it names this room, so a
        leave for room A can never unbind a socket that sits in room B.
        """
        script_keys = [keys.socket(socket_id)]
        if room_id is not None:
            script_keys += (keys.room(room_id), keys.room_sockets(room_id))
        left, remaining = await self._script(
            LEAVE_ROOM,
            script_keys,
            (
                socket_id,
                "0" if room_id is None else "1",
                room_id or "",
                keys.CREATED_AT_FIELD,
                empty_ttl_s,
                keys.ROOM_PREFIX,
                keys.SOCKETS_SUFFIX,
            ),
        )
        return LeaveResult(room_id=_text(left) or None, remaining=int(remaining))

    async def room_of_socket(self, socket_id: str) -> str | None:
        """The room the socket is bound to. One round trip (GET)."""
        reply = await self._command(("GET", keys.socket(socket_id)))
        return None if reply is None else _text(reply)

    async def room_sockets(self, room_id: str) -> set[str]:
        """The room's members. One round trip (SMEMBERS)."""
        reply = await self._command(("SMEMBERS", keys.room_sockets(room_id)))
        return {_text(member) for member in reply or ()}

    async def record_attempt(self, rate: RateWindow, now_ms: int) -> RateResult:
        """Record one attempt in a sliding window. One round trip (script)."""
        count, oldest = await self._script(
            RECORD_ATTEMPT,
            (keys.join_rate(rate.key_suffix),),
            (rate.member, now_ms, rate.window_ms, rate.ttl_s),
        )
        return RateResult(count=int(count), oldest_ms=int(oldest))

    async def track_referrer(
        self, day: str, ref: str, ttl_s: int, max_referrers: int
    ) -> bool:
        """Count one referral unless the day is full. One round trip (script)."""
        reply = await self._script(
            TRACK_REFERRER, (keys.referrers(day),), (ref, ttl_s, max_referrers)
        )
        return int(reply) == 1

    async def ping(self) -> None:
        """One round trip (PING); raises L{StoreUnavailable} when Redis does not answer."""
        await self._command(("PING",))

    async def ttl(self, key: str) -> int | None:
        """Seconds left on a key. One round trip (TTL)."""
        reply = int(await self._command(("TTL", key)))
        return None if reply == -2 else reply

    async def close(self) -> None:
        """Close every connection and stop reconnecting (idempotent).

        Callers still waiting for a connection fail at once rather than at
        their deadline, so no timer outlives the store.
        """
        if self._closed:
            return
        self._closed = True
        if self._watchdog is not None:
            if self._watchdog.active():
                self._watchdog.cancel()
            self._watchdog = None
        self._factory.fail_waiting(txredisapi.ConnectionError("the store is closed"))
        if self._started:
            await self._factory.disconnect()


class RedisSubscriberFactory(txredisapi.SubscriberFactory):
    """Builds pub/sub connections to the store's Redis (for the cluster adapter).

    Set C{protocol} to a C{txredisapi.SubscriberProtocol} subclass (its
    C{messageReceived(pattern, channel, message)} receives publications),
    then call C{startConnecting(endpoint)}. The pool slot reconnects by
    itself, so subscriptions must be renewed on every connection: chain up
    in C{connectionMade} (that performs ``AUTH`` and returns a Deferred) and
    subscribe when it fires, or subscribe on C{factory.getConnection()} as
    the contract test does. Publishing is
    done on a normal connection, not this one. Messages arrive as text
    (UTF-8); set C{charset = None} on the factory to receive bytes.
    """

    def __init__(self, settings: RedisSettings) -> None:
        super().__init__(isLazy=True)
        self.password = settings.password
        self.convertNumbers = False


def subscriber_factory(
    settings: RedisSettings, reactor: IReactorTCP
) -> tuple[RedisSubscriberFactory, IStreamClientEndpoint]:
    """A pub/sub connection factory and the endpoint to start it on.

    @param settings: the same Redis settings the store uses.
    @param reactor: the reactor connections are made with.
    @return: C{(factory, endpoint)}; see L{RedisSubscriberFactory}.
    """
    return RedisSubscriberFactory(settings), _endpoint(settings, reactor)
