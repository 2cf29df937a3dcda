"""The service tree, built on a MemoryReactor: names, order, listening, stopping."""

from __future__ import annotations

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs

from privydrop.service import build_service
from privydrop.settings import ConfigError, RedisSettings, Settings
from privydrop.web.site import PrivyDropSite


def test_tree_has_store_then_realtime_then_http() -> None:
    """The listener starts last and stops first, and sessions end before the store closes."""
    tree = build_service(Settings(listen="tcp:3456:interface=127.0.0.1"), MemoryReactorClock())
    assert tree.name == "privydrop"
    names = [child.name for child in tree]
    assert names == ["store", "realtime", "http"]
    assert tree.getServiceNamed("store").store is not None


def test_tree_without_realtime_serves_only_the_api() -> None:
    """The REST API can run alone (benchmarks, tests)."""
    tree = build_service(Settings(listen="tcp:0"), MemoryReactorClock(), realtime=False)
    assert [child.name for child in tree] == ["store", "http"]


def test_started_tree_listens_on_the_configured_endpoint() -> None:
    """--listen decides the port and interface; stopping the tree stops listening."""
    reactor = MemoryReactorClock()
    tree = build_service(Settings(listen="tcp:3456:interface=127.0.0.1"), reactor)
    tree.startService()
    assert len(reactor.tcpServers) == 1
    port, factory, _, interface = reactor.tcpServers[0]
    assert (port, interface) == (3456, "127.0.0.1")
    assert isinstance(factory, PrivyDropSite)
    tree.stopService()
    assert not tree.running


def test_memory_store_warns_exactly_once() -> None:
    """Development without Redis says once, clearly, that state is per process and lost on restart."""
    with capturedLogs() as events:
        build_service(Settings(listen="tcp:0"), MemoryReactorClock())
    warnings = [e for e in events if e["log_level"].name == "warn"]
    assert len(warnings) == 1
    assert "lost on restart" in warnings[0]["log_format"]
    assert "REDIS_HOST" in warnings[0]["log_format"]


def test_bad_listen_string_is_a_config_error() -> None:
    """A typo in --listen is reported as a configuration error naming the option."""
    with pytest.raises(ConfigError, match="--listen"):
        build_service(Settings(listen="nonsense:1"), MemoryReactorClock())


def test_redis_connections_of_one_process_share_its_node_id() -> None:
    """In CLIENT LIST, the store's connections and the cluster's carry the
    same process id, the one its cluster messages carry, so an operator can
    tell which process holds which connection."""
    tree = build_service(
        Settings(listen="tcp:0", redis=RedisSettings(host="10.1.2.3")), MemoryReactorClock()
    )
    assert [child.name for child in tree] == ["store", "adapter", "nodes", "realtime", "http"]
    node_id = tree.getServiceNamed("adapter").node_id
    assert tree.getServiceNamed("store").store.pool.name == f"privydrop:{node_id}:store"


def test_a_port_that_is_taken_fails_start_up() -> None:
    """twistd must exit with an error when the port is in use, not run on
    without listening (the failure would only be logged)."""
    from twisted.internet.error import CannotListenError

    class TakenPortReactor(MemoryReactorClock):
        def listenTCP(self, port: int, factory: object, backlog: int = 50,
                      interface: str = "") -> object:
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))

    tree = build_service(Settings(listen="tcp:3456:interface=127.0.0.1"), TakenPortReactor())
    with pytest.raises(CannotListenError):
        tree.startService()
