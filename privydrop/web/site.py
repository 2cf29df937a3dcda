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
   C{Content-Length} or received bytes pass it gets a 413 JSON answer, and
   the connection is closed lingeringly (L{HardenedChannel.refuse_too_large}):
   what the client still sends is read and thrown away, within bounds, so
   that it gets to read the answer; bodies are kept in memory and never
   spooled to a temporary file as C{twisted.web} does by default for large
   ones;
 - a client that sends requests but does not read the answers (HTTP
   pipelining) has its connection dropped once the answers waiting to be
   sent pass C{engine.max_outbound_buffer} bytes: C{twisted.web} stops
   reading such a client only between requests, so pipelined requests would
   otherwise queue answers in memory without end;
 - the Engine.IO resource is told of each request head under its path
   (L{IRequestHeadObserver}), for its rules on requests whose bodies are
   still arriving;
 - form bodies are not parsed into C{request.args} (nothing here takes
   forms; L{privydrop.compat.twisted.site_options});
 - no C{Server: TwistedWeb/<version>} header;
 - the log holds client addresses only when C{LOG_CLIENT_IPS} says so, never
   an Engine.IO C{sid} (URIs are redacted), and its lines about clients are
   throttled per cause (Twisted's own "Timing out client: <address>" and
   "HEAD request <request>" lines are replaced by ours).
 - every finished API request (any path but Engine.IO's) can be counted
   (C{count_api_request}, the metrics' request counter).

Engine.IO requests take a shorter way through C{twisted.web}: they are
handed to their resource without walking the resource tree, and their
answers are sent on the socket as soon as they are written when nothing is
queued before them (L{HardenedChannel.cork},
L{privydrop.compat.twisted.write_now}) rather than on the reactor's next
turn: a long poll or a POST answer is one send, not a register for
writability, a turn and an unregister. The deadline and idle timers of a
connection are moved from request to request, not made again for each.

This module knows the two resources it routes to only as C{IResource}s.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from zope.interface import Interface

from privydrop.compat.twisted import (
    hooks_missing,
    outbound_buffer_size,
    replicas_changed,
    request_head,
    request_method,
    site_options,
    write_now,
)
from privydrop.logs import levels as loglevels
from privydrop.logs.client_text import redact_uri
from privydrop.logs.levels import Logger
from privydrop.logs.throttle import WarningThrottle
from privydrop.settings import Settings
from privydrop.web.cors import api_headers
from privydrop.web.query import parse_query

_log = Logger()

#: The one 413 answer, in the API's error shape.
_TOO_LARGE_BODY = orjson.dumps({"error": "Request body is too large"})

#: Bytes of a refused body read and thrown away after its 413, so that the
#: client, which reads the answer only once it has sent everything, gets it
#: (closing a connection with unread bytes makes the kernel reset it, and
#: the reset destroys the answer). Honest clients that pass the cap do so
#: with a file or a paste of a few megabytes; beyond this the bandwidth is
#: not worth the answer and the connection is closed. The time allowed is
#: C{HTTP_BODY_TIMEOUT}, what any body gets.
LINGER_MAX_BYTES = 8 * 1024 * 1024


class IRequestHeadObserver(Interface):
    """A resource told of each of its requests when the head has arrived.

    C{twisted.web} renders a request only once its whole body is read; a
    resource whose rules concern requests still arriving (Engine.IO: one
    active POST per session) learns of them here.
    """

    def head_received(request: IRequest, method: bytes, target: bytes) -> None:
        """The head of C{request} arrived; its body, if any, has not been read.

        @param request: the request (C{notifyFinish} fires when it is
            answered, or fails when its connection is lost first).
        @param method: the request method as sent.
        @param target: the request-target as sent (path and query).
        """


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
    #: Whether what this request writes is sent on the socket at once
    #: (L{HardenedChannel.cork}): set for Engine.IO requests, whose long
    #: polls and POSTs are the bulk of the traffic and cannot be pipelined
    #: far (one GET and one POST at a time per session). API answers keep
    #: the stock path: buffered until the reactor's next turn, so that a
    #: client pipelining API requests without reading their answers fills
    #: the server's buffer and is dropped (L{HardenedChannel._answers_unread})
    #: rather than parked in the kernel's buffers until its idle timeout.
    send_at_once = False
    #: The request-target of an Engine.IO request as sent, from its head.
    head_target: bytes | None = None
    #: The query as text, once parsed (L{query_params}).
    _query: dict[str, str] | None = None
    #: C{request.args}: set by the stock C{requestReceived}, or made from
    #: the URI when first read (L{requestReceived} of an Engine.IO request).
    _args: dict[Any, Any] | None = None
    _args_from_uri = False
    content: Any
    channel: Any

    #: Body bytes read so far.
    _body_read = 0

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
        if not self.send_at_once:
            super().requestReceived(command, path, version)
            return
        # The stock method for an Engine.IO request, less what such a
        # request does not use: form parsing is off (site_options) and its
        # query is read as text (query_params), so request.args is only
        # parsed if something asks for it.
        self.content.seek(0, 0)
        self.method, self.uri, self.clientproto = command, path, version
        self.path = path.partition(b"?")[0]
        self._args_from_uri = True
        self.process()

    @property
    def args(self) -> dict[Any, Any]:
        args = self._args
        if args is None:
            _, sep, query = self.uri.partition(b"?")
            args = http.parse_qs(query, 1) if sep and self._args_from_uri else {}
            self._args = args
        return args

    @args.setter
    def args(self, value: dict[Any, Any]) -> None:
        self._args = value

    def query_params(self) -> dict[str, str]:
        """This request's query as text (L{parse_query}), parsed once.

        Read from the head's request-target for an Engine.IO request, so
        that it can be asked for before the body has arrived, else from the
        URI. The dictionary is shared by every caller: not to be changed.
        """
        query = self._query
        if query is None:
            target = self.head_target if self.head_target is not None else self.uri
            _, sep, text = target.partition(b"?")
            query = self._query = parse_query(text) if sep else {}
        return query

    def process(self) -> None:
        site = self.channel.site
        engine = site.engine_resource
        if not self.send_at_once or engine is None:
            super().process()
            return
        # An Engine.IO request: what the stock method does, for a path known
        # to lead to the Engine.IO leaf resource (L{_Root} would route it
        # there), without walking the resource tree, and with the Date of
        # the current second made once (no Server header: see write).
        self.site = site
        self.sitepath: list[bytes] = []
        self.responseHeaders.setRawHeaders(b"date", [site.http_date()])
        self.prepath = list(site.engine_segments)
        path = self.path
        prefix = site.engine_prefix
        self.postpath = (
            [unquote_to_bytes(s) for s in path[len(prefix):].split(b"/")]
            if path.startswith(prefix)
            else []
        )
        try:
            self.render(engine)
        except BaseException:
            self.processingFailed(Failure())

    def write(self, data: bytes) -> None:
        # (A finished request has no channel: the stock method raises.)
        channel = None if self.finished else self.channel
        if not self.send_at_once or channel is None:
            if not self.startedWriting:
                # Request.process adds "Server: TwistedWeb/<version>"; don't
                # tell. (The Engine.IO requests' process does not add it.)
                self.responseHeaders.removeHeader(b"server")
            super().write(data)
            return
        # The head and the first body bytes leave together, in one send.
        channel.cork()
        try:
            super().write(data)
        finally:
            channel.uncork()

    def render(self, resrc: IResource) -> None:
        if self.method != b"HEAD":
            super().render(resrc)
            return
        # Twisted answers a HEAD whose resource renders a body by logging
        # "HEAD request <request> ... I think I'll eat it" at info, once per
        # request and with the URI (an Engine.IO sid included). The answer is
        # the same without that line: the headers, the length, no body. Our
        # resources take HEAD themselves (never UnsupportedMethod).
        body = resrc.render(self)
        if body is server.NOT_DONE_YET:
            return
        self.setHeader(b"content-length", b"%d" % (len(body),))
        self.write(b"")
        self.finish()


class HardenedChannel(http.HTTPChannel):
    """C{HTTPChannel} with header and body deadlines and an early 413.

    Timers run on the factory's reactor (C{callLater}), so tests drive them
    with a C{Clock}.
    """

    site: "PrivyDropSite"
    transport: Any
    callLater: Any
    refused = False
    #: The one timer of the header and body deadlines (L{_arm}), and which
    #: of them it stands for now: "headers", "body" or None (disarmed: it
    #: does nothing when it fires, and is reset for the next deadline).
    _deadline_call: IDelayedCall | None = None
    _deadline_kind: str | None = None
    #: The idle timeout's timer (L{setTimeout}), and whether it is on.
    _idle_call: IDelayedCall | None = None
    _idle_on = False
    #: Set while a refused request's connection is being drained (L{_linger}).
    _linger_deadline: IDelayedCall | None = None
    _linger_left = 0
    #: The abort that follows an idle timeout's close (L{timeoutConnection}).
    _idle_abort: IDelayedCall | None = None
    #: True while the next bytes belong to a request line or headers.
    _awaiting_head = True
    #: True from a request's complete body until its answer is finished:
    #: bytes that arrive meanwhile are buffered by C{HTTPChannel} and played
    #: back (through L{dataReceived}) once the answer is done. Kept here from
    #: the public hooks rather than read from C{HTTPChannel}'s private state.
    _handling = False
    #: Response bytes held while corked (L{cork}); None when not corked.
    _corked: list[bytes] | None = None
    #: The connection's addresses, asked of the transport once (L{getHost}).
    _host: Any = None
    _peer: Any = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self._awaiting_head = True
        self._start_head_deadline()

    def dataReceived(self, data: bytes) -> None:
        if self.refused:
            self._drain(data)
            return
        if self._awaiting_head and not self._handling:
            self._start_head_deadline()
        super().dataReceived(data)

    def rawDataReceived(self, data: bytes) -> None:
        if self.refused:
            self._drain(data)
            return
        super().rawDataReceived(data)

    def allHeadersReceived(self) -> None:
        self._awaiting_head = False
        self._deadline_kind = None
        if self._answers_unread():
            return
        request, target, length = request_head(self)
        site = self.site
        engine = False
        if target is None:
            limit = site.largest_body_limit()
            request.body_limit_final = False
        else:
            engine = site.is_engine_target(target)
            limit = site.engine_body_limit if engine else site.api_body_limit
            if engine and site.engine_shortcut:
                request.send_at_once = True
                request.head_target = target
        request.body_limit = limit
        if length is not None and length > limit:
            # Before the stock code, so no "100 Continue" invites the body.
            self.refuse_too_large(request)
            return
        super().allHeadersReceived()
        if self.length != 0:
            self._arm("body", site.settings.http.body_timeout_s)
        if engine and target is not None:
            site.head_received(request, request_method(self), target)

    def allContentReceived(self) -> None:
        if self.refused:
            return
        self._deadline_kind = None
        self._awaiting_head = True
        self._handling = True
        super().allContentReceived()

    def requestDone(self, request: IRequest) -> None:
        # Before the stock code, which plays buffered bytes back: they may be
        # the head of the next request, whose deadline then starts.
        self._handling = False
        super().requestDone(request)

    def _answers_unread(self) -> bool:
        """Drop the client if a new request comes while its answers pile up.

        Checked at every request head, not once per read: the requests of
        one read are handled in one go, and Engine.IO answers leave on the
        socket as they are written (L{_send}), so they pile up here only
        once the kernel's buffers are full, possibly in the middle of a read.

        @return: whether the client was dropped.
        """
        if outbound_buffer_size(self.transport) <= self.site.settings.engine.max_outbound_buffer:
            return False
        self.site.warnings.warn(
            _log,
            "slow-reader",
            "dropping a client that does not read its answers ({limit} exceeded)",
            limit="max_outbound_buffer",
        )
        self.refused = True
        self.transport.abortConnection()
        return True

    def cork(self) -> None:
        """Hold what the request writes until L{uncork}.

        A response is written as a head (C{writeHeaders}) and then body
        chunks; sent one by one at once (L{write_now}) they would leave as
        several packets. L{LimitedRequest.write} corks around each of its
        writes, so a head and the body written with it go out in one send.
        """
        if self._corked is None:
            self._corked = []

    def uncork(self) -> None:
        """Send what was held since L{cork}."""
        held = self._corked
        self._corked = None
        if held:
            self._send(b"".join(held))

    def writeHeaders(
        self, version: bytes, code: bytes, reason: bytes, headers: Any
    ) -> None:
        if self._corked is None or not isinstance(headers, Headers):
            super().writeHeaders(version, code, reason, headers)
            return
        # As the stock method (compat's REPLICATED_METHODS), held while corked so
        # that the head is joined with its body.
        lines = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                lines += (name, b": ", value, b"\r\n")
        lines.append(b"\r\n")
        self.writeSequence(lines)

    def write(self, data: bytes) -> None:
        if self._corked is not None:
            self._corked.append(data)
        else:
            super().write(data)

    def writeSequence(self, iovec: list[bytes]) -> None:
        if self._corked is not None:
            self._corked.extend(iovec)
        else:
            super().writeSequence(iovec)

    def _send(self, data: bytes) -> None:
        """Write to the socket now when nothing waits before it (L{write_now}).

        Saves the reactor's register-for-writability round trip per answer;
        what the kernel does not take is buffered by the transport as
        before, so its producer and back-pressure are unchanged.
        """
        transport = self.transport
        if transport is not None:
            write_now(transport, data)

    def getHost(self) -> Any:
        # Asked by every request; the local address of a connection does
        # not change, and the transport asks the kernel each time.
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def getPeer(self) -> Any:
        if self._peer is None:
            self._peer = super().getPeer()
        return self._peer

    def refuse_too_large(self, request: IRequest) -> None:
        """Answer 413 and close, reading no more of this connection.

        Written directly to the transport: the request has not been
        dispatched, so nothing else is writing to it.
        """
        if self.refused:
            return
        self.refused = True
        self.release_timers()
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
            self._linger()

    def _linger(self) -> None:
        """Close after the answer as nginx does (C{lingering_close}).

        The client may still be sending the body it was refused, and reads
        the answer only once it is done. Closing now would leave its bytes
        unread, and the kernel answers that with a reset, which destroys the
        413 in the client's receive buffer. So: stop writing (the answer,
        then a FIN), read and discard up to L{LINGER_MAX_BYTES} for at most
        C{HTTP_BODY_TIMEOUT}, and close once the client closes or a bound
        is reached. A transport that cannot half-close (TLS) is closed at
        once, as before.
        """
        transport = self.transport
        half_close = getattr(transport, "loseWriteConnection", None)
        if half_close is None:
            self.loseConnection()
            return
        self._linger_left = LINGER_MAX_BYTES
        half_close()
        # HTTPChannel may have paused reading while it handled a request.
        transport.resumeProducing()
        self._linger_deadline = self.callLater(
            self.site.settings.http.body_timeout_s, self._linger_over
        )

    def _drain(self, data: bytes) -> None:
        """Throw away what a refused client still sends, up to the bound."""
        if self._linger_deadline is None:
            return
        self._linger_left -= len(data)
        if self._linger_left < 0:
            self._linger_over()

    def _linger_over(self) -> None:
        self._cancel("_linger_deadline")
        if self.transport is not None:
            self.transport.abortConnection()

    def timeoutConnection(self) -> None:
        if self.transport is None:
            # The connection was handed to a WebSocket protocol.
            return
        # Twisted's own version logs "Timing out client: <address>" at info
        # for every such connection, whatever LOG_CLIENT_IPS says; this one
        # does the same (close, and abort if that does not end it within
        # abortTimeout), with a throttled line that names no address.
        peer = self._peer_field()
        self.site.warnings.info(
            _log,
            "idle-timeout",
            "closing a connection idle for {timeout} s" + (" from {peer}" if peer else ""),
            timeout=self.site.settings.http.idle_timeout_s,
            **peer,
        )
        if self.abortTimeout is not None:
            self._idle_abort = self.callLater(self.abortTimeout, self._abort_idle)
        self.loseConnection()

    def _peer_field(self) -> dict[str, str]:
        """C{{"peer": address}} when LOG_CLIENT_IPS allows it, else nothing."""
        if not self.site.settings.http.log_client_ips or self.transport is None:
            return {}
        return {"peer": str(getattr(self.transport.getPeer(), "host", ""))}

    def _abort_idle(self) -> None:
        self._idle_abort = None
        if self.transport is not None:
            self.transport.abortConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.release_timers()
        self._cancel("_linger_deadline")
        self._cancel("_idle_abort")
        super().connectionLost(reason)

    def release_timers(self) -> None:
        """Cancel the deadline and idle timers, for good.

        For a connection that is closed, refused, or taken over by another
        protocol (a WebSocket): a disarmed timer is otherwise left to run
        out, and would keep the channel alive until then.
        """
        self._deadline_kind = None
        self._idle_on = False
        self.timeOut = None
        self._cancel("_deadline_call")
        self._cancel("_idle_call")

    def _start_head_deadline(self) -> None:
        if self._deadline_kind != "headers":
            self._arm("headers", self.site.settings.http.header_timeout_s)

    def _arm(self, kind: str, seconds: float) -> None:
        """Start the header or body deadline.

        One timer serves both, and every request: it is moved (C{reset},
        cheap when later) rather than cancelled and made again per request.
        """
        self._deadline_kind = kind
        self._deadline_call = self._moved(self._deadline_call, seconds, self._deadline_fired)

    def _moved(
        self, call: IDelayedCall | None, seconds: float, fire: Callable[[], None]
    ) -> IDelayedCall:
        """C{call} moved to C{seconds} from now, or a new timer if it is gone."""
        if call is not None and call.active():
            call.reset(seconds)
            return call
        return self.callLater(seconds, fire)

    def _deadline_fired(self) -> None:
        self._deadline_call = None
        kind = self._deadline_kind
        if kind is not None:
            self._deadline_kind = None
            self._deadline_passed(kind)

    def setTimeout(self, period: Any) -> Any:
        # TimeoutMixin's contract, with a timer that is kept while the
        # timeout is off (HTTPChannel turns it off for every request it
        # handles and back on when the answer is done) and moved when it is
        # turned on again, instead of cancelled and made again per request.
        previous = self.timeOut
        self.timeOut = period
        if period is None:
            self._idle_on = False
            return previous
        self._idle_on = True
        self._idle_call = self._moved(self._idle_call, period, self._idle_fired)
        return previous

    def resetTimeout(self) -> None:
        call = self._idle_call
        if self._idle_on and call is not None and self.timeOut is not None:
            call.reset(self.timeOut)

    def _idle_fired(self) -> None:
        self._idle_call = None
        if self._idle_on:
            self._idle_on = False
            self.timeoutConnection()

    def _cancel(self, name: str) -> None:
        call = getattr(self, name)
        if call is not None:
            setattr(self, name, None)
            if call.active():
                call.cancel()

    def _deadline_passed(self, what: str) -> None:
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
        engine_heads: IRequestHeadObserver | None = None,
        count_api_request: Callable[[Any], None] | None = None,
        engine_resource: IResource | None = None,
    ) -> None:
        """
        @param engine_heads: told of every request head under the Engine.IO
            path (L{IRequestHeadObserver}), when given.
        @param count_api_request: called with every finished request to a
            path other than Engine.IO's, when given.
        @param engine_resource: the leaf resource C{resource} routes the
            Engine.IO path to, when there is one: its requests are handed
            to it directly (L{LimitedRequest.process}).
        """
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
        replaced = replicas_changed()
        #: Whether Engine.IO requests take the shorter way: there is a leaf
        #: resource to hand them to, and the stock methods it repeats in
        #: part are those it was written against.
        self.engine_shortcut = engine_resource is not None and not replaced
        if replaced:
            _log.warn(
                "twisted.web's {names} changed: Engine.IO requests take the stock "
                "(slower) way",
                names=", ".join(replaced),
            )
        self.settings = settings
        #: Rejections of clients, logged at most once per cause per interval.
        self.warnings = WarningThrottle(reactor)
        #: The body caps under the Engine.IO path and elsewhere.
        self.engine_body_limit = settings.engine.max_payload
        self.api_body_limit = settings.api.max_body_bytes
        self._engine_path = settings.engine.path.encode("utf-8")
        self._engine_bare = self._engine_path.rstrip(b"/")
        self.engine_resource = engine_resource
        #: What L{_Root} leaves in C{prepath} for an Engine.IO request, and
        #: the path prefix whose rest becomes its C{postpath}.
        self.engine_segments = engine_segments(settings)
        self.engine_prefix = self._engine_bare + b"/"
        self._date_second = -1
        self._date = b""
        self._engine_heads = engine_heads
        self._count_api_request = count_api_request

    def http_date(self) -> bytes:
        """The C{Date} header's value now, formatted once per second."""
        second = int(self.reactor.seconds())
        if second != self._date_second:
            self._date = formatdate(second, usegmt=True).encode("ascii")
            self._date_second = second
        return self._date

    def largest_body_limit(self) -> int:
        """The largest body accepted on any path."""
        return max(self.engine_body_limit, self.api_body_limit)

    def body_limit(self, uri: bytes) -> int:
        """The largest body accepted for a request URI (path and query)."""
        return self.engine_body_limit if self.is_engine_target(uri) else self.api_body_limit

    def is_engine_target(self, uri: bytes) -> bool:
        """Whether a request URI (path and query) is under the Engine.IO path."""
        return self._is_engine_path(uri.split(b"?", 1)[0])

    def head_received(self, request: IRequest, method: bytes | None, uri: bytes) -> None:
        """Tell the Engine.IO resource of a request head under its path
        (L{is_engine_target}).

        @param method: None where the channel could not tell it (then
            nobody is told).
        """
        heads = self._engine_heads
        if heads is not None and method is not None:
            heads.head_received(request, method, uri)

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
        # One line per request, which a client can repeat at will: throttled
        # per status code. The URI never shows an Engine.IO sid.
        method = request.method.decode("latin-1")[:16]
        fields: dict[str, Any] = {}
        line = "{method} {uri} {code}"
        if self.settings.http.log_client_ips:
            fields["peer"] = getattr(request.getClientAddress(), "host", "")
            line += " from {peer}"
        self.warnings.debug(
            _log,
            "request:%d" % (request.code,),
            line,
            method=method,
            uri=redact_uri(request.uri),
            code=request.code,
            **fields,
        )


def engine_segments(settings: Settings) -> list[bytes]:
    """The path segments of the Engine.IO path."""
    return [s.encode("utf-8") for s in settings.engine.path.strip("/").split("/") if s]


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
        self._engine_segments = engine_segments(settings)

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
    @param engineio_resource: mounted at C{settings.engine.path} when given;
        told of its request heads if it provides L{IRequestHeadObserver}.
    @param count_api_request: called with every finished request to a path
        other than Engine.IO's (L{privydrop.metrics.ApiRequests}).
    """
    return PrivyDropSite(
        _Root(settings, api_resource, engineio_resource),
        settings,
        reactor,
        IRequestHeadObserver(engineio_resource, None),
        count_api_request,
        engineio_resource,
    )
