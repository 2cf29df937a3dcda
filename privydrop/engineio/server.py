"""The Engine.IO server: session registry, handshake, request checks.

L{EngineServer} owns every open L{Session} of this process, gives each an
unguessable sid, builds the handshake packet and checks the query of every
request the same way for both transports (engine.io-protocol v4,
"Handshake"; error codes in L{privydrop.engineio.errors}). It knows nothing
of twisted.web or Autobahn, and nothing of Socket.IO.

Handshakes are cheap for a client (one GET) and sessions are not for the
server, so one client cannot hold more than C{max_sessions_per_ip} sessions,
nor more than C{max_pending_sessions_per_ip} that have said nothing since
their handshake; a handshake past either gets 429 (L{TooManySessions}). The
client is the handshake's rate-limit key (L{handshake_client_key}: its
address under the trusted-proxy rule, an IPv6 client by its network). When
the whole process holds C{max_pending_sessions} silent sessions, the oldest
of them is closed to admit a new one: a visitor's session speaks within a
round trip of its handshake, so the ones left silent longest are a flood's,
and new visitors keep getting in.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NoReturn

import orjson
from twisted.internet.interfaces import IReactorTime
from twisted.logger import LogLevel

from privydrop.engineio.errors import EngineError, EngineRequestError
from privydrop.engineio.interface import (
    CloseKind,
    EngineApplication,
    EngineSid,
    Handshake,
)
from privydrop.engineio.packets import Packet, PacketType
from privydrop.engineio.session import (
    POLLING,
    REASON_SHUTDOWN,
    WEBSOCKET,
    WS_GOING_AWAY,
    FlushQueue,
    Session,
    SessionState,
)
from privydrop.logs import levels as loglevels
from privydrop.logs.levels import Logger
from privydrop.logs.throttle import WarningThrottle
from privydrop.settings import EngineSettings
from privydrop.web.clientip import (
    DEFAULT_IPV6_PREFIX,
    client_ip,
    rate_limit_key,
    trusted_proxies,
)
from privydrop.web.origins import origin_allowed

_log = Logger()

#: Random bytes in a sid: 15 bytes are 20 base64url characters, 120 bits.
SID_BYTES = 15
PROTOCOL_VERSION = "4"


#: Close reason of a silent session closed to admit a new one.
REASON_EVICTED = "max_pending_sessions reached"

#: How a handshake's client is told apart for the per-client caps.
ClientKeyOf = Callable[[Handshake], str]


class TooManySessions(EngineRequestError):
    """A handshake refused because its client holds too many sessions, or
    too many silent ones (HTTP 429).

    @ivar limit: the name of the setting reached.
    """

    def __init__(self, limit: str) -> None:
        super().__init__(EngineError.BAD_REQUEST, status=429)
        self.limit = limit


def handshake_client_key(
    proxies: Sequence[str] = (), ipv6_prefix: int = DEFAULT_IPV6_PREFIX
) -> ClientKeyOf:
    """The rate-limit key of a handshake's client, as everywhere
    (L{privydrop.web.clientip}).

    @param proxies: the trusted proxies (C{TRUSTED_PROXIES}) whose
        X-Forwarded-For is believed; none by default.
    @param ipv6_prefix: C{RATE_LIMIT_IPV6_PREFIX}.
    """
    trusted = trusted_proxies(tuple(proxies))

    def key_of(handshake: Handshake) -> str:
        forwarded = handshake.headers.get("x-forwarded-for")
        address = client_ip(handshake.remote_address, [forwarded] if forwarded else [], trusted)
        return rate_limit_key(address, ipv6_prefix)

    return key_of


def _new_sid() -> EngineSid:
    return EngineSid(secrets.token_urlsafe(SID_BYTES))


class EngineServer:
    """Every Engine.IO session of this process.

    @ivar settings: the Engine.IO settings it was built with.
    """

    def __init__(
        self,
        clock: IReactorTime,
        settings: EngineSettings,
        application: EngineApplication,
        sid_factory: Callable[[], EngineSid] = _new_sid,
        wall_clock: Callable[[], float] = time.time,
        client_key: ClientKeyOf | None = None,
    ) -> None:
        """
        @param clock: timers for every session (the reactor, or a Clock in tests).
        @param settings: intervals, limits, transports, origins.
        @param application: receives every session's open, messages and close.
        @param sid_factory: makes session ids; tests may make them predictable.
        @param wall_clock: epoch seconds for L{Handshake.issued_ms}.
        @param client_key: which client a handshake comes from, for the
            per-client caps (L{handshake_client_key}); the direct peer's
            address when None.
        """
        self.settings = settings
        self._clock = clock
        self._application = application
        self._sid_factory = sid_factory
        self._wall_clock = wall_clock
        self._client_key = client_key if client_key is not None else handshake_client_key()
        self._sessions: dict[EngineSid, Session] = {}
        #: The silent sessions, oldest first (the next to evict).
        self._pending: dict[EngineSid, None] = {}
        #: Each session's client, and how many sessions (silent ones) each client holds.
        self._keys: dict[EngineSid, str] = {}
        self._per_client: dict[str, int] = {}
        self._pending_per_client: dict[str, int] = {}
        #: Rate-limited warnings about rejected client input, for every transport.
        self.rejections = WarningThrottle(clock, settings.rejection_log_interval_s)
        #: Sessions with packets to write; transports hold it while they
        #: handle a read, so what the read caused is written right after it.
        self.flushes = FlushQueue(clock)
        self._handshake_json = {
            "pingInterval": settings.ping_interval_ms,
            "pingTimeout": settings.ping_timeout_ms,
            "maxPayload": settings.max_payload,
        }

    @property
    def clock(self) -> IReactorTime:
        """The timers of every session (and of its transports' deadlines)."""
        return self._clock

    @property
    def clients_count(self) -> int:
        """Open sessions (the reference server's C{clientsCount})."""
        return len(self._sessions)

    @property
    def pending_count(self) -> int:
        """Open sessions that have sent nothing since their handshake."""
        return len(self._pending)

    def get_session(self, sid: str) -> Session | None:
        """The open session with C{sid}, or None."""
        return self._sessions.get(EngineSid(sid))

    def sessions(self) -> list[Session]:
        """A snapshot of the open sessions."""
        return list(self._sessions.values())

    # -- request checks ---------------------------------------------------

    def verify(
        self,
        query: Mapping[str, str],
        method: str,
        upgrade: bool,
        origin: str | None,
    ) -> Session | None:
        """Check a request's query the way the reference server does.

        @param query: query parameters (last value of each).
        @param method: the HTTP method.
        @param upgrade: whether it is a WebSocket upgrade request.
        @param origin: the Origin header, if any.
        @return: the session named by C{sid}, or None for a handshake.
        @raise EngineRequestError: with the wire code to answer.
        """
        transport = query.get("transport")
        if (
            transport not in (POLLING, WEBSOCKET)
            or transport not in self.settings.transports
        ):
            raise EngineRequestError(EngineError.UNKNOWN_TRANSPORT)
        if origin is not None and not origin_allowed(origin, self.settings.origins):
            raise EngineRequestError(EngineError.FORBIDDEN)
        if query.get("EIO") != PROTOCOL_VERSION:
            raise EngineRequestError(EngineError.UNSUPPORTED_PROTOCOL_VERSION)
        sid = query.get("sid")
        if sid:
            session = self._sessions.get(EngineSid(sid))
            if session is None:
                raise EngineRequestError(EngineError.UNKNOWN_SID)
            if not upgrade and session.transport_name != transport:
                raise EngineRequestError(EngineError.BAD_REQUEST)
            if upgrade and transport != WEBSOCKET:
                raise EngineRequestError(EngineError.BAD_REQUEST)
            return session
        if method != "GET":
            raise EngineRequestError(EngineError.BAD_HANDSHAKE_METHOD)
        if transport == WEBSOCKET and not upgrade:
            raise EngineRequestError(EngineError.BAD_REQUEST)
        if upgrade and transport != WEBSOCKET:
            raise EngineRequestError(EngineError.BAD_REQUEST)
        return None

    def admit(self, handshake: Handshake) -> str:
        """Check a handshake against its client's caps (see the module docstring).

        Called by a transport before it answers the handshake, and again by
        L{create_session}.

        @return: the handshake's client key.
        @raise TooManySessions: the client holds C{max_sessions_per_ip}
            sessions, or C{max_pending_sessions_per_ip} silent ones.
        """
        key = self._client_key(handshake)
        settings = self.settings
        if self._per_client.get(key, 0) >= settings.max_sessions_per_ip:
            self._refuse(key, "max_sessions_per_ip")
        if self._pending_per_client.get(key, 0) >= settings.max_pending_sessions_per_ip:
            self._refuse(key, "max_pending_sessions_per_ip")
        return key

    def _refuse(self, key: str, limit: str) -> NoReturn:
        self.rejections.warn(
            _log,
            limit,
            "engine handshake refused: {limit} reached by {client}",
            limit=limit,
            client=key if self.settings.log_client_ips else "a client",
        )
        raise TooManySessions(limit)

    def _evict_oldest_silent(self) -> None:
        """Close silent sessions, oldest first, until there is room for one more."""
        while self._pending and len(self._pending) >= self.settings.max_pending_sessions:
            sid = next(iter(self._pending))
            self.rejections.warn(
                _log,
                "max_pending_sessions",
                "engine session {engine_sid} closed: {limit} reached, the oldest silent "
                "session makes room for a new one",
                engine_sid=sid,
                limit="max_pending_sessions",
            )
            session = self._sessions.get(sid)
            if session is not None:
                session.force_close(REASON_EVICTED)
            self._forget(sid)

    # -- sessions ---------------------------------------------------------

    def create_session(self, transport_name: str, handshake: Handshake) -> Session:
        """Register a new session; the transport attaches itself, then calls L{open}.

        @param transport_name: the transport of the handshake request.
        @param handshake: the handshake request's details.
        @raise TooManySessions: see L{admit}.
        """
        key = self.admit(handshake)
        self._evict_oldest_silent()
        sid = self._sid_factory()
        while sid in self._sessions:
            sid = self._sid_factory()
        session = Session(
            sid,
            self._clock,
            self.settings,
            handshake,
            self._application,
            transport_name,
            on_closed=self._session_closed,
            on_active=self._session_active,
            rejections=self.rejections,
            flushes=self.flushes,
        )
        self._sessions[sid] = session
        self._pending[sid] = None
        self._keys[sid] = key
        self._per_client[key] = self._per_client.get(key, 0) + 1
        self._pending_per_client[key] = self._pending_per_client.get(key, 0) + 1
        return session

    def open(self, session: Session) -> None:
        """Send the handshake packet and tell the application the session opened."""
        session.start(self.open_packet(session))
        # Per-connection lifecycle is debug (room joins and leaves are info):
        # building these events is a measurable share of a join's CPU
        # (docs/performance.md).
        if loglevels.debug:
            self.rejections.lifecycle(
                LogLevel.debug,
                _log,
                "opened",
                "engine session {engine_sid} opened over {transport}",
                engine_sid=session.sid,
                transport=session.transport_name,
            )
        if session.state is not SessionState.OPEN:
            return
        try:
            self._application.on_open(session)
        except Exception:  # noqa: BLE001 - error boundary: log, close this session
            _log.failure(
                "application failed in on_open of engine session {engine_sid}",
                engine_sid=session.sid,
            )
            session.force_close("forced close")

    def open_packet(self, session: Session) -> Packet:
        """The handshake C{open} packet for C{session}."""
        upgrades: list[str] = []
        if (
            session.transport_name == POLLING
            and self.settings.allow_upgrades
            and WEBSOCKET in self.settings.transports
        ):
            upgrades.append(WEBSOCKET)
        body = {"sid": session.sid, "upgrades": upgrades, **self._handshake_json}
        return Packet(PacketType.OPEN, orjson.dumps(body).decode("utf-8"))

    def issued_ms(self) -> int:
        return int(self._wall_clock() * 1000)

    def close_all(self, reason: str = REASON_SHUTDOWN, *, linger: bool = True) -> None:
        """Close every session (shutdown), as the reference server's C{close()}.

        Queued packets are still delivered: WebSockets get them and a
        going-away close now; a polling client gets them with a close packet
        in its pending or next GET (so it reconnects rather than reporting an
        error), within C{polling_close_timeout_s}.

        @param linger: False when no further GET can arrive (the listener has
            already stopped): polling sessions with no GET pending are then
            ended at once, so the layer above cleans up now instead of after
            C{polling_close_timeout_s}.
        """
        for session in list(self._sessions.values()):
            session.close(reason, WS_GOING_AWAY, CloseKind.SHUTDOWN)
            if not linger and session.state is not SessionState.CLOSED:
                session.force_close(reason, WS_GOING_AWAY, CloseKind.SHUTDOWN)

    def _session_closed(self, session: Session) -> None:
        if self._sessions.get(session.sid) is session:
            self._forget(session.sid)

    def _session_active(self, session: Session) -> None:
        self._no_longer_pending(session.sid)

    def _no_longer_pending(self, sid: EngineSid) -> None:
        if sid in self._pending:
            del self._pending[sid]
            _decrement(self._pending_per_client, self._keys[sid])

    def _forget(self, sid: EngineSid) -> None:
        """Take a closed session out of the registry and its client's counts."""
        self._no_longer_pending(sid)
        self._sessions.pop(sid, None)
        key = self._keys.pop(sid, None)
        if key is not None:
            _decrement(self._per_client, key)


def _decrement(counts: dict[str, int], key: str) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)
