"""Finding the Redis master through Sentinel, at every connection attempt.

With C{REDIS_SENTINELS} set (L{privydrop.settings.SentinelSettings}), no
connection of the client has a fixed address. L{SentinelMasterEndpoint} is
the endpoint the pools connect through (L{privydrop.redis.endpoint}); each
attempt first asks the Sentinels where the master is
(L{SentinelResolver}), then connects there. The handshake then asks C{ROLE}
(L{privydrop.redis.handshake}), so a server that is no longer, or not yet,
the master is dropped and the attempt repeated. After a failover the old
master's connections are lost (the master died, or Sentinel killed them when
it turned it into a replica, or it answers C{-READONLY}), the pools
reconnect, and the next attempt finds the new master.

Asking the Sentinels (the Sentinel client guidelines): one at a time, in
order, each within C{timeout} seconds (connection included), with
C{AUTH <sentinel password>} when one is set, then C{SENTINEL
get-master-addr-by-name <master>}. The first that names a master is moved to
the front of the list for the next time. Attempts that start while a
question is under way share its answer, so a pool reconnecting all its
connections at once asks once.

Why not txredisapi's own Sentinel support: it waits C{discovery_timeout}
(10 s by default) before giving up on a master the Sentinels report down,
and has no subscriber that follows the master; the client's own pools,
subscriber and deadlines work unchanged over this endpoint.

Following switches. A connection to a master that is cut off from the
Sentinels (paused, partitioned) is not closed by a failover: a store or
publisher command on it times out and the connection is given up, but an
idle subscriber would stay on the old master, deaf. So each pool on Sentinel
also runs a L{SentinelWatcher}: one connection to one of the Sentinels
(the next one after each loss), subscribed to C{+switch-master}; when the
Sentinels switch our master, the pool gives up its connections to any other
server at once (L{privydrop.redis.pool}).

The pure parts (L{master_query}, L{judge_master_reply}) are shared with the
blocking start-up probe (L{privydrop.redis.probe}).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import txredisapi
from twisted.application.internet import ClientService
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IAddress, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from privydrop.logs.levels import Logger
from privydrop.redis.handshake import is_auth_error
from privydrop.redis.resp import ReplyParser, RESPProtocolError, encode_command
from privydrop.settings import SentinelSettings

_log = Logger()

#: The settings an operator checks, by what went wrong.
ADDRESS_SETTING = "REDIS_SENTINELS"
MASTER_SETTING = "REDIS_SENTINEL_MASTER"
PASSWORD_SETTING = "REDIS_SENTINEL_PASSWORD"

Address = tuple[str, int]


def format_address(address: Address) -> str:
    """C{host:port}, with brackets around an IPv6 address."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describe_sentinels(settings: SentinelSettings) -> str:
    """C{master <name> (Sentinels h:p,h:p)}, for messages."""
    sentinels = ",".join(format_address(a) for a in settings.addresses)
    return f"master {settings.master} (Sentinels {sentinels})"


class SentinelRefused(Exception):
    """One Sentinel did not name the master.

    @ivar reason: what went wrong, for messages.
    @ivar setting: the setting to check (L{ADDRESS_SETTING}, ...).
    """

    def __init__(self, reason: str, setting: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.setting = setting


class MasterNotFound(Exception):
    """No Sentinel named the master; the message gives each one's reason.

    @ivar failures: each Sentinel asked, with why it did not answer.
    """

    def __init__(self, master: str, failures: Sequence[tuple[Address, SentinelRefused]]) -> None:
        self.master = master
        self.failures = tuple(failures)
        reasons = "; ".join(f"{format_address(a)}: {e.reason}" for a, e in self.failures)
        super().__init__(f"no Sentinel named the master {master!r} ({reasons})")

    @property
    def settings_to_check(self) -> tuple[str, ...]:
        """The settings the failures point at, most telling first.

        A Sentinel that answered (wrong password, unknown master) says more
        than one that could not be reached.
        """
        found = {e.setting for _, e in self.failures}
        order = (PASSWORD_SETTING, MASTER_SETTING, ADDRESS_SETTING)
        return tuple(s for s in order if s in found) or (ADDRESS_SETTING,)


def master_query(settings: SentinelSettings) -> tuple[tuple[Any, ...], ...]:
    """The commands that ask one Sentinel for the master, written at once."""
    query: tuple[tuple[Any, ...], ...] = (
        ("SENTINEL", "get-master-addr-by-name", settings.master),
    )
    if settings.password is not None:
        query = (("AUTH", settings.password), *query)
    return query


def judge_master_reply(replies: Sequence[Any], settings: SentinelSettings) -> Address:
    """The master's address from a Sentinel's replies to L{master_query}.

    @raise SentinelRefused: the password was refused, the Sentinel does not
        monitor a master of that name, or it is not a Sentinel at all.
    """
    for reply in replies:
        if isinstance(reply, txredisapi.ResponseError):
            error = str(reply)
            if is_auth_error(error):
                raise SentinelRefused(f"authentication failed ({error})", PASSWORD_SETTING)
            raise SentinelRefused(f"error reply ({error}); is it a Sentinel?", ADDRESS_SETTING)
    answer = replies[-1] if replies else None
    if answer is None:
        raise SentinelRefused(f"monitors no master named {settings.master!r}", MASTER_SETTING)
    if (
        type(answer) is list
        and len(answer) == 2
        and type(answer[0]) is str
        and answer[0]
        and type(answer[1]) is str
        and answer[1].isdigit()
        and 0 < int(answer[1]) < 65536
    ):
        return answer[0], int(answer[1])
    raise SentinelRefused(f"unexpected answer {answer!r}; is it a Sentinel?", ADDRESS_SETTING)


class _Question(Protocol):
    """One short connection to a Sentinel: write the query, read its replies, close."""

    #: The TCP transport (typed loosely: C{abortConnection} is not in C{ITransport}).
    transport: Any

    def __init__(self, commands: Sequence[Sequence[Any]]) -> None:
        self._commands = commands
        self._parser = ReplyParser()
        self._replies: list[Any] = []
        self.answered: Deferred[list[Any]] = Deferred(lambda _: self._abort())

    def connectionMade(self) -> None:
        self.transport.write(b"".join(encode_command(c) for c in self._commands))

    def dataReceived(self, data: bytes) -> None:
        if self.answered.called:
            return
        try:
            self._replies += self._parser.feed(data)
        except RESPProtocolError as e:
            self.answered.errback(SentinelRefused(f"reply malformed ({e})", ADDRESS_SETTING))
            self._abort()
            return
        if len(self._replies) >= len(self._commands):
            self.answered.callback(self._replies)
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.answered.called:
            self.answered.errback(SentinelRefused("connection closed", ADDRESS_SETTING))

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()


class _QuestionFactory(Factory):
    noisy = False

    def __init__(self, question: _Question) -> None:
        self._question = question

    def buildProtocol(self, addr: IAddress | None) -> _Question:
        return self._question


class SentinelResolver:
    """Asks the Sentinels where the master is; see the module docstring.

    @ivar settings: the Sentinels and the master's name.
    @ivar master: the master's address as last named, or None.
    """

    def __init__(self, settings: SentinelSettings, reactor: Any) -> None:
        """
        @param reactor: provides C{IReactorTCP} and C{IReactorTime}.
        """
        self.settings = settings
        self._reactor = reactor
        self._order: list[Address] = list(settings.addresses)
        self._waiters: list[Deferred[Address]] = []
        self._question: Deferred[Address] | None = None
        self._reported: str | None = None
        self.master: Address | None = None

    @property
    def order(self) -> tuple[Address, ...]:
        """The Sentinels in the order the next question asks them."""
        return tuple(self._order)

    def master_address(self) -> Deferred[Address]:
        """The master's address, as the first Sentinel that knows says.

        @return: a Deferred firing with C{(host, port)}, or failing with
            L{MasterNotFound} after at most C{timeout} seconds per Sentinel.
            Cancelling it leaves the question to the others waiting for it
            (the last one to leave cancels it).
        """
        waiter: Deferred[Address] = Deferred(self._forget)
        self._waiters.append(waiter)
        if self._question is None:
            question = self._question = Deferred.fromCoroutine(self._ask_in_order())
            question.addBoth(self._answered)
        return waiter

    def _forget(self, waiter: Deferred[Address]) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)
        if not self._waiters and self._question is not None:
            self._question.cancel()

    def _answered(self, result: Address | Failure) -> None:
        self._question = None
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)
        # Without waiters, a failure was a cancellation: nothing to report.

    async def _ask_in_order(self) -> Address:
        failures: list[tuple[Address, SentinelRefused]] = []
        for sentinel in list(self._order):
            try:
                master = await self._ask(sentinel)
            except SentinelRefused as e:
                failures.append((sentinel, e))
                continue
            if self._order[0] != sentinel:
                self._order.remove(sentinel)
                self._order.insert(0, sentinel)
            self._found(master, sentinel)
            return master
        error = MasterNotFound(self.settings.master, failures)
        if str(error) != self._reported:
            self._reported = str(error)
            _log.warn(
                "{error}; check {settings}; retrying",
                error=str(error),
                settings=", ".join(error.settings_to_check),
            )
        raise error

    async def _ask(self, sentinel: Address) -> Address:
        timeout = self.settings.timeout
        question = _Question(master_query(self.settings))
        endpoint = HostnameEndpoint(self._reactor, sentinel[0], sentinel[1], timeout=timeout)
        exchange: Deferred[Any] = endpoint.connect(_QuestionFactory(question))
        exchange.addCallback(lambda _: question.answered)
        exchange.addTimeout(timeout, self._reactor)
        try:
            replies = await exchange
        except (CancelledError, SentinelRefused):
            raise
        except TimeoutError:
            raise SentinelRefused(f"no answer within {timeout}s", ADDRESS_SETTING) from None
        except Exception as e:  # noqa: BLE001 - any connection failure is this Sentinel's
            raise SentinelRefused(
                f"cannot connect ({e.__class__.__name__}: {e})", ADDRESS_SETTING
            ) from None
        return judge_master_reply(replies, self.settings)

    def _found(self, master: Address, sentinel: Address) -> None:
        self._reported = None
        if master != self.master:
            _log.info(
                "redis master {master} is at {server} (Sentinel {sentinel})",
                master=self.settings.master,
                server=format_address(master),
                sentinel=format_address(sentinel),
            )
            self.master = master


@implementer(IStreamClientEndpoint)
class SentinelMasterEndpoint:
    """Connects to the master the Sentinels name, asking them at every attempt."""

    def __init__(self, resolver: SentinelResolver, reactor: Any, connect_timeout: float) -> None:
        """
        @param resolver: asks the Sentinels.
        @param reactor: provides C{IReactorTCP} and C{IReactorTime}.
        @param connect_timeout: seconds a connection to the master may take.
        """
        self.resolver = resolver
        self._reactor = reactor
        self._connect_timeout = connect_timeout

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        """Ask the Sentinels, then connect to the master they name.

        Fails with L{MasterNotFound} when no Sentinel names one, or as a TCP
        connection fails; the pool slot retries with back-off either way.
        """
        return Deferred.fromCoroutine(self._connect(protocolFactory))

    async def _connect(self, factory: Any) -> Any:
        host, port = await self.resolver.master_address()
        endpoint = HostnameEndpoint(self._reactor, host, port, timeout=self._connect_timeout)
        return await endpoint.connect(factory)


#: The channel on which Sentinels announce a new master:
#: C{<master> <old ip> <old port> <new ip> <new port>}.
SWITCH_CHANNEL = "+switch-master"


def parse_switch(message: str, master: str) -> Address | None:
    """The new address of C{master} in a C{+switch-master} message, or None
    when the message is about another master or malformed."""
    words = message.split()
    if len(words) != 5 or words[0] != master or not words[4].isdigit():
        return None
    return words[3], int(words[4])


class _SwitchListener(Protocol):
    """Subscribes to L{SWITCH_CHANNEL} on one Sentinel and reports switches."""

    transport: Any

    def __init__(self, watcher: SentinelWatcher) -> None:
        self._watcher = watcher
        self._parser = ReplyParser()

    def connectionMade(self) -> None:
        commands: list[tuple[Any, ...]] = [("SUBSCRIBE", SWITCH_CHANNEL)]
        password = self._watcher.settings.password
        if password is not None:
            commands.insert(0, ("AUTH", password))
        self.transport.write(b"".join(encode_command(c) for c in commands))

    def dataReceived(self, data: bytes) -> None:
        try:
            replies = self._parser.feed(data)
        except RESPProtocolError:
            self.transport.abortConnection()
            return
        for reply in replies:
            if isinstance(reply, txredisapi.ResponseError):
                # Refused (a wrong password): the resolver reports it; try
                # another Sentinel after the back-off.
                self.transport.abortConnection()
                return
            if (
                type(reply) is list
                and len(reply) == 3
                and reply[0] == "message"
                and reply[1] == SWITCH_CHANNEL
                and type(reply[2]) is str
            ):
                self._watcher.announced(reply[2])


class _ListenerFactory(Factory):
    noisy = False

    def __init__(self, watcher: SentinelWatcher) -> None:
        self._watcher = watcher

    def buildProtocol(self, addr: IAddress | None) -> _SwitchListener:
        return _SwitchListener(self._watcher)


@implementer(IStreamClientEndpoint)
class _EachSentinelInTurn:
    """Connects to the Sentinels in turn: the next one at every attempt."""

    def __init__(self, settings: SentinelSettings, reactor: Any) -> None:
        self._settings = settings
        self._reactor = reactor
        self._next = 0

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        addresses = self._settings.addresses
        host, port = addresses[self._next % len(addresses)]
        self._next += 1
        endpoint = HostnameEndpoint(self._reactor, host, port, timeout=self._settings.timeout)
        return endpoint.connect(protocolFactory)


class SentinelWatcher:
    """Hears the Sentinels announce a new master; see the module docstring.

    @ivar settings: the Sentinels and the master's name.
    """

    #: Seconds before the first reconnection to a Sentinel; doubles up to
    #: the settings' C{reconnect_max_delay}.
    initial_delay = 0.2

    def __init__(
        self, settings: SentinelSettings, reactor: Any, switched: Callable[[Address], None]
    ) -> None:
        """
        @param reactor: provides C{IReactorTCP} and C{IReactorTime}.
        @param switched: called with the new master's address when the
            Sentinels switch ours.
        """
        self.settings = settings
        self._switched = switched
        self._service = ClientService(
            _EachSentinelInTurn(settings, reactor),
            _ListenerFactory(self),
            retryPolicy=self.retry_delay,
            clock=reactor,
        )

    def retry_delay(self, attempt: int) -> float:
        """Seconds before the C{attempt}-th reconnection in a row to a Sentinel."""
        delay = self.initial_delay * 2 ** min(attempt - 1, 16)
        return float(min(delay, self.settings.reconnect_max_delay))

    def start(self) -> None:
        """Connect to a Sentinel and keep a connection (idempotent)."""
        if not self._service.running:
            self._service.startService()

    def stop(self) -> Deferred[None]:
        """Close the connection and stop reconnecting."""
        if not self._service.running:
            return succeed(None)
        stopped: Deferred[None] = self._service.stopService()
        return stopped

    def announced(self, message: str) -> None:
        """A C{+switch-master} message arrived (called by the connection)."""
        master = parse_switch(message, self.settings.master)
        if master is None:
            return
        _log.info(
            "Sentinel switched redis master {master} to {server}",
            master=self.settings.master,
            server=format_address(master),
        )
        try:
            self._switched(master)
        except Exception:  # noqa: BLE001 - error boundary: a push must not break the connection
            _log.failure(
                "following the switch of redis master {master} failed",
                master=self.settings.master,
            )
