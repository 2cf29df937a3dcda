"""Validation of signaling payloads (L{privydrop.signaling.events}), as tables.

These rules stand between what any client can send and the handlers that
forward it to other people's browsers; each row is a payload a buggy or
hostile client could send.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from privydrop.settings import Settings
from privydrop.signaling import events
from privydrop.signaling.events import (
    EventLimits,
    InvalidPayload,
    Reason,
    parse_initiator_online,
    parse_join,
    parse_recipient_ready,
    parse_signal,
)

LIMITS = EventLimits(max_room_id_length=64, max_signal_bytes=1024)


def test_limits_come_from_the_settings() -> None:
    """An operator who changes the room id or signal size limit sees it enforced."""
    limits = EventLimits.from_settings(Settings())
    assert limits.max_room_id_length == Settings().rooms.max_room_id_length
    assert limits.max_signal_bytes == 64 * 1024


@pytest.mark.parametrize(
    "args, room_id",
    [
        (({"roomId": "1234"},), "1234"),
        (({"roomId": "x" * 64, "extra": [1, 2]},), "x" * 64),
        (({"roomId": "ab"}, "ignored second argument"), "ab"),
    ],
)
def test_join_accepts_a_room_id_string(args: tuple[Any, ...], room_id: str) -> None:
    """Honest clients' joins reach the room rules with the id they sent."""
    assert parse_join(args, LIMITS) == events.JoinRequest(room_id=room_id)


@pytest.mark.parametrize(
    "args, reason, echoed",
    [
        ((), Reason.NOT_AN_OBJECT, None),
        (("1234",), Reason.NOT_AN_OBJECT, None),
        (([{"roomId": "1234"}],), Reason.NOT_AN_OBJECT, None),
        ((None,), Reason.NOT_AN_OBJECT, None),
        (({},), Reason.MISSING_FIELD, None),
        (({"roomId": 1234},), Reason.NOT_A_STRING, None),
        (({"roomId": None},), Reason.NOT_A_STRING, None),
        (({"roomId": ["1234"]},), Reason.NOT_A_STRING, None),
        (({"roomId": ""},), Reason.EMPTY, ""),
        (({"roomId": "x" * 65},), Reason.TOO_LONG, "x" * 65),
    ],
)
def test_join_refuses_a_malformed_room_id(
    args: tuple[Any, ...], reason: Reason, echoed: str | None
) -> None:
    """A malformed join is answered "Invalid roomId" instead of crashing the handler."""
    with pytest.raises(InvalidPayload) as caught:
        parse_join(args, LIMITS)
    assert caught.value.reason is reason
    assert caught.value.room_id == echoed


@pytest.mark.parametrize("event", [events.OFFER, events.ANSWER, events.ICE_CANDIDATE])
def test_signal_keeps_the_description_and_target(event: str) -> None:
    """Offers, answers and candidates reach the target unchanged."""
    field = events.SIGNAL_FIELDS[event]
    value = {"type": "offer", "sdp": "v=0\r\n"}
    request = parse_signal(event, ({"peerId": "abc", field: value, "from": "spoofed"},), LIMITS)
    assert (request.event, request.peer_id, request.value) == (event, "abc", value)
    assert request.field == field
    assert orjson.loads(request.encoded) == value
    assert orjson.dumps([request.relayed_value]) == b"[" + orjson.dumps(value) + b"]"


def test_null_candidate_is_forwarded() -> None:
    """An end-of-candidates marker (null) is not mistaken for a missing field."""
    request = parse_signal(events.ICE_CANDIDATE, ({"peerId": "abc", "candidate": None},), LIMITS)
    assert request.value is None


@pytest.mark.parametrize(
    "event, payload, reason",
    [
        (events.OFFER, "not an object", Reason.NOT_AN_OBJECT),
        (events.OFFER, {"offer": {}}, Reason.MISSING_FIELD),
        (events.ANSWER, {"peerId": 7, "answer": {}}, Reason.NOT_A_STRING),
        (events.ANSWER, {"peerId": "", "answer": {}}, Reason.EMPTY),
        (events.ICE_CANDIDATE, {"peerId": "p" * 65, "candidate": {}}, Reason.TOO_LONG),
        (events.ICE_CANDIDATE, {"peerId": "abc"}, Reason.MISSING_FIELD),
        (events.OFFER, {"peerId": "abc", "offer": {"sdp": "x" * 1024}}, Reason.TOO_LARGE),
        (events.OFFER, {"peerId": "abc", "offer": "x" * 1025}, Reason.TOO_LARGE),
        (events.ICE_CANDIDATE, {"peerId": "abc", "candidate": b"\x00binary"}, Reason.NOT_JSON),
        (events.ICE_CANDIDATE, {"peerId": "abc", "candidate": 2**70}, Reason.NOT_JSON),
    ],
)
def test_signal_refuses_malformed_or_oversized_payloads(
    event: str, payload: Any, reason: Reason
) -> None:
    """Bad signaling messages are dropped, never forwarded to another browser."""
    with pytest.raises(InvalidPayload) as caught:
        parse_signal(event, (payload,), LIMITS)
    assert caught.value.reason is reason


def test_signal_size_is_measured_as_encoded_json() -> None:
    """The size limit counts what would travel on, escapes included, to the byte."""
    # {"sdp":"..."} is 10 bytes of framing; a newline encodes as two bytes.
    fits = {"sdp": "a" * (1024 - 10)}
    request = parse_signal(events.OFFER, ({"peerId": "p", "offer": fits},), LIMITS)
    assert len(request.encoded) == 1024
    escaped = {"sdp": "\n" * ((1024 - 10) // 2 + 1)}
    with pytest.raises(InvalidPayload) as caught:
        parse_signal(events.OFFER, ({"peerId": "p", "offer": escaped},), LIMITS)
    assert caught.value.reason is Reason.TOO_LARGE
    assert caught.value.field == "offer"


def test_initiator_online_needs_a_room_id() -> None:
    """initiator-online without a usable roomId is dropped."""
    assert parse_initiator_online(({"roomId": "r1"},), LIMITS).room_id == "r1"
    payload: Any
    for payload in ({}, {"roomId": 5}, [], {"roomId": "r" * 65}):
        with pytest.raises(InvalidPayload):
            parse_initiator_online((payload,), LIMITS)


def test_recipient_ready_needs_room_and_peer_ids() -> None:
    """recipient-ready without the fields the frontend always sends is dropped."""
    ok = parse_recipient_ready(({"roomId": "r1", "peerId": "me"},), LIMITS)
    assert ok == events.RoomAnnouncement(event=events.RECIPIENT_READY, room_id="r1")
    for payload in ({"roomId": "r1"}, {"peerId": "me"}, {"roomId": "r1", "peerId": 3}):
        with pytest.raises(InvalidPayload):
            parse_recipient_ready((payload,), LIMITS)


def test_dropped_payloads_are_counted_by_event_and_reason() -> None:
    """Operators can see how many payloads were refused, and why."""
    dropped = events.DroppedPayloads()
    dropped.record(events.OFFER, Reason.TOO_LARGE)
    dropped.record(events.OFFER, Reason.TOO_LARGE)
    dropped.record(events.JOIN, Reason.NOT_A_STRING)
    assert dropped.total == 3
    assert dropped.count(events.OFFER) == 2
    assert dropped.count(reason=Reason.NOT_A_STRING) == 1
    assert dropped.count(events.ANSWER) == 0


def _nested(depth: int) -> Any:
    value: Any = "x"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


@pytest.mark.parametrize("event", [events.OFFER, events.ANSWER, events.ICE_CANDIDATE])
def test_a_signal_that_passes_also_encodes_as_relayed(event: str) -> None:
    """Nesting is checked on what will be encoded: the relayed event carries
    the value's own measured encoding ([event, {field, from, peerId}] around
    it), so whatever passes also encodes as relayed. An offer nested some
    250 levels used to pass, then fail to encode once wrapped, with a
    critical traceback per message."""
    from privydrop.socketio.packets import Packet, PacketType, encode

    limits = EventLimits(max_room_id_length=64, max_signal_bytes=1_000_000)
    field = events.SIGNAL_FIELDS[event]
    refused_from = None
    for depth in range(240, 300):
        value = _nested(depth)
        try:
            request = parse_signal(event, ({"peerId": "p", field: value},), limits)
        except InvalidPayload as error:
            assert error.reason is Reason.NOT_JSON and error.field == field
            refused_from = depth if refused_from is None else refused_from
            continue
        assert refused_from is None, "refused at %d, accepted at %d" % (refused_from, depth)
        data = [event, {request.field: request.relayed_value, "from": "s", "peerId": "s"}]
        (text,) = encode(Packet(PacketType.EVENT, "/", data))
        assert text.startswith('2["%s",{"%s":' % (event, field))
        assert orjson.loads(text[1:])[1][field] == value
    assert refused_from is not None


def test_a_signal_payload_of_another_shape_is_checked_the_general_way() -> None:
    """A dict subclass or a str subclass as C{peerId} passes the same checks
    as the plain types of a decoded packet."""

    class Payload(dict):  # type: ignore[type-arg]
        pass

    class PeerId(str):
        pass

    request = parse_signal(
        events.ICE_CANDIDATE, (Payload(peerId=PeerId("abc"), candidate={"a": 1}),), LIMITS
    )
    assert (request.peer_id, request.encoded) == ("abc", b'{"a":1}')
    with pytest.raises(InvalidPayload) as caught:
        parse_signal(events.ICE_CANDIDATE, (Payload(peerId=PeerId("")),), LIMITS)
    assert caught.value.reason is Reason.EMPTY
