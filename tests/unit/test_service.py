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


@pytest.mark.parametrize(
    "listen, expected",
    [
        ("tcp:3001", "tcp:3001:backlog=1024"),
        ("tcp:3001:interface=127.0.0.1", "tcp:3001:interface=127.0.0.1:backlog=1024"),
        ("TCP6:3001", "TCP6:3001:backlog=1024"),
        ("unix:/run/privydrop.sock:mode=660", "unix:/run/privydrop.sock:mode=660:backlog=1024"),
        ("ssl:443:privateKey=k.pem", "ssl:443:privateKey=k.pem:backlog=1024"),
        # The operator's own backlog wins.
        ("tcp:3001:backlog=64", "tcp:3001:backlog=64"),
        ("tcp:3001: backlog =64:interface=::1", "tcp:3001: backlog =64:interface=::1"),
        # An escaped colon is part of a value, not a separator.
        ("unix:/run/a\\:backlog=5.sock", "unix:/run/a\\:backlog=5.sock:backlog=1024"),
        # systemd made the socket (with its .socket unit's Backlog=).
        ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0"),
    ],
)
def test_the_listen_backlog_goes_where_the_endpoint_takes_one(listen: str, expected: str) -> None:
    from privydrop.service.listen import with_backlog

    assert with_backlog(listen, 1024) == expected


def test_the_listener_uses_the_listen_backlog() -> None:
    """Twisted's default backlog (50) leaves bursts waiting where no deadline
    reaches them; the setting (default 1024) goes to listen(2)."""
    from privydrop.settings import HttpSettings

    for http, backlog in ((HttpSettings(), 1024), (HttpSettings(listen_backlog=4096), 4096)):
        reactor = MemoryReactorClock()
        tree = build_service(Settings(listen="tcp:3456", http=http), reactor)
        tree.startService()
        assert reactor.tcpServers[0][2] == backlog
        tree.stopService()
    reactor = MemoryReactorClock()
    tree = build_service(Settings(listen="tcp:3456:backlog=7"), reactor)
    tree.startService()
    assert reactor.tcpServers[0][2] == 7
