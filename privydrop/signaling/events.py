"""Typed validation of the payloads PrivyDrop clients send over Socket.IO.

Pure functions: the arguments of one Socket.IO event in, a frozen request
object out, or L{InvalidPayload} naming why the payload was refused. Nothing
here touches a socket, the store or the clock, so the rules are table-tested
without any I/O (C{tests/unit/test_signaling_events.py}).

What is checked is the I{shape} a handler relies on: the payload is a JSON
object; C{roomId} and C{peerId} are non-empty strings no longer than their
limits; the forwarded SDP or ICE candidate, encoded as JSON, is no larger than
C{ApiSettings.max_signal_bytes} and encodes inside the event that relays it
(so a payload that passes never fails to be sent). Whether a room id may name a room at all
(control characters, C{:}) is the room rules' decision
(L{privydrop.rooms.validate_room_id}), not this module's.

Fields a handler overwrites (C{from}, and the C{peerId} of
C{recipient-ready} that the server sets to the sender's socket id) are
checked no further than the Node backend's types require, and never
forwarded as received.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Sequence
from typing import Any, NamedTuple

import attrs
import orjson

from privydrop.settings import Settings

#: Socket ids our server hands out are 20 characters; anything longer than
#: this cannot name a socket and is refused before it reaches a lookup.
MAX_PEER_ID_LENGTH = 64

#: Event names, as the PrivyDrop frontend spells them.
JOIN = "join"
OFFER = "offer"
ANSWER = "answer"
ICE_CANDIDATE = "ice-candidate"
INITIATOR_ONLINE = "initiator-online"
RECIPIENT_READY = "recipient-ready"

#: The field that carries the forwarded description, per relayed event.
SIGNAL_FIELDS: dict[str, str] = {
    OFFER: "offer",
    ANSWER: "answer",
    ICE_CANDIDATE: "candidate",
}


class Reason(enum.Enum):
    """Why a payload was refused (the label of the drop counter)."""

    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    NOT_A_STRING = "not_a_string"
    EMPTY = "empty"
    TOO_LONG = "too_long"
    TOO_LARGE = "too_large"
    NOT_JSON = "not_json"
    #: A room id the room rules refuse (control characters, C{:}).
    REFUSED_ROOM_ID = "refused_room_id"
    #: A join sent while the same socket already had too many joins waiting.
    BUSY = "busy"


class InvalidPayload(Exception):
    """A payload that a handler must drop (or, for C{join}, refuse).

    @ivar reason: why, for the counter and the debug log.
    @ivar field: the offending field, when one is to blame.
    @ivar room_id: the C{roomId} as received when it was a string (C{join}
        echoes it in its refusal, as the Node backend echoes what it got).
    """

    def __init__(self, reason: Reason, field: str | None = None, room_id: str | None = None) -> None:
        super().__init__(reason.value, field)
        self.reason = reason
        self.field = field
        self.room_id = room_id


@attrs.frozen
class EventLimits:
    """The limits the validators enforce.

    @ivar max_room_id_length: longest C{roomId} accepted, characters.
    @ivar max_signal_bytes: largest SDP or candidate, bytes of encoded JSON.
    @ivar max_peer_id_length: longest C{peerId} accepted, characters.
    """

    max_room_id_length: int
    max_signal_bytes: int
    max_peer_id_length: int = MAX_PEER_ID_LENGTH

    @classmethod
    def from_settings(cls, settings: Settings) -> EventLimits:
        """The limits configured in C{settings} (rooms and API slices)."""
        return cls(
            max_room_id_length=settings.rooms.max_room_id_length,
            max_signal_bytes=settings.api.max_signal_bytes,
        )


@attrs.frozen
class JoinRequest:
    """C{join {roomId}}."""

    room_id: str


class SignalRequest(NamedTuple):
    """C{offer}, C{answer} or C{ice-candidate}: a description for one peer.

    A named tuple rather than a frozen attrs class: one is built for every
    relayed message, and a tuple is the cheapest immutable value to build.

    @ivar event: which of the three.
    @ivar peer_id: the socket id of the target.
    @ivar value: the description or candidate, as received.
    @ivar encoded: C{value} encoded as JSON, as it was measured; relayed as
        it is (L{relayed_value}), so the value is encoded once.
    """

    event: str
    peer_id: str
    value: Any
    encoded: bytes

    @property
    def field(self) -> str:
        """The payload field that carries C{value} (C{offer}/C{answer}/C{candidate})."""
        return SIGNAL_FIELDS[self.event]

    @property
    def relayed_value(self) -> orjson.Fragment:
        """C{value} for the relayed event: its measured encoding, which the
        JSON encoder copies into the event instead of encoding C{value} again."""
        return orjson.Fragment(self.encoded)


@attrs.frozen
class RoomAnnouncement:
    """C{initiator-online {roomId}} or C{recipient-ready {roomId, peerId}}."""

    event: str
    room_id: str


def _payload(args: Sequence[Any]) -> dict[str, Any]:
    if not args or not isinstance(args[0], dict):
        raise InvalidPayload(Reason.NOT_AN_OBJECT)
    return args[0]


#: Builds a L{SignalRequest} without its generated C{__new__} (one more
#: Python call per relayed message).
_new_tuple = tuple.__new__


def _string_field(payload: dict[str, Any], name: str, limit: int) -> str:
    if name not in payload:
        raise InvalidPayload(Reason.MISSING_FIELD, name)
    value = payload[name]
    if not isinstance(value, str):
        raise InvalidPayload(Reason.NOT_A_STRING, name)
    if not value:
        raise InvalidPayload(Reason.EMPTY, name)
    if len(value) > limit:
        raise InvalidPayload(Reason.TOO_LONG, name)
    return value


def parse_join(args: Sequence[Any], limits: EventLimits) -> JoinRequest:
    """Validate the arguments of a C{join} event.

    @param args: the event's arguments, as the Socket.IO layer decoded them.
    @raise InvalidPayload: the caller answers C{Invalid roomId}, echoing
        L{InvalidPayload.room_id}.
    """
    payload = _payload(args)
    raw = payload.get("roomId")
    try:
        room_id = _string_field(payload, "roomId", limits.max_room_id_length)
    except InvalidPayload as error:
        error.room_id = raw if isinstance(raw, str) else None
        raise
    return JoinRequest(room_id=room_id)


def parse_signal(event: str, args: Sequence[Any], limits: EventLimits) -> SignalRequest:
    """Validate the arguments of C{offer}, C{answer} or C{ice-candidate}.

    The description field must be present; its value is forwarded as it
    came (C{null} included, which some clients send as end-of-candidates),
    provided its JSON encoding is within C{limits.max_signal_bytes}. That
    encoding is the one relayed (L{SignalRequest.relayed_value}): it is
    copied into the relayed event as it is, so a value that encodes here
    cannot fail to encode there, however deeply it is nested.

    Runs for every relayed message: the usual payload (a plain dict with
    a plain string C{peerId}) is checked inline; anything else goes
    through the general checks, which name the reason.

    @param event: one of L{OFFER}, L{ANSWER}, L{ICE_CANDIDATE}.
    @raise InvalidPayload: the caller drops the message.
    """
    payload = args[0] if args else None
    if payload.__class__ is not dict:
        payload = _payload(args)
    peer_id = payload.get("peerId")
    if peer_id.__class__ is not str or not peer_id or len(peer_id) > limits.max_peer_id_length:
        peer_id = _string_field(payload, "peerId", limits.max_peer_id_length)
    field = SIGNAL_FIELDS[event]
    if field not in payload:
        raise InvalidPayload(Reason.MISSING_FIELD, field)
    value = payload[field]
    # A string cannot shrink when encoded, so a long one is refused before
    # paying for the encoding.
    if isinstance(value, str) and len(value) > limits.max_signal_bytes:
        raise InvalidPayload(Reason.TOO_LARGE, field)
    try:
        encoded = orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):
        raise InvalidPayload(Reason.NOT_JSON, field) from None
    if len(encoded) > limits.max_signal_bytes:
        raise InvalidPayload(Reason.TOO_LARGE, field)
    return _new_tuple(SignalRequest, (event, peer_id, value, encoded))


def parse_initiator_online(args: Sequence[Any], limits: EventLimits) -> RoomAnnouncement:
    """Validate C{initiator-online {roomId}}.

    @raise InvalidPayload: the caller drops the message.
    """
    payload = _payload(args)
    room_id = _string_field(payload, "roomId", limits.max_room_id_length)
    return RoomAnnouncement(event=INITIATOR_ONLINE, room_id=room_id)


def parse_recipient_ready(args: Sequence[Any], limits: EventLimits) -> RoomAnnouncement:
    """Validate C{recipient-ready {roomId, peerId}}.

    C{peerId} must be there as the Node backend's type says, but its value
    is replaced by the sender's socket id before the event goes on.

    @raise InvalidPayload: the caller drops the message.
    """
    payload = _payload(args)
    room_id = _string_field(payload, "roomId", limits.max_room_id_length)
    _string_field(payload, "peerId", limits.max_peer_id_length)
    return RoomAnnouncement(event=RECIPIENT_READY, room_id=room_id)


class DroppedPayloads:
    """Counts refused payloads by event and reason, for operators and tests."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, Reason]] = Counter()

    def record(self, event: str, reason: Reason) -> None:
        """Count one refused payload."""
        self._counts[(event, reason)] += 1

    def count(self, event: str | None = None, reason: Reason | None = None) -> int:
        """How many payloads were refused, optionally only of one event or reason."""
        return sum(
            n
            for (e, r), n in self._counts.items()
            if (event is None or e == event) and (reason is None or r is reason)
        )

    @property
    def total(self) -> int:
        """All refused payloads."""
        return sum(self._counts.values())
