"""C{examples/engineio_echo.py}, the server the official engine.io-protocol
test-suite runs against, started the way the suite's instructions start it.

The suite is not in any registry; this checks that the example really runs
with C{--port N} and has the configuration the suite expects (path
C{/engine.io/}, pingInterval 300, pingTimeout 200, maxPayload 1000000, CORS
C{*}) and echoes text and binary messages over polling.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool

ROOT = Path(__file__).resolve().parents[2]
#: Longest wait for the example to start or stop; a failure, not a hang, past it.
WAIT_S = 20.0


class _Example(ProcessProtocol):
    """Fires C{listening} on the example's start-up line, C{ended} on exit."""

    def __init__(self) -> None:
        self.listening: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.output = b""

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if b"listening" in self.output and not self.listening.called:
            self.listening.callback(None)

    def errReceived(self, data: bytes) -> None:
        self.output += data

    def processEnded(self, reason: Failure) -> None:
        if not self.listening.called:
            self.listening.errback(RuntimeError(self.output.decode("utf-8", "replace")))
        self.ended.callback(None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest_twisted.async_yield_fixture
async def example() -> AsyncIterator[tuple[str, HTTPConnectionPool]]:
    port = _free_port()
    process = _Example()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    transport = reactor.spawnProcess(  # type: ignore[attr-defined]
        process,
        sys.executable,
        [sys.executable, str(ROOT / "examples" / "engineio_echo.py"), "--port", str(port)],
        env=env,
        path=str(ROOT),
    )
    pool = HTTPConnectionPool(reactor, persistent=False)
    try:
        await process.listening.addTimeout(WAIT_S, reactor)
        yield f"http://127.0.0.1:{port}/engine.io/", pool
    finally:
        await pool.closeCachedConnections()
        if not process.ended.called:
            transport.signalProcess("TERM")
        await process.ended.addTimeout(WAIT_S, reactor)


@pytest_twisted.ensureDeferred
async def test_engineio_echo_example_has_the_suite_configuration_and_echoes(
    example: tuple[str, HTTPConnectionPool],
) -> None:
    """Whoever runs the official engine.io-protocol suite against
    C{examples/engineio_echo.py --port N} gets the handshake values, CORS
    and echo behaviour the suite asserts, instead of a server that fails
    before the first case."""
    base, pool = example
    response = await treq.get(
        base + "?EIO=4&transport=polling", headers={"Origin": "https://any.example"}, pool=pool
    )
    assert response.code == 200
    assert response.headers.getRawHeaders("access-control-allow-origin") == [
        "https://any.example"
    ]
    body = await treq.content(response)
    assert body[:1] == b"0"
    opened: dict[str, Any] = orjson.loads(body[1:])
    assert opened["pingInterval"] == 300
    assert opened["pingTimeout"] == 200
    assert opened["maxPayload"] == 1_000_000
    assert opened["upgrades"] == ["websocket"]
    session = base + "?EIO=4&transport=polling&sid=" + opened["sid"]

    response = await treq.post(session, data=b"4hello\x1ebAQID", pool=pool)
    assert (response.code, await treq.content(response)) == (200, b"ok")
    response = await treq.get(session, pool=pool)
    assert (response.code, await treq.content(response)) == (200, b"4hello\x1ebAQID")

    response = await treq.get(base + "?EIO=4&transport=polling", pool=pool)
    assert response.headers.getRawHeaders("access-control-allow-origin") == ["*"]
    await treq.content(response)
