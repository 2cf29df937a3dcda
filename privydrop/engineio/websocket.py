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

A client's close frame that RFC 6455 does not allow (a one-byte payload, a
reserved or unassigned code, a reason that is not UTF-8) is answered with
close code 1002, and the TCP connection is then closed in order, so the
client reads why (L{EngineWebSocketProtocol.onCloseFrame}).

The common frames are read and written here rather than by Autobahn's
parser and C{sendMessage} (see L{EngineWebSocketProtocol.dataReceived}).
That needs Autobahn internals, reached only through
L{privydrop.compat.autobahn}; on an Autobahn without them the transport runs
on Autobahn's public API alone.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from autobahn.exception import Disconnected
from autobahn.twisted.websocket import (
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from privydrop.compat import autobahn as autobahn_compat
from privydrop.compat.twisted import outbound_buffer_size
from privydrop.engineio import packets
from privydrop.engineio.errors import EngineRequestError
from privydrop.engineio.interface import CloseKind, EngineSid, Handshake, shared_text
from privydrop.engineio.server import EngineServer
from privydrop.engineio.session import (
    REASON_OUTBOUND_LIMIT,
    REASON_PARSE_ERROR,
    REASON_TRANSPORT_CLOSE,
    REASON_TRANSPORT_ERROR,
    WEBSOCKET,
    WS_NORMAL,
    WS_POLICY_VIOLATION,
    WS_PROTOCOL_ERROR,
    WS_TOO_BIG,
    Session,
)
from privydrop.logs.levels import Logger
from privydrop.settings import EngineSettings
from privydrop.web.clientip import peer_address

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

#: Close codes of a client that leaves on purpose: normal, going away (a page
#: closing), and none at all (what socket.io-client sends).
_CLIENT_LEAVE_CODES = frozenset({1000, 1001, None})

# Autobahn's per-connection debug text, built only if an event is formatted.
autobahn_compat.install_lazy_debug_text()


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
#: RFC 6455, 7.4: the close codes a peer may send, as Autobahn accepts them
#: (besides 3000-4999); 1004-1006 and 1015 are reserved, the rest unassigned.
_VALID_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013})
_CLOSE_FRAME = 0x88
#: RFC 6455, 5.5: a control frame's payload, code included, is at most 125 bytes.
_REASON_BYTES = 123
#: Besides 1000, the close codes Autobahn's public C{sendClose} takes (it
#: leaves RFC 6455's other codes to the WebSocket layer itself).
_PUBLIC_CLOSE_CODES = range(3000, 5000)
_HEAD16 = struct.Struct("!BBH")
_HEAD64 = struct.Struct("!BBQ")


_TEXT_FIN = 0x81
_BINARY_FIN = 0x82
_MASKED = 0x80

# Where a connection is, as this module sees it; used when Autobahn's own
# state cannot be read (see privydrop.compat.autobahn).
_CONNECTING = 0
_OPEN = 1
_CLOSING = 2


def close_frame_error(code: int | None, reason: bytes | None) -> str | None:
    """What is wrong with a client's close frame (RFC 6455, 5.5.1 and 7.4),
    or None when it is valid.

    @param code: its status code; None when it had no payload (a payload of
        one byte is refused by Autobahn's frame parser before this is asked).
    @param reason: the bytes after the code, if any.
    """
    if code is not None and code not in _VALID_CLOSE_CODES and not 3000 <= code <= 4999:
        return "invalid close code %d" % (code,)
    if reason:
        try:
            reason.decode("utf-8")
        except UnicodeDecodeError:
            return "close reason is not UTF-8"
    return None


def close_frame(code: int, reason: str) -> bytes:
    """A server close frame (unmasked) with C{code} and C{reason}."""
    payload = struct.pack("!H", code) + reason.encode("utf-8")[:_REASON_BYTES]
    return bytes((_CLOSE_FRAME, len(payload))) + payload


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


#: The two header bytes of a final text frame of each payload size under 126.
_TEXT_HEADS = tuple(bytes((_TEXT_FIN, size)) for size in range(126))
_PACKET_CHARS = packets.TYPE_CHARS


def packet_frame(packet: packets.Packet) -> bytes:
    """One Engine.IO packet as a server frame (L{server_frame} of
    L{packets.encode_websocket}), with the common case, a short text packet,
    built in one step."""
    data = packet[1]
    if data.__class__ is not str:
        return server_frame(*packets.encode_websocket(packet))
    payload = (_PACKET_CHARS[packet[0]] + data).encode("utf-8")
    size = len(payload)
    if size < 126:
        return _TEXT_HEADS[size] + payload
    if size < 65536:
        return _HEAD16.pack(_TEXT_FIN, 126, size) + payload
    return server_frame(payload, False)


class EngineWebSocketProtocol(WebSocketServerProtocol):
    """One WebSocket connection carrying an Engine.IO session (or its upgrade).

    Autobahn's internals are used only through L{privydrop.compat.autobahn},
    and only when its check passed (C{factory.autobahn_internals}); without
    them the connection runs on Autobahn's public API alone.
    """

    _log = Logger()
    factory: EngineWebSocketFactory

    # Class-level initial values: a connection stores an attribute only once
    # it changes (thousands of idle connections, each with its own dict).
    _session: Session | None = None
    _upgrade_sid: EngineSid | None = None
    #: Kept from onConnect to onOpen only (the session holds it after).
    _handshake: Handshake | None = None
    _fragments = 0
    _message_bytes = 0
    _limit_hit: str | None = None
    _phase = _CONNECTING
    #: The largest frame the receive fast path takes; 0: none.
    _receive_limit = 0
    #: Whether outgoing frames are built and written here.
    _plain_frames = False
    #: The client started the closing handshake with a code that means
    #: it leaves on purpose (see L{onCloseFrame}).
    _client_left = False
    #: The closing handshake is over: nothing more is read.
    _input_closed = False
    #: Aborts the connection if it has not closed in order in time.
    _close_deadline: IDelayedCall | None = None

    # -- opening ----------------------------------------------------------

    def connectionMade(self) -> None:
        # Autobahn's own lines about this connection (a refused handshake, a
        # failed connection) are a client's to cause: throttled like ours.
        self.log = self.factory.autobahn_log
        super().connectionMade()
        if not self.factory.engine.settings.log_client_ips:
            # Autobahn names the peer in some of its own warnings; keep client
            # addresses out of the logs unless a setting allows them.
            autobahn_compat.hide_peer_address(self)

    def onConnect(self, request: ConnectionRequest) -> None:
        server = self.factory.engine
        query = shared_text((k, v[-1]) for k, v in request.params.items() if v)
        try:
            session = server.verify(
                query, "GET", upgrade=True, origin=request.headers.get("origin")
            )
        except EngineRequestError as e:
            server.rejections.debug(
                self._log,
                "refused:" + e.code.name,
                "engine websocket refused: {code}",
                code=e.code.name,
                transport=WEBSOCKET,
            )
            raise ConnectionDeny(e.status, e.message)
        peer = self.transport.getPeer() if self.transport is not None else None
        self._upgrade_sid = None if session is None else session.sid
        self._handshake = Handshake(
            # A copy of Autobahn's dict (which the connection lets go of
            # once open) that shares the common names and values.
            headers=shared_text(request.headers.items()),
            remote_address=peer_address(peer),
            query=query,
            url=self.factory.shared_url(autobahn_compat.request_uri(self, request)),
            secure=bool(self.factory.isSecure),
            issued_ms=server.issued_ms(),
        )
        if session is None:
            try:
                server.admit(self._handshake)
            except EngineRequestError as e:
                raise ConnectionDeny(e.status, e.message)

    def onOpen(self) -> None:
        server = self.factory.engine
        self._phase = _OPEN
        if self.factory.autobahn_internals:
            # Frames the receive fast path may take: what Autobahn would
            # accept without a limit, logging or extension getting involved.
            self._receive_limit = autobahn_compat.receive_limit(self, server.settings.max_payload)
            self._plain_frames = autobahn_compat.writes_plain_frames(self)
        try:
            self._open_session(server)
        finally:
            # What the opening handshake left behind is not needed any more.
            self.__dict__.pop("_handshake", None)
            self.__dict__.pop("_upgrade_sid", None)
            if self.factory.autobahn_internals:
                autobahn_compat.compact_open_connection(self)

    def _open_session(self, server: EngineServer) -> None:
        try:
            if self._upgrade_sid is None:
                if self._handshake is None:
                    raise RuntimeError("onOpen before onConnect")
                try:
                    session = server.create_session(WEBSOCKET, self._handshake)
                except EngineRequestError as e:
                    # Admitted in onConnect; refused only if sessions of its
                    # client opened in between.
                    self.close_channel(WS_POLICY_VIOLATION, e.message)
                    return
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
        if self._input_closed:
            return
        factory = self.factory
        flushes = factory.engine.flushes
        flushes.hold()
        try:
            if self._receive_limit and autobahn_compat.parser_idle(self):
                whole = self._receive_frames(data)
            elif factory.autobahn_internals:
                autobahn_compat.parse(self, data)
                whole = False
            else:
                super().dataReceived(data)
                whole = False
        finally:
            flushes.release()
        # Autobahn answers every ping frame with a pong on its own: a client
        # that floods pings and never reads would otherwise queue pongs
        # without end, past the cap that send_packets enforces. (A read
        # handled whole by the fast path had no control frame.)
        if not whole and (
            autobahn_compat.is_open(self)
            if factory.autobahn_internals
            else self._phase == _OPEN
        ):
            self._enforce_outbound_cap()

    def _receive_frames(self, data: bytes) -> bool:
        """Take the read's leading data frames; give the rest to Autobahn.

        @return: whether the whole read was taken here.
        """
        end = len(data)
        limit = self._receive_limit
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
                i = stop
                session = self._session
                if message[:1] == "4" and session is not None and session._ws is self:
                    # L{_receive}'s hot path, inlined.
                    session.receive_message(message[1:])
                else:
                    self._receive(message)
            else:
                i = stop
                self._receive(payload)
            if not autobahn_compat.is_open(self):
                break
        if i < end:
            autobahn_compat.parse_rest(self, data[i:] if i else data)
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
        if not self._failed():
            settings = self.factory.engine.settings
            if self._fragments > settings.max_fragments:
                self._over_limit("max_fragments")
            elif self._message_bytes > settings.max_payload:
                self._over_limit("max_payload")
        super().onMessageFrameBegin(length)

    def onMessageFrame(self, payload: Any) -> None:  # the frame's chunks, a list
        # Autobahn keeps collecting a message until it sees it failed; a
        # limit passed here (without Autobahn's internals: a plain close)
        # must stop that too.
        if self._limit_hit is None:
            super().onMessageFrame(payload)

    def _failed(self) -> bool:
        """Whether the connection was failed: the rest of the message is ignored."""
        if self._limit_hit is not None:
            return True
        return self.factory.autobahn_internals and autobahn_compat.failed(self)

    def _over_limit(self, limit: str) -> None:
        self._limit_hit = limit
        reason = limit + " exceeded"
        if self.factory.autobahn_internals:
            # The same path Autobahn takes for its own size limits: close
            # code 1009 and every further frame of the message ignored.
            autobahn_compat.fail(self, WS_TOO_BIG, reason)
        self._refuse(
            limit, "engine websocket closed: {limit} exceeded", reason, WS_TOO_BIG, limit=limit
        )

    def onMessageEnd(self) -> None:
        if not self.factory.autobahn_internals:
            super().onMessageEnd()
            return
        # Autobahn's version also fires a "message" observer event, which
        # allocates a Deferred per message; nothing here observes it.
        message = autobahn_compat.take_message(self)
        if message is not None:
            self.onMessage(*message)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self._limit_hit is not None:
            return
        if isBinary:
            self._receive(bytes(payload))
            return
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            # Autobahn validates text frames; this only guards the setting.
            if self._session is not None:
                self._bad_frame("text frame is not UTF-8")
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
            self._bad_frame(str(e))
            return
        try:
            session.receive_websocket(self, packet)
        except Exception:  # noqa: BLE001 - error boundary: log, close this session
            self._log.failure(
                "engine session {engine_sid} failed on a frame", engine_sid=session.sid
            )
            session.drop(REASON_PARSE_ERROR, WS_NORMAL, self)

    def _bad_frame(self, error: str) -> None:
        self._refuse(
            "bad frame",
            "engine session {engine_sid} sent a bad frame ({error})",
            REASON_PARSE_ERROR,
            WS_PROTOCOL_ERROR,
            error=error,
        )

    def _refuse(
        self, cause: str, message: str, reason: str, ws_code: int, **fields: object
    ) -> None:
        """Reject the client's input: warn (throttled), then close.

        A fault on the session's own transport ends the session; on an
        upgrade probe it ends only the probe (L{Session.refuse}). A
        connection without a session (its opening was refused) is closed.
        """
        session = self._session
        if session is not None:
            session.refuse(
                cause, message, reason, ws_code,
                log=self._log, channel=self, transport=WEBSOCKET, **fields,
            )
            return
        self.factory.engine.rejections.warn(
            self._log, cause, message, engine_sid=None, transport=WEBSOCKET, **fields
        )
        self.close_channel(ws_code, reason)

    def onCloseFrame(self, code: int | None, reasonRaw: bytes | None) -> bool | None:
        """The client sent a close frame: answer it, then close the TCP
        connection in order.

        Autobahn fails an invalid close frame (code 1002, 1007 for a reason
        that is not UTF-8) and then takes that very frame for the answer to
        its own close, so it aborts the connection, and the close frame it
        just queued never leaves: the client sees a bare reset. Here an
        invalid close frame (L{close_frame_error}) is answered with 1002,
        through Autobahn with its internals and written as bytes without
        them, and the connection is closed in order; so is one that
        Autobahn's frame parser already failed (a one-byte payload).
        """
        error = close_frame_error(code, reasonRaw)
        internals = self.factory.autobahn_internals
        if error is None and self._phase == _OPEN and code in _CLIENT_LEAVE_CODES:
            # The client started the closing handshake meaning to leave (once
            # a close frame left here first, the client's is the answer).
            self._client_left = True
        if error is None:
            if internals and not autobahn_compat.failed(self):
                # A valid close: Autobahn answers it and closes in order (or,
                # if it answers a close of ours, ends the connection).
                # (Autobahn passes None for both when the frame has no
                # payload, though its hints say otherwise.)
                return super().onCloseFrame(code, reasonRaw)  # type: ignore[arg-type]
            if not internals and self._phase == _OPEN:
                # Ignored by Autobahn when it has failed the connection already.
                self.sendClose(WS_NORMAL)
        else:
            self._send_close_frame(WS_PROTOCOL_ERROR, error)
            self._refuse(
                "bad close frame",
                "engine session {engine_sid} sent an invalid close frame ({error})",
                REASON_TRANSPORT_ERROR,
                WS_PROTOCOL_ERROR,
                error=error,
            )
        self._close_in_order()
        return True

    def _send_close_frame(self, code: int, reason: str) -> None:
        """Send a close frame with any RFC 6455 C{code}, unless one was sent."""
        if self.factory.autobahn_internals:
            autobahn_compat.close(self, code, reason)
        elif self._phase == _OPEN and self.transport is not None:
            # Autobahn's public sendClose takes no code under 3000 but 1000.
            self.transport.write(close_frame(code, reason))
        self._phase = _CLOSING

    def _close_in_order(self) -> None:
        """The closing handshake is over: read nothing more, close the TCP
        connection once what is queued has left, and abort it if that takes
        longer than the close handshake timeout (a client that does not read)."""
        self._phase = _CLOSING
        self._input_closed = True
        if self.factory.autobahn_internals:
            autobahn_compat.close_after_close_frame(self)
        elif self.transport is not None:
            self.transport.loseConnection()
        if self._close_deadline is None:
            self._close_deadline = self.factory.engine.clock.callLater(
                self.factory.engine.settings.ws_close_handshake_timeout_s,
                self._close_deadline_passed,
            )

    def _close_deadline_passed(self) -> None:
        self._close_deadline = None
        self._abort_transport()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        deadline, self._close_deadline = self._close_deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()
        super().connectionLost(reason)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self._phase = _CLOSING
        session = self._session
        if session is None:
            return
        if (
            self._limit_hit is None
            and self.factory.autobahn_internals
            and autobahn_compat.frame_too_big(self)
        ):
            self._refuse(
                "max_frame_bytes",
                "engine session {engine_sid} closed: {limit} exceeded",
                "max_frame_bytes exceeded",
                WS_TOO_BIG,
                limit="max_frame_bytes",
            )
            return
        # After a limit passed here the session was told already. A client
        # that sent a close frame meaning "going away" left on purpose;
        # anything else (no close frame, an error code) is a lost transport.
        session.websocket_lost(
            self,
            REASON_TRANSPORT_CLOSE,
            CloseKind.CLIENT if self._client_left else CloseKind.LOST,
        )

    # -- WebSocketChannel -------------------------------------------------

    def send_packets(self, outgoing: Sequence[packets.Packet]) -> None:
        """Write each packet as one frame, all in one write, then enforce
        C{max_outbound_buffer}."""
        if self._plain_frames:
            if not autobahn_compat.is_open(self):
                return
            # Every frame is a plain unmasked server frame; building them
            # here costs a fraction of sendMessage per message and makes one
            # write per turn.
            if len(outgoing) == 1:
                packet = outgoing[0]
                text = packet[1]
                if text.__class__ is str:
                    # L{packet_frame}'s usual case, inlined: the relay
                    # writes one text packet per read.
                    payload = (_PACKET_CHARS[packet[0]] + text).encode("utf-8")
                    size = len(payload)
                    if size < 126:
                        data = _TEXT_HEADS[size] + payload
                    elif size < 65536:
                        data = _HEAD16.pack(_TEXT_FIN, 126, size) + payload
                    else:
                        data = server_frame(payload, False)
                else:
                    data = packet_frame(packet)
            else:
                data = b"".join([packet_frame(p) for p in outgoing])
            if autobahn_compat.write_frames(self, data):
                # All of it left at once: nothing is buffered, the cap holds.
                return
        else:
            if self._phase != _OPEN:
                return
            encode = packets.encode_websocket
            try:
                for packet in outgoing:
                    self.sendMessage(*encode(packet))
            except Disconnected:
                return
        self._enforce_outbound_cap()

    def _enforce_outbound_cap(self) -> None:
        """Abort the connection when C{max_outbound_buffer} bytes wait to be sent."""
        buffered = outbound_buffer_size(self.transport)
        if buffered > self.factory.engine.settings.max_outbound_buffer:
            # The peer is not reading: a close frame would only queue behind
            # the rest, so the connection is aborted.
            self._abort()
            self._refuse(
                "max_outbound_buffer",
                "engine session {engine_sid} dropped: {limit} exceeded ({size} bytes)",
                REASON_OUTBOUND_LIMIT,
                WS_POLICY_VIOLATION,
                limit="max_outbound_buffer",
                size=buffered,
            )

    def _abort(self) -> None:
        if self.factory.autobahn_internals:
            autobahn_compat.abort(self)
        elif self._phase != _CLOSING:
            self._phase = _CLOSING
            self._abort_transport()

    def close_channel(self, code: int, reason: str) -> None:
        """Start the closing handshake with C{code}, or drop a half-open connection.

        Without Autobahn's internals the public C{sendClose} is used, which
        takes only 1000 and 3000-4999: another code is sent as 1000, with
        the same reason.
        """
        if self.factory.autobahn_internals:
            autobahn_compat.close(self, code, reason)
        elif self._phase == _OPEN:
            self._phase = _CLOSING
            self.sendClose(code if code in _PUBLIC_CLOSE_CODES else WS_NORMAL, reason)
        elif self._phase == _CONNECTING:
            self._phase = _CLOSING
            self._abort_transport()

    def _abort_transport(self) -> None:
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()


class EngineWebSocketFactory(WebSocketServerFactory):
    """Builds L{EngineWebSocketProtocol}s for one L{EngineServer}.

    @ivar engine: the Engine.IO server sessions are registered with.
    @ivar autobahn_internals: whether the Autobahn internals the protocol's
        fast paths and L{buildProtocol} use are all there
        (L{privydrop.compat.autobahn.protocol_internals_missing}).
    """

    protocol = EngineWebSocketProtocol  # type: ignore[assignment]

    def __init__(self, engine: EngineServer) -> None:
        # server=None: no Server header naming the software and version.
        super().__init__(server=None)
        self.engine = engine
        #: What socket.io-client asks for: one string for every connection.
        self._usual_url = engine.settings.path + "?EIO=4&transport=websocket"
        self.autobahn_internals = autobahn_compat.protocol_internals_usable()
        autobahn_compat.check_hooks()
        self._shared_options = autobahn_compat.SharedOptions()
        #: The C{log} of every protocol this factory builds.
        self.autobahn_log = autobahn_compat.ThrottledAutobahnLog(
            engine.rejections, self.protocol.log
        )
        apply_limits(self, engine.settings)

    def shared_url(self, url: str) -> str:
        """C{url}, as the factory's own string when it is the usual one
        (each connection keeps its handshake's URL for its lifetime)."""
        return self._usual_url if url == self._usual_url else url

    def buildProtocol(self, addr: Any) -> Any:
        """Build a protocol whose class carries this factory's options
        (L{privydrop.compat.autobahn.SharedOptions}: less memory per
        connection), or the stock way without Autobahn's internals."""
        cls = self._shared_options.protocol_class(self) if self.autobahn_internals else None
        if cls is None:
            return super().buildProtocol(addr)
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
