"""Metrics wired to the components of one service tree (C{METRICS_LISTEN}).

L{instrument} tells a L{ProcessMetrics} what to read when scraped (open
sessions, joined sockets, refused input of every layer, the cluster's
publications) and gives the store's Redis pool its timer; L{metrics_service}
builds the tree's C{"metrics"} child: the reactor lag probe and the
listener of the metrics site. What counts events as they happen (signaling,
the site's API requests) is handed over where those are built
(L{privydrop.service.build_service}, L{privydrop.service.realtime}).

It only wires existing layers together and reads no environment.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.application import strports
from twisted.application.service import MultiService

from privydrop.cluster.routing import ClusterAdapter
from privydrop.metrics import ProcessMetrics, build_metrics_site
from privydrop.metrics.readings import CauseCounts
from privydrop.service.realtime import Realtime
from privydrop.settings import ConfigError, Settings
from privydrop.signaling.events import Reason
from privydrop.signaling.handlers import Signaling
from privydrop.store.interface import IStore
from privydrop.store.redis import RedisStore
from privydrop.web.site import PrivyDropSite

#: The C{reason} of relayed messages dropped because the sender is not in
#: the room (signaling's C{unroutable}).
NOT_IN_ROOM = "not_in_room"


def api_routes(app: Any) -> list[str]:
    """The paths of a Klein application's routes (its public URL map)."""
    return [rule.rule for rule in app.url_map.iter_rules()]


def instrument(
    metrics: ProcessMetrics,
    *,
    store: IStore,
    site: PrivyDropSite,
    realtime: Realtime | None,
    cluster: ClusterAdapter | None,
) -> None:
    """Point the scrape-time readings at the components, time the store's commands.

    @param store: the store; a Redis one has its commands timed.
    @param site: the public site (input refused at the HTTP edge).
    @param realtime: Engine.IO, Socket.IO and signaling, when mounted.
    @param cluster: the cluster adapter, with Redis.
    """
    if isinstance(store, RedisStore):
        store.pool.timing = metrics.redis_commands()
    readings = metrics.readings
    readings.read_drops("http", site.warnings.counts)
    if realtime is not None:
        engine = realtime.engine_server
        readings.read_engine(engine)
        readings.read_drops("engineio", engine.rejections.counts)
        readings.read_drops("socketio", realtime.sio_server.warnings.counts)
        readings.read_drops("signaling", _signaling_drops(realtime.signaling))
        namespace = realtime.sio_server.of("/")
        signaling = realtime.signaling
        readings.read_rooms(lambda: _rooms_of(signaling, namespace.sockets))
    if cluster is not None:
        readings.read_cluster(cluster)


def _rooms_of(signaling: Signaling, socket_ids: Iterable[str]) -> list[str | None]:
    return [signaling.room_of(socket_id) for socket_id in socket_ids]


def _signaling_drops(signaling: Signaling) -> CauseCounts:
    def counts() -> dict[str, int]:
        found = {reason.value: signaling.dropped.count(reason=reason) for reason in Reason}
        found[NOT_IN_ROOM] = signaling.unroutable
        return found

    return counts


def metrics_service(settings: Settings, reactor: Any, metrics: ProcessMetrics) -> MultiService:
    """The tree's C{"metrics"} child: the lag probe (C{"lag"}) and the
    C{/metrics} listener on C{settings.metrics.listen} (C{"listener"}).

    @raise ConfigError: the setting is not a Twisted endpoint string.
    @raise ValueError: metrics are off (no C{METRICS_LISTEN}).
    """
    listen = settings.metrics.listen
    if listen is None:
        raise ValueError("metrics are off: METRICS_LISTEN is not set")
    service = MultiService()
    service.setName("metrics")
    probe = metrics.lag_probe(settings.metrics.lag_interval_s)
    probe.setName("lag")
    probe.setServiceParent(service)
    site = build_metrics_site(metrics.registry, reactor, settings.http.idle_timeout_s)
    try:
        # As for the public port: a port that is taken fails start-up.
        listener = strports.service(listen, site, reactor=reactor)
    except Exception as e:  # noqa: BLE001 - any parse error is the operator's to fix
        raise ConfigError(
            "METRICS_LISTEN: %r is not a Twisted endpoint string (%s)" % (listen, e)
        ) from None
    listener.setName("listener")
    listener.setServiceParent(service)
    return service
