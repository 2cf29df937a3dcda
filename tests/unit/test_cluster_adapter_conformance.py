"""The Socket.IO server's own unit tests, re-run with the cluster adapter.

A process using L{ClusterAdapter} must behave, for its own clients, exactly as
one using the in-process adapter: the example-based tests of
C{tests/unit/test_socketio_server.py} are collected again here with its
C{server} fixture replaced by one whose adapter publishes to a
L{MemoryBus} (with a second node subscribed, so publications really travel).
Property-based tests build their own servers and are left out (collecting
one Hypothesis test twice breaks it under pytest-twisted).
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from privydrop.cluster.bus import MemoryBus
from privydrop.cluster.routing import ClusterAdapter
from privydrop.settings import SocketIOSettings
from privydrop.socketio.server import SocketIOServer
from tests.unit import test_socketio_server as _base


def _reused_tests() -> dict[str, Any]:
    found = {}
    for name in dir(_base):
        value = getattr(_base, name)
        if (
            name.startswith("test_")
            and callable(value)
            and not getattr(value, "is_hypothesis_test", False)
        ):
            found[name] = value
    return found


globals().update(_reused_tests())
clock = _base.clock


@pytest.fixture
def server(clock: Clock) -> SocketIOServer:
    bus = MemoryBus(clock)
    adapter = ClusterAdapter("node-under-test", bus.publish, clock=clock)
    other = ClusterAdapter("other-node", bus.publish, clock=clock)
    SocketIOServer(clock, SocketIOSettings(connect_timeout_ms=1000, recovery_window_ms=0), adapter=other)
    bus.attach(adapter)
    bus.attach(other)
    return SocketIOServer(clock, SocketIOSettings(connect_timeout_ms=1000, recovery_window_ms=0), adapter=adapter)
