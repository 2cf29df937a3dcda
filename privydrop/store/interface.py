"""The store interface: every piece of shared state PrivyDrop keeps.

Two backends implement it and pass the same contract suite
(C{tests/contract/}): L{privydrop.store.redis.RedisStore} (txredisapi pool,
one Lua script or MULTI per operation) and
L{privydrop.store.memory.MemoryStore} (embedded, per process, driven by an
C{IReactorTime} clock so TTLs are testable without waiting).

Operations are domain operations, not Redis commands: each is atomic, so two
processes sharing one Redis can never interleave a check with its act. The
store knows the key schema (L{privydrop.store.keys}) and TTL arithmetic it is
handed, but not PrivyDrop's policies (which id to try, how many joins are
allowed): the rules in C{privydrop.rooms}, C{privydrop.ratelimit} and
C{privydrop.tracking} compute those and pass them in.

Every method is a coroutine function (C{async def}); failures to reach the
backend raise L{StoreUnavailable} within the configured command timeout.
Times are milliseconds since the epoch (C{now_ms}), TTLs whole seconds.
"""

from __future__ import annotations

import enum
from typing import Collection, Mapping, Sequence

import attrs
from zope.interface import Interface


class StoreError(Exception):
    """Base of the store's exception family."""


class StoreUnavailable(StoreError):
    """The backend could not be reached or did not answer in time.

    The API answers 503; signaling answers "Server error while joining room".
    """


class JoinOutcome(enum.Enum):
    """What L{IStore.join_room} decided."""

    #: The socket was bound to the room now.
    JOINED = "joined"
    #: The socket was already bound to this room; TTLs were refreshed.
    REJOINED = "rejoined"
    #: The socket is bound to another room (C{JoinResult.bound_room}).
    OTHER_ROOM = "other_room"
    #: The join counted against the rate window and went over it.
    RATE_LIMITED = "rate_limited"
    #: The room does not exist.
    NO_ROOM = "no_room"


@attrs.frozen
class RateWindow:
    """A sliding-window check to make as part of an operation.

    @ivar key_suffix: what follows C{ratelimit:join:} (the client IP).
    @ivar member: a unique member for this attempt (C{<now_ms>-<random>}).
    @ivar window_ms: the window's length.
    @ivar limit: attempts allowed inside the window.
    @ivar ttl_s: TTL given to the sorted set.
    """

    key_suffix: str
    member: str
    window_ms: int
    limit: int
    ttl_s: int


@attrs.frozen
class RateResult:
    """The state of a rate window after an attempt was recorded.

    @ivar count: attempts inside the window, this one included.
    @ivar oldest_ms: score of the oldest attempt still in the window.
    """

    count: int
    oldest_ms: int


#: Members of a room with the node holding each: socket id -> node id
#: (C{""} for a member no node was recorded for, e.g. one bound by a Node
#: backend process sharing the Redis).
Members = Mapping[str, str]

#: How many members of a room a join, leave, check or reap looks at for
#: ghosts (members whose binding is gone) in one call.
DEFAULT_PRUNE_LIMIT = 64


@attrs.frozen
class CallCounts:
    """A client's calls of one budget, by every process, after a count.

    @ivar current: calls in the window counted into, this count included.
    @ivar previous: calls in the window before it.
    """

    current: int
    previous: int


@attrs.frozen
class JoinResult:
    """What L{IStore.join_room} decided.

    @ivar outcome: the decision.
    @ivar bound_room: the room the socket is bound to, for OTHER_ROOM (and
        JOINED/REJOINED).
    @ivar rate: present when a rate window was checked.
    @ivar incarnation: for JOINED/REJOINED, the room's C{created_at}: the
        same room id created again (after it expired or Redis lost it) has
        another one.
    @ivar members: for JOINED/REJOINED, the room's members after the join
        (the joiner included), with their nodes.
    """

    outcome: JoinOutcome
    bound_room: str | None = None
    rate: RateResult | None = None
    incarnation: int | None = None
    members: Members = attrs.field(factory=dict, hash=False)


@attrs.frozen
class LeaveResult:
    """What L{IStore.leave_room} did.

    @ivar room_id: the room the socket was unbound from, or None when it was
        bound to none (or, with an explicit room, when that room does not exist).
    @ivar remaining: sockets left in that room.
    @ivar removed: whether this call took the socket out of the room's
        member set: only then were its peers still counting on it, and only
        then may they be told it left.
    @ivar incarnation: the room's C{created_at} (None when it is gone).
    @ivar node: the node recorded as holding the socket in that room.
    @ivar members: the room's remaining members with their nodes.
    """

    room_id: str | None
    remaining: int
    removed: bool = False
    incarnation: int | None = None
    node: str | None = None
    members: Members = attrs.field(factory=dict, hash=False)


@attrs.frozen
class RoomProbe:
    """One room a process has sockets in, for L{IStore.check_rooms}.

    @ivar room_id: the room.
    @ivar incarnation: the C{created_at} the sockets joined.
    @ivar socket_ids: the process's sockets it believes are members.
    """

    room_id: str
    incarnation: int
    socket_ids: tuple[str, ...]


@attrs.frozen
class RoomCheck:
    """The store's answer for one L{RoomProbe}.

    @ivar alive: the room exists with that incarnation.
    @ivar missing: probed sockets that are no longer members (only when alive).
    @ivar members: the members with their nodes (only when alive).
    """

    room_id: str
    incarnation: int
    alive: bool
    missing: frozenset[str] = frozenset()
    members: Members = attrs.field(factory=dict, hash=False)


@attrs.frozen
class NodeBeat:
    """One node as the heartbeats show it.

    @ivar beat: the value it wrote last (it changes at every heartbeat).
    @ivar name: its stable name (C{""} when its info is gone).
    @ivar host: the host it runs on, from its info (C{""} when unknown).
    @ivar pid: its process id on that host, from its info (C{""} when unknown).
    """

    beat: str
    name: str
    host: str = ""
    pid: str = ""


@attrs.frozen
class Heartbeat:
    """The answer to L{IStore.heartbeat}.

    @ivar reaped: this node was judged dead and cleaned up; nothing was written.
    @ivar nodes: every node's heartbeat, this one's included.
    """

    reaped: bool
    nodes: Mapping[str, NodeBeat] = attrs.field(factory=dict, hash=False)


@attrs.frozen
class ReapedSocket:
    """A socket of a dead node, unbound from its room by L{IStore.reap_node}.

    @ivar socket_id: the socket.
    @ivar room_id: the room it was in.
    @ivar incarnation: the room's C{created_at}.
    @ivar members: the room's remaining members, to be told it left.
    """

    socket_id: str
    room_id: str
    incarnation: int
    members: Members = attrs.field(factory=dict, hash=False)
    #: For a socket kept for recovery (see L{ReapBatch.kept}): its private
    #: session id and the end of its window (ms since the epoch).
    pid: str | None = None
    deadline_ms: int = 0


@attrs.frozen
class RecoveryClaim:
    """The answer to L{IStore.claim_recovery}.

    @ivar claimed: the socket is recorded on the claiming node now.
    @ivar room_id: the room it is bound to.
    @ivar incarnation: that room's C{created_at}.
    @ivar old_node: the node that held it (or kept it) before the claim.
    @ivar members: the room's members with their nodes, after the claim.
    @ivar was_waiting: its recovery window was running (its connection had
        been noticed lost); otherwise its holder still thinks it connected.
    """

    claimed: bool
    room_id: str = ""
    incarnation: int = 0
    old_node: str = ""
    members: Members = attrs.field(factory=dict, hash=False)
    was_waiting: bool = False


class ReapStatus(enum.Enum):
    """What one call of L{IStore.reap_node} found."""

    #: A batch of sockets (possibly empty) to announce; call again with ack.
    BATCH = "batch"
    #: Nothing left: the node's keys are gone, the claim released.
    DONE = "done"
    #: The caller does not hold the claim (any more): stop.
    LOST = "lost"


@attrs.frozen
class ReapBatch:
    """One batch of a clean-up.

    @ivar sockets: unbound; their peers are to be told.
    @ivar kept: recoverable sockets the judge keeps, detached, until their
        window ends (their peers are told nothing now).
    """

    status: ReapStatus
    sockets: tuple[ReapedSocket, ...] = ()
    kept: tuple[ReapedSocket, ...] = ()


class IStore(Interface):
    """PrivyDrop's shared state. See the module docstring for conventions."""

    async def room_exists(room_id: str) -> bool:
        """Whether C{room:<id>} exists (has C{created_at})."""

    async def create_room(room_id: str, now_ms: int, ttl_s: int) -> bool:
        """Create the room if absent: C{created_at} = now_ms, TTL on both keys.

        @return: True when this call created it, False when it existed (its TTL
            is then left alone).
        """

    async def create_first_free_room(
        candidates: Sequence[str], now_ms: int, ttl_s: int
    ) -> str | None:
        """Atomically create the first candidate id that is not a room yet.

        @return: the id created, or None when every candidate was taken.
        """

    async def join_room(
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
        """Execute the join rule of L{privydrop.rooms.rooms} atomically.

        The rule (its order, stale bindings, what each outcome writes) is
        stated there, once; this method is its storage half. C{rate} is the
        sliding window to record the attempt in (None: the limit is off).

        @param node_id: the node holding the socket, recorded with it.
        @param known_room: the room the caller believes the socket is in.
        @param known_incarnation: that room's incarnation as the caller
            knows it; a binding to C{known_room} with another incarnation
            is stale.
        @param prune_limit: members looked at for ghosts.
        @param pid: the socket's private session id (connection state
            recovery): on success C{recovery:<sid>} records it with the room
            and node, so that any process can recover the socket.
        """

    async def claim_recovery(
        socket_id: str, pid: str, node_id: str, socket_ttl_s: int
    ) -> RecoveryClaim:
        """Move a recoverable socket to C{node_id} (its client came back
        there with C{pid}): its node in the room and the node sets, its
        record, and its recovery deadline removed. Atomic.

        A wrong pid, no record, or a socket no longer bound to a live room
        claims nothing.
        """

    async def set_recovery_deadline(socket_id: str, deadline_ms: int) -> None:
        """The socket's connection was lost: its window ends at C{deadline_ms}."""

    async def take_recovery_deadline(socket_id: str) -> bool:
        """Remove the socket's deadline; whoever gets True ends the socket."""

    async def take_due_recoveries(now_ms: int, limit: int) -> list[str]:
        """Remove up to C{limit} deadlines due by C{now_ms}; the caller ends
        those sockets (no other process got them)."""

    async def leave_room(
        socket_id: str,
        room_id: str | None,
        empty_ttl_s: int,
        *,
        prune_limit: int = DEFAULT_PRUNE_LIMIT,
    ) -> LeaveResult:
        """Unbind a socket; when the room is left empty its keys get empty_ttl_s.

        With C{room_id} None the socket's own room (C{socket:<sid>}) is used.
        With an explicit C{room_id} that does not exist nothing is written
        and C{room_id} of the result is None. The binding is removed only
        when it names that room, and with it the socket's recovery record
        and deadline (nobody may recover a socket that left; a leave of
        another room takes neither); C{removed} says whether the socket was
        a member. Ghost members are pruned before counting.
        """

    async def check_rooms(
        probes: Sequence[RoomProbe], *, prune_limit: int = DEFAULT_PRUNE_LIMIT
    ) -> list[RoomCheck]:
        """For each probe: does the room still exist with that incarnation,
        which probed sockets are no longer members, and who the members are.

        One round trip for all of them (callers bound the batch).
        """

    async def heartbeat(
        node_id: str, beat: str, info: Mapping[str, str], ttl_s: int
    ) -> Heartbeat:
        """Record this node's heartbeat and info, and read every node's.

        Writes nothing and answers C{reaped} when this node was reaped.
        """

    async def claim_reap(
        dead_node: str,
        judge: str,
        observed_beat: str,
        claim_ttl_ms: int,
        marker_ttl_s: int,
        takeover_from: Collection[str] = (),
    ) -> bool:
        """Claim the clean-up of a dead node, atomically.

        Refused when its heartbeat is gone or is no longer C{observed_beat}
        (it beat since), or when another node holds the claim and is not in
        C{takeover_from} (the nodes the judge believes dead). On success the
        dead node is marked reaped (C{marker_ttl_s}).
        """

    async def reap_node(
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
        """One step of the clean-up of a dead node, under the caller's claim.

        With C{ack} the previous batch was announced and is dropped. A batch
        left pending (by a reaper that died) is returned again before new
        sockets are taken; otherwise up to C{batch} sockets are unbound
        (binding, member sets, node hash; emptied rooms get C{empty_ttl_s})
        and recorded as pending. When none are left the node's heartbeat,
        info and claim are removed (L{ReapStatus.DONE}).

        With C{recovery_window_ms} > 0, a socket that has a recovery record
        is not unbound: the judge keeps it (L{ReapBatch.kept}), recorded as
        its node, with a deadline C{now_ms + recovery_window_ms} unless one
        was running already.
        """

    async def deregister_node(node_id: str) -> bool:
        """Remove a stopping node's heartbeat and info, unless it still holds
        bound sockets (then others will judge it dead and reap them).

        @return: whether it was removed.
        """

    async def room_of_socket(socket_id: str) -> str | None:
        """The room id a socket is bound to."""

    async def room_sockets(room_id: str) -> set[str]:
        """Socket ids bound to a room."""

    async def record_attempt(rate: RateWindow, now_ms: int) -> RateResult:
        """Record one attempt in a sliding window (without joining anything)."""

    async def count_calls(
        budget: str, client_key: str, window_s: int, window_index: int, calls: int, ttl_s: int
    ) -> CallCounts:
        """Add C{calls} to C{ratelimit:<budget>:<window_s>:<window_index>:<client>}.

        The key gets C{ttl_s} when this call creates it.

        @return: that window's total and the previous window's.
        """

    async def track_referrer(
        day: str, ref: str, ttl_s: int, max_referrers: int
    ) -> bool:
        """HINCRBY C{referrers:daily:<day>} ref 1 and set its TTL.

        @return: False (and nothing written) when the day already holds
            max_referrers distinct referrers and C{ref} is not one of them.
        """

    async def ping() -> None:
        """Round trip to the backend; raises L{StoreUnavailable} when down."""

    async def ttl(key: str) -> int | None:
        """Seconds left on a key (None: no such key; -1: no TTL). For tests and operators."""

    async def close() -> None:
        """Release connections."""
