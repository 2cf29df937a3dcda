"""The one HTTP site: routing and connection-level protection.

L{build_site} mounts the Engine.IO resource (when there is one) at
C{settings.engine.path} and sends every other path to the REST API's
resource. It also hardens C{twisted.web} for a public port:

 - deadlines: a client gets C{header_timeout_s} to send the request line and
   headers and C{body_timeout_s} to send a body, however slowly it trickles
   bytes in (the stock idle timeout restarts on every byte, so one byte every
   few seconds would hold a connection for ever);
 - a body cap per path (the API's C{max_body_bytes}, Engine.IO's
   C{max_payload} under its path): a request whose declared
   C{Content-Length} or received bytes pass it gets a 413 JSON answer and the
   connection is closed, without the body being read on; bodies are kept in
   memory and never spooled to a temporary file as C{twisted.web} does by
   default for large ones;
 - a client that sends requests but does not read the answers (HTTP
   pipelining) has its connection dropped once the answers waiting to be
   sent pass C{engine.max_outbound_buffer} bytes: C{twisted.web} stops
   reading such a client only between requests, so pipelined requests would
   otherwise queue answers in memory without end;
 - form bodies are not parsed into C{request.args} (nothing here takes
   forms; L{privydrop.compat.twisted.site_options});
 - no C{Server: TwistedWeb/<version>} header;
 - the access log holds client addresses only when C{LOG_CLIENT_IPS} says so;
 - every finished API request (any path but Engine.IO's) can be counted
   (C{count_api_request}, the metrics' request counter).

This module knows the two resources it routes to only as C{IResource}s.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import orjson
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web import http, server
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from privydrop.compat.twisted import (
    hooks_missing,
    outbound_buffer_size,
    request_head,
    site_options,
)
from privydrop.logs import levels as loglevels
from privydrop.logs.throttle import WarningThrottle
from privydrop.settings import Settings
from privydrop.web.cors import api_headers

_log = Logger()

#: The one 413 answer, in the API's error shape.
_TOO_LARGE_BODY = orjson.dumps({"error": "Request body is too large"})


class LimitedRequest(server.Request):
    """A request whose body is capped and kept in memory.

    The channel (L{HardenedChannel}) sets L{body_limit} from the path before
    the body arrives and refuses the request when the bytes read pass it.
    """

    body_limit: int = 0
    #: False when the channel could not tell the path from the request head:
    #: L{body_limit} is then the largest of the site's caps, and the cap of
    #: the request's own path is checked once the body is complete.
    body_limit_final: bool = True
    content: Any
    channel: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.content = io.BytesIO()
        self._body_read = 0

    def gotLength(self, length: int | None) -> None:
        # Bodies are capped (see HardenedChannel), so memory is the right
        # place; the stock code spools anything from 100 kB to a temp file.
        self.content = io.BytesIO()

    def handleContentChunk(self, data: bytes) -> None:
        channel = self.channel
        if channel is None or getattr(channel, "refused", False):
            return
        self._body_read += len(data)
        if self._body_read > self.body_limit:
            channel.refuse_too_large(self)
            return
        self.content.write(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        channel = self.channel
        if (
            not self.body_limit_final
            and channel is not None
            and self._body_read > channel.site.body_limit(path)
        ):
            channel.refuse_too_large(self)
            return
        super().requestReceived(command, path, version)

    def write(self, data: bytes) -> None:
        if not self.startedWriting:
            # Request.process adds "Server: TwistedWeb/<version>"; don't tell.
            self.responseHeaders.removeHeader(b"server")
        super().write(data)


class HardenedChannel(http.HTTPChannel):
    """C{HTTPChannel} with header and body deadlines and an early 413.

    Timers run on the factory's reactor (C{callLater}), so tests drive them
    with a C{Clock}.
    """

    site: "PrivyDropSite"
    transport: Any
    callLater: Any
    refused = False
    _head_deadline: IDelayedCall | None = None
    _body_deadline: IDelayedCall | None = None
    #: True while the next bytes belong to a request line or headers.
    _awaiting_head = True
    #: True from a request's complete body until its answer is finished:
    #: bytes that arrive meanwhile are buffered by C{HTTPChannel} and played
    #: back (through L{dataReceived}) once the answer is done. Kept here from
    #: the public hooks rather than read from C{HTTPChannel}'s private state.
    _handling = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self._awaiting_head = True
        self._start_head_deadline()

    def dataReceived(self, data: bytes) -> None:
        if self.refused:
            return
        if outbound_buffer_size(self.transport) > self.site.settings.engine.max_outbound_buffer:
            # Checked per read (and per pipelined request played back from
            # the channel's buffer), so the overshoot is one read's answers.
            self.site.warnings.warn(
                _log,
                "slow-reader",
                "dropping a client that does not read its answers ({limit} exceeded)",
                limit="max_outbound_buffer",
            )
            self.refused = True
            self.transport.abortConnection()
            return
        if self._awaiting_head and not self._handling:
            self._start_head_deadline()
        super().dataReceived(data)

    def rawDataReceived(self, data: bytes) -> None:
        if self.refused:
            return
        super().rawDataReceived(data)

    def allHeadersReceived(self) -> None:
        self._awaiting_head = False
        self._cancel("_head_deadline")
        request, target, length = request_head(self)
        if target is None:
            limit = self.site.largest_body_limit()
            request.body_limit_final = False
        else:
            limit = self.site.body_limit(target)
        request.body_limit = limit
        if length is not None and length > limit:
            # Before the stock code, so no "100 Continue" invites the body.
            self.refuse_too_large(request)
            return
        super().allHeadersReceived()
        if self.length != 0:
            self._body_deadline = self.callLater(
                self.site.settings.http.body_timeout_s, self._deadline_passed, "body"
            )

    def allContentReceived(self) -> None:
        if self.refused:
            return
        self._cancel("_body_deadline")
        self._awaiting_head = True
        self._handling = True
        super().allContentReceived()

    def requestDone(self, request: IRequest) -> None:
        # Before the stock code, which plays buffered bytes back: they may be
        # the head of the next request, whose deadline then starts.
        self._handling = False
        super().requestDone(request)

    def refuse_too_large(self, request: IRequest) -> None:
        """Answer 413 and close, reading no more of this connection.

        Written directly to the transport: the request has not been
        dispatched, so nothing else is writing to it.
        """
        if self.refused:
            return
        self.refused = True
        self._cancel("_head_deadline")
        self._cancel("_body_deadline")
        self.setTimeout(None)
        self.site.warnings.warn(
            _log,
            "too-large",
            "request body over {limit} bytes refused",
            limit=getattr(request, "body_limit", None),
        )
        origin = request.requestHeaders.getRawHeaders(b"origin", [None])[-1]
        lines = [
            b"HTTP/1.1 413 Payload Too Large",
            b"Content-Type: application/json; charset=utf-8",
            b"Content-Length: %d" % (len(_TOO_LARGE_BODY),),
            b"Connection: close",
        ]
        text_origin = origin.decode("latin-1") if origin is not None else None
        for name, value in api_headers(text_origin, self.site.settings.origins):
            lines.append(name + b": " + value)
        if self.transport is not None:
            self.transport.write(b"\r\n".join(lines) + b"\r\n\r\n" + _TOO_LARGE_BODY)
            self.loseConnection()

    def timeoutConnection(self) -> None:
        if self.transport is None:
            # The connection was handed to a WebSocket protocol.
            return
        super().timeoutConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self._cancel("_head_deadline")
        self._cancel("_body_deadline")
        super().connectionLost(reason)

    def _start_head_deadline(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = self.callLater(
                self.site.settings.http.header_timeout_s, self._deadline_passed, "headers"
            )

    def _cancel(self, name: str) -> None:
        call = getattr(self, name)
        if call is not None:
            setattr(self, name, None)
            if call.active():
                call.cancel()

    def _deadline_passed(self, what: str) -> None:
        setattr(self, "_head_deadline" if what == "headers" else "_body_deadline", None)
        if self.transport is None:
            return
        self.site.warnings.warn(
            _log,
            "slow-" + what, "dropping a client too slow to send its {what}", what=what
        )
        self.transport.abortConnection()


class PrivyDropSite(server.Site):
    """The site: hardened channels, capped requests, a quiet access log."""

    protocol = HardenedChannel  # type: ignore[assignment]
    displayTracebacks = False

    def __init__(
        self,
        resource: IResource,
        settings: Settings,
        reactor: IReactorTime,
        count_api_request: Callable[[Any], None] | None = None,
    ) -> None:
        super().__init__(
            resource,
            requestFactory=LimitedRequest,
            timeout=settings.http.idle_timeout_s,
            reactor=reactor,
            **site_options(),
        )
        changed = hooks_missing()
        if changed:
            _log.error(
                "twisted.web no longer has {names}: the connection deadlines and "
                "body caps built on them may not apply",
                names=", ".join(changed),
            )
        self.settings = settings
        #: Rejections of clients, logged at most once per cause per interval.
        self.warnings = WarningThrottle(reactor)
        self._engine_path = settings.engine.path.encode("utf-8")
        self._engine_bare = self._engine_path.rstrip(b"/")
        self._count_api_request = count_api_request

    def largest_body_limit(self) -> int:
        """The largest body accepted on any path."""
        return max(self.settings.engine.max_payload, self.settings.api.max_body_bytes)

    def body_limit(self, uri: bytes) -> int:
        """The largest body accepted for a request URI (path and query)."""
        path = uri.split(b"?", 1)[0]
        if self._is_engine_path(path):
            return self.settings.engine.max_payload
        return self.settings.api.max_body_bytes

    def _is_engine_path(self, path: bytes) -> bool:
        return path == self._engine_bare or path.startswith(self._engine_path)

    def log(self, request: Any) -> None:
        # Called by twisted.web once per finished request.
        if self._count_api_request is not None and not self._is_engine_path(request.path):
            self._count_api_request(request)
        # Once per HTTP request (every long poll): skip building the event when
        # nothing records debug (docs/performance.md, "Joins 1/4").
        if not loglevels.debug:
            return
        if self.settings.http.log_client_ips:
            _log.debug(
                "{method} {uri} {code} from {peer}",
                method=request.method,
                uri=request.uri,
                code=request.code,
                peer=request.getClientAddress(),
            )
        else:
            _log.debug(
                "{method} {uri} {code}", method=request.method, uri=request.uri, code=request.code
            )


class _Root(Resource):
    """Sends the Engine.IO path to its resource and everything else to the API.

    The API resource (Klein) sees the whole path; the Engine.IO resource is
    reached with C{prepath} holding the engine path's segments.
    """

    def __init__(
        self, settings: Settings, api: IResource, engineio: IResource | None
    ) -> None:
        super().__init__()
        self._api = api
        self._engineio = engineio
        self._engine_segments = [
            s.encode("utf-8") for s in settings.engine.path.strip("/").split("/") if s
        ]

    def getChildWithDefault(self, path: bytes, request: Any) -> IResource:
        full = [path] + list(request.postpath)
        segments = self._engine_segments
        if (
            self._engineio is not None
            and segments
            and full[: len(segments)] == segments
        ):
            for _ in segments[1:]:
                request.prepath.append(request.postpath.pop(0))
            return self._engineio
        # Hand the API the whole path back: Klein routes on prepath/postpath.
        request.postpath.insert(0, request.prepath.pop())
        return self._api

    def render(self, request: Any) -> bytes:
        # "/" itself (no segment left) goes to the API, which answers 404 JSON.
        result: bytes = self._api.render(request)
        return result


def build_site(
    settings: Settings,
    reactor: IReactorTime,
    api_resource: IResource,
    engineio_resource: IResource | None = None,
    count_api_request: Callable[[Any], None] | None = None,
) -> PrivyDropSite:
    """The HTTP site for the one listening port.

    @param settings: all settings (the site reads C{http}, C{api},
        C{engine.path}, C{engine.max_payload} and C{origins}).
    @param reactor: for connection deadlines.
    @param api_resource: the REST API (L{privydrop.api.routes.PrivyDropAPI.resource}).
    @param engineio_resource: mounted at C{settings.engine.path} when given.
    @param count_api_request: called with every finished request to a path
        other than Engine.IO's (L{privydrop.metrics.ApiRequests}).
    """
    return PrivyDropSite(
        _Root(settings, api_resource, engineio_resource), settings, reactor, count_api_request
    )
