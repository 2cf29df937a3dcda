"""One Engine.IO client session: heartbeat, outbound queue, upgrade, close.

The session is a state machine driven by its transports and a clock. It knows
nothing of twisted.web or Autobahn: the polling resource hands it a
L{PollResponder} per GET, the WebSocket glue hands it a L{WebSocketChannel}
per connection, and both feed it decoded packets. Tests drive it with fakes
of those two and a L{twisted.internet.task.Clock}.

Rules (engine.io-protocol v4):

  - Heartbeat: the server sends a ping every C{pingInterval}; if no pong
    arrives within C{pingTimeout} the session closes with C{"ping timeout"}.
  - Outbound packets are queued and flushed once per reactor turn: over
    polling as one payload answering the pending GET, over WebSocket as one
    frame each, written in the same turn. Every session of a server shares
    one L{FlushQueue}, so a turn costs one timer however many sessions it
    wrote to, and a transport that holds the queue while it handles a read
    flushes right after that read.
  - Upgrade: a WebSocket opened with the session's sid sends C{2probe}
    (answered C{3probe}); from then on a GET that would otherwise wait is
    answered with a noop, so the client can pause polling. C{5} after the
    probe switches the session to the WebSocket and flushes what is queued
    there; any other packet on that WebSocket (C{5} before the probe
    included) closes it with 1002, and the session goes on polling. Packets
    queued before the switch leave in order either in the last poll or first
    on the WebSocket; none is lost or reordered.
  - Polling: one GET and one POST at a time (L{Session.attach_poll},
    L{Session.begin_post}); a second one closes the session.
  - A GET whose connection is lost before it is answered does not end the
    session (the reference's does): the next GET, within C{pingTimeout},
    takes what is queued (L{Session.poll_lost}).
  - Close: a client close packet answers a pending GET with a noop; a
    server-forced close answers it with a close packet. A graceful
    L{Session.close} first delivers what is already queued.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import Enum
from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import LogLevel

from privydrop.engineio import packets
from privydrop.engineio.interface import (
    CloseKind,
    EngineApplication,
    EngineSid,
    Handshake,
    Message,
)
from privydrop.engineio.packets import Packet, PacketType
from privydrop.logs import levels as loglevels
from privydrop.logs.levels import Logger
from privydrop.logs.throttle import WarningThrottle
from privydrop.settings import EngineSettings

_log = Logger()

POLLING = "polling"
WEBSOCKET = "websocket"

#: WebSocket close codes used when the server ends a session.
WS_NORMAL = 1000
WS_GOING_AWAY = 1001
WS_PROTOCOL_ERROR = 1002
WS_POLICY_VIOLATION = 1008
WS_TOO_BIG = 1009

# Close reasons, the reference server's strings where it has one.
REASON_TRANSPORT_CLOSE = "transport close"
REASON_TRANSPORT_ERROR = "transport error"
REASON_PING_TIMEOUT = "ping timeout"
REASON_FORCED = "forced close"
REASON_PARSE_ERROR = "parse error"
REASON_SHUTDOWN = "server shutting down"
REASON_BUFFER_LIMIT = "max_buffered_bytes exceeded"
REASON_PAYLOAD_LIMIT = "max_payload exceeded"
REASON_PACKETS_LIMIT = "max_packets_per_payload exceeded"
REASON_OUTBOUND_LIMIT = "max_outbound_buffer exceeded"


class PollResponder(Protocol):
    """A pending polling GET, answered exactly once."""

    def respond(self, body: bytes) -> None:
        """Answer the GET with 200 and C{body} (an encoded payload)."""


class WebSocketChannel(Protocol):
    """One WebSocket connection as the session sees it."""

    def send_packets(self, packets: Sequence[Packet]) -> None:
        """Write packets, one frame each, in order."""

    def close_channel(self, code: int, reason: str) -> None:
        """Close the connection (idempotent)."""


class FlushQueue:
    """The sessions with packets waiting to be written, flushed together.

    One timer (C{callLater(0)}) per reactor turn flushes every session that
    queued something, instead of one timer per session and turn. A
    transport that is handling a read calls L{hold} first and L{release}
    after: sessions queued meanwhile are flushed at the end of the read,
    without a timer and without waiting for the next turn.
    """

    __slots__ = ("_clock", "_sessions", "_call", "_held")

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._sessions: list[Session] = []
        self._call: IDelayedCall | None = None
        self._held = 0

    def add(self, session: Session) -> None:
        """Flush C{session} at the end of this read, or else of this turn.

        (Inlined in L{Session.send}.)
        """
        self._sessions.append(session)
        if self._call is None and not self._held:
            self._call = self._clock.callLater(0, self._run)

    def discard(self, session: Session) -> None:
        """Forget C{session} (it closed); the timer goes when nothing is left.

        A long list is left as it is (a closed session's flush does nothing),
        so closing many sessions in one turn stays linear.
        """
        sessions = self._sessions
        if len(sessions) <= 64:
            self._sessions = sessions = [s for s in sessions if s is not session]
        if not sessions and self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None

    def hold(self) -> None:
        """A read is being handled: queue flushes until L{release}."""
        self._held += 1

    def release(self) -> None:
        """The read is handled: flush what it queued, now."""
        self._held -= 1
        if not self._held and self._sessions:
            self._run()

    def _run(self) -> None:
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
        # Flushing may queue more (a session closing another one); those
        # are taken by the next pass of this loop, still in this turn.
        while self._sessions:
            sessions, self._sessions = self._sessions, []
            for session in sessions:
                try:
                    if session._flush_pending:
                        session._flush()
                except Exception:  # noqa: BLE001 - error boundary: one session only
                    _log.failure(
                        "engine session {engine_sid} failed to flush",
                        engine_sid=session.sid,
                    )
                    session.force_close(REASON_TRANSPORT_ERROR)
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None


class SessionState(Enum):
    OPEN = "open"
    #: Closed by the server; waiting to deliver what is queued.
    CLOSING = "closing"
    CLOSED = "closed"


# The members the hot paths compare with, as module globals: reading an
# Enum member through its class is several times slower than a global.
_OPEN = SessionState.OPEN
_CLOSING = SessionState.CLOSING
_CLOSED = SessionState.CLOSED
_MESSAGE = PacketType.MESSAGE
_new_packet = tuple.__new__


class Session:
    """One client's Engine.IO session; also the application's L{EngineConnection}.

    @ivar upgraded: the session moved from polling to WebSocket.
    @ivar pending: no packet has arrived from the client yet (it only did the
        handshake); the server caps how many sessions may be in this state.
    """

    # One per connection. Past 30 attributes CPython gives an instance its
    # own dict (about 1.5 KiB); slots keep an idle session small.
    __slots__ = (
        "sid",
        "_clock",
        "_settings",
        "_handshake",
        "_application",
        "_transport_name",
        "_on_closed",
        "_on_active",
        "_rejections",
        "state",
        "upgraded",
        "pending",
        "close_reason",
        "_close_kind",
        "_closing_kind",
        "_queue",
        "_queued_bytes",
        "_flushes",
        "_flush_pending",
        "_poll",
        "_post",
        "_ws",
        "_probe",
        "_probed",
        "_ping_call",
        "_pong_call",
        "_upgrade_call",
        "_close_call",
        "_repoll_call",
        "_close_code",
    )

    def __init__(
        self,
        sid: EngineSid,
        clock: IReactorTime,
        settings: EngineSettings,
        handshake: Handshake,
        application: EngineApplication,
        transport_name: str,
        on_closed: Callable[[Session], None] = lambda session: None,
        on_active: Callable[[Session], None] = lambda session: None,
        rejections: WarningThrottle | None = None,
        flushes: FlushQueue | None = None,
    ) -> None:
        """
        @param sid: the session id sent in the handshake.
        @param clock: timers for heartbeat, flushes and timeouts.
        @param settings: intervals and limits.
        @param handshake: the first request's details.
        @param application: the layer above, told of messages and close.
        @param transport_name: C{"polling"} or C{"websocket"}.
        @param on_closed: called once when the session closes (registry cleanup).
        @param on_active: called once, on the first packet from the client.
        @param rejections: rate-limits warnings about this client's input.
        @param flushes: shared by the server's sessions; one of its own when None.
        """
        #: Read for every message the application handles: an attribute,
        #: not a property.
        self.sid = sid
        self._clock = clock
        self._settings = settings
        self._handshake = handshake
        self._application = application
        self._transport_name = transport_name
        self._on_closed = on_closed
        self._on_active = on_active
        self._rejections = rejections or WarningThrottle(
            clock, settings.rejection_log_interval_s
        )
        self.state = SessionState.OPEN
        self.upgraded = False
        self.pending = True
        self.close_reason: str | None = None
        self._close_kind: CloseKind | None = None
        self._closing_kind = CloseKind.SERVER
        self._queue: list[Packet] = []
        self._queued_bytes = 0
        self._flushes = flushes if flushes is not None else FlushQueue(clock)
        self._flush_pending = False
        self._poll: PollResponder | None = None
        #: The POST whose body is arriving (see L{begin_post}).
        self._post: object | None = None
        self._ws: WebSocketChannel | None = None
        self._probe: WebSocketChannel | None = None
        self._probed = False
        self._ping_call: IDelayedCall | None = None
        self._pong_call: IDelayedCall | None = None
        self._upgrade_call: IDelayedCall | None = None
        self._close_call: IDelayedCall | None = None
        #: Ends the session if no GET follows one whose connection was lost.
        self._repoll_call: IDelayedCall | None = None
        self._close_code = WS_NORMAL

    # -- EngineConnection -------------------------------------------------

    @property
    def handshake(self) -> Handshake:
        return self._handshake

    @property
    def transport_name(self) -> str:
        return self._transport_name

    @property
    def close_kind(self) -> CloseKind | None:
        return self._close_kind

    def send(self, message: Message) -> None:
        """Queue one message packet; flushed with the rest of this turn's packets.

        The relay's hot path: L{_enqueue} inlined, and the packet built
        without L{Packet.__new__}'s check (a message packet may carry either
        kind of data).
        """
        if self.state is not _OPEN:
            return
        self._queue.append(_new_packet(Packet, (_MESSAGE, message)))
        queued = self._queued_bytes = self._queued_bytes + len(message) + 1
        if queued > self._settings.max_buffered_bytes:
            self._refuse_buffered(queued)
            return
        if not self._flush_pending:
            self._flush_pending = True
            # L{FlushQueue.add}, inlined.
            flushes = self._flushes
            flushes._sessions.append(self)
            if flushes._call is None and not flushes._held:
                flushes._call = flushes._clock.callLater(0, flushes._run)

    def send_many(self, messages: Sequence[Message]) -> None:
        """Queue several message packets in order."""
        if self.state is not _OPEN:
            return
        for message in messages:
            self._enqueue(Packet(_MESSAGE, message))
            if self.state is not _OPEN:
                return

    def close(
        self,
        reason: str = REASON_FORCED,
        ws_code: int = WS_NORMAL,
        kind: CloseKind = CloseKind.SERVER,
    ) -> None:
        """Close the session after delivering what is already queued.

        Over WebSocket that happens in this turn. Over polling the client's
        next GET collects the queue and a close packet (so the client knows
        the server closed it, as with the reference server); if none comes
        within C{polling_close_timeout_s} the session is dropped.

        @param reason: given to L{EngineApplication.on_close}.
        @param ws_code: the WebSocket close code, if the session is on WebSocket.
        @param kind: reported as L{close_kind}.
        """
        if self.state is not SessionState.OPEN:
            return
        self.state = SessionState.CLOSING
        self.close_reason = reason
        self._closing_kind = kind
        self._close_code = ws_code
        self._cancel_heartbeat()
        if self._ws is None and self._poll is None:
            self._close_call = self._clock.callLater(
                self._settings.polling_close_timeout_s,
                self._finish,
                reason,
                None,
                WS_NORMAL,
                kind,
            )
        self._flush()

    # -- lifecycle --------------------------------------------------------

    def start(self, open_packet: Packet) -> None:
        """Queue the handshake packet and start the heartbeat.

        The open packet is written synchronously when a transport is
        attached, so it always precedes anything the application sends.
        """
        self._queue.append(open_packet)
        self._schedule_ping()
        self._flush()

    def force_close(
        self, reason: str, ws_code: int = WS_NORMAL, kind: CloseKind = CloseKind.SERVER
    ) -> None:
        """Close now, dropping the queue; a pending GET receives a close packet.

        @param kind: reported as L{close_kind}.
        """
        if self.state is SessionState.CLOSED:
            return
        self._finish(reason, notify=packets.CLOSE, ws_code=ws_code, kind=kind)

    def drop(
        self,
        reason: str,
        ws_code: int = WS_NORMAL,
        channel: WebSocketChannel | None = None,
    ) -> None:
        """Close over a fault of the client, now.

        @param reason: given to L{EngineApplication.on_close}.
        @param ws_code: the WebSocket close code.
        @param channel: the WebSocket the fault came on, if any. When it is
            not the session's transport (an upgrade probe, or a stray
            connection) only that channel is closed, and the session carries
            on; otherwise the session is closed (L{force_close}).
        """
        if channel is None or channel is self._ws:
            self.force_close(reason, ws_code)
        else:
            self.websocket_lost(channel, reason, CloseKind.SERVER)
            channel.close_channel(ws_code, reason)

    def refuse(
        self,
        cause: str,
        message: str,
        reason: str,
        ws_code: int = WS_NORMAL,
        *,
        log: Logger = _log,
        channel: WebSocketChannel | None = None,
        **fields: object,
    ) -> None:
        """Reject the client's input: warn, then close (L{drop}).

        The warning goes through the server's L{WarningThrottle}, so a
        client repeating the fault as fast as it can does not flood the log:
        one event per C{cause} and interval, with C{engine_sid} and
        C{fields}.

        @param cause: what was refused (the throttle's key), such as the
            name of the limit passed.
        @param message: the event's format; it may name C{engine_sid} and
            any of C{fields}.
        @param reason: given to L{EngineApplication.on_close}.
        @param ws_code: the WebSocket close code.
        @param log: the logger of the module that found the fault (the event
            keeps its namespace).
        @param channel: see L{drop}.
        """
        self._rejections.warn(log, cause, message, engine_sid=self.sid, **fields)
        self.drop(reason, ws_code, channel)

    # -- outbound ---------------------------------------------------------

    def _enqueue(self, packet: Packet) -> None:
        self._queue.append(packet)
        self._queued_bytes += len(packet[1]) + 1
        if self._queued_bytes > self._settings.max_buffered_bytes:
            self._refuse_buffered(self._queued_bytes)
            return
        if not self._flush_pending:
            self._flush_pending = True
            self._flushes.add(self)

    def _refuse_buffered(self, queued: int) -> None:
        self.refuse(
            "max_buffered_bytes",
            "engine session {engine_sid} closed: {limit} exceeded ({size} bytes queued)",
            REASON_BUFFER_LIMIT,
            WS_POLICY_VIOLATION,
            limit="max_buffered_bytes",
            size=queued,
        )

    def _take_queue(self) -> list[Packet]:
        queue = self._queue
        self._queue = []
        self._queued_bytes = 0
        return queue

    def _flush(self) -> None:
        """Write the queue to the active transport, if it can take it now."""
        self._flush_pending = False
        state = self.state
        if state is _CLOSED:
            return
        queue = self._queue
        if queue:
            ws = self._ws
            if ws is not None:
                self._queue = []
                self._queued_bytes = 0
                try:
                    ws.send_packets(queue)
                except Exception:  # noqa: BLE001 - error boundary: log, close this session
                    _log.failure(
                        "engine session {engine_sid} failed to write",
                        engine_sid=self.sid,
                    )
                    self.force_close(REASON_TRANSPORT_ERROR, kind=CloseKind.LOST)
                    return
            elif self._poll is not None:
                responder, self._poll = self._poll, None
                queue = self._take_queue()
                if state is _CLOSING:
                    queue.append(packets.CLOSE)
                    self._finish(
                        self.close_reason or REASON_FORCED,
                        notify=None,
                        kind=self._closing_kind,
                    )
                responder.respond(packets.encode_payload(queue))
                return
        if (
            self.state is _CLOSING
            and not self._queue
            and (self._ws is not None or self._poll is not None)
        ):
            # Without a transport now (polling between two GETs) the close
            # packet waits for the next GET, or the close timeout.
            self._finish(
                self.close_reason or REASON_FORCED,
                notify=packets.CLOSE,
                ws_code=self._close_code,
                kind=self._closing_kind,
            )

    # -- heartbeat (engine.io-protocol v4, "Heartbeat") --------------------

    def _schedule_ping(self) -> None:
        self._ping_call = self._clock.callLater(
            self._settings.ping_interval_ms / 1000.0, self._send_ping
        )

    def _send_ping(self) -> None:
        self._ping_call = None
        self._pong_call = self._clock.callLater(
            self._settings.ping_timeout_ms / 1000.0, self._ping_timed_out
        )
        self._enqueue(packets.PING)

    def _ping_timed_out(self) -> None:
        self._pong_call = None
        self._rejections.lifecycle(
            LogLevel.info,
            _log,
            "ping-timeout",
            "engine session {engine_sid} ping timeout",
            engine_sid=self.sid,
        )
        self.force_close(REASON_PING_TIMEOUT, WS_GOING_AWAY, CloseKind.LOST)

    def _on_pong(self) -> None:
        # A pong with no ping outstanding is ignored, so a client cannot
        # start a second ping timer by sending extra pongs.
        if self._pong_call is None:
            return
        self._pong_call.cancel()
        self._pong_call = None
        self._schedule_ping()

    def _cancel_heartbeat(self) -> None:
        for call in (self._ping_call, self._pong_call):
            if call is not None and call.active():
                call.cancel()
        self._ping_call = self._pong_call = None

    # -- inbound ----------------------------------------------------------

    def receive(self, packet: Packet) -> None:
        """Handle one packet the client sent on the active transport."""
        if self.state is SessionState.CLOSED:
            return
        if self.pending:
            self.pending = False
            self._on_active(self)
        kind = packet.type
        if kind is PacketType.MESSAGE:
            self.receive_message(packet.data)
        elif kind is PacketType.PONG:
            self._on_pong()
        elif kind is PacketType.CLOSE:
            self._finish(REASON_TRANSPORT_CLOSE, notify=packets.NOOP, kind=self._close_packet_kind())
        elif kind is PacketType.NOOP:
            pass
        else:
            # open, upgrade outside an upgrade, or a ping (the client never
            # pings in v4) are protocol errors.
            self.refuse(
                "unexpected packet",
                "engine session {engine_sid} closed: unexpected packet {packet_type}",
                REASON_PARSE_ERROR,
                WS_PROTOCOL_ERROR,
                packet_type=kind.name,
            )

    def _close_packet_kind(self) -> CloseKind:
        """What a close packet from the client means.

        Over WebSocket, and over polling while the client's GET is held, the
        client closes on purpose. A polling client whose GET failed (a
        network change) also sends one before it reconnects, and then no GET
        is held here: the last one was answered into the void or died. That
        close reports a lost transport, so the client can still recover its
        sockets. (A deliberate close in the instant between a GET's answer
        and the next GET counts as lost too: its sockets end with the
        recovery window instead of at once.)
        """
        if self._transport_name == POLLING and self._poll is None:
            return CloseKind.LOST
        return CloseKind.CLIENT

    def receive_message(self, message: Message) -> None:
        """Handle one message packet's data, sent on the active transport."""
        state = self.state
        if state is not _OPEN:
            if state is not _CLOSED and self.pending:
                self.pending = False
                self._on_active(self)
            return
        if self.pending:
            self.pending = False
            self._on_active(self)
        try:
            self._application.on_message(self, message)
        except Exception:  # noqa: BLE001 - error boundary: log, close this session
            _log.failure(
                "application failed on a message of engine session {engine_sid}",
                engine_sid=self.sid,
            )
            self.force_close(REASON_FORCED, WS_NORMAL)

    def receive_many(self, received: Sequence[Packet]) -> None:
        """Handle the packets of one polling payload, in order."""
        for packet in received:
            if self.state is SessionState.CLOSED:
                return
            self.receive(packet)

    # -- polling transport ------------------------------------------------

    @property
    def has_pending_poll(self) -> bool:
        return self._poll is not None

    def attach_poll(self, responder: PollResponder) -> bool:
        """Give the session a GET to answer.

        @return: False if another GET was already pending: that is a
            protocol violation, the session is closed (the first GET gets a
            close packet) and the caller answers this one with 400.
        """
        if self._poll is not None:
            self.refuse(
                "overlapping GET",
                "engine session {engine_sid} closed: overlapping GET",
                REASON_TRANSPORT_ERROR,
            )
            return False
        self._poll = responder
        self._cancel_repoll_deadline()
        if self._queue or self.state is SessionState.CLOSING:
            self._flush()
        elif self._probed:
            self._answer_poll_with_noop()
        return True

    def begin_post(self, post: object) -> bool:
        """A POST for this session began: its head arrived, its body follows.

        engine.io-protocol v4, "Sending data": a client has at most one
        active POST, or its packets could be taken out of order; a second
        one while the first is still arriving closes the session, as the
        reference server does.

        @param post: stands for the request until L{end_post}.
        @return: False if another POST was active: the session is closed,
            and the caller's request will be answered 400.
        """
        if self._post is not None and self.state is not SessionState.CLOSED:
            self.refuse(
                "overlapping POST",
                "engine session {engine_sid} closed: overlapping POST",
                REASON_TRANSPORT_ERROR,
            )
            return False
        self._post = post
        return True

    def end_post(self, post: object) -> None:
        """The POST of L{begin_post} was answered, or its connection is gone."""
        if self._post is post:
            self._post = None

    def poll_lost(self, responder: PollResponder) -> None:
        """The pending GET's connection went away before it was answered.

        Stricter for the client than the reference server (which closes the
        session here) and kinder to mobile networks: the session stays, and
        what is queued waits for the client's next GET, which must come
        within the ping timeout (heartbeat rules apply meanwhile too).

        Only packets no GET took are kept. Those written into a GET's answer
        count as delivered, even if that connection dies afterwards: there
        is no acknowledgement in Engine.IO to tell a lost answer from a read
        one, and sending them again could deliver a message twice.
        """
        if self._poll is not responder:
            return
        self._poll = None
        # (A closing session never holds a GET: close() answers it at once.)
        if self._transport_name == POLLING and self.state is SessionState.OPEN:
            self._cancel_repoll_deadline()
            self._repoll_call = self._clock.callLater(
                self._settings.ping_timeout_ms / 1000.0, self._repoll_missed
            )

    def _repoll_missed(self) -> None:
        self._repoll_call = None
        if loglevels.debug:
            _log.debug(
                "engine session {engine_sid}: no GET after a dropped one",
                engine_sid=self.sid,
            )
        self.force_close(REASON_TRANSPORT_ERROR, kind=CloseKind.LOST)

    def _cancel_repoll_deadline(self) -> None:
        call, self._repoll_call = self._repoll_call, None
        if call is not None and call.active():
            call.cancel()

    def _answer_poll_with_noop(self) -> None:
        if self._poll is not None:
            responder, self._poll = self._poll, None
            responder.respond(packets.encode_payload([packets.NOOP]))

    # -- websocket transport ----------------------------------------------

    def attach_websocket(self, channel: WebSocketChannel) -> None:
        """Use C{channel} as the transport of a session that started on WebSocket."""
        self._ws = channel
        self._transport_name = WEBSOCKET

    def uses(self, channel: WebSocketChannel) -> bool:
        """Whether C{channel} is the session's active transport."""
        return channel is self._ws

    @property
    def can_upgrade(self) -> bool:
        return (
            self.state is SessionState.OPEN
            and self._settings.allow_upgrades
            and self._transport_name == POLLING
            and self._probe is None
            and not self.upgraded
        )

    def begin_upgrade(self, channel: WebSocketChannel) -> bool:
        """A WebSocket with this sid opened; expect C{2probe} then C{5} on it.

        @return: False if the session cannot upgrade now (already upgrading,
            upgraded, on WebSocket from the start, or closing); the caller
            closes C{channel}.
        """
        if not self.can_upgrade:
            return False
        self._probe = channel
        self._probed = False
        self._upgrade_call = self._clock.callLater(
            self._settings.upgrade_timeout_s, self._upgrade_timed_out
        )
        return True

    def _upgrade_timed_out(self) -> None:
        self._upgrade_call = None
        probe = self._abandon_upgrade()
        if probe is not None:
            self._rejections.lifecycle(
                LogLevel.info,
                _log,
                "upgrade-timeout",
                "engine session {engine_sid} upgrade timed out",
                engine_sid=self.sid,
            )
            probe.close_channel(WS_POLICY_VIOLATION, "upgrade timeout")

    def _abandon_upgrade(self) -> WebSocketChannel | None:
        probe, self._probe = self._probe, None
        self._probed = False
        if self._upgrade_call is not None:
            if self._upgrade_call.active():
                self._upgrade_call.cancel()
            self._upgrade_call = None
        return probe

    def receive_websocket(self, channel: WebSocketChannel, packet: Packet) -> None:
        """Handle one packet that arrived on WebSocket C{channel}."""
        if channel is self._ws:
            self.receive(packet)
        elif channel is self._probe:
            self._receive_probe(channel, packet)
        else:
            channel.close_channel(WS_POLICY_VIOLATION, "not the session's transport")

    def _receive_probe(self, channel: WebSocketChannel, packet: Packet) -> None:
        if packet.type is PacketType.PING and packet.data == "probe":
            channel.send_packets([packets.PONG_PROBE])
            self._probed = True
            # Release the client's pending GET so it can pause polling.
            if not self._queue:
                self._answer_poll_with_noop()
        elif packet.type is PacketType.UPGRADE and self._probed:
            self._complete_upgrade(channel)
        else:
            # Stricter than the reference, which also takes C{5} without a
            # probe: the probe is what shows the WebSocket carries packets
            # both ways, so anything else ends this WebSocket (not the
            # session, which goes on polling).
            self.refuse(
                "unexpected packet during upgrade",
                "engine session {engine_sid}: upgrade refused, {packet_type} "
                "where the probe was expected",
                "unexpected packet during upgrade",
                WS_PROTOCOL_ERROR,
                channel=channel,
                packet_type=packet.type.name,
            )

    def _complete_upgrade(self, channel: WebSocketChannel) -> None:
        self._abandon_upgrade()
        self._cancel_repoll_deadline()
        if self.state is SessionState.CLOSED:
            channel.close_channel(WS_NORMAL, "session closed")
            return
        # A GET still pending belongs to the discarded polling transport.
        if self._poll is not None:
            if self._queue:
                self._flush()
            else:
                self._answer_poll_with_noop()
        self._ws = channel
        self._transport_name = WEBSOCKET
        self.upgraded = True
        if loglevels.debug:
            self._rejections.lifecycle(
                LogLevel.debug,
                _log,
                "upgraded",
                "engine session {engine_sid} upgraded",
                engine_sid=self.sid,
            )
        self._flush()

    def websocket_lost(
        self,
        channel: WebSocketChannel,
        reason: str = REASON_TRANSPORT_CLOSE,
        kind: CloseKind = CloseKind.LOST,
    ) -> None:
        """WebSocket C{channel} closed (by the client, the network or a limit).

        @param kind: reported as L{close_kind} when C{channel} was the
            session's transport: L{CloseKind.CLIENT} when the client sent a
            deliberate close frame.
        """
        if channel is self._ws:
            self._ws = None
            self._finish(reason, notify=None, kind=kind)
        elif channel is self._probe:
            self._abandon_upgrade()

    # -- closing ----------------------------------------------------------

    def _finish(
        self,
        reason: str,
        notify: Packet | None,
        ws_code: int = WS_NORMAL,
        kind: CloseKind = CloseKind.SERVER,
    ) -> None:
        """Close for good: stop timers, release transports, tell the application."""
        if self.state is SessionState.CLOSED:
            return
        self.state = SessionState.CLOSED
        self.close_reason = reason
        self._close_kind = kind
        self._cancel_heartbeat()
        if self._flush_pending:
            self._flush_pending = False
            self._flushes.discard(self)
        for call in (self._close_call, self._upgrade_call, self._repoll_call):
            if call is not None and call.active():
                call.cancel()
        self._close_call = self._upgrade_call = self._repoll_call = None
        self._queue = []
        self._queued_bytes = 0
        if self._poll is not None and notify is not None:
            responder, self._poll = self._poll, None
            responder.respond(packets.encode_payload([notify]))
        self._poll = None
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.close_channel(ws_code, reason)
        probe, self._probe = self._probe, None
        if probe is not None:
            probe.close_channel(WS_NORMAL, reason)
        # Per-connection lifecycle at debug: the reference logs only room joins and
        # leaves, and these events per connection are costly (docs/performance.md,
        # "Joins 1/4"). Room join/leave stay at info (signaling/handlers.py).
        if loglevels.debug:
            self._rejections.lifecycle(
                LogLevel.debug,
                _log,
                "closed",
                "engine session {engine_sid} closed ({reason})",
                engine_sid=self.sid,
                reason=reason,
            )
        self._on_closed(self)
        try:
            self._application.on_close(self, reason)
        except Exception:  # noqa: BLE001 - error boundary: log, close this session
            _log.failure(
                "application failed in on_close of engine session {engine_sid}",
                engine_sid=self.sid,
            )
