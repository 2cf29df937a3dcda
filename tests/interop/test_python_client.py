"""The python-socketio client against our server, over websocket, polling,
and polling then upgrade.

Each test runs C{python_client_scenarios.py} in a subprocess (its client
blocks, the reactor must not) against our server on a real loopback port.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator

import attrs
import pytest
import pytest_twisted

from examples.socketio_echo import SUITE_SOCKETIO_SETTINGS
from tests.interop.socketio_harness import (
    RunningServer,
    run_python,
    start_server,
    stop_server,
)

SCRIPT = Path(__file__).resolve().parent / "python_client_scenarios.py"
MODES = ["websocket", "polling", "upgrade"]
EXPECTED_TRANSPORT = {"websocket": "websocket", "polling": "polling", "upgrade": "websocket"}


@pytest_twisted.async_yield_fixture(params=["plain", "offsets"])
async def server(request: Any) -> AsyncIterator[RunningServer]:
    """The suite's echo server, and the same with connection state recovery
    on (events then carry offsets, which python-socketio hands its handlers
    as one more argument)."""
    settings = SUITE_SOCKETIO_SETTINGS
    if request.param == "offsets":
        settings = attrs.evolve(settings, recovery_window_ms=120_000)
    running = await start_server(socketio_settings=settings)
    running.flags = [request.param]
    yield running
    await stop_server(running)


@pytest.mark.parametrize("mode", MODES)
@pytest_twisted.ensureDeferred
async def test_python_client_exchanges_events_acks_and_binary(
    server: RunningServer, mode: str
) -> None:
    """Python clients (scripts, bots, tests of other teams) get the same
    service as the browser: auth on two namespaces, events and acks both
    ways with bytes, and a server-side disconnect of one namespace that
    leaves the other connected."""
    run = await run_python(SCRIPT, server.url, mode, "exchange", *server.flags)
    assert run.exit_code == 0, (run.lines, run.stderr)
    result = run.result
    assert result["transport"] == EXPECTED_TRANSPORT[mode]
    assert result["auth"] == {"token": "py-1"}
    assert result["customAuth"] == {"token": "py-1"}
    assert result["customId"] != result["id"]
    assert result["messageBack"] == [1, "2", {"3": [True]}, {"buffer": [1, 2, 3]}]
    assert result["ack"] == ["x", {"buffer": [4, 5]}]
    assert result["clientAnswered"] == ["answer", "q?", {"buffer": [9]}]
    # python-socketio's name (Client.reason.SERVER_DISCONNECT) for what the
    # JavaScript client calls "io server disconnect": it will not reconnect.
    assert result["disconnectReason"] == ["server disconnect"]
    assert result["customStillConnected"] is True
    assert ("/", "server namespace disconnect") in server.disconnects


@pytest.mark.parametrize("mode", MODES)
@pytest_twisted.ensureDeferred
async def test_python_client_reconnects_after_connection_loss(
    server: RunningServer, mode: str
) -> None:
    """After the connection drops, the client reconnects on its own, gets a
    new socket id, and its acks work again."""
    run = await run_python(SCRIPT, server.url, mode, "reconnect", *server.flags)
    assert run.exit_code == 0, (run.lines, run.stderr)
    result = run.result
    assert result["firstTransport"] == EXPECTED_TRANSPORT[mode]
    # python-socketio's name (Client.reason.TRANSPORT_ERROR) for a lost
    # connection, after which it reconnects.
    assert result["disconnectReason"] == ["transport error"]
    assert result["secondId"] != result["firstId"]
    assert result["ackAfterReconnect"] == ["again"]
