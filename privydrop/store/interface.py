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
from typing import Sequence

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
    outcome: JoinOutcome
    #: The room the socket is bound to, for OTHER_ROOM (and JOINED/REJOINED).
    bound_room: str | None = None
    #: Present when a rate window was checked.
    rate: RateResult | None = None


@attrs.frozen
class LeaveResult:
    """What L{IStore.leave_room} did.

    @ivar room_id: the room the socket was unbound from, or None when it was
        bound to none (or, with an explicit room, when that room does not exist).
    @ivar remaining: sockets left in that room.
    """

    room_id: str | None
    remaining: int


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
    ) -> JoinResult:
        """Execute the join rule of L{privydrop.rooms.rooms} atomically.

        The rule (its order and what each outcome writes) is stated there,
        once; this method is its storage half. C{rate} is the sliding window
        to record the attempt in (None: the limit is off).
        """

    async def leave_room(
        socket_id: str, room_id: str | None, empty_ttl_s: int
    ) -> LeaveResult:
        """Unbind a socket; when the room is left empty its keys get empty_ttl_s.

        With C{room_id} None the socket's own room (C{socket:<sid>}) is used.
        With an explicit C{room_id} that does not exist nothing is written
        and C{room_id} of the result is None.
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
