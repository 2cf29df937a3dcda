"""PrivyDrop's room rules over the store.

L{Rooms} states what creating, allocating, joining and leaving a room mean
(the Node backend's behaviour) and hands each to the store as one atomic
operation. It does no I/O of its own beyond calling the store, and knows
nothing of HTTP or Socket.IO: the API and signaling layers turn its results
into their answers (the Node messages are provided here, since both layers
use the same words).

The join rule
=============
This is the one statement of it; the store backends execute it atomically
(C{privydrop/store/scripts/join_room.lua} in Redis, L{MemoryStore.join_room}
in memory), so two processes can never interleave a check with its act.
A socket asks to join room R:

 0. A stale binding is no binding: it is deleted first. A binding
    C{socket:<sid>} = B is live only while room B exists and, when the
    caller knows the incarnation the socket joined B with, B still has that
    incarnation; without one, while B's member set lists the socket. (A
    room that ended, by its TTL or because Redis lost it, is over even when
    its id is issued again: its old sockets join like fresh ones.)
 1. The socket is bound to another room: refused (C{OTHER_ROOM}); nothing
    is written.
 2. Unless the socket is already bound to R (a rejoin), and unless the join
    rate limit is off, the attempt is recorded in the client address's
    sliding window; over the limit: refused (C{RATE_LIMITED}). Refused
    attempts count too, as with the Node backend.
 3. R does not exist: refused (C{NO_ROOM}).
 4. Ghost members of R (whose binding is gone or names another room) are
    pruned, looking at most at C{prune_limit} of them.
 5. A rejoin refreshes the TTLs of R's keys and of the socket's binding,
    and adds the socket to R's member set again if it is missing there
    (C{REJOINED}).
 6. Otherwise the socket is bound to R (C{socket:<sid>}, with the room TTL
    plus one hour) and added to R's member set (C{JOINED}).
 7. Either way the node holding the socket is recorded with it
    (C{room:<id>:nodes}, C{cluster:node:<node>:sockets}), R's TTLs are
    refreshed, and the answer carries R's incarnation (C{created_at}) and
    its members with their nodes.

L{Rooms.join} computes the inputs (now, the window, the TTLs) and interprets
the store's answer; L{JoinDecision.message} gives the Node backend's words.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable, Mapping, Sequence

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import LogLevel

from privydrop.logs.levels import Logger
from privydrop.logs.throttle import WarningThrottle
from privydrop.ratelimit.join import (
    RateDecision,
    decide,
    join_window,
    rate_limit_message,
)
from privydrop.rooms import ids
from privydrop.rooms.ids import RandomSource, RoomId, validate_room_id
from privydrop.settings import RoomSettings
from privydrop.store.interface import (
    IStore,
    JoinOutcome,
    LeaveResult,
    RoomCheck,
    RoomProbe,
)

_log = Logger()


class RoomIdsExhausted(Exception):
    """No free room id was found in the configured number of attempts.

    The API answers 503: the id space is crowded, which is a capacity
    problem, not the client's fault.
    """


class CreateOutcome(enum.Enum):
    """What L{Rooms.create} decided, with the Node backend's answers."""

    #: The room did not exist and was created now.
    CREATED = "created"
    #: A short id that is taken: creation refused.
    EXISTS = "exists"
    #: A long id (>= rejoin_id_length) that exists: the client may join it
    #: again (reconnects). Its TTL is not refreshed; a successful join does.
    REJOIN_ALLOWED = "rejoin_allowed"

    @property
    def success(self) -> bool:
        """The C{success} field of the API answer."""
        return self is not CreateOutcome.EXISTS

    @property
    def message(self) -> str:
        """The C{message} field of the API answer (Node wording, typo included)."""
        return _CREATE_MESSAGES[self]


_CREATE_MESSAGES = {
    CreateOutcome.CREATED: "create room success",
    CreateOutcome.EXISTS: "roomId is already exists",
    CreateOutcome.REJOIN_ALLOWED: "room exists (rejoin allowed)",
}

#: The C{joinResponse} messages of the Node backend, by outcome (rate
#: limiting has its own, computed message).
_JOIN_MESSAGES = {
    JoinOutcome.JOINED: "Successfully joined room",
    JoinOutcome.REJOINED: "Successfully joined room",
    JoinOutcome.OTHER_ROOM: "Socket is already bound to another room",
    JoinOutcome.NO_ROOM: "Room does not exist",
}


@attrs.frozen
class JoinDecision:
    """What happened to one C{join} request.

    @ivar outcome: the store's decision.
    @ivar room_id: the room asked for.
    @ivar bound_room: the room the socket is bound to (for OTHER_ROOM, the
        other room).
    @ivar rate: the rate check's verdict, when one was made.
    @ivar incarnation: on success, the room's incarnation (C{created_at}).
    @ivar members: on success, the room's members with their nodes (the
        joiner included).
    """

    outcome: JoinOutcome
    room_id: str
    bound_room: str | None = None
    rate: RateDecision | None = None
    incarnation: int | None = None
    members: Mapping[str, str] = attrs.field(factory=dict, hash=False)

    @property
    def success(self) -> bool:
        """The C{success} field of C{joinResponse}."""
        return self.outcome in (JoinOutcome.JOINED, JoinOutcome.REJOINED)

    @property
    def newly_bound(self) -> bool:
        """The socket was bound now: signaling adds it to the Socket.IO room."""
        return self.outcome is JoinOutcome.JOINED

    @property
    def message(self) -> str:
        """The C{message} field of C{joinResponse}, in the Node backend's words."""
        if self.outcome is JoinOutcome.RATE_LIMITED:
            # Rooms.join always sets rate for this outcome.
            rate = self.rate or RateDecision(allowed=False, remaining=0, reset_after_s=0)
            return rate_limit_message(rate)
        return _JOIN_MESSAGES[self.outcome]


class Rooms:
    """Room creation, allocation, membership and the join rate limit."""

    def __init__(
        self,
        store: IStore,
        settings: RoomSettings,
        clock: IReactorTime,
        rng: RandomSource | None = None,
        *,
        node_id: Callable[[], str] | None = None,
    ) -> None:
        """
        @param store: where rooms live.
        @param settings: TTLs, id lengths, attempts, rate window.
        @param clock: "now" for C{created_at} and the rate window.
        @param rng: random source for room ids and rate members (the
            operating system's by default; tests pass a seeded one).
        @param node_id: this process's current node id, recorded with each
            socket it binds (it changes when the process registers again);
            a random one fixed for this object when None.
        """
        self._store = store
        self._settings = settings
        self._clock = clock
        #: Rooms are created and left at the clients' pace: their lines are throttled.
        self._warnings = WarningThrottle(clock)
        self._rng: RandomSource = rng if rng is not None else ids.default_random()
        if node_id is None:
            fixed = secrets.token_hex(8)
            node_id = lambda: fixed  # noqa: E731 - a constant for one process
        self._node_id = node_id

    @property
    def settings(self) -> RoomSettings:
        return self._settings

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    def _validate(self, room_id: object) -> RoomId:
        return validate_room_id(room_id, self._settings.max_room_id_length)

    async def create(self, room_id: str) -> CreateOutcome:
        """Create a room with a client-chosen id (C{POST /api/create_room}).

        One store round trip. An existing id shorter than
        C{rejoin_id_length} is refused; a longer one is reported as
        rejoinable (clients reconnecting with their long id) without
        refreshing its TTL.

        @raise InvalidRoomId: for an id the client may not use.
        @raise StoreUnavailable: when the store cannot be reached.
        """
        valid = self._validate(room_id)
        created = await self._store.create_room(
            valid, self._now_ms(), self._settings.room_ttl_s
        )
        if created:
            self._warnings.lifecycle(
                LogLevel.info, _log, "created", "room {room_id} created", room_id=valid
            )
            return CreateOutcome.CREATED
        if len(valid) >= self._settings.rejoin_id_length:
            return CreateOutcome.REJOIN_ALLOWED
        return CreateOutcome.EXISTS

    async def allocate(self) -> RoomId:
        """Create a room with a fresh id (C{GET /api/get_room}).

        First one batch of C{numeric_id_attempts} four-digit candidates, then
        one batch of C{alphanumeric_id_attempts} four-character ones; each
        batch is one store round trip that atomically creates the first free
        candidate, so two callers can never get the same id.

        @raise RoomIdsExhausted: when every candidate of both batches is taken.
        @raise StoreUnavailable: when the store cannot be reached.
        """
        settings = self._settings
        # The letter batch is drawn only when the digit batch is all taken.
        batches = (
            ("numeric", ids.numeric_candidates, settings.numeric_id_attempts),
            ("alphanumeric", ids.alphanumeric_candidates, settings.alphanumeric_id_attempts),
        )
        for kind, draw, attempts in batches:
            candidates = draw(self._rng, attempts)
            if not candidates:
                continue
            room_id = await self._store.create_first_free_room(
                candidates, self._now_ms(), settings.room_ttl_s
            )
            if room_id is not None:
                self._warnings.lifecycle(
                    LogLevel.info, _log, "allocated", "room {room_id} allocated", room_id=room_id
                )
                return RoomId(room_id)
            self._warnings.warn(
                _log,
                "taken:" + kind,
                "all {count} {kind} room id candidates were taken",
                count=len(candidates),
                kind=kind,
            )
        self._warnings.emit(
            LogLevel.error, _log, "exhausted", "no free room id found; the id space is crowded"
        )
        raise RoomIdsExhausted("Failed to generate a unique room ID.")

    async def is_available(self, room_id: str) -> bool:
        """Whether no room has this id (C{POST /api/check_room}). One round trip.

        @raise InvalidRoomId: for an id the client may not use.
        """
        return not await self._store.room_exists(self._validate(room_id))

    async def join(
        self,
        socket_id: str,
        room_id: str,
        client_ip: str,
        known: tuple[str, int] | None = None,
        pid: str | None = None,
    ) -> JoinDecision:
        """Decide a Socket.IO C{join} under the join rule (module docstring).

        One store round trip.

        @param known: the room and incarnation the caller believes the
            socket is in (rule 0), if any.
        @param pid: the socket's private session id, recorded with a
            successful join so that any process can recover the socket.

        @raise InvalidRoomId: for an id the client may not use.
        @raise StoreUnavailable: when the store cannot be reached.
        """
        valid = self._validate(room_id)
        settings = self._settings
        now_ms = self._now_ms()
        window = None
        if settings.join_rate_limit_enabled:
            window = join_window(
                client_ip,
                now_ms,
                repr(self._rng.random()),
                settings.join_window_s,
                settings.join_limit,
            )
        result = await self._store.join_room(
            socket_id,
            valid,
            now_ms,
            settings.room_ttl_s,
            settings.socket_ttl_s,
            window,
            node_id=self._node_id(),
            known_room=None if known is None else known[0],
            known_incarnation=None if known is None else known[1],
            prune_limit=settings.prune_limit,
            pid=pid,
        )
        rate = None
        if result.rate is not None and window is not None:
            rate = decide(result.rate, window, now_ms)
        return JoinDecision(
            outcome=result.outcome,
            room_id=valid,
            bound_room=result.bound_room,
            rate=rate,
            incarnation=result.incarnation,
            members=result.members,
        )

    async def leave(self, socket_id: str, room_id: str | None = None) -> LeaveResult:
        """Unbind a socket (disconnect, or C{POST /api/leave_room}). One round trip.

        With no C{room_id} the socket's own room is left. A room left empty
        expires after C{empty_room_ttl_s}. The result says whether the
        socket was a member (C{removed}): only then may its peers be told.

        @raise InvalidRoomId: for an explicit id the client may not use.
        @raise StoreUnavailable: when the store cannot be reached.
        """
        valid = self._validate(room_id) if room_id is not None else None
        result = await self._store.leave_room(
            socket_id,
            valid,
            self._settings.empty_room_ttl_s,
            prune_limit=self._settings.prune_limit,
        )
        if result.room_id is not None and result.remaining == 0:
            self._warnings.lifecycle(
                LogLevel.info,
                _log,
                "emptied",
                "room {room_id} is empty and expires in {ttl_s}s",
                room_id=result.room_id,
                ttl_s=self._settings.empty_room_ttl_s,
            )
        return result

    async def check(self, probes: Sequence[RoomProbe]) -> list[RoomCheck]:
        """Whether rooms still exist with the incarnation their sockets
        joined, and who is in them. One round trip for all of them.

        @raise StoreUnavailable: when the store cannot be reached.
        """
        return await self._store.check_rooms(probes, prune_limit=self._settings.prune_limit)

    async def room_of(self, socket_id: str) -> str | None:
        """The room a socket is bound to. One round trip."""
        return await self._store.room_of_socket(socket_id)

    async def members(self, room_id: str) -> set[str]:
        """Socket ids bound to a room. One round trip."""
        return await self._store.room_sockets(room_id)
