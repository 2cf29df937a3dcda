"""A plain Engine.IO server that echoes every message back.

This is the configuration the official engine.io-protocol test-suite expects:
path C{/engine.io/}, pingInterval 300 ms, pingTimeout 200 ms, maxPayload
1 000 000 bytes, CORS C{*}. Listens on 127.0.0.1 only::

    python examples/engineio_echo.py --port 3000
"""

from __future__ import annotations

import argparse
import sys

from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.web.resource import Resource
from twisted.web.server import Site

from privydrop.engineio.interface import EngineConnection, Message
from privydrop.engineio.resource import build_engineio_resource
from privydrop.engineio.server import EngineServer
from privydrop.settings import EngineSettings, OriginSettings

_log = Logger()

#: The settings of the official test-suite's reference server.
SUITE_SETTINGS = EngineSettings(
    path="/engine.io/",
    ping_interval_ms=300,
    ping_timeout_ms=200,
    max_payload=1_000_000,
    origins=OriginSettings(allow_any=True),
)


class Echo:
    """Sends every message back on the session it came from."""

    def on_open(self, connection: EngineConnection) -> None:
        pass

    def on_message(self, connection: EngineConnection, message: Message) -> None:
        connection.send(message)

    def on_close(self, connection: EngineConnection, reason: str) -> None:
        pass


def build_site(server: EngineServer) -> Site:
    """A site with the Engine.IO resource at the settings' path."""
    root = Resource()
    node = root
    segments = [s for s in server.settings.path.strip("/").split("/") if s]
    for segment in segments[:-1]:
        child = Resource()
        node.putChild(segment.encode("utf-8"), child)
        node = child
    node.putChild(segments[-1].encode("utf-8"), build_engineio_resource(server))
    return Site(root)


def main(argv: list[str]) -> None:
    from twisted.internet import reactor

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.verbose:
        globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    server = EngineServer(reactor, SUITE_SETTINGS, Echo())
    site = build_site(server)
    site.noisy = False
    reactor.listenTCP(args.port, site, interface="127.0.0.1")  # type: ignore[arg-type]
    reactor.addSystemEventTrigger("before", "shutdown", server.close_all)
    print(
        f"engine.io echo listening on 127.0.0.1:{args.port}{SUITE_SETTINGS.path}",
        flush=True,
    )
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
