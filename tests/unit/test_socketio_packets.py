"""Socket.IO v5 codec: the spec's examples, malformed input, limits, and
round trips."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privydrop.socketio.packets import (
    BinaryReassembler,
    Packet,
    PacketLimits,
    PacketType,
    SocketIOProtocolError,
    decode,
    encode,
)

LIMITS = PacketLimits()

# (packet, encoded messages), from socket.io-protocol v5 "Packet encoding".
SPEC_EXAMPLES: list[tuple[Packet, list[Any]]] = [
    (Packet(PacketType.CONNECT, "/"), ["0"]),
    (
        Packet(PacketType.CONNECT, "/admin", {"sid": "oSO0OpakMV_3jnilAAAA"}),
        ['0/admin,{"sid":"oSO0OpakMV_3jnilAAAA"}'],
    ),
    (
        Packet(PacketType.CONNECT_ERROR, "/", {"message": "Not authorized"}),
        ['4{"message":"Not authorized"}'],
    ),
    (Packet(PacketType.EVENT, "/", ["foo"]), ['2["foo"]']),
    (Packet(PacketType.EVENT, "/admin", ["bar"]), ['2/admin,["bar"]']),
    (
        Packet(PacketType.EVENT, "/", ["baz", b"\x01\x02\x03\x04"]),
        ['51-["baz",{"_placeholder":true,"num":0}]', b"\x01\x02\x03\x04"],
    ),
    (
        Packet(PacketType.EVENT, "/admin", ["baz", b"\x01\x02", b"\x03\x04"]),
        [
            '52-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
            b"\x01\x02",
            b"\x03\x04",
        ],
    ),
    (Packet(PacketType.EVENT, "/", ["foo"], 12), ['212["foo"]']),
    (Packet(PacketType.ACK, "/admin", ["bar"], 13), ['3/admin,13["bar"]']),
    (
        Packet(PacketType.ACK, "/", ["bar", b"\x01\x02\x03\x04"], 15),
        ['61-15["bar",{"_placeholder":true,"num":0}]', b"\x01\x02\x03\x04"],
    ),
    (Packet(PacketType.DISCONNECT, "/"), ["1"]),
    (Packet(PacketType.DISCONNECT, "/admin"), ["1/admin,"]),
    (Packet(PacketType.ACK, "/", [], 12), ["312[]"]),
]


def feed_all(messages: list[Any], limits: PacketLimits = LIMITS) -> list[Packet]:
    reassembler = BinaryReassembler(limits)
    out = []
    for message in messages:
        packet = reassembler.feed(message)
        if packet is not None:
            out.append(packet)
    return out


@pytest.mark.parametrize("packet,wire", SPEC_EXAMPLES)
def test_encode_matches_spec_examples(packet: Packet, wire: list[Any]) -> None:
    """Clients parse exactly what the spec shows; a difference breaks them."""
    assert encode(packet) == wire


@pytest.mark.parametrize("packet,wire", SPEC_EXAMPLES)
def test_decode_matches_spec_examples(packet: Packet, wire: list[Any]) -> None:
    """Packets written as the spec shows reach the server intact.

    (BINARY_ types come back under the type the encoder chose.)
    """
    decoded = feed_all(wire)
    expected_type = {
        PacketType.EVENT: PacketType.BINARY_EVENT,
        PacketType.ACK: PacketType.BINARY_ACK,
    }.get(packet.type, packet.type) if len(wire) > 1 else packet.type
    assert decoded == [
        Packet(expected_type, packet.namespace, packet.data, packet.ack_id)
    ]


@pytest.mark.parametrize(
    "text,namespace",
    [("0/random", "/random"), ("1/custom", "/custom"), ("0/a,", "/a")],
)
def test_namespace_without_trailing_comma_is_read_to_the_end(
    text: str, namespace: str
) -> None:
    """Clients (and the official suite) send "40/custom" without a comma; the
    server must still see the right namespace or refuse the wrong one."""
    assert decode(text, LIMITS).namespace == namespace


def test_connect_payload_is_the_auth_object() -> None:
    """The CONNECT payload carries the client's auth; losing it breaks auth."""
    assert decode('0{"token":"123"}', LIMITS).data == {"token": "123"}


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",  # unknown packet type
        "7",  # unknown packet type
        "2{}",  # EVENT payload not an array
        "2[]",  # EVENT payload empty
        "2[1]",  # EVENT name not a string
        "2",  # EVENT without payload
        '2abc["message-with-ack",1]',  # invalid ack id -> invalid JSON
        '2["a"',  # invalid JSON
        '2["a"]x',  # trailing garbage
        "2[null]",  # EVENT name not a string
        "2[[]]",
        "0[]",  # CONNECT payload not an object
        '1{"a":1}',  # DISCONNECT with payload
        "3[]",  # ACK without id
        "31{}",  # ACK payload not an array
        '01{"a":1}',  # ack id on CONNECT
        '5-["a"]',  # missing attachment count
        '5x-["a"]',  # bad attachment count
        '51["a"]',  # no dash
        '2["connect"]',  # reserved event names
        '2["connect_error"]',
        '2["disconnect"]',
        '2["disconnecting"]',
        '2["newListener"]',
        '2["removeListener"]',
    ],
)
def test_malformed_packets_are_protocol_errors(text: str) -> None:
    """Each of these would otherwise reach handlers as garbage; the server
    closes the client instead."""
    with pytest.raises(SocketIOProtocolError):
        decode(text, LIMITS)


def test_too_many_attachments_is_an_error() -> None:
    """A client cannot make the server wait for (and buffer) more
    attachments than max_attachments."""
    with pytest.raises(SocketIOProtocolError):
        decode('53-["a"]', PacketLimits(max_attachments=2))
    assert decode('52-["a"]', PacketLimits(max_attachments=2)).attachments == 2


def test_ack_id_longer_than_limit_is_an_error() -> None:
    """Ack ids are bounded, so a client cannot send an id of 100k digits."""
    limits = PacketLimits(max_ack_id_digits=3)
    assert decode('2999["a"]', limits).ack_id == 999
    with pytest.raises(SocketIOProtocolError):
        decode('21000["a"]', limits)


@pytest.mark.parametrize(
    "text, ack_id",
    [
        ('21["a"]', 1),
        ('20["a"]', 0),
        ('29007199254740991["a"]', 2**53 - 1),  # 16 digits: Number.MAX_SAFE_INTEGER
        ("39007199254740991[]", 2**53 - 1),
        ('2/admin,9007199254740991["a"]', 2**53 - 1),
        ('51-9007199254740991["a",{"_placeholder":true,"num":0}]', 2**53 - 1),
    ],
)
def test_ack_ids_up_to_max_safe_integer_are_accepted(text: str, ack_id: int) -> None:
    """Every id a JavaScript client can count to is a valid ack id."""
    assert decode(text, LIMITS).ack_id == ack_id


@pytest.mark.parametrize(
    "text",
    [
        '29007199254740992["a"]',  # 2^53: past what a JavaScript number holds exactly
        '29999999999999999["a"]',
        '212345678901234567["a"]',  # 17 digits
        "312345678901234567[]",
        '2abc["a"]',
        '20x1f["a"]',
        '2-1["a"]',
        '2+1["a"]',
        '21.5["a"]',
        '21e3["a"]',
        '2\uff11["a"]'.encode().decode("unicode_escape"),  # a fullwidth digit
        '2\u0661["a"]'.encode().decode("unicode_escape"),  # an Arabic-Indic digit
        "3abc[]",
        "3-1[]",
    ],
)
def test_ack_ids_longer_or_not_decimal_are_refused(text: str) -> None:
    """An ack id is 1 to 16 ASCII digits, at most 2^53-1; anything else
    closes the client."""
    with pytest.raises(SocketIOProtocolError):
        decode(text, LIMITS)


@pytest.mark.parametrize(
    "text",
    ["0null", '0"x"', "0[]", "01", "0true", "0/custom,null", '0/custom,"x"', "0/custom,[]", "1null"],
)
def test_connect_payload_must_be_an_object(text: str) -> None:
    """socket.io-parser: a CONNECT payload, when present, is an object
    (JSON null is not), and a DISCONNECT has none."""
    with pytest.raises(SocketIOProtocolError):
        decode(text, LIMITS)


def test_connect_without_payload_or_with_an_object_is_accepted() -> None:
    assert decode("0", LIMITS).data is None
    assert decode("0{}", LIMITS).data == {}
    assert decode("0/custom,", LIMITS).data is None
    assert decode('0/custom,{"a":[1]}', LIMITS).data == {"a": [1]}


def test_packet_larger_than_limit_is_an_error() -> None:
    """One packet cannot exceed max_packet_bytes, counting multi-byte text."""
    limits = PacketLimits(max_packet_bytes=20)
    decode('2["' + "a" * 15 + '"]', limits)
    with pytest.raises(SocketIOProtocolError):
        decode('2["' + "é" * 9 + '"]', limits)


def test_attachments_count_toward_packet_size() -> None:
    """Binary attachments are bounded too, not only the text header."""
    limits = PacketLimits(max_packet_bytes=100)
    header = '52-["a",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'
    reassembler = BinaryReassembler(limits)
    assert reassembler.feed(header) is None
    with pytest.raises(SocketIOProtocolError):
        reassembler.feed(b"x" * 40)


def test_reassembler_waits_for_every_attachment() -> None:
    """A binary event is handed over only once all its attachments arrived."""
    reassembler = BinaryReassembler(LIMITS)
    header = '452-789["m",{"_placeholder":true,"num":1},{"_placeholder":true,"num":0}]'[1:]
    assert reassembler.feed(header) is None
    assert reassembler.awaiting_attachments
    assert reassembler.feed(b"\x01") is None
    packet = reassembler.feed(b"\x02")
    assert packet == Packet(PacketType.BINARY_EVENT, "/", ["m", b"\x02", b"\x01"], 789)
    assert not reassembler.awaiting_attachments


def test_reassembler_takes_one_binary_packet_after_another() -> None:
    """The attachments' list exists only while a header awaits them: a
    second binary packet, after a text one, is reassembled as the first."""
    reassembler = BinaryReassembler(LIMITS)
    assert reassembler.feed('51-["a",{"_placeholder":true,"num":0}]') is None
    assert reassembler.feed(b"\x01") == Packet(PacketType.BINARY_EVENT, "/", ["a", b"\x01"])
    assert reassembler.feed('2["t"]') == Packet(PacketType.EVENT, "/", ["t"])
    assert reassembler.feed('52-["b",{"_placeholder":true,"num":1},{"_placeholder":true,"num":0}]') is None
    assert reassembler.feed(b"\x02") is None
    packet = reassembler.feed(b"\x03")
    assert packet == Packet(PacketType.BINARY_EVENT, "/", ["b", b"\x03", b"\x02"])
    with pytest.raises(SocketIOProtocolError):
        reassembler.feed(b"\x04")


@pytest.mark.parametrize(
    "messages",
    [
        [b"\x01"],  # binary without header
        ['51-["a",{"_placeholder":true,"num":0}]', '2["b"]'],  # text while waiting
        ['51-["a",{"_placeholder":true,"num":3}]', b"\x01"],  # placeholder out of range
        ['52-["a",{"_placeholder":true,"num":0}]', b"\x01", b"\x02"],  # count mismatch
        ['51-["a"]', b"\x01"],  # attachment nobody refers to
        [
            '52-["a",{"_placeholder":true,"num":0},{"_placeholder":true,"num":0}]',
            b"\x01",
            b"\x02",
        ],  # same attachment twice, one never used
    ],
)
def test_attachment_mismatches_are_protocol_errors(messages: list[Any]) -> None:
    """Attachments that don't match their header are rejected, never guessed."""
    with pytest.raises(SocketIOProtocolError):
        feed_all(messages)


def test_placeholder_in_plain_event_is_plain_data() -> None:
    """Without a BINARY_ type, an object that looks like a placeholder is data."""
    data = ["m", {"_placeholder": True, "num": 0}]
    assert decode('2["m",{"_placeholder":true,"num":0}]', LIMITS).data == data


def test_deeply_nested_binary_payload_is_a_protocol_error() -> None:
    """A client cannot crash the server with deep nesting around placeholders."""
    depth = 1000
    header = '51-["m",' + "[" * depth + '{"_placeholder":true,"num":0}' + "]" * depth + "]"
    with pytest.raises(SocketIOProtocolError):
        feed_all([header, b"\x01"])


def test_encode_refuses_values_json_cannot_carry() -> None:
    """Emitting an unsupported Python object is our bug and is reported as such."""
    with pytest.raises(TypeError):
        encode(Packet(PacketType.EVENT, "/", ["m", object()]))
    with pytest.raises(TypeError):
        encode(Packet(PacketType.EVENT, "/", ["m", b"bytes", object()]))
    with pytest.raises(TypeError):
        encode(Packet(PacketType.CONNECT, "/", {"sid": b"bytes"}))


@pytest.mark.parametrize("blob", [b"\x00\x01", bytearray(b"\x00\x01"), memoryview(b"\x00\x01")])
def test_bytes_anywhere_become_attachments(blob: Any) -> None:
    """Binary data the encoder missed would fail to encode or reach the
    client as text; every bytes-like value, at any depth, is an attachment."""
    messages = encode(Packet(PacketType.EVENT, "/", ["m", {"a": [1, (2, blob)]}], 7))
    assert messages == [
        '51-7["m",{"a":[1,[2,{"_placeholder":true,"num":0}]]}]',
        b"\x00\x01",
    ]


# Property tests

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars | st.binary(max_size=16),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
namespaces = st.just("/") | st.from_regex(r"\A/[a-z0-9_-]{1,10}\Z")
event_names = st.text(min_size=1, max_size=12).filter(
    lambda s: s not in {"connect", "connect_error", "disconnect", "disconnecting",
                        "newListener", "removeListener"}
)


def _without_binary_type(packet: Packet) -> Packet:
    t = {PacketType.BINARY_EVENT: PacketType.EVENT, PacketType.BINARY_ACK: PacketType.ACK}
    return Packet(t.get(packet.type, packet.type), packet.namespace, packet.data, packet.ack_id)


@settings(max_examples=200, deadline=None)
@given(
    namespace=namespaces,
    event=event_names,
    args=st.lists(json_values, max_size=4),
    ack_id=st.none() | st.integers(min_value=0, max_value=10**15 - 1),
)
def test_event_round_trip(namespace: str, event: str, args: list[Any], ack_id: int | None) -> None:
    """Whatever the server emits, a parser following the spec reads back."""
    packet = Packet(PacketType.EVENT, namespace, [event, *args], ack_id)
    limits = PacketLimits(max_attachments=100)
    assert [_without_binary_type(p) for p in feed_all(encode(packet), limits)] == [packet]


@settings(max_examples=100, deadline=None)
@given(
    namespace=namespaces,
    args=st.lists(json_values, max_size=4),
    ack_id=st.integers(min_value=0, max_value=10**15 - 1),
)
def test_ack_round_trip(namespace: str, args: list[Any], ack_id: int) -> None:
    """Acknowledgements (with or without binary) survive encoding and decoding."""
    packet = Packet(PacketType.ACK, namespace, args, ack_id)
    limits = PacketLimits(max_attachments=100)
    assert [_without_binary_type(p) for p in feed_all(encode(packet), limits)] == [packet]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_decode_never_fails_other_than_with_protocol_error(text: str) -> None:
    """Arbitrary client text either decodes or is a protocol error: nothing
    a client sends can raise anything else in the codec."""
    try:
        feed_all([text])
    except SocketIOProtocolError:
        pass
