"""HTTP long-polling transport: the twisted.web side of GET and POST.

engine.io-protocol v4, "HTTP long-polling": a GET is held open until the
session has packets (or closes) and is answered with one payload; a POST
delivers one payload and is answered C{ok}. This module turns requests into
calls on L{Session} and L{EngineServer} and errors into the reference
server's answers; the rules themselves live in the session.

twisted.web reads a whole request body before rendering; bodies past
C{max_payload} are refused here from their Content-Length or length, and
the header/body deadlines of the HTTP layer bound how slowly they may come.
"""

from __future__ import annotations

from collections.abc import Mapping

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request

from privydrop.engineio import packets
from privydrop.engineio.errors import EngineError, EngineRequestError, error_body
from privydrop.engineio.interface import Handshake, shared_text
from privydrop.engineio.server import EngineServer
from privydrop.engineio.session import (
    POLLING,
    REASON_PACKETS_LIMIT,
    REASON_PARSE_ERROR,
    REASON_PAYLOAD_LIMIT,
    WS_POLICY_VIOLATION,
    Session,
)
from privydrop.logs.levels import Logger
from privydrop.web.clientip import peer_address
from privydrop.web.cors import POLLING_ALLOWED_METHODS, polling_headers

_log = Logger()

_TEXT = b"text/plain; charset=UTF-8"
_JSON = b"application/json"
_OK = b"ok"


def query_of(request: Request) -> Mapping[str, str]:
    """Query parameters of C{request}, last value wins, as text (not to be
    changed: it may be the request's own, parsed once for all callers)."""
    params = getattr(request, "query_params", None)
    if params is not None:
        parsed: Mapping[str, str] = params()
        return parsed
    out: dict[str, str] = {}
    args: dict[bytes, list[bytes]] = request.args or {}
    for key, values in args.items():
        if values:
            out[key.decode("utf-8", "replace")] = values[-1].decode("utf-8", "replace")
    return out


def header(request: Request, name: bytes) -> str | None:
    value = request.getHeader(name)
    return None if value is None else value.decode("latin-1")


def handshake_of(
    request: Request, query: Mapping[str, str], issued_ms: int
) -> Handshake:
    """The L{Handshake} record of a twisted.web request."""
    # A header sent on several lines is joined with ", ", as Autobahn does
    # for the WebSocket transport (and Node for the reference server): a
    # socket's handshake must not depend on the transport it started on, and
    # X-Forwarded-For must keep every hop for the client-IP rule
    # (privydrop.web.clientip), not only the last line.
    headers = shared_text(
        (k.decode("latin-1").lower(), ", ".join(item.decode("latin-1") for item in v))
        for k, v in request.requestHeaders.getAllRawHeaders()
    )
    return Handshake(
        headers=headers,
        remote_address=peer_address(request.getClientAddress()),
        query=shared_text(query.items()),
        url=request.uri.decode("latin-1"),
        secure=request.isSecure(),
        issued_ms=issued_ms,
    )


def answer_error(request: Request, error: EngineRequestError) -> bytes:
    """Set status and headers for a wire error and return its JSON body."""
    request.setResponseCode(error.status)
    request.setHeader(b"Content-Type", _JSON)
    return error_body(error.code)


class _RequestResponder:
    """Answers one held GET; ignores the answer if the client went away."""

    __slots__ = ("_request", "done")

    def __init__(self, request: Request) -> None:
        self._request = request
        self.done = False

    def respond(self, body: bytes) -> None:
        if self.done:
            return
        self.done = True
        request = self._request
        request.setHeader(b"Content-Type", _TEXT)
        request.setHeader(b"Content-Length", b"%d" % len(body))
        request.write(body)
        request.finish()

    def lost(self, reason: Failure, session: Session) -> None:
        """The client went away before the GET was answered."""
        if not self.done:
            self.done = True
            session.poll_lost(self)


class PollingTransport:
    """Renders Engine.IO polling requests for one L{EngineServer}."""

    def __init__(self, server: EngineServer) -> None:
        self._server = server
        self._settings = server.settings

    def render(self, request: Request, query: Mapping[str, str]) -> bytes | int:
        """Answer a GET, POST or OPTIONS on the polling transport."""
        origin = header(request, b"origin")
        for name, value in polling_headers(origin, self._settings.origins):
            request.setHeader(name, value)
        method = request.method.decode("ascii", "replace")
        if method == "OPTIONS":
            return self._preflight(request)
        try:
            session = self._server.verify(query, method, upgrade=False, origin=origin)
        except EngineRequestError as e:
            self._server.rejections.debug(
                _log,
                "refused:" + e.code.name,
                "engine polling request refused: {code}",
                code=e.code.name,
                transport=POLLING,
            )
            return answer_error(request, e)
        if session is None:
            return self._handshake(request, query)
        if method == "GET":
            return self._poll(request, session)
        if method == "POST":
            return self._post(request, session)
        return answer_error(request, EngineRequestError(EngineError.BAD_REQUEST))

    def post_started(self, request: Request, query: Mapping[str, str]) -> None:
        """The head of a POST arrived, its body follows (L{Session.begin_post}).

        Only a POST that passes the request checks counts. When another POST
        of its session is still active the session is closed; this one is
        then answered 400 (its sid is unknown by the time it is rendered).
        """
        try:
            session = self._server.verify(
                query, "POST", upgrade=False, origin=header(request, b"origin")
            )
        except EngineRequestError:
            return  # answered when rendered
        if session is None or not session.begin_post(request):
            return
        finished: Deferred[None] = request.notifyFinish()
        finished.addBoth(lambda _: session.end_post(request))

    def _preflight(self, request: Request) -> bytes:
        request.setResponseCode(204)
        request.setHeader(b"Access-Control-Allow-Methods", POLLING_ALLOWED_METHODS)
        wanted = request.getHeader(b"access-control-request-headers")
        if wanted:
            request.setHeader(b"Access-Control-Allow-Headers", wanted)
        request.setHeader(b"Content-Length", b"0")
        return b""

    def _handshake(self, request: Request, query: Mapping[str, str]) -> bytes | int:
        server = self._server
        try:
            session = server.create_session(
                POLLING, handshake_of(request, query, server.issued_ms())
            )
        except EngineRequestError as e:
            return answer_error(request, e)
        responder = _RequestResponder(request)
        session.attach_poll(responder)
        server.open(session)
        return NOT_DONE_YET

    def _poll(self, request: Request, session: Session) -> bytes | int:
        responder = _RequestResponder(request)
        if not session.attach_poll(responder):
            return answer_error(request, EngineRequestError(EngineError.BAD_REQUEST))
        if not responder.done:
            finished: Deferred[None] = request.notifyFinish()
            finished.addErrback(responder.lost, session)
        return NOT_DONE_YET

    def _post(self, request: Request, session: Session) -> bytes:
        limit = self._settings.max_payload
        declared = request.getHeader(b"content-length")
        content = request.content
        body = b"" if content is None else content.read(limit + 1)
        if len(body) > limit or (
            declared is not None and declared.isdigit() and int(declared) > limit
        ):
            session.refuse(
                "max_payload",
                "engine session {engine_sid} closed: {limit} exceeded by a POST",
                REASON_PAYLOAD_LIMIT,
                WS_POLICY_VIOLATION,
                log=_log,
                limit="max_payload",
                transport=POLLING,
            )
            return answer_error(request, EngineRequestError(EngineError.BAD_REQUEST, 413))
        try:
            received = packets.decode_payload(
                body, limit, self._settings.max_packets_per_payload
            )
        except packets.TooManyPackets:
            session.refuse(
                "max_packets_per_payload",
                "engine session {engine_sid} closed: {limit} exceeded by a POST",
                REASON_PACKETS_LIMIT,
                log=_log,
                limit="max_packets_per_payload",
                transport=POLLING,
            )
            return answer_error(request, EngineRequestError(EngineError.BAD_REQUEST))
        except packets.EngineIOProtocolError as e:
            session.refuse(
                "bad payload",
                "engine session {engine_sid} closed: bad payload ({error})",
                REASON_PARSE_ERROR,
                log=_log,
                error=str(e),
                transport=POLLING,
            )
            return answer_error(request, EngineRequestError(EngineError.BAD_REQUEST))
        # What the packets send to other sessions is written (pending GETs
        # answered) when this POST is handled, not a reactor turn later.
        flushes = self._server.flushes
        flushes.hold()
        try:
            session.receive_many(received)
        finally:
            flushes.release()
        request.setHeader(b"Content-Type", _TEXT)
        return _OK
