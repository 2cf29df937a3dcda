"""The embedded store: PrivyDrop's shared state in this process's memory.

It follows the Redis backend's semantics key for key (the schema of
L{privydrop.store.keys}, TTLs, empty collections disappearing), so the two
pass one contract suite and a development server behaves like production.
Time comes from an C{IReactorTime}, so tests drive TTLs with a
C{twisted.internet.task.Clock} instead of waiting.

Expiry is lazy (a key past its deadline is dropped when it is next touched)
plus L{MemoryStore.sweep}, which the store service calls periodically so keys
nobody touches again (rate windows of one-off visitors, abandoned rooms) do
not accumulate.

Every operation runs to completion without yielding to the reactor, which is
what makes each one atomic here. This module knows nothing of HTTP or
Socket.IO.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping, Sequence

from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from privydrop.logs.levels import Logger
from privydrop.store import keys
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
)

_log = Logger()


@implementer(IStore)
class MemoryStore:
    """L{IStore} in a few dictionaries, with TTLs read from a clock.

    A key is expired once the clock reaches its deadline. L{ttl} rounds the
    time left to the nearest second, as Redis' C{TTL} does.
    """

    def __init__(self, clock: IReactorTime) -> None:
        """
        @param clock: where "now" comes from for TTLs (the reactor in
            production, a C{Clock} in tests).
        """
        self._clock = clock
        self._strings: dict[str, str] = {}
        self._hashes: dict[str, dict[str, str]] = {}
        self._sets: dict[str, set[str]] = {}
        self._zsets: dict[str, dict[str, float]] = {}
        self._lists: dict[str, list[str]] = {}
        #: key -> the clock's seconds() at which the key expires.
        self._deadlines: dict[str, float] = {}

    # -- key space primitives (Redis semantics) ------------------------------

    def _drop(self, key: str) -> None:
        self._strings.pop(key, None)
        self._hashes.pop(key, None)
        self._sets.pop(key, None)
        self._zsets.pop(key, None)
        self._lists.pop(key, None)
        self._deadlines.pop(key, None)

    def _check_expiry(self, key: str) -> None:
        deadline = self._deadlines.get(key)
        if deadline is not None and self._clock.seconds() >= deadline:
            self._drop(key)

    def _exists(self, key: str) -> bool:
        self._check_expiry(key)
        return (
            key in self._strings
            or key in self._hashes
            or key in self._sets
            or key in self._zsets
            or key in self._lists
        )

    def _expire(self, key: str, ttl_s: int) -> None:
        """EXPIRE: only an existing key gets a deadline."""
        if self._exists(key):
            self._deadlines[key] = self._clock.seconds() + ttl_s

    def _get_string(self, key: str) -> str | None:
        self._check_expiry(key)
        return self._strings.get(key)

    def _set_string(self, key: str, value: str, ttl_s: int) -> None:
        """SET key value EX ttl_s."""
        self._drop(key)
        self._strings[key] = value
        self._deadlines[key] = self._clock.seconds() + ttl_s

    def _hash(self, key: str) -> dict[str, str] | None:
        self._check_expiry(key)
        return self._hashes.get(key)

    def _set(self, key: str) -> set[str] | None:
        self._check_expiry(key)
        return self._sets.get(key)

    def _zset(self, key: str) -> dict[str, float] | None:
        self._check_expiry(key)
        return self._zsets.get(key)

    def _zrem(self, key: str, member: str) -> bool:
        zset = self._zset(key)
        if zset is None or member not in zset:
            return False
        del zset[member]
        if not zset:
            self._drop(key)
        return True

    def _srem(self, key: str, member: str) -> bool:
        """SREM: whether the member was there."""
        members = self._set(key)
        if members is None or member not in members:
            return False
        members.discard(member)
        if not members:
            # Redis deletes a set with its last member, TTL included.
            self._drop(key)
        return True

    def _sadd(self, key: str, member: str) -> None:
        members = self._set(key)
        if members is None:
            members = self._sets[key] = set()
        members.add(member)

    def _hget(self, key: str, field: str) -> str | None:
        fields = self._hash(key)
        return None if fields is None else fields.get(field)

    def _hset(self, key: str, field: str, value: str) -> None:
        fields = self._hash(key)
        if fields is None:
            fields = self._hashes[key] = {}
        fields[field] = value

    def _hdel(self, key: str, field: str) -> None:
        fields = self._hash(key)
        if fields is None:
            return
        fields.pop(field, None)
        if not fields:
            self._drop(key)

    def _list(self, key: str) -> list[str] | None:
        self._check_expiry(key)
        return self._lists.get(key)

    # -- membership (what scripts/membership.lua does) ---------------------------

    def _prune_members(self, room_id: str, limit: int) -> None:
        """Drop ghost members: their binding is gone or names another room."""
        members = self._set(keys.room_sockets(room_id))
        if members is None:
            return
        # Redis samples at random in larger rooms; any subset will do here.
        candidates = list(members)[:limit]
        for sid in candidates:
            if self._get_string(keys.socket(sid)) != room_id:
                self._srem(keys.room_sockets(room_id), sid)
                self._hdel(keys.room_nodes(room_id), sid)

    def _members_with_nodes(self, room_id: str) -> dict[str, str]:
        members = self._set(keys.room_sockets(room_id)) or set()
        nodes = self._hash(keys.room_nodes(room_id)) or {}
        return {sid: nodes.get(sid, "") for sid in members}

    def _incarnation(self, room_id: str) -> int | None:
        created = self._hget(keys.room(room_id), keys.CREATED_AT_FIELD)
        return None if created is None else int(created)

    def _binding_is_live(
        self, socket_id: str, bound: str, known_room: str | None, known_incarnation: int | None
    ) -> bool:
        created = self._hget(keys.room(bound), keys.CREATED_AT_FIELD)
        if created is None:
            return False
        if bound == known_room and known_incarnation is not None:
            return created == str(known_incarnation)
        return socket_id in (self._set(keys.room_sockets(bound)) or ())

    def _room_exists(self, room_id: str) -> bool:
        fields = self._hash(keys.room(room_id))
        return fields is not None and keys.CREATED_AT_FIELD in fields

    def _create_room(self, room_id: str, now_ms: int, ttl_s: int) -> bool:
        if self._room_exists(room_id):
            return False
        room_key = keys.room(room_id)
        self._hashes.setdefault(room_key, {})[keys.CREATED_AT_FIELD] = str(now_ms)
        self._expire(room_key, ttl_s)
        self._expire(keys.room_sockets(room_id), ttl_s)
        return True

    def _refresh_room(self, room_id: str, ttl_s: int) -> None:
        self._expire(keys.room(room_id), ttl_s)
        self._expire(keys.room_sockets(room_id), ttl_s)
        self._expire(keys.room_nodes(room_id), ttl_s)

    def _record_attempt(self, rate: RateWindow, now_ms: int) -> RateResult:
        key = keys.join_rate(rate.key_suffix)
        window = self._zset(key)
        if window is None:
            window = self._zsets[key] = {}
        window[rate.member] = float(now_ms)
        # ZREMRANGEBYSCORE key -inf (now - window): the window start is
        # inclusive of expiry, as in the Node backend.
        window_start = now_ms - rate.window_ms
        for member in [m for m, score in window.items() if score <= window_start]:
            del window[member]
        if not window:
            self._drop(key)
            return RateResult(count=0, oldest_ms=now_ms)
        self._expire(key, rate.ttl_s)
        return RateResult(count=len(window), oldest_ms=int(min(window.values())))

    # -- IStore ---------------------------------------------------------------

    async def room_exists(self, room_id: str) -> bool:
        """Whether the room exists. Never waits."""
        return self._room_exists(room_id)

    async def create_room(self, room_id: str, now_ms: int, ttl_s: int) -> bool:
        """Create the room unless it exists. See L{IStore.create_room}."""
        return self._create_room(room_id, now_ms, ttl_s)

    async def create_first_free_room(
        self, candidates: Sequence[str], now_ms: int, ttl_s: int
    ) -> str | None:
        """Create the first free candidate. See L{IStore.create_first_free_room}."""
        for candidate in candidates:
            if self._create_room(candidate, now_ms, ttl_s):
                return candidate
        return None

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
        """Execute the join rule of L{privydrop.rooms.rooms} (see L{IStore.join_room})."""
        socket_key = keys.socket(socket_id)
        bound = self._get_string(socket_key)
        if bound is not None and not self._binding_is_live(
            socket_id, bound, known_room, known_incarnation
        ):
            self._drop(socket_key)
            self._srem(keys.room_sockets(bound), socket_id)
            self._hdel(keys.room_nodes(bound), socket_id)
            bound = None
        if bound is not None and bound != room_id:
            return JoinResult(JoinOutcome.OTHER_ROOM, bound_room=bound)
        rejoin = bound is not None
        result: RateResult | None = None
        if rate is not None and not rejoin:
            result = self._record_attempt(rate, now_ms)
            if result.count > rate.limit:
                return JoinResult(JoinOutcome.RATE_LIMITED, rate=result)
        incarnation = self._incarnation(room_id)
        if incarnation is None:
            return JoinResult(JoinOutcome.NO_ROOM, rate=result)
        self._prune_members(room_id, prune_limit)
        if rejoin:
            self._expire(socket_key, socket_ttl_s)
        else:
            self._set_string(socket_key, room_id, socket_ttl_s)
        # Also on a rejoin: a member missing from the set is added again.
        self._sadd(keys.room_sockets(room_id), socket_id)
        self._hset(keys.room_nodes(room_id), socket_id, node_id)
        self._sadd(keys.node_sockets(node_id), socket_id)
        self._expire(keys.node_sockets(node_id), socket_ttl_s)
        self._refresh_room(room_id, room_ttl_s)
        if pid:
            record = keys.recovery(socket_id)
            for field, value in (("pid", pid), ("room", room_id), ("node", node_id)):
                self._hset(record, field, value)
            self._expire(record, socket_ttl_s)
        return JoinResult(
            JoinOutcome.REJOINED if rejoin else JoinOutcome.JOINED,
            bound_room=room_id,
            rate=result,
            incarnation=incarnation,
            members=self._members_with_nodes(room_id),
        )

    async def leave_room(
        self,
        socket_id: str,
        room_id: str | None,
        empty_ttl_s: int,
        *,
        prune_limit: int = DEFAULT_PRUNE_LIMIT,
    ) -> LeaveResult:
        """Unbind a socket. See L{IStore.leave_room}.

        The socket's binding is removed only when it names this room, so a
        leave for room A can never unbind a socket that sits in room B.
        """
        socket_key = keys.socket(socket_id)
        bound = self._get_string(socket_key)
        if room_id is None:
            if bound is None:
                return LeaveResult(room_id=None, remaining=0)
            room_id = bound
        elif not self._room_exists(room_id):
            return LeaveResult(room_id=None, remaining=0)
        if bound == room_id:
            # With the binding, its recovery: nobody may recover a socket
            # that left, and a leave of another room takes neither.
            self._drop(socket_key)
            self._drop(keys.recovery(socket_id))
            self._zrem(keys.RECOVERY_DEADLINES, socket_id)
        sockets_key = keys.room_sockets(room_id)
        removed = self._srem(sockets_key, socket_id)
        node = self._hget(keys.room_nodes(room_id), socket_id)
        if node is not None:
            self._hdel(keys.room_nodes(room_id), socket_id)
            self._srem(keys.node_sockets(node), socket_id)
        self._prune_members(room_id, prune_limit)
        members = self._set(sockets_key)
        remaining = len(members) if members is not None else 0
        if remaining == 0:
            self._refresh_room(room_id, empty_ttl_s)
        return LeaveResult(
            room_id=room_id,
            remaining=remaining,
            removed=removed,
            incarnation=self._incarnation(room_id),
            node=node,
            members=self._members_with_nodes(room_id),
        )

    async def check_rooms(
        self, probes: Sequence[RoomProbe], *, prune_limit: int = DEFAULT_PRUNE_LIMIT
    ) -> list[RoomCheck]:
        """See L{IStore.check_rooms}."""
        checks = []
        for probe in probes:
            if self._incarnation(probe.room_id) != probe.incarnation:
                checks.append(RoomCheck(probe.room_id, probe.incarnation, alive=False))
                continue
            self._prune_members(probe.room_id, prune_limit)
            members = self._set(keys.room_sockets(probe.room_id)) or set()
            checks.append(
                RoomCheck(
                    probe.room_id,
                    probe.incarnation,
                    alive=True,
                    missing=frozenset(s for s in probe.socket_ids if s not in members),
                    members=self._members_with_nodes(probe.room_id),
                )
            )
        return checks

    # -- the cluster's heartbeats and clean-up ---------------------------------------

    async def heartbeat(
        self, node_id: str, beat: str, info: Mapping[str, str], ttl_s: int
    ) -> Heartbeat:
        """See L{IStore.heartbeat}."""
        if self._exists(keys.node_reaped(node_id)):
            return Heartbeat(reaped=True)
        self._hset(keys.HEARTBEATS, node_id, beat)
        self._expire(keys.HEARTBEATS, ttl_s)
        for field, value in info.items():
            self._hset(keys.node_info(node_id), field, value)
        self._expire(keys.node_info(node_id), ttl_s)
        beats = self._hash(keys.HEARTBEATS) or {}
        return Heartbeat(
            reaped=False,
            nodes={
                node: NodeBeat(
                    value,
                    self._hget(keys.node_info(node), "name") or "",
                    self._hget(keys.node_info(node), "host") or "",
                    self._hget(keys.node_info(node), "pid") or "",
                )
                for node, value in beats.items()
            },
        )

    async def claim_reap(
        self,
        dead_node: str,
        judge: str,
        observed_beat: str,
        claim_ttl_ms: int,
        marker_ttl_s: int,
        takeover_from: Collection[str] = (),
    ) -> bool:
        """See L{IStore.claim_reap}."""
        if self._hget(keys.HEARTBEATS, dead_node) != observed_beat:
            return False
        claim = keys.reap_claim(dead_node)
        owner = self._get_string(claim)
        if owner is not None and owner != judge and owner not in takeover_from:
            return False
        self._drop(claim)
        self._strings[claim] = judge
        self._deadlines[claim] = self._clock.seconds() + claim_ttl_ms / 1000
        self._set_string(keys.node_reaped(dead_node), judge, marker_ttl_s)
        return True

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
        """See L{IStore.reap_node}."""
        claim = keys.reap_claim(dead_node)
        if self._get_string(claim) != judge:
            return ReapBatch(ReapStatus.LOST)
        self._deadlines[claim] = self._clock.seconds() + claim_ttl_ms / 1000
        pending_key = keys.reap_pending(dead_node)
        if ack:
            self._drop(pending_key)
        pending = self._list(pending_key)
        if pending:
            return ReapBatch(ReapStatus.BATCH, tuple(_decode_entry(e) for e in pending))
        sockets_key = keys.node_sockets(dead_node)
        held = self._set(sockets_key)
        if not held:
            self._hdel(keys.HEARTBEATS, dead_node)
            self._drop(keys.node_info(dead_node))
            self._drop(sockets_key)
            self._drop(claim)
            return ReapBatch(ReapStatus.DONE)
        popped = [held.pop() for _ in range(min(batch, len(held)))]
        if not held:
            self._drop(sockets_key)
        entries: list[str] = []
        kept: list[ReapedSocket] = []
        for sid in popped:
            room_id = self._get_string(keys.socket(sid))
            if room_id is None:
                continue
            owner = self._hget(keys.room_nodes(room_id), sid)
            if owner is not None and owner != dead_node:
                continue
            record = keys.recovery(sid)
            pid = self._hget(record, "pid") if recovery_window_ms > 0 else None
            incarnation = self._incarnation(room_id)
            if (
                pid is not None
                and incarnation is not None
                and sid in (self._set(keys.room_sockets(room_id)) or ())
            ):
                self._hset(keys.room_nodes(room_id), sid, judge)
                self._hset(record, "node", judge)
                self._sadd(keys.node_sockets(judge), sid)
                self._expire(keys.node_sockets(judge), pending_ttl_s)
                deadlines = self._zsets.setdefault(keys.RECOVERY_DEADLINES, {})
                deadlines.setdefault(sid, now_ms + recovery_window_ms)
                kept.append(
                    ReapedSocket(
                        sid,
                        room_id,
                        incarnation,
                        self._members_with_nodes(room_id),
                        pid=pid,
                        deadline_ms=int(deadlines[sid]),
                    )
                )
                continue
            self._drop(record)
            self._zrem(keys.RECOVERY_DEADLINES, sid)
            self._drop(keys.socket(sid))
            removed = self._srem(keys.room_sockets(room_id), sid)
            self._hdel(keys.room_nodes(room_id), sid)
            self._prune_members(room_id, prune_limit)
            if not self._set(keys.room_sockets(room_id)):
                self._refresh_room(room_id, empty_ttl_s)
            incarnation = self._incarnation(room_id)
            if removed and incarnation is not None:
                members = self._members_with_nodes(room_id)
                flat = [item for pair in members.items() for item in pair]
                entries.append(json.dumps([sid, room_id, str(incarnation), flat]))
        if entries:
            self._lists[pending_key] = entries
            self._deadlines[pending_key] = self._clock.seconds() + pending_ttl_s
        return ReapBatch(
            ReapStatus.BATCH, tuple(_decode_entry(e) for e in entries), tuple(kept)
        )

    # -- connection state recovery across processes -----------------------------------

    async def claim_recovery(
        self, socket_id: str, pid: str, node_id: str, socket_ttl_s: int
    ) -> RecoveryClaim:
        """See L{IStore.claim_recovery}."""
        record = keys.recovery(socket_id)
        fields = self._hash(record)
        if fields is None or fields.get("pid") != pid:
            return RecoveryClaim(claimed=False)
        room_id, old = fields.get("room", ""), fields.get("node", "")
        incarnation = self._incarnation(room_id)
        if (
            incarnation is None
            or self._get_string(keys.socket(socket_id)) != room_id
            or socket_id not in (self._set(keys.room_sockets(room_id)) or ())
        ):
            self._drop(record)
            self._zrem(keys.RECOVERY_DEADLINES, socket_id)
            return RecoveryClaim(claimed=False)
        waiting = self._zrem(keys.RECOVERY_DEADLINES, socket_id)
        if old and old != node_id:
            self._srem(keys.node_sockets(old), socket_id)
        self._sadd(keys.node_sockets(node_id), socket_id)
        self._expire(keys.node_sockets(node_id), socket_ttl_s)
        self._hset(keys.room_nodes(room_id), socket_id, node_id)
        self._hset(record, "node", node_id)
        self._expire(record, socket_ttl_s)
        return RecoveryClaim(
            claimed=True,
            room_id=room_id,
            incarnation=incarnation,
            old_node=old,
            members=self._members_with_nodes(room_id),
            was_waiting=waiting,
        )

    async def set_recovery_deadline(self, socket_id: str, deadline_ms: int) -> None:
        """See L{IStore.set_recovery_deadline}."""
        self._zsets.setdefault(keys.RECOVERY_DEADLINES, {})[socket_id] = deadline_ms

    async def take_recovery_deadline(self, socket_id: str) -> bool:
        """See L{IStore.take_recovery_deadline}."""
        return self._zrem(keys.RECOVERY_DEADLINES, socket_id)

    async def take_due_recoveries(self, now_ms: int, limit: int) -> list[str]:
        """See L{IStore.take_due_recoveries}."""
        deadlines = self._zset(keys.RECOVERY_DEADLINES) or {}
        due = sorted((score, sid) for sid, score in deadlines.items() if score <= now_ms)
        taken = [sid for _, sid in due[:limit]]
        for sid in taken:
            self._zrem(keys.RECOVERY_DEADLINES, sid)
        return taken

    async def deregister_node(self, node_id: str) -> bool:
        """See L{IStore.deregister_node}."""
        if self._set(keys.node_sockets(node_id)):
            return False
        self._hdel(keys.HEARTBEATS, node_id)
        self._drop(keys.node_info(node_id))
        return True

    async def room_of_socket(self, socket_id: str) -> str | None:
        """The room the socket is bound to."""
        return self._get_string(keys.socket(socket_id))

    async def room_sockets(self, room_id: str) -> set[str]:
        """A copy of the room's member set."""
        return set(self._set(keys.room_sockets(room_id)) or ())

    async def record_attempt(self, rate: RateWindow, now_ms: int) -> RateResult:
        """Record one attempt in a sliding window. See L{IStore.record_attempt}."""
        return self._record_attempt(rate, now_ms)

    async def count_calls(
        self,
        budget: str,
        client_key: str,
        window_s: int,
        window_index: int,
        calls: int,
        ttl_s: int,
    ) -> CallCounts:
        """Count a client's calls of a budget. See L{IStore.count_calls}."""
        key = keys.call_count(budget, window_s, window_index, client_key)
        value = self._get_string(key)
        current = calls + (0 if value is None else int(value))
        if value is None:
            self._set_string(key, str(current), ttl_s)
        else:
            self._strings[key] = str(current)
        previous = self._get_string(keys.call_count(budget, window_s, window_index - 1, client_key))
        return CallCounts(current=current, previous=0 if previous is None else int(previous))

    async def track_referrer(
        self, day: str, ref: str, ttl_s: int, max_referrers: int
    ) -> bool:
        """Count one referral. See L{IStore.track_referrer}."""
        key = keys.referrers(day)
        counts = self._hash(key)
        if counts is None:
            if max_referrers <= 0:
                return False
            counts = self._hashes[key] = {}
        elif ref not in counts and len(counts) >= max_referrers:
            return False
        counts[ref] = str(int(counts.get(ref, "0")) + 1)
        self._expire(key, ttl_s)
        return True

    async def ping(self) -> None:
        """Always reachable."""

    async def ttl(self, key: str) -> int | None:
        """Seconds left on a key, rounded to the nearest second (None: no key; -1: no TTL)."""
        if not self._exists(key):
            return None
        deadline = self._deadlines.get(key)
        if deadline is None:
            return -1
        return math.floor(deadline - self._clock.seconds() + 0.5)

    async def close(self) -> None:
        """Nothing to release."""

    # -- maintenance ----------------------------------------------------------

    def sweep(self) -> int:
        """Drop every key whose deadline has passed.

        @return: how many keys were dropped.
        """
        now = self._clock.seconds()
        expired = [key for key, deadline in self._deadlines.items() if now >= deadline]
        for key in expired:
            self._drop(key)
        if expired:
            _log.debug("memory store swept {count} expired keys", count=len(expired))
        return len(expired)

    def key_count(self) -> int:
        """How many keys are held, expired-but-unswept ones included."""
        return (
            len(self._strings)
            + len(self._hashes)
            + len(self._sets)
            + len(self._zsets)
            + len(self._lists)
        )


def _decode_entry(entry: str) -> ReapedSocket:
    """A pending entry, as the Redis script writes it (JSON)."""
    sid, room_id, incarnation, flat = json.loads(entry)
    return ReapedSocket(sid, room_id, int(incarnation), dict(zip(flat[0::2], flat[1::2])))
