"""The store as a Twisted service: builds the configured backend, starts and stops it.

With Redis settings, L{StoreService} builds a L{RedisStore} (connections open
on C{startService}; production start-up calls L{verify_store} first so an
unreachable Redis stops the process before it listens), and pings it when it
has been idle for L{health_ping_interval} so that its health
(L{StoreService.health}, read by C{GET /health}) stays current without
traffic. Without them it builds a L{MemoryStore} and sweeps its expired keys
on a timer that logs failures and keeps running.

The store object exists from construction on, so other components can be
wired to C{service.store} before anything starts.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, task

from privydrop.logs.levels import Logger
from privydrop.settings import Settings
from privydrop.store.health import StoreHealth
from privydrop.store.interface import IStore, StoreUnavailable
from privydrop.store.memory import MemoryStore
from privydrop.store.redis import RedisStore

_log = Logger()

#: Seconds between two sweeps of the memory store's expired keys.
DEFAULT_SWEEP_INTERVAL_S = 60.0

#: The shortest time between two health pings (with a very short command
#: timeout, at most one a second).
MIN_HEALTH_PING_INTERVAL_S = 1.0


def health_ping_interval(command_timeout: float) -> float:
    """Seconds without any store operation after which the store is pinged.

    The command timeout: the health answer then changes within about twice
    the timeout of the store going bad or coming back, even on an idle
    process, for one PING every two seconds (by default) while idle, and
    none while the store is busy with real operations.
    """
    return max(command_timeout, MIN_HEALTH_PING_INTERVAL_S)


class StoreService(Service):
    """Owns the store: L{MemoryStore} or L{RedisStore}, from the settings.

    @ivar store: the store, usable (for wiring) right after construction.
    """

    def __init__(
        self,
        settings: Settings,
        reactor: Any,
        sweep_interval_s: float = DEFAULT_SWEEP_INTERVAL_S,
        *,
        node_id: str | None = None,
    ) -> None:
        """
        @param settings: C{settings.redis} None means the memory store.
        @param reactor: the reactor (or, for the memory store, any
            C{IReactorTime}, such as a C{Clock} in tests).
        @param sweep_interval_s: seconds between memory store sweeps.
        @param node_id: this process's id, in the name of its Redis
            connections (C{privydrop:<node>:store}).
        """
        self.setName("store")
        self._reactor = reactor
        self._sweep_interval_s = sweep_interval_s
        self._sweeper: task.LoopingCall | None = None
        self._pinger: task.LoopingCall | None = None
        self._memory: MemoryStore | None = None
        self.store: IStore
        #: What the store's operations say of it (None: the memory store,
        #: always usable).
        self.health: StoreHealth | None = None
        if settings.redis is None:
            self._memory = MemoryStore(reactor)
            self.store = self._memory
        else:
            redis_store = RedisStore.from_settings(settings.redis, reactor, node_id=node_id)
            self.store = redis_store
            self.health = redis_store.health
            self._ping_interval_s = health_ping_interval(settings.redis.command_timeout)

    def startService(self) -> None:
        super().startService()
        if self._memory is not None:
            sweeper = self._sweeper = task.LoopingCall(self._sweep)
            sweeper.clock = self._reactor
            sweeper.start(self._sweep_interval_s, now=False).addErrback(
                lambda failure: _log.failure(
                    "memory store sweeper stopped", failure=failure
                )
            )
        elif isinstance(self.store, RedisStore):
            defer.Deferred.fromCoroutine(self.store.connect()).addErrback(
                self._connect_failed
            )
            pinger = self._pinger = task.LoopingCall(self._ping_if_idle)
            pinger.clock = self._reactor
            pinger.start(self._ping_interval_s, now=False).addErrback(
                lambda failure: _log.failure("store health pinger stopped", failure=failure)
            )

    def _ping_if_idle(self) -> defer.Deferred[None] | None:
        """PING the store unless some operation ended recently (its outcome
        is in the health already). Failures are recorded there, not raised."""
        health = self.health
        if health is None or health.idle_for() < self._ping_interval_s:
            return None
        return defer.Deferred.fromCoroutine(self._ping())

    async def _ping(self) -> None:
        try:
            await self.store.ping()
        except StoreUnavailable:
            pass
        except Exception:  # noqa: BLE001 - a timer callback is an error boundary
            _log.failure("store health ping failed")

    def _connect_failed(self, failure: Any) -> None:
        # Development keeps running and retries on each command; production
        # start-up has already refused to start through verify_store().
        if failure.check(StoreUnavailable):
            _log.error("store not reachable yet: {error}", error=str(failure.value))
        else:
            _log.failure("connecting the store failed", failure=failure)

    def _sweep(self) -> None:
        memory = self._memory
        if memory is None:
            return
        try:
            memory.sweep()
        except Exception:  # noqa: BLE001 - a timer callback is an error boundary
            _log.failure("memory store sweep failed")

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        self._sweeper = None
        if self._pinger is not None and self._pinger.running:
            self._pinger.stop()
        self._pinger = None
        return defer.Deferred.fromCoroutine(self.store.close())


async def verify_store(store: IStore) -> None:
    """Check the store answers, for production start-up (fail fast).

    For Redis this opens the pool and waits at most C{connect_timeout}.

    @raise StoreUnavailable: with a message naming the server, the settings
        to check and the reason.
    """
    if isinstance(store, RedisStore):
        try:
            await store.connect()
        except StoreUnavailable as e:
            raise StoreUnavailable(
                f"{e} (check REDIS_HOST, REDIS_PORT and REDIS_PASSWORD)"
            ) from None
    else:
        await store.ping()
