"""Where settings come from: defaults < C{.env} file < environment < twistd options.

This module turns those sources into one validated L{privydrop.settings.Settings}.
The variables are the Node backend's (C{PORT}/C{BACKEND_PORT}, C{NODE_ENV},
C{CORS_ORIGIN}, C{REDIS_HOST}, C{REDIS_PORT}, C{REDIS_PASSWORD},
C{DISABLE_JOIN_RATE_LIMIT}) so an operator's existing C{.env} keeps working,
plus one named variable per limit. L{VARIABLES} is the single table of them:
L{privydrop.tap.Options} builds its options from it and the README's
configuration table mirrors it.

It never reads C{os.environ} itself: the caller passes the environment in.
The only I/O is reading the C{.env} file.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from typing import Any, Callable, Mapping, Sequence, TypeVar
from urllib.parse import unquote, urlsplit

import attrs

from privydrop.settings.sections import (
    DEV_EXTRA_ORIGINS,
    DEV_ORIGIN_PATTERNS,
    ApiSettings,
    ClusterSettings,
    ConfigError,
    EngineSettings,
    HttpSettings,
    MetricsSettings,
    OriginSettings,
    RedisSettings,
    RoomSettings,
    SentinelSettings,
    Settings,
    TrackingSettings,
    TurnSettings,
)

_T = TypeVar("_T")

DEFAULT_PORT = 3001


@attrs.frozen
class Variable:
    """One setting an operator can give.

    @ivar env: the environment / C{.env} variable name, or None for
        option-only settings.
    @ivar option: the twistd option's long name, or None for
        environment-only settings.
    @ivar default: the default as shown to people.
    @ivar help: what it means.
    @ivar flag: the option takes no value (present means on).
    """

    env: str | None
    option: str | None
    default: str
    help: str
    flag: bool = False


_D = Settings()
_API = ApiSettings()
_HTTP = HttpSettings()
_ENGINE = EngineSettings()
_ROOMS = RoomSettings()
_TRACK = TrackingSettings()
_REDIS = RedisSettings()
_TURN = TurnSettings()
_CLUSTER = ClusterSettings()
_SENTINEL = SentinelSettings(addresses=(), master="")
_SENTINEL_TIMEOUT = _SENTINEL.timeout
_SENTINEL_RECONNECT_MAX_DELAY = _SENTINEL.reconnect_max_delay
#: The port of a Sentinel given without one (Sentinel's own default).
DEFAULT_SENTINEL_PORT = 26379
_METRICS = MetricsSettings()
#: Shortest TURN_SECRET accepted: the secret signs every credential.
MIN_TURN_SECRET_LENGTH = 16
#: The IPv6 prefix lengths RATE_LIMIT_IPV6_PREFIX accepts: a /48 is a whole
#: site, a /128 one address.
MIN_IPV6_PREFIX = 48
MAX_IPV6_PREFIX = 128

#: Every setting, in the order the README and C{--help} list them.
VARIABLES: tuple[Variable, ...] = (
    Variable(None, "env-file", "./.env.<NODE_ENV> if present",
             "Read settings from this .env file (must exist). Without it, "
             ".env.production or .env.development in the working directory is read "
             "according to NODE_ENV, when present."),
    Variable("NODE_ENV", "environment", "development",
             "development or production. Production requires Redis and uses only "
             "the configured CORS origins."),
    Variable("BACKEND_PORT", "port", str(DEFAULT_PORT),
             "TCP port to listen on (all interfaces), when --listen is not given."),
    Variable("PORT", None, str(DEFAULT_PORT),
             "Same as BACKEND_PORT (which wins when both are set in the same place)."),
    Variable(None, "listen", "tcp:<port>",
             "Twisted server endpoint string, e.g. tcp:3001:interface=127.0.0.1 "
             "(overrides the port)."),
    Variable("CORS_ORIGIN", "cors-origin", "(none)",
             "Allowed browser origin, or a comma-separated list; * allows any. "
             "Development also allows http://localhost:3002 and http://192.168.x.y:3002."),
    Variable("REDIS_URL", "redis", "(none)",
             "redis://[:password@]host:port/db. Wins over REDIS_HOST/REDIS_PORT "
             "given in the same place."),
    Variable("REDIS_HOST", None, "(none)",
             "Redis host. Redis is used when this or REDIS_URL is set; otherwise "
             "development uses the in-memory store and production refuses to start."),
    Variable("REDIS_PORT", None, str(_REDIS.port), "Redis port (with REDIS_HOST)."),
    Variable("REDIS_PASSWORD", None, "(none)",
             "Redis password (with REDIS_HOST, or REDIS_URL without a password)."),
    Variable("REDIS_DB", None, str(_REDIS.db),
             "Redis database index (with REDIS_HOST or REDIS_SENTINELS)."),
    Variable("REDIS_SENTINELS", "redis-sentinels", "(none)",
             "Comma-separated host:port of Redis Sentinels (port 26379 when left out): "
             "the master is the one they name, followed through failovers. Instead of "
             "REDIS_HOST/REDIS_URL (setting both is an error); REDIS_PASSWORD and "
             "REDIS_DB are the master's."),
    Variable("REDIS_SENTINEL_MASTER", "redis-sentinel-master", "(none)",
             "The name the Sentinels monitor the master under (sentinel monitor <name>); "
             "required with REDIS_SENTINELS."),
    Variable("REDIS_SENTINEL_PASSWORD", None, "(none)",
             "The Sentinels' own password (their requirepass), when they have one."),
    Variable("REDIS_SENTINEL_TIMEOUT", "redis-sentinel-timeout", str(_SENTINEL_TIMEOUT),
             "Seconds one Sentinel may take to answer, connection included, before the "
             "next one is asked."),
    Variable("REDIS_SENTINEL_RECONNECT_MAX_DELAY", "redis-sentinel-reconnect-max-delay",
             str(_SENTINEL_RECONNECT_MAX_DELAY),
             "With Sentinel, longest wait in seconds between two attempts to reconnect to "
             "the master (each asks the Sentinels first), so connections follow a "
             "failover within about this long after the promotion."),
    Variable("REDIS_COMMAND_TIMEOUT", "redis-command-timeout", str(_REDIS.command_timeout),
             "Seconds one store operation may take before the request fails with 503; "
             "also how long the store may be unusable before GET /health answers 503."),
    Variable("REDIS_CONNECT_TIMEOUT", "redis-connect-timeout", str(_REDIS.connect_timeout),
             "Seconds to wait for Redis at start-up."),
    Variable("REDIS_POOL_SIZE", "redis-pool-size", str(_REDIS.pool_size),
             "Connections in the Redis pool."),
    Variable("REDIS_CHANNEL_PREFIX", "redis-channel-prefix", _REDIS.channel_prefix,
             "Prefix of the pub/sub channels between processes. Pub/sub ignores the "
             "database index, so deployments sharing one Redis server need different "
             "prefixes; every process of one deployment needs the same."),
    Variable("CLUSTER_NODE_NAME", "cluster-node-name", "<host name>|<listen>",
             "This process's stable name among the processes sharing Redis: a process "
             "restarted under the same name cleans up what its killed predecessor left "
             "at once. Give each process of a host its own."),
    Variable("DISABLE_JOIN_RATE_LIMIT", "disable-join-rate-limit", "0",
             "1 turns off the per-IP join rate limit (2 joins per 5 s).", flag=True),
    Variable("JOIN_RATE_LIMIT", "join-rate-limit",
             "%d/%d" % (_ROOMS.join_limit, _ROOMS.join_window_s),
             "Fresh Socket.IO joins per client IP as N/seconds (the Node backend's 2/5)."),
    Variable("TRUSTED_PROXIES", "trusted-proxies", ",".join(_HTTP.trusted_proxies),
             "Comma-separated addresses or CIDR ranges whose X-Forwarded-For is "
             "believed; empty trusts none. The peer of a UNIX socket listener is "
             "always trusted."),
    Variable("RATE_LIMIT_IPV6_PREFIX", "rate-limit-ipv6-prefix",
             str(_HTTP.rate_limit_ipv6_prefix),
             "Prefix length (%d to %d) of the IPv6 network that counts as one client "
             "for every per-client limit; IPv4 clients count per address."
             % (MIN_IPV6_PREFIX, MAX_IPV6_PREFIX)),
    Variable("API_RATE_LIMIT", "api-rate-limit",
             "%d/%d" % (_API.rate_limit_calls, _API.rate_limit_window_s),
             "API calls per client IP as N/seconds; 0 turns the limit off. "
             "Health endpoints are exempt. With Redis, counted across processes."),
    Variable("LOGS_DEBUG_RATE_LIMIT", "logs-debug-rate-limit",
             "%d/%d" % (_API.logs_debug_rate_limit_calls, _API.logs_debug_rate_limit_window_s),
             "logs_debug calls per client IP as N/seconds, on top of API_RATE_LIMIT; "
             "0 turns this limit off."),
    Variable("MAX_BODY_BYTES", "max-body-bytes", str(_API.max_body_bytes),
             "Largest API request body; larger ones get 413 without being read."),
    Variable("MAX_ROOM_ID_LENGTH", "max-room-id-length", str(_ROOMS.max_room_id_length),
             "Longest room id accepted."),
    Variable("MAX_REF_LENGTH", "max-ref-length", str(_TRACK.max_ref_length),
             "Longest referrer accepted by set_track."),
    Variable("MAX_REFERRERS_PER_DAY", "max-referrers-per-day",
             str(_TRACK.max_referrers_per_day),
             "Distinct referrers counted per day; further new ones are dropped."),
    Variable("MAX_LOG_MESSAGE_LENGTH", "max-log-message-length",
             str(_API.max_log_message_length),
             "logs_debug messages are truncated to this many characters."),
    Variable("MAX_SOCKET_ID_LENGTH", "max-socket-id-length", str(_API.max_socket_id_length),
             "Longest socket id accepted by leave_room."),
    Variable("MAX_SIGNAL_BYTES", "max-signal-bytes", str(_API.max_signal_bytes),
             "Largest SDP or ICE candidate relayed by signaling, bytes of JSON."),
    Variable("ENGINE_MAX_PAYLOAD", "engine-max-payload", str(_ENGINE.max_payload),
             "Largest Engine.IO message or polling POST body, bytes."),
    Variable("ENGINE_PING_INTERVAL_MS", "engine-ping-interval", str(_ENGINE.ping_interval_ms),
             "Engine.IO heartbeat interval, milliseconds."),
    Variable("ENGINE_PING_TIMEOUT_MS", "engine-ping-timeout", str(_ENGINE.ping_timeout_ms),
             "Engine.IO heartbeat timeout, milliseconds."),
    Variable("HTTP_HEADER_TIMEOUT", "http-header-timeout", str(_HTTP.header_timeout_s),
             "Seconds a client may take to send the request line and headers."),
    Variable("HTTP_BODY_TIMEOUT", "http-body-timeout", str(_HTTP.body_timeout_s),
             "Seconds a client may take to send a request body."),
    Variable("HTTP_IDLE_TIMEOUT", "http-idle-timeout", str(_HTTP.idle_timeout_s),
             "Seconds an idle keep-alive connection is kept open."),
    Variable("LOG_CLIENT_IPS", "log-client-ips", "0",
             "1 includes client IP addresses in log events.", flag=True),
    Variable("LOG_LEVEL", "log-level", "info",
             "Lowest level of the server's log events that is recorded: debug, info, "
             "warn, error or critical. When not given, twist --log-level applies "
             "(twistd has no such option)."),
    Variable("LISTEN_BACKLOG", "listen-backlog", str(_HTTP.listen_backlog),
             "Connections the kernel queues before the server accepts them (the listen "
             "backlog; Linux caps it at net.core.somaxconn), for tcp:, tcp6:, ssl: and "
             "unix: listeners that do not set backlog= themselves; systemd sockets take "
             "theirs from the .socket unit. Twisted's default, 50, leaves a burst of "
             "connections waiting where no timeout reaches them."),
    Variable("TURN_SECRET", None, "(none)",
             "Secret shared with coturn (its static-auth-secret, with use-auth-secret), "
             "at least %d characters; with TURN_URLS, clients get short-lived TURN "
             "credentials from GET /api/ice_servers and in joinResponse. Environment or "
             ".env only, never on a command line." % (MIN_TURN_SECRET_LENGTH,)),
    Variable("TURN_URLS", "turn-urls", "(none)",
             "Comma-separated turn:, turns: and stun: URLs handed to clients with the "
             "credentials, e.g. turn:turn.example.com:3478?transport=udp,"
             "turns:turn.example.com:5349."),
    Variable("TURN_CREDENTIAL_TTL", "turn-credential-ttl", str(_TURN.credential_ttl_s),
             "Seconds a TURN credential stays valid. A browser refreshes its relay with "
             "the credential it started with, so this must outlast the longest transfer; "
             "the default is a day, the life of a room. Shorter limits what a leaked "
             "credential is worth."),
    Variable("METRICS_LISTEN", "metrics-listen", "(none: off)",
             "Twisted server endpoint string serving Prometheus metrics at /metrics, e.g. "
             "tcp:9101:interface=127.0.0.1. Loopback or a private interface only; it "
             "cannot be the public port."),
    Variable("METRICS_LAG_INTERVAL", "metrics-lag-interval", str(_METRICS.lag_interval_s),
             "Seconds between two measurements of the reactor lag metric (how late a "
             "timer fires), with METRICS_LISTEN."),
)



@attrs.frozen
class Limit:
    """A numeric limit of one settings section, settable by variable and option.

    Its type and default are the field's (L{privydrop.settings}); adding a limit
    here is all it takes to make it configurable and documented.
    """

    env: str
    option: str
    section: str
    field: str
    help: str
    minimum: float = 1


#: Limits of the real-time layers, set the same way as the ones above.
LIMITS: tuple[Limit, ...] = (
    Limit("ENGINE_UPGRADE_TIMEOUT", "engine-upgrade-timeout", "engine", "upgrade_timeout_s",
          "Seconds allowed for a polling to WebSocket upgrade to complete.", 0.001),
    Limit("ENGINE_MAX_PACKETS_PER_PAYLOAD", "engine-max-packets-per-payload", "engine",
          "max_packets_per_payload", "Packets accepted in one polling POST."),
    Limit("ENGINE_MAX_BUFFERED_BYTES", "engine-max-buffered-bytes", "engine",
          "max_buffered_bytes", "Bytes queued for one session before it is closed."),
    Limit("ENGINE_MAX_PENDING_SESSIONS", "engine-max-pending-sessions", "engine",
          "max_pending_sessions", "Open sessions per process that said nothing after the "
          "handshake; past it the oldest of them is closed to admit a new one."),
    Limit("ENGINE_MAX_SESSIONS_PER_IP", "engine-max-sessions-per-ip", "engine",
          "max_sessions_per_ip", "Open sessions of one client IP (IPv6: of its network, "
          "RATE_LIMIT_IPV6_PREFIX); further handshakes get 429."),
    Limit("ENGINE_MAX_PENDING_SESSIONS_PER_IP", "engine-max-pending-sessions-per-ip", "engine",
          "max_pending_sessions_per_ip", "Open sessions of one client IP that said nothing "
          "after the handshake; further handshakes get 429."),
    Limit("ENGINE_MAX_FRAGMENTS", "engine-max-fragments", "engine", "max_fragments",
          "Fragments one WebSocket message may be split into."),
    Limit("ENGINE_MAX_OUTBOUND_BUFFER", "engine-max-outbound-buffer", "engine",
          "max_outbound_buffer", "Bytes buffered for sending on one connection before it is dropped."),
    Limit("SOCKETIO_CONNECT_TIMEOUT_MS", "socketio-connect-timeout", "socketio",
          "connect_timeout_ms", "Milliseconds a client has to send its Socket.IO CONNECT."),
    Limit("SOCKETIO_MAX_ATTACHMENTS", "socketio-max-attachments", "socketio", "max_attachments",
          "Binary attachments in one Socket.IO packet.", 0),
    Limit("SOCKETIO_MAX_PENDING_ACKS", "socketio-max-pending-acks", "socketio",
          "max_pending_acks", "Acknowledgements one socket may leave unanswered."),
    Limit("SOCKETIO_MAX_ROOMS_PER_SOCKET", "socketio-max-rooms-per-socket", "socketio",
          "max_rooms_per_socket", "Socket.IO rooms one socket may be in."),
    Limit("SOCKETIO_MAX_PACKET_BYTES", "socketio-max-packet-bytes", "socketio",
          "max_packet_bytes", "Bytes of one Socket.IO packet, attachments included."),
    Limit("SOCKETIO_RECOVERY_WINDOW_MS", "socketio-recovery-window", "socketio",
          "recovery_window_ms",
          "Milliseconds a socket whose connection was lost (not closed on purpose) stays in "
          "its room for its client to recover it (connection state recovery); 0 turns "
          "recovery off.", 0),
    Limit("SOCKETIO_RECOVERY_MAX_PACKETS", "socketio-recovery-max-packets", "socketio",
          "recovery_max_packets", "Events kept per socket for replay after a recovery."),
    Limit("SOCKETIO_RECOVERY_MAX_BYTES", "socketio-recovery-max-bytes", "socketio",
          "recovery_max_bytes", "Bytes of events kept per socket for replay after a recovery."),
    Limit("SOCKETIO_MAX_AUTH_BYTES", "socketio-max-auth-bytes", "socketio",
          "max_auth_bytes", "Bytes of a Socket.IO CONNECT payload (auth); a larger one "
          "is refused with a connect_error.", 2),
    Limit("ROOM_CHECK_INTERVAL", "room-check-interval", "rooms", "check_interval_s",
          "Seconds between two checks that the rooms this process's sockets are in "
          "still exist (a room Redis lost is left); 0 turns the check off.", 0),
    Limit("ROOM_PRUNE_LIMIT", "room-prune-limit", "rooms", "prune_limit",
          "Members of a room one join, leave or clean-up looks at for ghosts "
          "(members whose binding is gone)."),
    Limit("CLUSTER_HEARTBEAT_INTERVAL_MS", "cluster-heartbeat-interval", "cluster",
          "heartbeat_interval_ms",
          "With Redis: milliseconds between two heartbeats of a process.", 10),
    Limit("CLUSTER_NODE_TIMEOUT_MS", "cluster-node-timeout", "cluster", "node_timeout_ms",
          "With Redis: milliseconds a process's heartbeat stays unchanged, while the "
          "judging process itself beats, before it is judged dead and its sockets are "
          "cleaned up (their peers told). At least twice the heartbeat interval.", 20),
    Limit("CLUSTER_REAP_BATCH", "cluster-reap-batch", "cluster", "reap_batch",
          "Sockets of a dead process unbound per clean-up round trip."),
    Limit("CLUSTER_HANDOVER_TIMEOUT_MS", "cluster-handover-timeout", "cluster",
          "handover_timeout_ms",
          "With Redis and recovery: milliseconds a process that a client came back to waits "
          "for the process that held the socket to hand its missed events over; past it "
          "that process is presumed dead and the socket is recovered without them.", 10),
    Limit("CLUSTER_SHUTDOWN_HANDOVER_MS", "cluster-shutdown-handover", "cluster",
          "shutdown_handover_ms",
          "With Redis and recovery: milliseconds a stopping process (SIGTERM) with other "
          "processes alive keeps serving handovers while its clients recover elsewhere.", 0),
)


def _limit_default(limit: Limit) -> Any:
    return getattr(getattr(_D, limit.section), limit.field)


VARIABLES = VARIABLES + tuple(
    Variable(limit.env, limit.option, str(_limit_default(limit)), limit.help)
    for limit in LIMITS
)

_VARIABLE_BY_OPTION = {v.option: v for v in VARIABLES if v.option is not None}


# -- .env files ---------------------------------------------------------------

_ENV_LINE = re.compile(
    r"^\s*(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<value>.*?)\s*$"
)
_DOUBLE_QUOTE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


def parse_env_file(text: str, name: str = ".env") -> dict[str, str]:
    """Parse the C{KEY=VALUE} lines of a C{.env} file.

    Supported, as dotenv writes them: blank lines and C{#} comments, an
    optional C{export } prefix, single-quoted values (literal), double-quoted
    values (with C{\\n}, C{\\t}, C{\\"} escapes), and unquoted values ending at
    an inline C{ #} comment. A later line wins over an earlier one.

    @param text: the file's contents.
    @param name: the file's name, for error messages.
    @raise ConfigError: naming the file and line of a line that is not
        C{KEY=VALUE} or has an unterminated quote.
    """
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _ENV_LINE.match(line)
        if match is None:
            raise ConfigError(
                "%s line %d: expected KEY=VALUE, got %r" % (name, number, stripped)
            )
        key, raw = match.group("key"), match.group("value")
        values[key] = _env_value(raw, name, number)
    return values


def _env_value(raw: str, name: str, number: int) -> str:
    if raw[:1] in ("'", '"'):
        quote = raw[0]
        end = _closing_quote(raw, quote)
        if end < 0:
            raise ConfigError("%s line %d: unterminated quote in %r" % (name, number, raw))
        rest = raw[end + 1 :].strip()
        if rest and not rest.startswith("#"):
            raise ConfigError(
                "%s line %d: unexpected text after quoted value: %r" % (name, number, raw)
            )
        body = raw[1:end]
        if quote == "'":
            return body
        return re.sub(
            r"\\(.)", lambda m: _DOUBLE_QUOTE_ESCAPES.get(m.group(1), m.group(0)), body
        )
    comment = re.search(r"\s#", raw)
    if comment is not None:
        raw = raw[: comment.start()]
    return raw.strip()


def _closing_quote(raw: str, quote: str) -> int:
    index = 1
    while index < len(raw):
        if raw[index] == "\\" and quote == '"':
            index += 2
            continue
        if raw[index] == quote:
            return index
        index += 1
    return -1


# -- layered look-up ----------------------------------------------------------


@attrs.frozen
class _Found:
    value: str
    #: How to name it in an error: C{PORT}, C{--port}, C{PORT (in .env.production)}.
    label: str
    name: str


class _Sources:
    """Values by variable name, looked up from the highest precedence down."""

    def __init__(self, layers: Sequence[tuple[str, Mapping[str, str]]]) -> None:
        #: (label format, values), highest precedence first.
        self._layers = list(reversed(layers))

    def find(self, *names: str) -> _Found | None:
        """The value of the first of C{names} set in the highest layer.

        Names are aliases in preference order: in one layer the first wins; a
        higher layer always wins over a lower one.
        """
        for label_format, values in self._layers:
            for name in names:
                if name in values:
                    return _Found(values[name], label_format.format(name=name), name)
        return None

    def text(self, name: str, default: str) -> str:
        found = self.find(name)
        return default if found is None else found.value

    def number(
        self,
        name: str,
        default: _T,
        convert: Callable[[str], _T],
        minimum: float | None = None,
    ) -> _T:
        found = self.find(name)
        if found is None:
            return default
        return _convert(found, convert, minimum)

    def flag(self, name: str) -> bool:
        found = self.find(name)
        if found is None:
            return False
        value = found.value.strip().lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("", "0", "false", "no", "off"):
            return False
        raise ConfigError("%s: expected 1 or 0, got %r" % (found.label, found.value))


def _convert(
    found: _Found, convert: Callable[[str], _T], minimum: float | None
) -> _T:
    kind = "an integer" if convert is int else "a number"
    try:
        value = convert(found.value.strip())
    except ValueError:
        raise ConfigError(
            "%s: expected %s, got %r" % (found.label, kind, found.value)
        ) from None
    if isinstance(value, float) and math.isnan(value):
        raise ConfigError("%s: expected %s, got %r" % (found.label, kind, found.value))
    if minimum is not None and value < minimum:  # type: ignore[operator]
        raise ConfigError(
            "%s: must be at least %s, got %r" % (found.label, minimum, found.value)
        )
    return value


def _port(found: _Found) -> int:
    port = _convert(found, int, 0)
    if port > 65535:
        raise ConfigError("%s: not a TCP port: %r" % (found.label, found.value))
    return port


# -- the pieces ---------------------------------------------------------------


def _environment(sources: _Sources) -> str:
    found = sources.find("NODE_ENV")
    if found is None or found.value.strip() == "":
        return "development"
    value = found.value.strip()
    if value not in ("development", "production"):
        raise ConfigError(
            "%s: expected development or production, got %r" % (found.label, found.value)
        )
    return value


def parse_redis_url(url: str, label: str = "REDIS_URL") -> RedisSettings:
    """Parse C{redis://[:password@]host[:port][/db]} into RedisSettings.

    @raise ConfigError: naming C{label} and the URL (password masked) when it
        is malformed.
    """
    shown = re.sub(r"(//[^/@]*:)[^/@]*@", r"\1***@", url)
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as e:
        raise ConfigError("%s: malformed Redis URL %r (%s)" % (label, shown, e)) from None
    if parts.scheme != "redis" or not parts.hostname:
        raise ConfigError(
            "%s: expected redis://[:password@]host:port/db, got %r" % (label, shown)
        )
    if parts.query or parts.fragment:
        raise ConfigError("%s: unexpected query in Redis URL %r" % (label, shown))
    path = parts.path.strip("/")
    db = 0
    if path:
        if not path.isdigit():
            raise ConfigError("%s: database must be a number in %r" % (label, shown))
        db = int(path)
    password = unquote(parts.password) if parts.password else None
    return RedisSettings(host=parts.hostname, port=port or 6379, password=password, db=db)


def _redis(sources: _Sources) -> tuple[RedisSettings | None, str | None]:
    with_sentinel = _sentinel(sources)
    found = sources.find("REDIS_URL", "REDIS_HOST")
    if found is not None and not found.value.strip():
        found = None
    if with_sentinel is not None:
        sentinel, found = with_sentinel
        redis = RedisSettings(
            password=sources.text("REDIS_PASSWORD", "") or None,
            db=sources.number("REDIS_DB", 0, int, 0),
            sentinel=sentinel,
        )
    elif found is None:
        return None, None
    elif found.name == "REDIS_URL":
        redis = parse_redis_url(found.value, found.label)
        if redis.password is None:
            password_found = sources.find("REDIS_PASSWORD")
            if password_found is not None and password_found.value:
                redis = attrs.evolve(redis, password=password_found.value)
    else:
        port_found = sources.find("REDIS_PORT")
        port = _REDIS.port if port_found is None else _port(port_found)
        password = sources.text("REDIS_PASSWORD", "") or None
        db = sources.number("REDIS_DB", 0, int, 0)
        redis = RedisSettings(host=found.value.strip(), port=port, password=password, db=db)
    redis = attrs.evolve(
        redis,
        command_timeout=sources.number(
            "REDIS_COMMAND_TIMEOUT", _REDIS.command_timeout, float, 0.001
        ),
        connect_timeout=sources.number(
            "REDIS_CONNECT_TIMEOUT", _REDIS.connect_timeout, float, 0.001
        ),
        pool_size=sources.number("REDIS_POOL_SIZE", _REDIS.pool_size, int, 1),
        channel_prefix=_channel_prefix(sources),
    )
    return redis, found.label


def _sentinel(sources: _Sources) -> tuple[SentinelSettings, _Found] | None:
    """The Sentinel settings, with how C{REDIS_SENTINELS} was found; None
    when no Sentinels are named.

    The other C{REDIS_SENTINEL_*} names without C{REDIS_SENTINELS} are a
    mistake (half a configuration), reported as such.
    """
    found = sources.find("REDIS_SENTINELS")
    master_found = sources.find("REDIS_SENTINEL_MASTER")
    password_found = sources.find("REDIS_SENTINEL_PASSWORD")
    if found is None or not found.value.strip():
        for other in (master_found, password_found):
            if other is not None and other.value.strip():
                raise ConfigError(
                    "%s is set but REDIS_SENTINELS is empty: name the Sentinels as "
                    "host:port,host:port" % (other.label,)
                )
        return None
    for name in ("REDIS_URL", "REDIS_HOST"):
        direct = sources.find(name)
        if direct is not None and direct.value.strip():
            raise ConfigError(
                "%s and %s are both set: with Sentinel the master's address comes "
                "from the Sentinels; remove %s (the master's password and database "
                "go in REDIS_PASSWORD and REDIS_DB)" % (found.label, direct.label, direct.label)
            )
    addresses = _sentinel_addresses(found)
    if master_found is None or not master_found.value.strip():
        raise ConfigError(
            "%s is set but REDIS_SENTINEL_MASTER is empty: give the name the Sentinels "
            "monitor the master under (sentinel monitor <name> ...)" % (found.label,)
        )
    master = master_found.value.strip()
    if any(not "!" <= char <= "~" for char in master):
        raise ConfigError(
            "%s: expected a master name without spaces or control characters, got %r"
            % (master_found.label, master_found.value)
        )
    password = password_found.value if password_found is not None else ""
    sentinel = SentinelSettings(
        addresses=addresses,
        master=master,
        password=password or None,
        timeout=sources.number("REDIS_SENTINEL_TIMEOUT", _SENTINEL_TIMEOUT, float, 0.001),
        reconnect_max_delay=sources.number(
            "REDIS_SENTINEL_RECONNECT_MAX_DELAY", _SENTINEL_RECONNECT_MAX_DELAY, float, 0.01
        ),
    )
    return sentinel, found


#: One Sentinel: a host name or IPv4 address, or a bracketed IPv6 address,
#: and an optional port.
_SENTINEL_ADDRESS = re.compile(
    r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?))"
    r"(?::(?P<port>\d{1,5}))?"
)


def _sentinel_addresses(found: _Found) -> tuple[tuple[str, int], ...]:
    addresses: list[tuple[str, int]] = []
    for item in found.value.split(","):
        text = item.strip()
        if not text:
            continue
        match = _SENTINEL_ADDRESS.fullmatch(text)
        port = int(match.group("port") or DEFAULT_SENTINEL_PORT) if match else 0
        if match is None or not 0 < port < 65536:
            raise ConfigError(
                "%s: %r is not a Sentinel address like host:26379 or [::1]:26379"
                % (found.label, text)
            )
        address = (match.group("ipv6") or match.group("host"), port)
        if address in addresses:
            raise ConfigError("%s: %r is named twice" % (found.label, text))
        addresses.append(address)
    if not addresses:
        raise ConfigError(
            "%s: expected host:port,host:port, got %r" % (found.label, found.value)
        )
    return tuple(addresses)


#: Characters a channel prefix cannot hold: the separator and glob syntax
#: (the subscription is the pattern C{<prefix>#*}).
_CHANNEL_PREFIX_FORBIDDEN = frozenset("#*?[]\\")


def _channel_prefix(sources: _Sources) -> str:
    found = sources.find("REDIS_CHANNEL_PREFIX")
    if found is None:
        return _REDIS.channel_prefix
    prefix = found.value.strip()
    if not prefix or _CHANNEL_PREFIX_FORBIDDEN & set(prefix):
        raise ConfigError(
            "%s: expected a non-empty name without # * ? [ ] or \\, got %r"
            % (found.label, found.value)
        )
    return prefix


_ORIGIN = re.compile(r"^https?://[^/\s?#]+$")


def _origins(sources: _Sources, environment: str) -> OriginSettings:
    found = sources.find("CORS_ORIGIN")
    configured: list[str] = []
    allow_any = False
    if found is not None:
        for item in found.value.split(","):
            origin = item.strip().rstrip("/")
            if not origin:
                continue
            if origin == "*":
                allow_any = True
                continue
            if not _ORIGIN.match(origin):
                raise ConfigError(
                    "%s: %r is not an origin like https://example.com"
                    % (found.label, item.strip())
                )
            configured.append(origin)
    if environment == "production" and (configured or allow_any):
        return OriginSettings(origins=tuple(configured), allow_any=allow_any)
    # Development, and (like the Node backend) production with no CORS_ORIGIN:
    # the configured origin plus the local development front-end.
    merged = tuple(dict.fromkeys(configured + list(DEV_EXTRA_ORIGINS)))
    return OriginSettings(origins=merged, patterns=DEV_ORIGIN_PATTERNS, allow_any=allow_any)


def _trusted_proxies(sources: _Sources) -> tuple[str, ...]:
    found = sources.find("TRUSTED_PROXIES")
    if found is None:
        return _HTTP.trusted_proxies
    networks = []
    for item in found.value.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ConfigError(
                "%s: %r is not an IP address or CIDR range" % (found.label, item)
            ) from None
    return tuple(networks)


def _ipv6_prefix(sources: _Sources) -> int:
    found = sources.find("RATE_LIMIT_IPV6_PREFIX")
    if found is None:
        return _HTTP.rate_limit_ipv6_prefix
    value = found.value.strip()
    if not (value.isascii() and value.isdigit()) or not (
        MIN_IPV6_PREFIX <= int(value) <= MAX_IPV6_PREFIX
    ):
        raise ConfigError(
            "%s: expected a prefix length from %d to %d, got %r"
            % (found.label, MIN_IPV6_PREFIX, MAX_IPV6_PREFIX, found.value)
        )
    return int(value)


def _rate(
    sources: _Sources, name: str, default: tuple[int, int], zero_allowed: bool
) -> tuple[int, int]:
    """An C{N/seconds} rate; C{0} (when allowed) means off."""
    found = sources.find(name)
    if found is None:
        return default
    value = found.value.strip()
    if zero_allowed and value == "0":
        return 0, default[1]
    match = re.fullmatch(r"(\d+)\s*/\s*(\d+)", value)
    if match is None or int(match.group(2)) < 1 or int(match.group(1)) < 1:
        example = "%d/%d" % default
        raise ConfigError(
            "%s: expected N/seconds (like %s)%s, got %r"
            % (found.label, example, " or 0" if zero_allowed else "", found.value)
        )
    return int(match.group(1)), int(match.group(2))


#: One ICE server URL (RFC 7064 for stun:, RFC 7065 for turn:/turns:): a host
#: name, IPv4 address or bracketed IPv6 address, an optional port, and for
#: TURN an optional transport.
_ICE_URL = re.compile(
    r"(?P<scheme>stun|turns?):"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"
    r"(?::(?P<port>\d{1,5}))?"
    r"(?:\?transport=(?P<transport>udp|tcp))?"
)


def _ice_urls(found: _Found) -> tuple[str, ...]:
    urls = []
    for item in found.value.split(","):
        url = item.strip()
        if not url:
            continue
        match = _ICE_URL.fullmatch(url)
        if match is None or (
            match.group("port") is not None and not 0 < int(match.group("port")) < 65536
        ) or (match.group("scheme") == "stun" and match.group("transport")):
            raise ConfigError(
                "%s: %r is not a URL like turn:host:3478?transport=udp, "
                "turns:host:5349 or stun:host:3478" % (found.label, url)
            )
        urls.append(url)
    return tuple(urls)


def _turn(sources: _Sources) -> TurnSettings:
    """TURN_SECRET and TURN_URLS go together: one without the other is a mistake."""
    secret_found = sources.find("TURN_SECRET")
    urls_found = sources.find("TURN_URLS")
    secret = secret_found.value.strip() if secret_found is not None else ""
    urls = _ice_urls(urls_found) if urls_found is not None else ()
    ttl = sources.number("TURN_CREDENTIAL_TTL", _TURN.credential_ttl_s, int, 60)
    if secret_found is not None and secret and len(secret) < MIN_TURN_SECRET_LENGTH:
        raise ConfigError(
            "%s: must be at least %d characters (try: openssl rand -hex 32)"
            % (secret_found.label, MIN_TURN_SECRET_LENGTH)
        )
    if secret and not urls:
        raise ConfigError(
            "%s is set but TURN_URLS is empty: give the turn: URLs of the coturn "
            "that shares the secret" % (secret_found.label,)  # type: ignore[union-attr]
        )
    if urls and not secret:
        raise ConfigError(
            "%s is set but TURN_SECRET is empty: coturn's static-auth-secret is "
            "needed to sign credentials" % (urls_found.label,)  # type: ignore[union-attr]
        )
    return TurnSettings(secret=secret or None, urls=urls, credential_ttl_s=ttl)


#: The names LOG_LEVEL accepts (C{twisted.logger}'s levels, and C{warning}).
LOG_LEVELS = ("debug", "info", "warn", "warning", "error", "critical")


def _log_level(sources: _Sources) -> str | None:
    found = sources.find("LOG_LEVEL")
    if found is None or not found.value.strip():
        return None
    value = found.value.strip().lower()
    if value not in LOG_LEVELS:
        raise ConfigError(
            "%s: expected debug, info, warn, error or critical, got %r"
            % (found.label, found.value)
        )
    return "warn" if value == "warning" else value


def _endpoint_port(endpoint: str) -> int | None:
    """The TCP port a C{tcp:}, C{tcp6:} or C{ssl:} endpoint string listens on.

    None for other endpoint types (C{unix:}, C{systemd:}, ...), whose
    sockets cannot be compared by a port number, and for strings that do
    not say; L{privydrop.service} reports those that are not endpoints.
    """
    parts = re.split(r"(?<!\\):", endpoint.strip())
    if parts[0] not in ("tcp", "tcp6", "ssl"):
        return None
    positional = [p for p in parts[1:] if "=" not in p]
    named = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    port = named.get("port", positional[0] if positional else None)
    return int(port) if port is not None and port.isdigit() else None


def _metrics(sources: _Sources, listen: str) -> MetricsSettings:
    """METRICS_LISTEN, kept off the public port (which it would share with
    every client)."""
    interval = sources.number(
        "METRICS_LAG_INTERVAL", _METRICS.lag_interval_s, float, 0.01
    )
    found = sources.find("METRICS_LISTEN")
    if found is None or not found.value.strip():
        return MetricsSettings(lag_interval_s=interval)
    endpoint = found.value.strip()
    port = _endpoint_port(endpoint)
    if port and port == _endpoint_port(listen):
        raise ConfigError(
            "%s: %r is the public port (%s); metrics need a port of their own, on "
            "loopback or a private interface" % (found.label, endpoint, listen)
        )
    return MetricsSettings(listen=endpoint, lag_interval_s=interval)


def _listen(sources: _Sources) -> str:
    found = sources.find("--listen")
    if found is not None and found.value.strip():
        return found.value.strip()
    port_found = sources.find("BACKEND_PORT", "PORT")
    port = DEFAULT_PORT if port_found is None else _port(port_found)
    return "tcp:%d" % (port,)


# -- assembling -----------------------------------------------------------------


def _option_layer(options: Mapping[str, Any]) -> dict[str, str]:
    """Options given on the command line, keyed by their variable's name.

    Option-only settings are keyed C{--<option>}.
    """
    values: dict[str, str] = {}
    for option, variable in _VARIABLE_BY_OPTION.items():
        value = options.get(option)
        if value is None or (variable.flag and not value):
            continue
        key = variable.env if variable.env is not None else "--" + option
        values[key] = "1" if variable.flag else str(value)
    return values


def _read_env_file(path: str, label: str) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError("%s: cannot read %r (%s)" % (label, path, e.strerror)) from None
    except UnicodeDecodeError:
        raise ConfigError("%s: %r is not UTF-8 text" % (label, path)) from None
    return parse_env_file(text, path)


def settings_from_options(
    options: Mapping[str, Any], environ: Mapping[str, str], cwd: str | None = None
) -> Settings:
    """Validate defaults, a C{.env} file, the environment and options into Settings.

    Precedence rises in that order.

    @param options: parsed twistd options (L{privydrop.tap.Options}).
    @param environ: the process environment (only C{tap} passes
        C{os.environ}; tests pass plain dicts).
    @param cwd: where to look for C{.env.<NODE_ENV>}; the working directory
        when None.
    @raise ConfigError: naming the variable and value that are wrong.
    """
    option_layer = ("{name}", _option_layer(options))
    # Option labels: the variable's option name, not its environment name.
    labels = {v.env: "--" + v.option for v in VARIABLES if v.env and v.option}
    environment_layer = ("{name}", dict(environ))

    env_file = options.get("env-file")
    file_values: dict[str, str] = {}
    file_label = "{name} (in %s)"
    if env_file:
        file_values = _read_env_file(env_file, "--env-file")
        file_label = file_label % (env_file,)
    else:
        # Which file depends on NODE_ENV as given by the environment or options.
        chosen = _environment(_LabelledSources([environment_layer, option_layer], labels))
        candidate = os.path.join(cwd or os.getcwd(), ".env." + chosen)
        if os.path.isfile(candidate):
            file_values = _read_env_file(candidate, ".env." + chosen)
            env_file = candidate
            file_label = file_label % (".env." + chosen,)

    sources = _LabelledSources(
        [(file_label, file_values), environment_layer, option_layer], labels
    )
    environment = _environment(sources)
    redis, _ = _redis(sources)
    origins = _origins(sources, environment)
    calls, window = _rate(
        sources, "API_RATE_LIMIT", (_API.rate_limit_calls, _API.rate_limit_window_s), True
    )
    logs_calls, logs_window = _rate(
        sources,
        "LOGS_DEBUG_RATE_LIMIT",
        (_API.logs_debug_rate_limit_calls, _API.logs_debug_rate_limit_window_s),
        True,
    )
    join_limit, join_window = _rate(
        sources, "JOIN_RATE_LIMIT", (_ROOMS.join_limit, _ROOMS.join_window_s), False
    )
    api = ApiSettings(
        max_body_bytes=sources.number("MAX_BODY_BYTES", _API.max_body_bytes, int, 1),
        rate_limit_calls=calls,
        rate_limit_window_s=window,
        logs_debug_rate_limit_calls=logs_calls,
        logs_debug_rate_limit_window_s=logs_window,
        max_log_message_length=sources.number(
            "MAX_LOG_MESSAGE_LENGTH", _API.max_log_message_length, int, 1
        ),
        max_socket_id_length=sources.number(
            "MAX_SOCKET_ID_LENGTH", _API.max_socket_id_length, int, 1
        ),
        max_signal_bytes=sources.number("MAX_SIGNAL_BYTES", _API.max_signal_bytes, int, 1),
    )
    http = HttpSettings(
        header_timeout_s=sources.number(
            "HTTP_HEADER_TIMEOUT", _HTTP.header_timeout_s, float, 0.001
        ),
        body_timeout_s=sources.number("HTTP_BODY_TIMEOUT", _HTTP.body_timeout_s, float, 0.001),
        idle_timeout_s=sources.number("HTTP_IDLE_TIMEOUT", _HTTP.idle_timeout_s, float, 0.001),
        trusted_proxies=_trusted_proxies(sources),
        rate_limit_ipv6_prefix=_ipv6_prefix(sources),
        log_client_ips=sources.flag("LOG_CLIENT_IPS"),
        listen_backlog=sources.number("LISTEN_BACKLOG", _HTTP.listen_backlog, int, 1),
    )
    engine = attrs.evolve(
        _ENGINE,
        max_payload=sources.number("ENGINE_MAX_PAYLOAD", _ENGINE.max_payload, int, 1),
        ping_interval_ms=sources.number(
            "ENGINE_PING_INTERVAL_MS", _ENGINE.ping_interval_ms, int, 1
        ),
        ping_timeout_ms=sources.number("ENGINE_PING_TIMEOUT_MS", _ENGINE.ping_timeout_ms, int, 1),
        origins=origins,
        # One switch for every layer that could log a peer's address.
        log_client_ips=http.log_client_ips,
    )
    rooms = attrs.evolve(
        _ROOMS,
        max_room_id_length=sources.number(
            "MAX_ROOM_ID_LENGTH", _ROOMS.max_room_id_length, int, 1
        ),
        join_rate_limit_enabled=not sources.flag("DISABLE_JOIN_RATE_LIMIT"),
        join_limit=join_limit,
        join_window_s=join_window,
    )
    tracking = attrs.evolve(
        _TRACK,
        max_ref_length=sources.number("MAX_REF_LENGTH", _TRACK.max_ref_length, int, 1),
        max_referrers_per_day=sources.number(
            "MAX_REFERRERS_PER_DAY", _TRACK.max_referrers_per_day, int, 1
        ),
    )
    sections: dict[str, Any] = {
        "engine": engine,
        "socketio": _D.socketio,
        "rooms": rooms,
        "cluster": attrs.evolve(
            _CLUSTER, node_name=sources.text("CLUSTER_NODE_NAME", "").strip()
        ),
    }
    for limit in LIMITS:
        default = _limit_default(limit)
        value = sources.number(limit.env, default, type(default), limit.minimum)
        sections[limit.section] = attrs.evolve(sections[limit.section], **{limit.field: value})
    _check_cluster(sections["cluster"], sources)
    listen = _listen(sources)
    return Settings(
        environment=environment,  # type: ignore[arg-type]
        listen=listen,
        redis=redis,
        origins=origins,
        engine=sections["engine"],
        socketio=sections["socketio"],
        rooms=sections["rooms"],
        tracking=tracking,
        api=api,
        http=http,
        turn=_turn(sources),
        cluster=sections["cluster"],
        metrics=_metrics(sources, listen),
        env_file=env_file,
        log_level=_log_level(sources),
    )


def _check_cluster(cluster: ClusterSettings, sources: _Sources) -> None:
    """A process must get at least two chances to beat before it is judged dead."""
    if cluster.node_timeout_ms < 2 * cluster.heartbeat_interval_ms:
        timeout = sources.find("CLUSTER_NODE_TIMEOUT_MS")
        interval = sources.find("CLUSTER_HEARTBEAT_INTERVAL_MS")
        raise ConfigError(
            "%s (%d) must be at least twice %s (%d)"
            % (
                "CLUSTER_NODE_TIMEOUT_MS" if timeout is None else timeout.label,
                cluster.node_timeout_ms,
                "CLUSTER_HEARTBEAT_INTERVAL_MS" if interval is None else interval.label,
                cluster.heartbeat_interval_ms,
            )
        )


class _LabelledSources(_Sources):
    """L{_Sources} that names option values by their option (C{--port})."""

    def __init__(
        self,
        layers: Sequence[tuple[str, Mapping[str, str]]],
        option_labels: Mapping[str, str],
    ) -> None:
        super().__init__(layers)
        self._option_labels = option_labels
        self._option_values = layers[-1][1]

    def find(self, *names: str) -> _Found | None:
        for name in names:
            if name in self._option_values:
                return _Found(
                    self._option_values[name], self._option_labels.get(name, name), name
                )
        return super().find(*names)
