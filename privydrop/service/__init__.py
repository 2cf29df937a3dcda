"""The service tree of one server process.

::

    MultiService "privydrop"
      store      StoreService     Redis pool, or the in-memory store (which
                                  also sweeps its expired keys on a timer)
      adapter    ClusterService   with Redis only: pub/sub between processes,
                                  so rooms and sends by socket id span hosts
      nodes      NodeService      with Redis only: heartbeats; notices dead
                                  processes and cleans up their sockets
      realtime   RealtimeService  Engine.IO + Socket.IO + signaling; on stop,
                                  ends every session and waits for clean-up
      http       strports.service(settings.listen, site): the listener, with
                 the listen backlog LISTEN_BACKLOG (L{privydrop.service.listen})
      metrics    with METRICS_LISTEN only: the reactor lag probe ("lag") and
                 the /metrics listener ("listener"), a site of its own

Children start in order and stop in reverse, each only once the one before
it has finished stopping (L{_StopInOrder}): the listener stops first, then
the open sessions end and their sockets are unbound, and the store stops
last. The REST API reaches Socket.IO only through the C{leave_room} and
health hooks handed to it here.
With Redis configured, every process sharing it routes Socket.IO events to the
others through the adapter; without Redis (development) delivery stays in the
process. This module receives settings and a reactor and reads no environment.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Callable

from twisted.application import strports
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.web.resource import IResource

from privydrop.api.routes import PeerLeftHook, PrivyDropAPI
from privydrop.cluster.nodes import NodeMonitor, NodeService
from privydrop.cluster.pubsub import ClusterService
from privydrop.cluster.routing import ClusterAdapter, new_node_id
from privydrop.logs.levels import Logger
from privydrop.metrics import ProcessMetrics
from privydrop.redis.endpoint import describe
from privydrop.rooms import Rooms
from privydrop.service.listen import with_backlog
from privydrop.service.metrics import api_routes, instrument, metrics_service
from privydrop.service.realtime import Realtime, build_realtime
from privydrop.signaling.recovery import ClusterRecovery
from privydrop.settings import ConfigError, Settings
from privydrop.store.service import StoreService
from privydrop.web.site import build_site

_log = Logger()


class _StopInOrder(MultiService):
    """A MultiService whose children stop one after the other, in reverse.

    C{MultiService.stopService} calls every child's C{stopService} in the
    same turn and only then waits for them all. Here a child's stop begins
    once the previous child's stop has finished, so the store is still open
    while "realtime" waits for the disconnect clean-up of sessions that end
    after a turn (a polling client's session closes when its pending GET has
    carried the close packet), and the cluster adapter still publishes their
    C{peer-disconnected}. Without this, the store closed under that clean-up
    and such sockets stayed bound in Redis until their TTL; only the
    adapter's own unsubscribe round trip kept it open long enough to publish
    their notice.
    """

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stop_children())

    async def _stop_children(self) -> None:
        for service in reversed(list(self)):
            try:
                await maybeDeferred(service.stopService)
            except Exception:  # noqa: BLE001 - one child's failure must not keep the rest running
                _log.failure("stopping service {name} failed", name=service.name)


def process_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def node_name(listen: str) -> str:
    """The default stable name of a process: its host and listen endpoint."""
    return "%s|%s" % (socket.gethostname(), listen)


def build_service(
    settings: Settings,
    reactor: Any,
    *,
    realtime: bool = True,
) -> MultiService:
    """The whole server as one service; nothing happens until it is started.

    @param settings: validated settings.
    @param reactor: the reactor (a C{MemoryReactorClock} in tests).
    @param realtime: mount Socket.IO at C{settings.engine.path}; without it
        the tree serves only the REST API (and that path answers 404).
    @raise ConfigError: when C{settings.listen} (or C{settings.metrics.listen})
        is not a valid endpoint.
    """
    top = _StopInOrder()
    top.setName("privydrop")
    metrics = ProcessMetrics(reactor) if settings.metrics.enabled else None

    # One id per process: it marks its cluster messages and names its Redis
    # connections (privydrop:<node>:store, ...) in CLIENT LIST.
    node_id = new_node_id()
    store_service = StoreService(settings, reactor, node_id=node_id)
    store_service.setName("store")
    store_service.setServiceParent(top)
    if settings.redis is None:
        _log.warn(
            "No Redis configured (REDIS_HOST, REDIS_URL or REDIS_SENTINELS): using "
            "the in-memory store. Rooms and statistics are per process and lost on restart; "
            "do not run more than one process like this."
        )
        redis_address = None
    else:
        redis_address = describe(settings.redis)

    # The node id a process's sockets are recorded with; with Redis it is
    # the cluster adapter's (which changes if the process registers again).
    identity: list[Callable[[], str]] = [lambda: node_id]
    rooms = Rooms(store_service.store, settings.rooms, reactor, node_id=lambda: identity[0]())
    engineio_resource: IResource | None = None
    notify_peer_left: PeerLeftHook | None = None
    connection_count: Callable[[], int] | None = None
    layer: Realtime | None = None
    adapter: ClusterAdapter | None = None
    if realtime:
        if settings.redis is not None:
            # Before "realtime", so it stops after it: disconnect notices sent
            # while sessions close on shutdown still reach other processes.
            adapter_service = ClusterService(
                settings.redis,
                reactor,
                node_id=node_id,
                channel_prefix=settings.redis.channel_prefix,
            )
            adapter_service.setName("adapter")
            adapter_service.setServiceParent(top)
            adapter = adapter_service.adapter
            identity[0] = lambda: adapter_service.node_id
        layer = build_realtime(
            settings,
            reactor,
            rooms,
            adapter=adapter,
            metrics=metrics,
        )
        if settings.redis is not None:
            # Messages published while the subscription was down never
            # arrived: refresh what this node knows of its rooms.
            adapter_service.on_resubscribed(layer.signaling.check_rooms_soon)
            signaling, engine_server = layer.signaling, layer.engine_server

            def self_reaped() -> None:
                # The others announced this process's sockets as gone: their
                # disconnects must not announce them again; clients reconnect
                # and join afresh, under a new node id.
                signaling.forget_rooms()
                engine_server.close_all()
                # Nobody may recover them here: their peers were told.
                layer.sio_server.end_all_detached("this process was judged dead")
                adapter_service.renew(new_node_id())

            recovery: ClusterRecovery | None = None
            if settings.socketio.recovery_enabled:
                recovery = ClusterRecovery(
                    store=store_service.store,
                    rooms=rooms,
                    adapter=adapter_service.adapter,
                    sio=layer.sio_server,
                    signaling=signaling,
                    notify_peer_left=layer.notify_peer_left,
                    clock=reactor,
                    window_ms=settings.socketio.recovery_window_ms,
                    socket_ttl_s=settings.rooms.socket_ttl_s,
                    handover_timeout_ms=settings.cluster.handover_timeout_ms,
                    sweep_grace_ms=settings.cluster.heartbeat_interval_ms,
                )
                layer.sio_server.set_recovery_backend(recovery)
            monitor = NodeMonitor(
                store_service.store,
                reactor,
                settings.cluster,
                node_id=lambda: adapter_service.node_id,
                name=settings.cluster.node_name or node_name(settings.listen),
                info={
                    "pid": str(os.getpid()),
                    "host": socket.gethostname(),
                    "listen": settings.listen,
                    "started_ms": str(int(reactor.seconds() * 1000)),
                },
                socket_ttl_s=settings.rooms.socket_ttl_s,
                empty_ttl_s=settings.rooms.empty_room_ttl_s,
                prune_limit=settings.rooms.prune_limit,
                on_socket_reaped=signaling.socket_reaped,
                on_self_reaped=self_reaped,
                process_alive=process_alive,
                recovery_window_ms=settings.socketio.recovery_window_ms,
                on_socket_kept=None if recovery is None else recovery.keep,
                on_beat=None if recovery is None else recovery.sweep_soon,
                figures=lambda: {
                    "connections": layer.sio_server.connection_count(),
                    "published": adapter_service.adapter.published,
                    "deliveries": adapter_service.adapter.deliveries,
                    "received": adapter_service.adapter.received,
                    "unroutable": adapter_service.adapter.unroutable,
                },
            )
            # After the adapter, before realtime: it stops once the sessions
            # ended, and leaves the heartbeats then.
            nodes_service = NodeService(monitor)
            nodes_service.setName("nodes")
            nodes_service.setServiceParent(top)
        realtime_service = layer.service()
        if settings.redis is not None and recovery is not None:
            realtime_service.handover = (
                lambda: Deferred.fromCoroutine(monitor.peers_alive()),
                recovery.flush,
                settings.cluster.shutdown_handover_ms / 1000,
            )
        realtime_service.setName("realtime")
        realtime_service.setServiceParent(top)
        engineio_resource = layer.engine_resource
        notify_peer_left = layer.notify_peer_left
        connection_count = layer.sio_server.connection_count

    api = PrivyDropAPI(
        settings,
        store_service.store,
        reactor,
        rooms=rooms,
        notify_peer_left=notify_peer_left,
        connection_count=connection_count,
        redis_address=redis_address,
        store_health=store_service.health,
    )
    site = build_site(
        settings,
        reactor,
        api.resource(),
        engineio_resource,
        None if metrics is None else metrics.api_requests(api_routes(PrivyDropAPI.app)),
    )
    try:
        # strports.service, unlike a bare StreamServerEndpointService, makes a
        # port that is taken fail start-up (twistd exits non-zero) instead of
        # being logged while the process runs on without listening.
        http = strports.service(
            with_backlog(settings.listen, settings.http.listen_backlog), site, reactor=reactor
        )
    except Exception as e:
        raise ConfigError(
            "--listen: %r is not a Twisted endpoint string (%s)" % (settings.listen, e)
        ) from None
    http.setName("http")
    http.setServiceParent(top)
    if metrics is not None:
        instrument(metrics, store=store_service.store, site=site, realtime=layer, cluster=adapter)
        metrics_service(settings, reactor, metrics).setServiceParent(top)
        _log.info(
            "Prometheus metrics at /metrics on {metrics_listen}",
            metrics_listen=settings.metrics.listen,
        )
    _log.info(
        "PrivyDrop backend in {environment} mode, listening on {listen}",
        environment=settings.environment,
        listen=settings.listen,
    )
    return top
