"""Settings: one immutable object, read once at start-up.

Nothing else in the package reads the environment. Each component receives
the slice it needs (C{settings.engine}, C{settings.redis} ...), so lower
layers never see settings that belong to upper ones.

The shapes and defaults live here; parsing the environment, C{.env} files and
twistd options into them is done by L{privydrop.settings.sources.settings_from_options},
which validates every value once and names the variable and the value when one
is wrong. This module imports nothing of the package.
"""

from __future__ import annotations

from typing import Literal

import attrs

Environment = Literal["development", "production"]


class ConfigError(Exception):
    """A setting has an invalid value, or a required one is missing.

    The message names the variable (or option) and the offending value, so
    the operator can fix the right line of the right file.
    """

#: Origins the Node backend allows in development besides CORS_ORIGIN.
DEV_EXTRA_ORIGINS: tuple[str, ...] = ("http://localhost:3002",)
#: Patterns (full-match regular expressions) allowed in development: LAN hosts.
DEV_ORIGIN_PATTERNS: tuple[str, ...] = (r"http://192\.168\.\d{1,3}\.\d{1,3}:3002",)


@attrs.frozen
class OriginSettings:
    """Which browser origins may call the API and open sockets.

    C{allow_any} is for the protocol test servers (CORS C{*}); PrivyDrop
    itself always runs with an explicit list.
    """

    origins: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    allow_any: bool = False


@attrs.frozen
class SentinelSettings:
    """The Sentinels that name the current Redis master, and how to ask them.

    With these, the client never uses a fixed address: every connection
    attempt asks the Sentinels where the master is (C{SENTINEL
    get-master-addr-by-name}), checks that the server it reaches is the
    master (C{ROLE}), and reconnects there after a failover.
    """

    #: C{(host, port)} of each Sentinel, asked in this order (the last one
    #: that answered first).
    addresses: tuple[tuple[str, int], ...]
    #: The name the Sentinels monitor the master under (C{sentinel monitor <name> ...}).
    master: str
    #: The Sentinels' own password (their C{requirepass}); None for none.
    password: str | None = attrs.field(default=None, repr=False)
    #: Seconds one Sentinel may take to answer, connection included, before
    #: the next one is asked.
    timeout: float = 0.5
    #: Longest wait, seconds, between two attempts to reconnect to the master
    #: (each asks the Sentinels first): connections follow a failover within
    #: about this long after the promotion.
    reconnect_max_delay: float = 1.0


@attrs.frozen
class RedisSettings:
    """Where Redis is and how long we wait for it.

    With C{sentinel} set, C{host} and C{port} are unused: the Sentinels name
    the master; C{password} and C{db} are still the master's.
    """

    host: str = "127.0.0.1"
    port: int = 6379
    password: str | None = None
    db: int = 0
    #: Seconds a single store operation may take before it fails with 503.
    command_timeout: float = 2.0
    #: Seconds to wait for the initial connection in production before giving up.
    connect_timeout: float = 5.0
    pool_size: int = 8
    #: Pub/sub channels between processes are named C{<prefix>#<namespace>#}.
    #: Pub/sub ignores the db index: deployments sharing one Redis server need
    #: different prefixes.
    channel_prefix: str = "privydrop"
    #: Find the master through Sentinel instead of at C{host}:C{port}.
    sentinel: SentinelSettings | None = None


@attrs.frozen
class EngineSettings:
    """Engine.IO v4 server settings, with the reference server's defaults."""

    path: str = "/socket.io/"
    ping_interval_ms: int = 25_000
    ping_timeout_ms: int = 20_000
    #: maxHttpBufferSize / maxPayload: largest message or polling payload, bytes.
    max_payload: int = 1_000_000
    transports: tuple[str, ...] = ("polling", "websocket")
    allow_upgrades: bool = True
    #: Seconds allowed for the polling->websocket upgrade to complete.
    upgrade_timeout_s: float = 10.0
    #: Seconds a polling session closed by the server waits for the client's
    #: next GET to collect its last packets before it is dropped.
    polling_close_timeout_s: float = 30.0
    #: Seconds between two warnings of the same cause about rejected client
    #: input; the ones in between are counted (see privydrop.logs.throttle).
    rejection_log_interval_s: float = 10.0
    #: Largest number of packets accepted in one polling POST payload.
    max_packets_per_payload: int = 1_000
    #: Bytes queued for one session (server -> client) before it is closed.
    max_buffered_bytes: int = 4_000_000
    #: Open sessions per process that have not yet said anything beyond the
    #: handshake; past it, the oldest of them is closed for a new one.
    max_pending_sessions: int = 10_000
    #: Open sessions of one client (its rate-limit key,
    #: L{privydrop.web.clientip.rate_limit_key}); more handshakes get 429.
    max_sessions_per_ip: int = 256
    #: Sessions of one client that have not said anything beyond the
    #: handshake; more handshakes get 429.
    max_pending_sessions_per_ip: int = 16
    #: Largest WebSocket frame accepted, bytes (max_payload when 0).
    max_frame_bytes: int = 0
    #: Fragments one WebSocket message may be split into.
    max_fragments: int = 64
    #: Outbound bytes buffered on one WebSocket/TCP connection before it is dropped.
    max_outbound_buffer: int = 8_000_000
    #: Seconds a client may take to finish the WebSocket opening handshake.
    ws_open_handshake_timeout_s: float = 5.0
    #: Seconds to wait for the client's close frame before dropping the connection.
    ws_close_handshake_timeout_s: float = 1.0
    #: Whether Engine.IO/Autobahn log lines may name the client's address
    #: (mirror of HttpSettings.log_client_ips).
    log_client_ips: bool = False
    origins: OriginSettings = OriginSettings(allow_any=True)


@attrs.frozen
class SocketIOSettings:
    """Socket.IO v5 server settings."""

    connect_timeout_ms: int = 45_000
    max_attachments: int = 10
    max_pending_acks: int = 100
    max_rooms_per_socket: int = 64
    #: Digits an ack id from a client may have (ids above 2^53-1, the
    #: largest a JavaScript client counts to exactly, are refused anyway).
    max_ack_id_digits: int = 16
    #: Bytes of a CONNECT packet's payload (C{auth}); a larger one is
    #: refused with CONNECT_ERROR without being parsed.
    max_auth_bytes: int = 4096
    #: Bytes of one Socket.IO packet a client may send: text header plus all
    #: of its binary attachments together.
    max_packet_bytes: int = 1_000_000
    #: Milliseconds between the CONNECT answer and what connect handlers
    #: emitted (0: the next reactor turn). Only the official protocol
    #: test-suite's client, which misses a second message arriving in the
    #: same TCP read, needs more (examples/socketio_echo.py).
    connect_answer_gap_ms: int = 0
    #: Seconds between two warnings of the same cause about a client closed
    #: for an invalid packet; the ones in between are counted.
    rejection_log_interval_s: float = 10.0
    #: Connection state recovery: how long (ms) a socket whose transport was
    #: lost without a deliberate close waits, still in its rooms, for its
    #: client to come back with its private session id; 0 turns recovery off
    #: (CONNECT answers carry C{sid} only and events no offset).
    recovery_window_ms: int = 120_000
    #: Events kept per socket for replay after a recovery. A PrivyDrop
    #: negotiation with one peer is an offer, an answer and a few dozen
    #: candidates; this covers one or two. Larger logs cost CPU on a busy
    #: server, not only memory: every relayed event pushes out an entry
    #: long since evicted from the CPU caches (docs/performance.md).
    recovery_max_packets: int = 64
    #: Bytes of those events kept per socket (the older ones go first). An
    #: SDP offer is a few kB, a candidate a few hundred bytes: 32 KiB holds
    #: a negotiation or two and caps what one socket can pin in memory.
    recovery_max_bytes: int = 32_768

    @property
    def recovery_enabled(self) -> bool:
        return self.recovery_window_ms > 0


@attrs.frozen
class RoomSettings:
    """PrivyDrop room rules (the Node backend's numbers)."""

    room_ttl_s: int = 24 * 3600
    #: The socket->room mapping outlives the room by this much.
    socket_ttl_extra_s: int = 3600
    empty_room_ttl_s: int = 900
    max_room_id_length: int = 64
    #: Room ids of this length or longer may be "created" again (rejoin).
    rejoin_id_length: int = 8
    numeric_id_attempts: int = 10
    alphanumeric_id_attempts: int = 50

    @property
    def socket_ttl_s(self) -> int:
        """How long a socket's binding (and recovery record) is kept."""
        return self.room_ttl_s + self.socket_ttl_extra_s
    join_window_s: int = 5
    join_limit: int = 2
    join_rate_limit_enabled: bool = True
    #: Seconds between two checks that the rooms this process's sockets are
    #: in still exist with the incarnation they joined (0: no check).
    check_interval_s: int = 60
    #: Members of a room a join, leave, check or reap looks at for ghosts.
    prune_limit: int = 64


@attrs.frozen
class ClusterSettings:
    """How processes sharing one Redis notice each other's death
    (L{privydrop.cluster.nodes})."""

    #: Milliseconds between two heartbeats of a process.
    heartbeat_interval_ms: int = 2000
    #: Milliseconds a process's heartbeat must stay unchanged, across the
    #: judge's own successful heartbeats, before it is judged dead.
    node_timeout_ms: int = 10000
    #: Sockets of a dead process unbound per clean-up round trip.
    reap_batch: int = 100
    #: Milliseconds a process whose client came back to it waits for the
    #: process that held the socket to hand its log over (recovery).
    handover_timeout_ms: int = 1000
    #: Milliseconds a stopping process (SIGTERM, other processes alive)
    #: keeps serving handovers while its clients recover elsewhere.
    shutdown_handover_ms: int = 10000
    #: This process's stable name (a restarted process cleans up earlier
    #: ones of its name at start-up); C{""}: host name and listen endpoint.
    node_name: str = ""


@attrs.frozen
class TrackingSettings:
    """Referrer statistics."""

    ttl_s: int = 30 * 24 * 3600
    max_ref_length: int = 128
    max_referrers_per_day: int = 1_000


@attrs.frozen
class ApiSettings:
    """REST API limits."""

    max_body_bytes: int = 100 * 1024
    #: API calls per client IP per window; 0 turns the limit off.
    rate_limit_calls: int = 600
    rate_limit_window_s: int = 60
    #: logs_debug calls per client IP per window, besides the API budget
    #: (each writes a log line); 0 turns this budget off.
    logs_debug_rate_limit_calls: int = 30
    logs_debug_rate_limit_window_s: int = 60
    max_log_message_length: int = 2_000
    #: Longest socket id accepted by leave_room (Socket.IO ids are 20 characters).
    max_socket_id_length: int = 64
    #: Largest SDP or ICE candidate relayed by signaling, bytes of JSON.
    max_signal_bytes: int = 64 * 1024


@attrs.frozen
class HttpSettings:
    """Connection-level protection for the one HTTP port."""

    #: Seconds a client may take to send the request line and headers.
    header_timeout_s: float = 10.0
    #: Seconds a client may take to send a request body.
    body_timeout_s: float = 30.0
    #: Seconds an idle keep-alive connection is kept.
    idle_timeout_s: float = 60.0
    #: Peers whose X-Forwarded-For is believed (addresses or CIDR ranges).
    trusted_proxies: tuple[str, ...] = ("127.0.0.1/8", "::1/128")
    #: IPv6 clients are one client per network of this prefix length for
    #: every per-client limit (an IPv6 user has a whole /64 to choose from).
    rate_limit_ipv6_prefix: int = 64
    log_client_ips: bool = False
    #: Connections the kernel queues for a TCP or UNIX listener before the
    #: server accepts them (the C{listen(2)} backlog). Twisted's default is
    #: 50: a burst of connections beyond it waits in the kernel where no
    #: deadline of the server reaches it (or has its SYN dropped). 1024
    #: holds a burst of hundreds, as the systemd socket units do
    #: (C{Backlog=1024}); Linux caps it at C{net.core.somaxconn}.
    listen_backlog: int = 1024


@attrs.frozen
class TurnSettings:
    """TURN relays handed to clients with short-lived credentials.

    coturn's shared-secret scheme ("TURN REST API", C{use-auth-secret}): the
    server and coturn share C{secret}; each credential names its own expiry,
    so nothing is stored and no static password reaches a browser bundle.
    """

    #: The shared secret (coturn's C{static-auth-secret}); None: TURN is off.
    secret: str | None = attrs.field(default=None, repr=False)
    #: C{turn:}, C{turns:} and C{stun:} URLs given to clients.
    urls: tuple[str, ...] = ()
    #: Seconds a credential stays valid. WebRTC keeps refreshing its relay
    #: allocation with the credential it started with, so this must outlast
    #: the longest transfer; a day, like a room's TTL.
    credential_ttl_s: int = 24 * 3600

    @property
    def enabled(self) -> bool:
        """Whether credentials are handed out (a secret and URLs are set)."""
        return bool(self.secret) and bool(self.urls)


@attrs.frozen
class MetricsSettings:
    """Prometheus metrics, served on a listener of their own.

    Off unless C{listen} is given; never the public port, so figures about
    the process (and the path C{/metrics}) are not published to clients.
    """

    #: A Twisted server endpoint string for C{GET /metrics}; None: off.
    listen: str | None = None
    #: Seconds between two measurements of the reactor's lag (how late a
    #: timer fires).
    lag_interval_s: float = 1.0

    @property
    def enabled(self) -> bool:
        """Whether metrics are collected and served."""
        return self.listen is not None


@attrs.frozen
class Settings:
    """Everything the server needs to know, validated."""

    environment: Environment = "development"
    #: A Twisted server endpoint string.
    listen: str = "tcp:3001"
    #: None: no Redis configured (embedded memory store in development).
    redis: RedisSettings | None = None
    origins: OriginSettings = OriginSettings(
        origins=DEV_EXTRA_ORIGINS, patterns=DEV_ORIGIN_PATTERNS
    )
    engine: EngineSettings = EngineSettings()
    socketio: SocketIOSettings = SocketIOSettings()
    rooms: RoomSettings = RoomSettings()
    tracking: TrackingSettings = TrackingSettings()
    api: ApiSettings = ApiSettings()
    http: HttpSettings = HttpSettings()
    turn: TurnSettings = TurnSettings()
    cluster: ClusterSettings = ClusterSettings()
    metrics: MetricsSettings = MetricsSettings()
    #: The .env file the settings were read from, if any (for the start-up log).
    env_file: str | None = None
    #: The lowest level of the package's log events that is recorded
    #: (C{debug}, C{info}, C{warn}, C{error}, C{critical}); None when not
    #: given: C{info}, or what C{twist --log-level} says.
    log_level: str | None = None

    @property
    def production(self) -> bool:
        return self.environment == "production"
