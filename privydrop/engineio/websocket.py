"""WebSocket transport: Autobahn glue for Engine.IO sessions.

engine.io-protocol v4, "WebSocket": one packet per frame, binary data as
binary frames. A connection without C{sid} is a new session (the handshake
goes out as the first frame); one with C{sid} is an upgrade of a polling
session, handled by L{Session.begin_upgrade}.

Autobahn's defaults are permissive; L{build_websocket_factory} sets every
limit from L{EngineSettings}: frame and message sizes, WebSocket version 13
only, no status page, no C{Server} header, no compression. A cap on
fragments per message and on the bytes waiting in a connection's outbound
buffer (a client that stops reading) are enforced here; the Origin allowlist
is checked in L{EngineWebSocketProtocol.onConnect} through the server's
request checks.
"""

from __future__ import annotations

import pprint as _pprint
import struct
import sys
from collections.abc import Callable, Sequence
from typing import Any

from autobahn.twisted import websocket as _autobahn_twisted_websocket
from autobahn.twisted.websocket import (
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket import protocol as _autobahn_protocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.logger import Logger

from privydrop.compat.twisted import outbound_buffer_size, write_now
from privydrop.engineio import packets
from privydrop.engineio.errors import EngineRequestError
from privydrop.engineio.interface import EngineSid, Handshake
from privydrop.engineio.server import EngineServer
from privydrop.engineio.session import (
    REASON_OUTBOUND_LIMIT,
    REASON_PARSE_ERROR,
    REASON_TRANSPORT_CLOSE,
    WEBSOCKET,
    WS_NORMAL,
    WS_PROTOCOL_ERROR,
    WS_TOO_BIG,
    Session,
)
from privydrop.settings import EngineSettings

try:
    from autobahn.websocket import USES_NVX as _AUTOBAHN_NVX
except ImportError:  # pragma: no cover - older Autobahn
    _AUTOBAHN_NVX = False

#: Whether frame masking and UTF-8 validation run in compiled code: Autobahn's
#: own NVX accelerators, or else wsaccel (installed with the package on CPython).
ACCELERATED = bool(_AUTOBAHN_NVX)
if not ACCELERATED:  # pragma: no cover - depends on the environment
    try:
        import wsaccel

        wsaccel.patch_autobahn()
        ACCELERATED = True
    except ImportError:
        pass

class _DeferredText:
    """C{function(value)}, computed only when formatted as text."""

    __slots__ = ("_function", "_value")

    def __init__(self, function: Callable[[Any], str], value: object) -> None:
        self._function = function
        self._value = value

    def __str__(self) -> str:
        return str(self._function(self._value))

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def _install_lazy_debug_text() -> None:
    """Stop Autobahn building debug text on every connection that nobody logs.

    Autobahn evaluates the fields of its debug events even when its logger
    drops debug: C{WebSocketProtocol._connectionMade} passes C{pformat(<every
    config attribute>)} (about 100 µs, 9 % of a join's server CPU), and about
    a dozen calls per connection pass C{hltype(...)}/C{hlval(...)}, which
    colour text through click (about 5 µs each). See C{docs/performance.md}.

    In the two Autobahn modules the server runs, those helpers now return a
    L{_DeferredText} that renders the same text when an event is formatted.
    Every use of C{hltype}/C{hlval} there is a field of a C{log.debug} call
    (the one C{log.error} among them is in the client protocol, which this
    server never runs). C{pformat} is deferred only for C{_connectionMade}; its
    other callers (C{Timings.__str__} must return a C{str}) get text at once.
    """
    protocol_module = _autobahn_protocol
    if getattr(protocol_module.pformat, "_privydrop", False):
        return
    target = protocol_module.WebSocketProtocol._connectionMade.__code__
    getframe = sys._getframe
    pformat = _pprint.pformat

    def _pformat(value: object, *args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs and getframe(1).f_code is target:
            return _DeferredText(pformat, value)
        return pformat(value, *args, **kwargs)

    def _lazy(function: Callable[[Any], str]) -> Callable[[Any], Any]:
        def lazy(value: object) -> Any:
            return _DeferredText(function, value)

        return lazy

    for module in (protocol_module, _autobahn_twisted_websocket):
        for name in ("hltype", "hlval"):
            setattr(module, name, _lazy(getattr(module, name)))
    _pformat._privydrop = True  # type: ignore[attr-defined]
    setattr(protocol_module, "pformat", _pformat)  # noqa: B010 - typed as pprint.pformat


_install_lazy_debug_text()


try:
    from wsaccel.xormask import XorMaskerSimple as _WsaccelMasker
except ImportError:  # pragma: no cover - depends on the environment
    _WsaccelMasker = None


def _unmask_int(payload: bytes, mask: bytes) -> bytes:
    size = len(payload)
    key = (mask * ((size >> 2) + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        size, "little"
    )


def unmask(payload: bytes, mask: bytes) -> bytes:
    """The payload of a masked frame, unmasked (RFC 6455, section 5.3)."""
    if _WsaccelMasker is not None:
        return _WsaccelMasker(mask).process(payload)
    return _unmask_int(payload, mask)


#: The only WebSocket protocol version accepted (RFC 6455).
WEBSOCKET_VERSIONS = [13]
_REASON_BYTES = 123
_HEAD16 = struct.Struct("!BBH")
_HEAD64 = struct.Struct("!BBQ")


_TEXT_FIN = 0x81
_BINARY_FIN = 0x82
_MASKED = 0x80
_STATE_OPEN = WebSocketServerProtocol.STATE_OPEN


def server_frame(payload: bytes, binary: bool) -> bytes:
    """One final, unmasked WebSocket data frame (RFC 6455, section 5.2).

    @param payload: the whole message.
    @param binary: a binary frame (opcode 2) rather than text (opcode 1).
    """
    head = _BINARY_FIN if binary else _TEXT_FIN
    size = len(payload)
    if size < 126:
        return bytes((head, size)) + payload
    if size < 65536:
        return _HEAD16.pack(head, 126, size) + payload
    return _HEAD64.pack(head, 127, size) + payload


class EngineWebSocketProtocol(WebSocketServerProtocol):
    """One WebSocket connection carrying an Engine.IO session (or its upgrade)."""

    _log = Logger()
    factory: EngineWebSocketFactory

    def __init__(self) -> None:
        super().__init__()
        self._session: Session | None = None
        self._upgrade_sid: EngineSid | None = None
        self._handshake: Handshake | None = None
        self._fragments = 0
        self._message_bytes = 0
        self._limit_hit: str | None = None
        self._fast_frames = False
        self._fast_frame_limit = 0
        self._log_octets = False

    # -- opening ----------------------------------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
        if not self.factory.engine.settings.log_client_ips:
            # Autobahn names the peer in some of its own warnings; keep client
            # addresses out of the logs unless a setting allows them.
            self.peer = "-"

    def onConnect(self, request: ConnectionRequest) -> None:
        server = self.factory.engine
        query = {k: v[-1] for k, v in request.params.items() if v}
        try:
            session = server.verify(
                query, "GET", upgrade=True, origin=request.headers.get("origin")
            )
        except EngineRequestError as e:
            self._log.debug(
                "engine websocket refused: {code}",
                code=e.code.name,
                transport=WEBSOCKET,
            )
            raise ConnectionDeny(e.status, e.message)
        peer = self.transport.getPeer() if self.transport is not None else None
        self._upgrade_sid = None if session is None else session.sid
        self._handshake = Handshake(
            headers=dict(request.headers),
            remote_address=getattr(peer, "host", ""),
            query=query,
            url=getattr(self, "http_request_uri", request.path),
            secure=bool(self.factory.isSecure),
            issued_ms=server.issued_ms(),
        )

    def onOpen(self) -> None:
        server = self.factory.engine
        # Frames the receive fast path may take: what Autobahn would accept
        # without a limit, logging or extension getting involved.
        options: Any = self  # Autobahn sets these from the factory's options
        self._log_octets = bool(options.logOctets)
        self._fast_frames = (
            self._perMessageCompress is None
            and not options.logOctets
            and not options.logFrames
            and not self.trackedTimings
            and self.autoPingTimeoutCall is None
            and options.autoPingInterval == 0
        )
        limits = [server.settings.max_payload, options.maxFramePayloadSize]
        self._fast_frame_limit = min(n for n in limits if n > 0) if any(limits) else 1 << 62
        try:
            if self._upgrade_sid is None:
                if self._handshake is None:
                    raise RuntimeError("onOpen before onConnect")
                session = server.create_session(WEBSOCKET, self._handshake)
                session.attach_websocket(self)
                self._session = session
                server.open(session)
                return
            upgrading = server.get_session(self._upgrade_sid)
            if upgrading is None or not upgrading.begin_upgrade(self):
                # engine.io-protocol v4: a second WebSocket for a session is closed.
                self.close_channel(WS_NORMAL, "upgrade not possible")
                return
            self._session = upgrading
        except Exception:  # noqa: BLE001 - error boundary: log, close this session
            self._log.failure("engine websocket failed to open")
            self.close_channel(WS_NORMAL, "internal error")

    # -- inbound ----------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Frames from the client: the common ones parsed here, the rest by Autobahn.

        Autobahn parses every frame in several Python calls, with a masker
        object per frame and a debug log event per read whose fields it
        formats eagerly. An open connection's reads are almost always whole,
        final, masked text frames within the limits; those are unmasked and
        decoded here. Anything else (control frames, fragments, a frame cut
        by the read, invalid UTF-8, sizes over a limit, compression or
        Autobahn's logging switched on) and everything after it in the read
        goes to Autobahn's parser unchanged, which then behaves exactly as it
        would have on its own.

        What the read's packets queue for other sessions is written when the
        read is handled (L{FlushQueue.hold}).
        """
        flushes = self.factory.engine.flushes
        flushes.hold()
        try:
            if (
                self._fast_frames
                and self.state == _STATE_OPEN
                and self.current_frame is None
                and not self.data
                and not self.inside_message
            ):
                whole = self._receive_frames(data)
            else:
                self._dataReceived(data)
                whole = False
        finally:
            flushes.release()
        # Autobahn answers every ping frame with a pong on its own: a client
        # that floods pings and never reads would otherwise queue pongs
        # without end, past the cap that send_packets enforces. (A read
        # handled whole by the fast path had no control frame.)
        if not whole and self.state == _STATE_OPEN:
            self._enforce_outbound_cap()

    def _receive_frames(self, data: bytes) -> bool:
        """Take the read's leading data frames; give the rest to Autobahn.

        @return: whether the whole read was taken here.
        """
        end = len(data)
        limit = self._fast_frame_limit
        i = 0
        while end - i >= 6:  # the shortest masked frame
            head = data[i]
            second = data[i + 1]
            if (head != _TEXT_FIN and head != _BINARY_FIN) or second < _MASKED:
                break
            size = second & 0x7F
            if size < 126:
                start = i + 6
            elif size == 126 and end - i >= 8:
                size = (data[i + 2] << 8) | data[i + 3]
                if size < 126:
                    break  # not minimal; Autobahn refuses it
                start = i + 8
            else:
                break
            stop = start + size
            if stop > end or size > limit:
                break
            payload = unmask(data[start:stop], data[start - 4 : start])
            if head == _TEXT_FIN:
                try:
                    message: str | bytes = payload.decode("utf-8")
                except UnicodeDecodeError:
                    break
            else:
                message = payload
            i = stop
            self._receive(message)
            if self.state != _STATE_OPEN:
                break
        if i < end:
            self.data = data[i:] if i else data
            self.consumeData()
            return False
        return True

    def onMessageBegin(self, isBinary: bool) -> None:
        self._fragments = 0
        self._message_bytes = 0
        super().onMessageBegin(isBinary)

    def onMessageFrameBegin(self, length: int) -> None:
        # The message-size cap is enforced here rather than with Autobahn's
        # maxMessagePayloadSize, which would also refuse to *send* large
        # messages to the client.
        self._fragments += 1
        self._message_bytes += length
        if not self.failedByMe:
            settings = self.factory.engine.settings
            if self._fragments > settings.max_fragments:
                self._over_limit("max_fragments")
            elif self._message_bytes > settings.max_payload:
                self._over_limit("max_payload")
        super().onMessageFrameBegin(length)

    def _over_limit(self, limit: str) -> None:
        self._limit_hit = limit
        self.factory.engine.rejections.warn(
            self._log,
            limit,
            "engine websocket closed: {limit} exceeded",
            limit=limit,
            engine_sid=self._session.sid if self._session else None,
            transport=WEBSOCKET,
        )
        # The same path Autobahn takes for its own size limits: close code
        # 1009 and every further frame of the message ignored.
        self._fail_connection(WS_TOO_BIG, limit + " exceeded")

    def onMessageEnd(self) -> None:
        # Autobahn's version also fires a "message" observer event, which
        # allocates a Deferred per message; nothing here observes it.
        if not self.failedByMe:
            self.onMessage(b"".join(self.message_data), self.message_is_binary)
        self.message_data = None  # type: ignore[assignment]  # as Autobahn does

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            self._receive(bytes(payload))
            return
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            # Autobahn validates text frames; this only guards the setting.
            if self._session is not None:
                self._bad_frame(self._session, "text frame is not UTF-8")
            return
        self._receive(text)

    def _receive(self, message: str | bytes) -> None:
        """One whole message from the client: a text (decoded) or binary packet.

        Its size was checked frame by frame (L{onMessageFrameBegin}, or the
        limit of the fast path).
        """
        session = self._session
        if session is None:
            return
        if message.__class__ is str and message[:1] == "4" and session.uses(self):
            # A message packet on the session's own transport, the hot path:
            # no packet object on the way.
            session.receive_message(message[1:])
            return
        try:
            packet = packets.decode_websocket_message(
                message, self.factory.engine.settings.max_payload
            )
        except packets.EngineIOProtocolError as e:
            self._bad_frame(session, str(e))
            return
        try:
            session.receive_websocket(self, packet)
        except Exception:  # noqa: BLE001 - error boundary: log, close this session
            self._log.failure(
                "engine session {engine_sid} failed on a frame", engine_sid=session.sid
            )
            self._drop_session(session, REASON_PARSE_ERROR, WS_NORMAL)

    def _bad_frame(self, session: Session, error: str) -> None:
        self.factory.engine.rejections.warn(
            self._log,
            "bad frame",
            "engine session {engine_sid} sent a bad frame ({error})",
            engine_sid=session.sid,
            error=error,
            transport=WEBSOCKET,
        )
        self._drop_session(session, REASON_PARSE_ERROR, WS_PROTOCOL_ERROR)

    def _drop_session(self, session: Session, reason: str, code: int) -> None:
        # A bad frame on the session's own transport ends the session; on an
        # upgrade probe it only ends that probe.
        if session.uses(self):
            session.force_close(reason, code)
        else:
            session.websocket_lost(self, reason)
            self.close_channel(code, reason)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        session = self._session
        if session is None:
            return
        why = REASON_TRANSPORT_CLOSE
        if self._limit_hit is not None:
            why = self._limit_hit + " exceeded"
        elif self.wasMaxFramePayloadSizeExceeded:
            why = "max_frame_bytes exceeded"
            self.factory.engine.rejections.warn(
                self._log,
                "max_frame_bytes",
                "engine session {engine_sid} closed: {limit} exceeded",
                engine_sid=session.sid,
                limit="max_frame_bytes",
                transport=WEBSOCKET,
            )
        session.websocket_lost(self, why)

    # -- WebSocketChannel -------------------------------------------------

    def send_packets(self, outgoing: Sequence[packets.Packet]) -> None:
        """Write each packet as one frame, all in one write, then enforce
        C{max_outbound_buffer}."""
        if self.state != self.STATE_OPEN:
            return
        encode = packets.encode_websocket
        if self._perMessageCompress is None:
            # Compression is never negotiated, so every frame is a plain
            # unmasked server frame; building them here costs a fraction of
            # sendMessage per message and makes one write per turn.
            if len(outgoing) == 1:
                data = server_frame(*encode(outgoing[0]))
            else:
                data = b"".join([server_frame(*encode(p)) for p in outgoing])
            if self.send_queue or self._log_octets:
                self.sendData(data)
            else:
                # sendData's debug event formats its fields on every call.
                write_now(self.transport, data)
        else:  # pragma: no cover - compression is refused in apply_limits
            for packet in outgoing:
                self.sendMessage(*encode(packet))
        self._enforce_outbound_cap()

    def _enforce_outbound_cap(self) -> None:
        """Abort the connection when C{max_outbound_buffer} bytes wait to be sent."""
        buffered = outbound_buffer_size(self.transport)
        if buffered > self.factory.engine.settings.max_outbound_buffer:
            session = self._session
            self.factory.engine.rejections.warn(
                self._log,
                "max_outbound_buffer",
                "engine session {engine_sid} dropped: {limit} exceeded ({size} bytes)",
                engine_sid=session.sid if session else None,
                limit="max_outbound_buffer",
                size=buffered,
                transport=WEBSOCKET,
            )
            # The peer is not reading: a close frame would only queue behind
            # the rest, so the connection is aborted.
            self.dropConnection(abort=True)
            if session is not None:
                session.websocket_lost(self, REASON_OUTBOUND_LIMIT)

    def close_channel(self, code: int, reason: str) -> None:
        """Start the closing handshake with C{code}, or drop a half-open connection."""
        if self.state == self.STATE_OPEN:
            self.sendCloseFrame(
                code=code, reasonUtf8=reason.encode("utf-8")[:_REASON_BYTES]
            )
        elif self.state not in (self.STATE_CLOSING, self.STATE_CLOSED):
            self.dropConnection(abort=True)


class EngineWebSocketFactory(WebSocketServerFactory):
    """Builds L{EngineWebSocketProtocol}s for one L{EngineServer}.

    @ivar engine: the Engine.IO server sessions are registered with.
    """

    protocol = EngineWebSocketProtocol  # type: ignore[assignment]

    def __init__(self, engine: EngineServer) -> None:
        # server=None: no Server header naming the software and version.
        super().__init__(server=None)
        self.engine = engine
        self._option_class: tuple[Any, tuple[Any, ...], type] | None = None
        apply_limits(self, engine.settings)

    def buildProtocol(self, addr: Any) -> Any:
        """Build a protocol whose class carries this factory's options.

        Autobahn's C{_connectionMade} copies each of its ~35 protocol options
        (C{CONFIG_ATTRS}) from the factory into the new instance's C{__dict__}
        unless the instance already has the attribute: about 1.6 KiB per
        connection (the instance dict halved). Here the protocol is an
        instance of a subclass of C{self.protocol} whose class attributes are
        the factory's current option values, so the copy is skipped and every
        connection reads the same objects as before (Autobahn copied
        references, not copies). The subclass is rebuilt when
        C{self.protocol} or an option value changes.
        """
        base = self.protocol
        names = getattr(base, "CONFIG_ATTRS", None)
        if names is None:
            return super().buildProtocol(addr)
        values = tuple([getattr(self, name) for name in names])
        cached = self._option_class
        if cached is not None and cached[0] is base and cached[1] == values:
            cls = cached[2]
        else:
            # A value that is a descriptor (a function such as
            # perMessageCompressionAccept) would bind to the instance as a
            # class attribute; staticmethod hands back the value itself.
            namespace: dict[str, Any] = {
                name: staticmethod(value) if hasattr(type(value), "__get__") else value
                for name, value in zip(names, values)
            }
            namespace["__module__"] = base.__module__
            namespace["__qualname__"] = base.__qualname__
            cls = type(base.__name__, (base,), namespace)
            self._option_class = (base, values, cls)
        protocol = cls()
        protocol.factory = self
        return protocol


def apply_limits(factory: WebSocketServerFactory, settings: EngineSettings) -> None:
    """Harden an Autobahn server factory with the Engine.IO limits."""
    frame = settings.max_frame_bytes or settings.max_payload
    factory.setProtocolOptions(
        versions=WEBSOCKET_VERSIONS,
        webStatus=False,
        maxFramePayloadSize=frame,
        # Incoming messages are capped in onMessageFrameBegin (max_payload);
        # Autobahn's own message cap would also apply to outgoing messages.
        maxMessagePayloadSize=0,
        utf8validateIncoming=True,
        requireMaskedClientFrames=True,
        # Send the close frame (1009 names the size limit) before dropping;
        # closeHandshakeTimeout bounds the wait for the client's answer.
        failByDrop=False,
        openHandshakeTimeout=settings.ws_open_handshake_timeout_s,
        closeHandshakeTimeout=settings.ws_close_handshake_timeout_s,
        # Origins are checked by the Engine.IO request checks in onConnect,
        # against the same allowlist as polling.
        allowedOrigins=["*"],
        allowNullOrigin=True,
        perMessageCompressionAccept=lambda offers: None,
        autoPingInterval=0,
        tcpNoDelay=True,
    )
