"""The Redis store: L{IStore} over the Redis client's connection pool.

Every operation is one round trip: a plain command, or one Lua script
(C{scripts/*.lua}) sent with C{EVALSHA}; only when the server answers
C{NOSCRIPT} (first use after a restart or C{SCRIPT FLUSH}) is the script sent
again with C{EVAL}, which also caches it. Scripts make each operation atomic
across processes sharing the Redis.

The connections, their handshake (password, database, the name
C{privydrop:<node>:store}), pipelining and the deadline of each command
(C{RedisSettings.command_timeout}) are the client's
(L{privydrop.redis.pool}); this module turns the client's failures into
L{StoreUnavailable} with a message naming the server and the reason
("authentication failed (...)", "no answer in time", ...), which the API
answers with 503. Every command's outcome is also told to L{RedisStore.health}
(L{privydrop.store.health}), which C{GET /health} reads.

This module knows the key schema and nothing of PrivyDrop's policies, HTTP or
Socket.IO.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import orjson

import attrs
import txredisapi
from zope.interface import implementer

from privydrop.logs.levels import Logger
from privydrop.redis.errors import (
    ClientClosed,
    ConnectionLost,
    NotConnected,
    ReplyTimeout,
)
from privydrop.redis.handshake import client_name, is_auth_error
from privydrop.redis.pool import ConnectionPool
from privydrop.settings import RedisSettings
from privydrop.store import keys
from privydrop.store.health import StoreHealth
from privydrop.store.interface import (
    CallCounts,
    DEFAULT_PRUNE_LIMIT,
    Heartbeat,
    IStore,
    JoinOutcome,
    JoinResult,
    LeaveResult,
    NodeBeat,
    RateResult,
    RateWindow,
    ReapBatch,
    ReapedSocket,
    ReapStatus,
    RecoveryClaim,
    RoomCheck,
    RoomProbe,
    StoreError,
    StoreUnavailable,
)

_log = Logger()


@attrs.frozen
class Script:
    """A Lua script and its SHA1 (the name C{EVALSHA} knows it by)."""

    name: str
    source: bytes
    sha: str

    @classmethod
    def load(cls, name: str, *prelude: str) -> Script:
        """Read C{scripts/<name>.lua}, with shared snippets prepended."""
        directory = importlib.resources.files("privydrop.store") / "scripts"
        parts = [(directory / f"{part}.lua").read_bytes() for part in (*prelude, name)]
        source = b"\n".join(parts)
        return cls(name=name, source=source, sha=hashlib.sha1(source).hexdigest())


CREATE_ROOM = Script.load("create_room")
CREATE_FIRST_FREE_ROOM = Script.load("create_first_free_room")
JOIN_ROOM = Script.load("join_room", "rate_window", "membership")
LEAVE_ROOM = Script.load("leave_room", "membership")
CHECK_ROOMS = Script.load("check_rooms", "membership")
RECORD_ATTEMPT = Script.load("record_attempt", "rate_window")
TRACK_REFERRER = Script.load("track_referrer")
HEARTBEAT = Script.load("heartbeat")
CLAIM_REAP = Script.load("claim_reap")
REAP_NODE = Script.load("reap_node", "membership")
DEREGISTER_NODE = Script.load("deregister_node")
CLAIM_RECOVERY = Script.load("claim_recovery", "membership")
TAKE_RECOVERIES = Script.load("take_recoveries")
COUNT_CALLS = Script.load("count_calls")
ALL_SCRIPTS = (
    COUNT_CALLS,
    CREATE_ROOM,
    CREATE_FIRST_FREE_ROOM,
    JOIN_ROOM,
    LEAVE_ROOM,
    CHECK_ROOMS,
    RECORD_ATTEMPT,
    TRACK_REFERRER,
    HEARTBEAT,
    CLAIM_REAP,
    REAP_NODE,
    DEREGISTER_NODE,
    CLAIM_RECOVERY,
    TAKE_RECOVERIES,
)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _members(flat: Any) -> dict[str, str]:
    """C{{sid: node}} from a script's flat C{[sid, node, ...]} (or cjson's C{{}})."""
    if not isinstance(flat, list):
        return {}
    items = [_text(item) for item in flat]
    return dict(zip(items[0::2], items[1::2]))


def _incarnation(value: Any) -> int | None:
    text = _text(value) if value is not None else ""
    try:
        return int(text) if text else None
    except ValueError:
        # created_at written by something else than a room operation.
        return None


def _reaped_socket(entry: Any) -> ReapedSocket | None:
    """One entry of the reap script (JSON), or None when unreadable."""
    try:
        fields = orjson.loads(_text(entry))
        sid, room_id, incarnation, members = fields[:4]
        if len(fields) >= 6:
            return ReapedSocket(
                str(sid),
                str(room_id),
                int(incarnation),
                _members(members),
                pid=str(fields[4]),
                deadline_ms=int(fields[5]),
            )
        return ReapedSocket(str(sid), str(room_id), int(incarnation), _members(members))
    except (ValueError, TypeError):
        _log.warn("dropped an unreadable reap entry {entry!r}", entry=entry)
        return None


@implementer(IStore)
class RedisStore:
    """L{IStore} on Redis. Build with L{from_settings}; start with L{connect}."""

    def __init__(
        self,
        settings: RedisSettings,
        reactor: Any,
        *,
        node_id: str | None = None,
        reconnect_initial_delay: float = 0.2,
        reconnect_max_delay: float = 5.0,
    ) -> None:
        """
        @param settings: where Redis is; timeouts; pool size.
        @param reactor: provides C{IReactorTime} (deadlines) and
            C{IReactorTCP} (connections).
        @param node_id: this process's id, in the connections' name
            (C{privydrop:<node>:store}); C{privydrop:store} without one.
        @param reconnect_initial_delay: seconds before the first reconnection
            attempt of a pool slot; later ones back off exponentially.
        @param reconnect_max_delay: longest wait between reconnection attempts.
        """
        self._settings = settings
        self._reactor = reactor
        #: The outcome of every command, for C{GET /health}.
        self.health = StoreHealth(reactor, settings.command_timeout)
        self._pool = ConnectionPool(
            settings,
            reactor,
            name=client_name("store", node_id),
            reconnect_initial_delay=reconnect_initial_delay,
            reconnect_max_delay=reconnect_max_delay,
        )

    @classmethod
    def from_settings(
        cls, settings: RedisSettings, reactor: Any, *, node_id: str | None = None
    ) -> RedisStore:
        """A store for these settings; connections open on first use or L{connect}."""
        return cls(settings, reactor, node_id=node_id)

    @property
    def settings(self) -> RedisSettings:
        return self._settings

    @property
    def pool(self) -> ConnectionPool:
        """The store's connections (for diagnostics and tests)."""
        return self._pool

    def _where(self) -> str:
        return f"Redis at {self._pool.address}"

    def start(self) -> None:
        """Start opening the pool's connections (idempotent)."""
        self._pool.start()

    async def connect(self) -> None:
        """Open the pool and check Redis answers, within C{connect_timeout}.

        Also loads the scripts, so the first operations need no C{EVAL}.
        For production start-up: fail fast with a clear message.

        @raise StoreUnavailable: naming the server and why (unreachable,
            authentication failed, no answer in time).
        """
        self.start()
        deadline = self._reactor.seconds() + self._settings.connect_timeout
        await self._command(("PING",), deadline)
        for script in ALL_SCRIPTS:
            await self._command(("SCRIPT", "LOAD", script.source), deadline)
        _log.info(
            "connected to redis {address} db {db}",
            address=self._pool.address,
            db=self._settings.db,
        )

    # -- the bounded command path ---------------------------------------------

    def _unavailable(self, why: str, started: float | None = None) -> StoreUnavailable:
        """The failure to raise; with C{started}, one of a command begun then,
        recorded as such in L{health}."""
        error = StoreUnavailable(f"{self._where()}: {why}")
        if started is not None:
            self.health.failed(started, str(error))
        return error

    async def _command(self, args: Sequence[Any], deadline: float | None = None) -> Any:
        """Send one command on the pool, before the deadline.

        @param deadline: the reactor time by which the reply must be in
            (by default C{command_timeout} from now).

        @raise StoreUnavailable: on timeout, lost connection, or refusal.
        @raise txredisapi.ResponseError: for C{NOSCRIPT} (the caller retries
            with C{EVAL}).
        @raise StoreError: an argument cannot be encoded.
        """
        started = self._reactor.seconds()
        try:
            reply = await self._pool.execute(args, deadline)
        except ReplyTimeout:
            raise self._unavailable(
                f"no answer in time (command timeout {self._pool.command_timeout}s)", started
            ) from None
        except txredisapi.ResponseError as e:
            message = str(e)
            if message.startswith("NOSCRIPT"):
                # An answer: Redis works, it only lost its script cache.
                self.health.succeeded(started)
                raise
            if is_auth_error(message):
                raise self._unavailable(
                    f"authentication failed ({message})", started
                ) from None
            # -LOADING, -READONLY, -OOM, -MISCONF...: Redis cannot serve us.
            raise self._unavailable(f"error reply ({message})", started) from None
        except ClientClosed:
            raise self._unavailable("the store is closed") from None
        except NotConnected as e:
            # HandshakeRefused included: its message says what was refused.
            raise self._unavailable(str(e), started) from None
        except ConnectionLost as e:
            raise self._unavailable(f"connection lost ({e})", started) from None
        except txredisapi.InvalidData as e:
            raise StoreError(f"cannot encode a command argument: {e}") from None
        self.health.succeeded(started)
        return reply

    async def _script(
        self, script: Script, script_keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """Run a script: one round trip, two when Redis has to be sent its source.

        Both share one deadline, so the caller still waits at most
        C{command_timeout}.
        """
        deadline = self._pool.deadline()
        tail = (len(script_keys), *script_keys, *args)
        try:
            return await self._command(("EVALSHA", script.sha, *tail), deadline)
        except txredisapi.ResponseError:
            # NOSCRIPT: Redis restarted or its script cache was flushed.
            _log.debug("redis script {name} not cached; sending it", name=script.name)
        try:
            return await self._command(("EVAL", script.source, *tail), deadline)
        except txredisapi.ResponseError as e:  # pragma: no cover - only NOSCRIPT is re-raised
            raise self._unavailable(f"error reply ({e})") from None

    # -- IStore ----------------------------------------------------------------

    async def room_exists(self, room_id: str) -> bool:
        """Whether the room exists. One round trip (HEXISTS)."""
        reply = await self._command(("HEXISTS", keys.room(room_id), keys.CREATED_AT_FIELD))
        return int(reply) == 1

    async def create_room(self, room_id: str, now_ms: int, ttl_s: int) -> bool:
        """Create the room unless it exists. One round trip (script)."""
        reply = await self._script(
            CREATE_ROOM,
            (keys.room(room_id), keys.room_sockets(room_id)),
            (keys.CREATED_AT_FIELD, now_ms, ttl_s),
        )
        return int(reply) == 1

    async def create_first_free_room(
        self, candidates: Sequence[str], now_ms: int, ttl_s: int
    ) -> str | None:
        """Create the first free candidate. One round trip (script), whatever the count."""
        if not candidates:
            return None
        script_keys: list[str] = []
        for candidate in candidates:
            script_keys += (keys.room(candidate), keys.room_sockets(candidate))
        reply = await self._script(
            CREATE_FIRST_FREE_ROOM,
            script_keys,
            (keys.CREATED_AT_FIELD, now_ms, ttl_s, *candidates),
        )
        return None if reply is None else _text(reply)

    async def join_room(
        self,
        socket_id: str,
        room_id: str,
        now_ms: int,
        room_ttl_s: int,
        socket_ttl_s: int,
        rate: RateWindow | None,
        *,
        node_id: str,
        known_room: str | None = None,
        known_incarnation: int | None = None,
        prune_limit: int = DEFAULT_PRUNE_LIMIT,
        pid: str | None = None,
    ) -> JoinResult:
        """The whole join decision. One round trip (script)."""
        script_keys = [
            keys.socket(socket_id),
            keys.room(room_id),
            keys.room_sockets(room_id),
            keys.room_nodes(room_id),
            keys.node_sockets(node_id),
        ]
        args: list[Any] = [
            room_id,
            socket_id,
            keys.CREATED_AT_FIELD,
            now_ms,
            room_ttl_s,
            socket_ttl_s,
        ]
        if rate is None:
            args += ("0", "", 0, 0, 0)
        else:
            script_keys.append(keys.join_rate(rate.key_suffix))
            args += ("1", rate.member, rate.window_ms, rate.limit, rate.ttl_s)
        args += (
            node_id,
            known_room or "",
            "" if known_incarnation is None else known_incarnation,
            keys.ROOM_PREFIX,
            keys.SOCKETS_SUFFIX,
            keys.NODES_SUFFIX,
            keys.SOCKET_PREFIX,
            prune_limit,
            pid or "",
            keys.RECOVERY_PREFIX,
        )
        outcome, bound, count, oldest, incarnation, members = await self._script(
            JOIN_ROOM, script_keys, args
        )
        rate_result = None if int(count) < 0 else RateResult(int(count), int(oldest))
        bound_text = _text(bound)
        return JoinResult(
            outcome=JoinOutcome(_text(outcome)),
            bound_room=bound_text or None,
            rate=rate_result,
            incarnation=_incarnation(incarnation),
            members=_members(members),
        )

    async def leave_room(
        self,
        socket_id: str,
        room_id: str | None,
        empty_ttl_s: int,
        *,
        prune_limit: int = DEFAULT_PRUNE_LIMIT,
    ) -> LeaveResult:
        """Unbind a socket. One round trip (script).

        The socket's binding is removed only when it names this room, so a
        leave for room A can never unbind a socket that sits in room B.
        """
        script_keys = [keys.socket(socket_id)]
        if room_id is not None:
            script_keys += (keys.room(room_id), keys.room_sockets(room_id), keys.room_nodes(room_id))
        left, remaining, removed, incarnation, node, members = await self._script(
            LEAVE_ROOM,
            script_keys,
            (
                socket_id,
                "0" if room_id is None else "1",
                room_id or "",
                keys.CREATED_AT_FIELD,
                empty_ttl_s,
                keys.ROOM_PREFIX,
                keys.SOCKETS_SUFFIX,
                keys.NODES_SUFFIX,
                keys.SOCKET_PREFIX,
                keys.NODE_PREFIX,
                prune_limit,
                keys.RECOVERY_PREFIX,
                keys.RECOVERY_DEADLINES,
            ),
        )
        left_text = _text(left)
        if not left_text:
            return LeaveResult(room_id=None, remaining=0)
        return LeaveResult(
            room_id=left_text,
            remaining=int(remaining),
            removed=int(removed) == 1,
            incarnation=_incarnation(incarnation),
            node=_text(node) or None,
            members=_members(members),
        )

    async def check_rooms(
        self, probes: Sequence[RoomProbe], *, prune_limit: int = DEFAULT_PRUNE_LIMIT
    ) -> list[RoomCheck]:
        """Check every probe in one round trip (script)."""
        if not probes:
            return []
        args: list[Any] = [
            keys.CREATED_AT_FIELD,
            keys.ROOM_PREFIX,
            keys.SOCKETS_SUFFIX,
            keys.NODES_SUFFIX,
            keys.SOCKET_PREFIX,
            prune_limit,
        ]
        for probe in probes:
            args += (probe.room_id, probe.incarnation, len(probe.socket_ids), *probe.socket_ids)
        reply = await self._script(CHECK_ROOMS, (), args)
        checks = []
        for room_id, incarnation, alive, missing, members in reply:
            checks.append(
                RoomCheck(
                    room_id=_text(room_id),
                    incarnation=int(_text(incarnation)),
                    alive=int(alive) == 1,
                    missing=frozenset(_text(m) for m in missing or ()),
                    members=_members(members),
                )
            )
        return checks

    # -- the cluster's heartbeats and clean-up -------------------------------------

    async def heartbeat(
        self, node_id: str, beat: str, info: Mapping[str, str], ttl_s: int
    ) -> Heartbeat:
        """Write this node's heartbeat, read everyone's. One round trip (script)."""
        args: list[Any] = [node_id, beat, ttl_s, keys.NODE_PREFIX, keys.INFO_SUFFIX]
        for field, value in info.items():
            args += (field, value)
        reaped, flat = await self._script(
            HEARTBEAT,
            (keys.HEARTBEATS, keys.node_info(node_id), keys.node_reaped(node_id)),
            args,
        )
        if int(reaped) == 1:
            return Heartbeat(reaped=True)
        items = [_text(item) for item in flat or ()]
        nodes = {
            items[i]: NodeBeat(
                beat=items[i + 1], name=items[i + 2], host=items[i + 3], pid=items[i + 4]
            )
            for i in range(0, len(items) - 4, 5)
        }
        return Heartbeat(reaped=False, nodes=nodes)

    async def claim_reap(
        self,
        dead_node: str,
        judge: str,
        observed_beat: str,
        claim_ttl_ms: int,
        marker_ttl_s: int,
        takeover_from: Collection[str] = (),
    ) -> bool:
        """Claim a dead node's clean-up. One round trip (script)."""
        reply = await self._script(
            CLAIM_REAP,
            (keys.reap_claim(dead_node), keys.HEARTBEATS, keys.node_reaped(dead_node)),
            (dead_node, judge, observed_beat, claim_ttl_ms, marker_ttl_s, *takeover_from),
        )
        return int(reply) == 1

    async def reap_node(
        self,
        dead_node: str,
        judge: str,
        *,
        batch: int,
        ack: bool,
        empty_ttl_s: int,
        claim_ttl_ms: int,
        pending_ttl_s: int,
        prune_limit: int = DEFAULT_PRUNE_LIMIT,
        now_ms: int = 0,
        recovery_window_ms: int = 0,
    ) -> ReapBatch:
        """One batch of a dead node's clean-up. One round trip (script)."""
        status, entries, kept = await self._script(
            REAP_NODE,
            (
                keys.reap_claim(dead_node),
                keys.reap_pending(dead_node),
                keys.node_sockets(dead_node),
                keys.HEARTBEATS,
                keys.node_info(dead_node),
                keys.RECOVERY_DEADLINES,
            ),
            (
                dead_node,
                judge,
                claim_ttl_ms,
                batch,
                "1" if ack else "0",
                empty_ttl_s,
                keys.ROOM_PREFIX,
                keys.SOCKETS_SUFFIX,
                keys.NODES_SUFFIX,
                keys.SOCKET_PREFIX,
                keys.CREATED_AT_FIELD,
                prune_limit,
                pending_ttl_s,
                now_ms,
                recovery_window_ms,
                keys.RECOVERY_PREFIX,
                keys.NODE_PREFIX,
            ),
        )
        sockets = [_reaped_socket(entry) for entry in entries or ()]
        kept_sockets = [_reaped_socket(entry) for entry in kept or ()]
        return ReapBatch(
            status=ReapStatus(_text(status)),
            sockets=tuple(s for s in sockets if s is not None),
            kept=tuple(s for s in kept_sockets if s is not None and s.pid),
        )

    # -- connection state recovery across processes ---------------------------------

    async def claim_recovery(
        self, socket_id: str, pid: str, node_id: str, socket_ttl_s: int
    ) -> RecoveryClaim:
        """Move a recoverable socket to C{node_id}. One round trip (script)."""
        reply = await self._script(
            CLAIM_RECOVERY,
            (keys.recovery(socket_id), keys.RECOVERY_DEADLINES, keys.socket(socket_id)),
            (
                socket_id,
                pid,
                node_id,
                socket_ttl_s,
                keys.ROOM_PREFIX,
                keys.SOCKETS_SUFFIX,
                keys.NODES_SUFFIX,
                keys.NODE_PREFIX,
                keys.CREATED_AT_FIELD,
            ),
        )
        if _text(reply[0]) != "ok":
            return RecoveryClaim(claimed=False)
        incarnation = _incarnation(reply[2])
        return RecoveryClaim(
            claimed=True,
            room_id=_text(reply[1]),
            incarnation=incarnation if incarnation is not None else 0,
            old_node=_text(reply[3]),
            members=_members(reply[4]),
            was_waiting=int(reply[5]) == 1,
        )

    async def set_recovery_deadline(self, socket_id: str, deadline_ms: int) -> None:
        """One round trip (ZADD)."""
        await self._command(("ZADD", keys.RECOVERY_DEADLINES, deadline_ms, socket_id))

    async def take_recovery_deadline(self, socket_id: str) -> bool:
        """One round trip (ZREM: whoever removes it takes it)."""
        removed = await self._command(("ZREM", keys.RECOVERY_DEADLINES, socket_id))
        return int(removed) == 1

    async def take_due_recoveries(self, now_ms: int, limit: int) -> list[str]:
        """One round trip (script)."""
        reply = await self._script(TAKE_RECOVERIES, (keys.RECOVERY_DEADLINES,), (now_ms, limit))
        return [_text(sid) for sid in reply or ()]

    async def deregister_node(self, node_id: str) -> bool:
        """Leave the heartbeats when no socket is left bound. One round trip (script)."""
        reply = await self._script(
            DEREGISTER_NODE,
            (keys.HEARTBEATS, keys.node_info(node_id), keys.node_sockets(node_id)),
            (node_id,),
        )
        return int(reply) == 1

    async def room_of_socket(self, socket_id: str) -> str | None:
        """The room the socket is bound to. One round trip (GET)."""
        reply = await self._command(("GET", keys.socket(socket_id)))
        return None if reply is None else _text(reply)

    async def room_sockets(self, room_id: str) -> set[str]:
        """The room's members. One round trip (SMEMBERS)."""
        reply = await self._command(("SMEMBERS", keys.room_sockets(room_id)))
        return {_text(member) for member in reply or ()}

    async def record_attempt(self, rate: RateWindow, now_ms: int) -> RateResult:
        """Record one attempt in a sliding window. One round trip (script)."""
        count, oldest = await self._script(
            RECORD_ATTEMPT,
            (keys.join_rate(rate.key_suffix),),
            (rate.member, now_ms, rate.window_ms, rate.ttl_s),
        )
        return RateResult(count=int(count), oldest_ms=int(oldest))

    async def count_calls(
        self,
        budget: str,
        client_key: str,
        window_s: int,
        window_index: int,
        calls: int,
        ttl_s: int,
    ) -> CallCounts:
        """Count a client's calls of a budget. One round trip (script)."""
        current, previous = await self._script(
            COUNT_CALLS,
            (
                keys.call_count(budget, window_s, window_index, client_key),
                keys.call_count(budget, window_s, window_index - 1, client_key),
            ),
            (calls, ttl_s),
        )
        return CallCounts(current=int(current), previous=int(previous))

    async def track_referrer(
        self, day: str, ref: str, ttl_s: int, max_referrers: int
    ) -> bool:
        """Count one referral unless the day is full. One round trip (script)."""
        reply = await self._script(
            TRACK_REFERRER, (keys.referrers(day),), (ref, ttl_s, max_referrers)
        )
        return int(reply) == 1

    async def ping(self) -> None:
        """One round trip (PING); raises L{StoreUnavailable} when Redis does not answer."""
        await self._command(("PING",))

    async def ttl(self, key: str) -> int | None:
        """Seconds left on a key. One round trip (TTL)."""
        reply = int(await self._command(("TTL", key)))
        return None if reply == -2 else reply

    async def close(self) -> None:
        """Close every connection and stop reconnecting (idempotent).

        Callers still waiting for a connection fail at once rather than at
        their deadline, so no timer outlives the store.
        """
        await self._pool.close()
