"""The real service tree on a loopback port, for the interop tests.

L{start_tree} starts the whole server (store, Engine.IO + Socket.IO +
signaling, REST API, one HTTP port) on C{tcp:0:interface=127.0.0.1} against
the test Redis, and L{RunningTree.stop} closes every session, stops
listening and waits for the store to close, so a test leaves nothing behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
from twisted.application.service import MultiService

from privydrop.service import build_service
from privydrop.service.realtime import Realtime
from privydrop.settings import Settings
from privydrop.settings.sources import settings_from_options
from privydrop.store.interface import IStore
from tests.redis_server import RedisServer

LISTEN = "tcp:0:interface=127.0.0.1"


def tree_settings(
    redis_server: RedisServer, db: int, cors_origin: str | None = None, **environ: str
) -> Settings:
    """Settings as an operator would give them: environment variables.

    A development server on an ephemeral loopback port (C{--listen}) with the
    test Redis (C{REDIS_URL}); C{cors_origin} becomes C{CORS_ORIGIN}, the
    origin allowed by CORS and the WebSocket Origin check.
    """
    password = redis_server.password
    auth = f":{password}@" if password else ""
    variables = {
        "NODE_ENV": "development",
        "REDIS_URL": f"redis://{auth}{redis_server.host}:{redis_server.port}/{db}",
    }
    if cors_origin is not None:
        variables["CORS_ORIGIN"] = cors_origin
    variables.update(environ)
    # cwd: a folder without .env.* files, so nothing but these variables counts.
    return settings_from_options({"listen": LISTEN}, variables, cwd=str(Path(__file__).parent))


@attrs.define
class RunningTree:
    """A started service tree.

    @ivar port: the HTTP port it listens on.
    @ivar realtime: its Engine.IO / Socket.IO / signaling pieces.
    @ivar store: its store.
    """

    service: MultiService
    port: int
    realtime: Realtime
    store: IStore

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        """Stop listening, end every session, wait for signaling's clean-up and the store."""
        await self.service.stopService()


async def start_tree(settings: Settings, reactor: Any) -> RunningTree:
    """Build and start the service tree, returning once it listens and Redis answers."""
    top = build_service(settings, reactor)
    http = top.getServiceNamed("http")
    realtime_service = top.getServiceNamed("realtime")
    store_service = top.getServiceNamed("store")
    top.startService()
    port = await http._waitingForPort  # the endpoint service's listening port
    await store_service.store.ping()
    return RunningTree(
        service=top,
        port=port.getHost().port,
        realtime=realtime_service.realtime,
        store=store_service.store,
    )
