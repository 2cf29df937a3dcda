"""A Socket.IO server in the configuration the official socket.io-protocol
test-suite expects.

Path C{/socket.io/}, pingInterval 300 ms, pingTimeout 200 ms, maxPayload
1 000 000 bytes, connectTimeout 1000 ms, CORS C{*}. On C{/} it emits C{auth}
with the handshake's auth payload, echoes C{message} back as C{message-back}
(all arguments, binary included) and answers C{message-with-ack} through the
acknowledgement; on C{/custom} it emits C{auth}. Listens on 127.0.0.1 only::

    python examples/socketio_echo.py --port 3000

The suite is not in any registry; run it from a scratch checkout outside the
repository (it connects to http://localhost:3000)::

    mkdir /tmp/sio-suite
    git -C <socket.io-protocol clone> archive HEAD test-suite | tar -x -C /tmp/sio-suite
    cd /tmp/sio-suite/test-suite && npm install && npx mocha test-suite.js
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Mapping, cast

from twisted.internet.interfaces import IReactorTime
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.web.resource import Resource
from twisted.web.server import Site

from privydrop.engineio.resource import build_engineio_resource
from privydrop.engineio.server import EngineServer
from privydrop.settings import EngineSettings, OriginSettings, SocketIOSettings
from privydrop.socketio.server import SocketIOServer
from privydrop.socketio.sockets import Socket

#: The Engine.IO settings of the suite's reference server.
SUITE_ENGINE_SETTINGS = EngineSettings(
    path="/socket.io/",
    ping_interval_ms=300,
    ping_timeout_ms=200,
    max_payload=1_000_000,
    origins=OriginSettings(allow_any=True),
)
#: The Socket.IO settings of the suite's reference server. The suite's client
#: attaches one listener per expected message, so the CONNECT answer and the
#: "auth" event must not reach it in one TCP read: a few ms apart they don't.
SUITE_SOCKETIO_SETTINGS = SocketIOSettings(
    connect_timeout_ms=1000, connect_answer_gap_ms=5, recovery_window_ms=0
)


def _emit_auth(socket: Socket, auth: Mapping[str, Any]) -> None:
    socket.emit("auth", dict(auth))


def install_echo(server: SocketIOServer) -> None:
    """Register the suite's handlers on C{/} and C{/custom}."""
    main = server.of("/")
    main.on_connect(_emit_auth)
    main.on("message", lambda socket, *args: socket.emit("message-back", *args))
    main.on("message-with-ack", lambda socket, *args: args)
    server.of("/custom").on_connect(_emit_auth)


def build_site(engine: EngineServer) -> Site:
    """A site with the Engine.IO resource at C{/socket.io/}."""
    root = Resource()
    root.putChild(b"socket.io", build_engineio_resource(engine))
    site = Site(root)
    site.noisy = False
    return site


def build_echo_server(
    clock: IReactorTime,
    engine_settings: EngineSettings = SUITE_ENGINE_SETTINGS,
    socketio_settings: SocketIOSettings = SUITE_SOCKETIO_SETTINGS,
) -> tuple[SocketIOServer, EngineServer, Site]:
    """The echo server's three parts, wired together."""
    sio = SocketIOServer(clock, socketio_settings)
    install_echo(sio)
    engine = EngineServer(clock, engine_settings, sio)
    return sio, engine, build_site(engine)


def main(argv: list[str]) -> None:
    from twisted.internet import reactor as _reactor

    reactor = cast(Any, _reactor)

    parser = argparse.ArgumentParser(description="Socket.IO echo server for the protocol suite")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.verbose:
        globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    _, engine, site = build_echo_server(reactor)
    reactor.listenTCP(args.port, site, interface="127.0.0.1")
    reactor.addSystemEventTrigger("before", "shutdown", engine.close_all)
    print("socket.io echo listening on 127.0.0.1:%d/socket.io/" % (args.port,), flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
