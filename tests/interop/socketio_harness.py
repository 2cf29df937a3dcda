"""Runs our Socket.IO server on a real loopback port, and client processes
against it, for the interop tests.

The server is the protocol suite's echo server (C{examples/socketio_echo.py})
plus a few handlers the client scenarios use:

    ask-client     the server emits C{question} with an ack callback and, when
                   the client acknowledges, emits C{client-answered} with the
                   acknowledgement's arguments
    disconnect-me  C{socket.disconnect()} (a server-side namespace disconnect)
    drop-me        every Engine.IO session is closed, as on a server restart
    cut-me         every TCP connection is aborted, as when the network drops
                   (python-socketio, unlike the JavaScript client, does not
                   reconnect after an Engine.IO close packet, which is what a
                   pending poll receives on a clean server close)

Client processes are spawned with C{reactor.spawnProcess}; they print one
JSON object per line, which L{run_client} collects.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, cast

import attrs
import orjson
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ProcessProtocol
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure

from examples.socketio_echo import (
    SUITE_ENGINE_SETTINGS,
    SUITE_SOCKETIO_SETTINGS,
    build_echo_server,
)
from privydrop.engineio.server import EngineServer
from privydrop.settings import EngineSettings, SocketIOSettings
from privydrop.socketio.server import SocketIOServer
from privydrop.socketio.sockets import Socket

ROOT = Path(__file__).resolve().parents[2]
JS_DIR = Path(__file__).resolve().parent / "js"


class _TrackingFactory(WrappingFactory):
    """Knows the server's open TCP connections, to wait until all are gone."""

    def __init__(self, wrapped: Any) -> None:
        super().__init__(wrapped)  # type: ignore[no-untyped-call]
        self._empty: list[Deferred[None]] = []

    def unregisterProtocol(self, p: Any) -> None:
        super().unregisterProtocol(p)  # type: ignore[no-untyped-call]
        if not self.protocols:
            waiting, self._empty = self._empty, []
            for d in waiting:
                d.callback(None)

    def abort_all(self) -> None:
        for protocol in list(self.protocols):
            protocol.transport.abortConnection()

    def close_all_connections(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if not self.protocols:
            d.callback(None)
            return d
        self._empty.append(d)
        self.abort_all()
        return d


@attrs.define
class RunningServer:
    sio: SocketIOServer
    engine: EngineServer
    port: IListeningPort
    factory: _TrackingFactory
    #: (namespace, reason) of every disconnect the server saw.
    disconnects: list[tuple[str, str]] = attrs.Factory(list)
    #: Extra arguments for client scenarios (such as "offsets").
    flags: list[str] = attrs.Factory(list)

    @property
    def url(self) -> str:
        return "http://127.0.0.1:{}".format(cast(Any, self.port.getHost()).port)


def _install_test_handlers(running: RunningServer) -> None:
    sio, engine = running.sio, running.engine
    main = sio.of("/")

    def ask_client(socket: Socket) -> None:
        socket.emit(
            "question",
            "q?",
            callback=lambda *args: socket.emit("client-answered", *args),
        )

    main.on("ask-client", ask_client)
    main.on("disconnect-me", lambda socket: socket.disconnect())
    # Closed on the next turn so the client's own packet is handled first.
    main.on("drop-me", lambda socket: reactor.callLater(0, engine.close_all))
    main.on("cut-me", lambda socket: reactor.callLater(0, running.factory.abort_all))
    for name in ("/", "/custom"):
        sio.of(name).on_disconnect(
            lambda socket, reason: running.disconnects.append((socket.namespace.name, reason))
        )


async def start_server(
    engine_settings: EngineSettings = SUITE_ENGINE_SETTINGS,
    socketio_settings: SocketIOSettings = SUITE_SOCKETIO_SETTINGS,
) -> RunningServer:
    """Listen on an ephemeral 127.0.0.1 port (the suite's settings by default)."""
    sio, engine, site = build_echo_server(cast(Any, reactor), engine_settings, socketio_settings)
    factory = _TrackingFactory(site)
    endpoint = serverFromString(reactor, "tcp:0:interface=127.0.0.1")  # type: ignore[no-untyped-call]
    port = await endpoint.listen(factory)
    running = RunningServer(sio, engine, port, factory)
    _install_test_handlers(running)
    return running


async def stop_server(running: RunningServer) -> None:
    """Close every session and connection, stop listening, and wait for it."""
    running.engine.close_all()
    await cast(Any, running.port.stopListening())
    # Nobody can recover a socket any more: end the ones that wait (their
    # window's timer would otherwise outlive the test).
    running.sio.end_all_detached()
    await running.factory.close_all_connections()


@attrs.frozen
class ClientRun:
    exit_code: int
    lines: list[Any]
    stderr: str

    @property
    def result(self) -> Any:
        for line in self.lines:
            if "result" in line:
                return line["result"]
        raise AssertionError(
            "client produced no result: {!r}\nstderr: {}".format(self.lines, self.stderr)
        )


class _Collector(ProcessProtocol):
    def __init__(self) -> None:
        self.done: Deferred[ClientRun] = Deferred()
        self._out = b""
        self._err = b""

    def outReceived(self, data: bytes) -> None:
        self._out += data

    def errReceived(self, data: bytes) -> None:
        self._err += data

    def processEnded(self, reason: Failure) -> None:
        code = 0
        value = cast(Any, reason.value)
        if isinstance(value, ProcessTerminated):
            code = value.exitCode if value.exitCode is not None else -1
        elif not isinstance(value, ProcessDone):
            code = -1
        lines = [orjson.loads(line) for line in self._out.splitlines() if line.strip()]
        self.done.callback(ClientRun(code, lines, self._err.decode("utf-8", "replace")))


def run_client(executable: str, args: list[str], cwd: Path) -> Deferred[ClientRun]:
    """Run a client process to its end and collect its JSON lines."""
    collector = _Collector()
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    cast(Any, reactor).spawnProcess(
        collector, executable, [executable, *args], env=env, path=str(cwd)
    )
    return collector.done


def run_node(script: str, *args: str) -> Deferred[ClientRun]:
    node = os.environ.get("NODE", "node")
    from shutil import which

    path = which(node) or node
    return run_client(path, [str(JS_DIR / script), *args], JS_DIR)


def run_python(script: Path, *args: str) -> Deferred[ClientRun]:
    return run_client(sys.executable, [str(script), *args], ROOT)
