"""The real-time half of the server, assembled: Engine.IO, Socket.IO, signaling.

L{build_realtime} builds the pieces the service tree mounts beside the REST
API: the Engine.IO resource for C{settings.engine.path}, the Socket.IO server
(whose C{connection_count} feeds C{/health/detailed}), the C{leave_room}
hook, and L{RealtimeService}, which closes every session on shutdown and
waits for the signaling clean-up of each socket before the store stops.

It only wires existing layers together and reads no environment.
"""

from __future__ import annotations

from typing import Any, Callable

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import IResource

from privydrop.engineio.resource import build_engineio_resource
from privydrop.engineio.server import EngineServer, handshake_client_key
from privydrop.logs.levels import Logger
from privydrop.metrics import ProcessMetrics
from privydrop.rooms import Rooms
from privydrop.settings import Settings
from privydrop.signaling.handlers import (
    RELAYED_EVENTS,
    NotifyPeerLeft,
    Signaling,
    install_signaling,
    peer_left_notifier,
)
from privydrop.socketio.adapter import Adapter
from privydrop.socketio.server import SocketIOServer
from privydrop.turn import ice_server_source

_log = Logger()

#: Longest wait on shutdown for sockets' disconnect clean-up (store unbinds).
SHUTDOWN_DRAIN_S = 5.0


@attrs.frozen
class Realtime:
    """The assembled real-time layer.

    @ivar engine_resource: mount at C{settings.engine.path} (L{privydrop.web.site.build_site}).
    @ivar sio_server: the Socket.IO server (C{connection_count} for health).
    @ivar notify_peer_left: the REST API's C{leave_room} hook.
    @ivar signaling: the installed handlers (drop counters).
    @ivar engine_server: every Engine.IO session of this process.
    """

    engine_resource: IResource
    sio_server: SocketIOServer
    notify_peer_left: NotifyPeerLeft
    signaling: Signaling
    engine_server: EngineServer
    clock: IReactorTime
    room_check_interval_s: float = 0.0

    def service(self) -> RealtimeService:
        """A service that ends every session when the tree stops."""
        return RealtimeService(self)


def build_realtime(
    settings: Settings,
    reactor: IReactorTime,
    rooms: Rooms,
    adapter: Adapter | None = None,
    metrics: ProcessMetrics | None = None,
) -> Realtime:
    """Build Engine.IO and Socket.IO with PrivyDrop's signaling on C{"/"}.

    @param settings: all settings (reads C{engine}, C{socketio}, C{rooms},
        C{api.max_signal_bytes}, C{http}, C{turn}).
    @param reactor: timers for heartbeats, timeouts and rate windows.
    @param rooms: the room rules over the store the REST API also uses.
    @param adapter: rooms and delivery across processes; in-process when None.
    @param metrics: where signaling counts joins and relayed messages; no
        counting when None.
    """
    sio = SocketIOServer(reactor, settings.socketio, adapter=adapter)
    engine = EngineServer(
        reactor,
        settings.engine,
        sio,
        client_key=handshake_client_key(
            settings.http.trusted_proxies, settings.http.rate_limit_ipv6_prefix
        ),
    )
    namespace = sio.of("/")
    signaling = install_signaling(
        namespace,
        rooms,
        settings,
        ice_servers=ice_server_source(settings.turn, reactor),
        clock=reactor,
        metrics=None if metrics is None else metrics.signaling(RELAYED_EVENTS),
    )
    return Realtime(
        engine_resource=build_engineio_resource(engine),
        sio_server=sio,
        notify_peer_left=peer_left_notifier(namespace),
        signaling=signaling,
        engine_server=engine,
        clock=reactor,
        room_check_interval_s=settings.rooms.check_interval_s,
    )


class RealtimeService(Service):
    """Ends every Engine.IO session when the service tree stops.

    Put it before the HTTP listener in the tree: children stop in reverse,
    so the listener stops accepting first, then this closes the open
    sessions and waits (at most L{SHUTDOWN_DRAIN_S}) until signaling has
    unbound their sockets, and only then does the store stop.

    A rolling restart (L{handover} set, other processes alive, recovery
    on): the sessions close as a shutdown, which leaves their sockets
    detached and recoverable; their clients reconnect to another process
    and recover there, this one handing each socket's log over on request,
    for at most C{handover_s} or until none is left. Sockets still waiting
    then stay bound to this process in the store, with their deadlines: the
    others find it dead, keep them (custody) and announce them only when
    their window ends. With nobody else alive, they are ended at once
    (their peers told), as no process could recover them.
    """

    def __init__(self, realtime: Realtime) -> None:
        self.realtime = realtime
        #: (whether other processes are alive, fires once deadline writes
        #: ended, seconds to keep serving handovers); None: one process.
        self.handover: (
            tuple[Callable[[], Deferred[bool]], Callable[[], Deferred[Any]], float] | None
        ) = None

    def startService(self) -> None:
        super().startService()
        self.realtime.signaling.start_room_checks(self.realtime.room_check_interval_s)

    def stopService(self) -> Deferred[Any] | None:
        super().stopService()
        self.realtime.signaling.stop_room_checks()
        # The listener stopped first (see service.py): no polling client can
        # come back for a close packet, so end idle polling sessions now.
        self.realtime.engine_server.close_all(linger=False)
        sio = self.realtime.sio_server
        if self.handover is not None and sio.detached_count():
            return Deferred.fromCoroutine(self._hand_over(*self.handover))
        return self._end_detached()

    def _end_detached(self) -> Deferred[Any]:
        # Closing on shutdown leaves sockets recoverable, but no process
        # here will recover them: they leave now (peers told, store unbound).
        self.realtime.sio_server.end_all_detached()
        drained = self.realtime.signaling.wait_idle()
        drained.addTimeout(SHUTDOWN_DRAIN_S, self.realtime.clock)
        drained.addErrback(self._not_drained)
        return drained

    async def _hand_over(
        self,
        peers_alive: Callable[[], Deferred[bool]],
        flush: Callable[[], Deferred[Any]],
        handover_s: float,
    ) -> None:
        sio = self.realtime.sio_server
        try:
            others = await peers_alive()
        except Exception:  # noqa: BLE001 - nobody known to be alive
            others = False
        if not others:
            await self._end_detached()
            return
        waiting = sio.detached_count()
        _log.info(
            "stopping with other processes alive: {count} sockets wait up to {seconds} s "
            "for their clients to recover them elsewhere",
            count=waiting,
            seconds=handover_s,
        )
        gone = sio.wait_no_detached()
        gone.addTimeout(handover_s, self.realtime.clock)
        try:
            await gone
        except Exception:  # noqa: BLE001 - the time is up
            pass
        await flush()
        left = sio.detached_count()
        if left:
            _log.info(
                "{count} sockets were not recovered before this process stopped; another "
                "process keeps them until their window ends",
                count=left,
            )

    def _not_drained(self, failure: Any) -> None:
        _log.warn(
            "shutdown went on before every socket was unbound: {error}",
            error=failure.getErrorMessage(),
        )
