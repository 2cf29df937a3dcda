"""The twisted.web resource for Engine.IO: routes a request to its transport.

A GET carrying C{Upgrade: websocket} goes to the Autobahn WebSocket
resource once it has passed the same request checks as polling (so both
transports refuse with the same JSON error before anything is hijacked);
every other request is polling. The resource is mounted by the site builder
at L{EngineSettings.path}; it ignores the rest of the path, as the reference
server does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from autobahn.twisted.resource import WebSocketResource
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request
from zope.interface import implementer

from privydrop.compat.twisted import release_upgraded_channel
from privydrop.engineio.errors import EngineRequestError
from privydrop.engineio.polling import PollingTransport, answer_error, header, query_of
from privydrop.engineio.server import EngineServer
from privydrop.engineio.websocket import EngineWebSocketFactory
from privydrop.logs.levels import Logger
from privydrop.web.query import parse_query
from privydrop.web.site import IRequestHeadObserver

_log = Logger()


@implementer(IRequestHeadObserver)
class EngineIOResource(Resource):
    """Serves both Engine.IO transports of one L{EngineServer}.

    Mounted by L{privydrop.web.site.build_site}, it is also told of each
    request's head before the body is read (L{head_received}), which is
    when a polling POST becomes active.
    """

    isLeaf = True

    def __init__(self, server: EngineServer) -> None:
        super().__init__()
        self._server = server
        self._polling = PollingTransport(server)
        self.websocket_factory = EngineWebSocketFactory(server)
        self._websocket = WebSocketResource(self.websocket_factory)

    def render(self, request: Request) -> bytes | int:
        try:
            query = query_of(request)
            upgrade = (header(request, b"upgrade") or "").lower() == "websocket"
            if upgrade and request.method == b"GET":
                try:
                    self._server.verify(
                        query, "GET", upgrade=True, origin=header(request, b"origin")
                    )
                except EngineRequestError as e:
                    return answer_error(request, e)
                channel = getattr(request, "channel", None)
                transport = getattr(request, "transport", None)
                result: bytes | int = self._websocket.render(request)
                # The HTTP channel is done with once Autobahn has taken its
                # connection; let it be collected.
                release_upgraded_channel(channel, transport)
                if getattr(channel, "transport", True) is None:
                    release_timers = getattr(channel, "release_timers", None)
                    if release_timers is not None:
                        release_timers()
                return result
            return self._polling.render(request, query)
        except Exception:  # noqa: BLE001 - error boundary: log, close this session
            _log.failure("engine request failed")
            request.setResponseCode(500)
            return b""

    def head_received(self, request: IRequest, method: bytes, target: bytes) -> None:
        """A request's head arrived: a polling POST is active from now on."""
        if method != b"POST":
            return
        try:
            params = getattr(request, "query_params", None)
            # Parsed from the head once, and kept for the render.
            query: Mapping[str, str] = (
                params() if params is not None else parse_query(target.partition(b"?")[2])
            )
            self._polling.post_started(cast(Request, request), query)
        except Exception:  # noqa: BLE001 - error boundary: the request is rendered as usual
            _log.failure("engine request head failed")


def build_engineio_resource(server: EngineServer) -> IResource:
    """The resource to mount at C{server.settings.path}.

    @param server: the Engine.IO server whose sessions it serves.
    @return: a leaf resource answering polling and WebSocket requests.
    """
    return EngineIOResource(server)
