"""The official JavaScript socket.io-client 4.x against our server.

Each test runs one scenario of C{js/socketio_scenarios.js} with Node.js on a
real loopback port, over websocket only, polling only, and polling then
upgrade. Needs C{npm ci} in C{tests/interop/js}.
"""

from __future__ import annotations

from shutil import which
from typing import AsyncIterator

import pytest
import pytest_twisted

from tests.interop.socketio_harness import (
    JS_DIR,
    RunningServer,
    run_node,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.skipif(
    which("node") is None or not (JS_DIR / "node_modules" / "socket.io-client").exists(),
    reason="needs node and `npm ci` in tests/interop/js",
)

MODES = ["websocket", "polling", "upgrade"]
EXPECTED_TRANSPORT = {"websocket": "websocket", "polling": "polling", "upgrade": "websocket"}


@pytest_twisted.async_yield_fixture
async def server() -> AsyncIterator[RunningServer]:
    running = await start_server()
    yield running
    await stop_server(running)


@pytest.mark.parametrize("mode", MODES)
@pytest_twisted.ensureDeferred
async def test_js_client_exchanges_events_acks_and_binary(server: RunningServer, mode: str) -> None:
    """The browser client library talks to us as to the Node server: auth,
    events and acks both ways, Buffers, a second namespace on the same
    connection, refusal of an unknown namespace, and a server-side
    disconnect; its socket id is not its session id and opens no session.
    If this broke, the PrivyDrop frontend couldn't signal."""
    run = await run_node("socketio_scenarios.js", server.url, mode, "exchange")
    assert run.exit_code == 0, (run.lines, run.stderr)
    result = run.result
    assert result["transport"] == EXPECTED_TRANSPORT[mode]
    assert result["id"] != result["engineId"]
    assert result["pollWithSocketIdStatus"] == 400
    assert result["auth"] == {"token": "t-123"}
    assert result["messageBack"] == [1, "2", {"3": [True]}, {"buffer": [1, 2, 3]}]
    assert result["ack"] == ["x", {"buffer": [4, 5]}]
    assert result["clientAnswered"] == ["answer", "q?", {"buffer": [9]}]
    assert result["customAuth"] == {"room": "c"}
    assert result["sameManager"] is True
    assert result["customId"] != result["id"]
    assert result["unknownNamespace"] == "Invalid namespace"
    assert result["disconnectReason"] == "io server disconnect"
    assert result["activeAfterDisconnect"] is False
    assert ("/custom", "client namespace disconnect") in server.disconnects
    assert ("/", "server namespace disconnect") in server.disconnects


@pytest.mark.parametrize("mode", MODES)
@pytest_twisted.ensureDeferred
async def test_js_client_reconnects_after_connection_loss(server: RunningServer, mode: str) -> None:
    """When the server drops the connection (as on a restart), the client
    reconnects by itself with a new socket id and carries on. Users would
    otherwise have to reload the page."""
    run = await run_node("socketio_scenarios.js", server.url, mode, "reconnect")
    assert run.exit_code == 0, (run.lines, run.stderr)
    result = run.result
    # Over polling, a session closed between two GETs shows up as a poll
    # error rather than a close packet; both are connection losses.
    assert result["disconnectReason"] in ("transport close", "transport error")
    assert result["firstTransport"] == EXPECTED_TRANSPORT[mode]
    assert result["secondId"] != result["firstId"]
    assert result["ackAfterReconnect"] == ["again"]


@pytest.mark.parametrize("mode", MODES)
@pytest_twisted.ensureDeferred
async def test_js_client_reports_an_oversize_auth_and_does_not_retry(
    server: RunningServer, mode: str
) -> None:
    """A CONNECT whose auth passes SOCKETIO_MAX_AUTH_BYTES reaches the page as
    a connect_error with the server's message, and socket.io-client leaves it
    there instead of reconnecting with the same payload in a loop (which a
    closed connection would cause); an auth of the size connection-state
    recovery uses connects."""
    run = await run_node("socketio_scenarios.js", server.url, mode, "bigAuth")
    assert run.exit_code == 0, (run.lines, run.stderr)
    result = run.result
    assert result["message"] == "auth payload too large"
    assert result["active"] is False and result["connected"] is False
    assert result["managerState"] == "closed"
    assert result["smallAuth"] == {"pid": "p" * 20, "offset": "o" * 20}
    assert result["reconnectAttempts"] == 0
