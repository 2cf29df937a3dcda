"""The Engine.IO v4 packet codec: the spec's examples, limits, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from privydrop.engineio import packets
from privydrop.engineio.packets import (
    EngineIOProtocolError,
    Packet,
    PacketType,
    PayloadTooLarge,
    TooManyPackets,
)

# engine.io-protocol v4, "Packet encoding": examples from the spec.
PAYLOAD_EXAMPLES = [
    (
        b"4hello\x1e2\x1e4world",
        [
            Packet(PacketType.MESSAGE, "hello"),
            Packet(PacketType.PING),
            Packet(PacketType.MESSAGE, "world"),
        ],
    ),
    (
        b"4hello\x1ebAQIDBA==",
        [
            Packet(PacketType.MESSAGE, "hello"),
            Packet(PacketType.MESSAGE, b"\x01\x02\x03\x04"),
        ],
    ),
    (
        b"4test1\x1e4test2\x1e4test3",
        [Packet(PacketType.MESSAGE, f"test{i}") for i in (1, 2, 3)],
    ),
    (b"2probe", [Packet(PacketType.PING, "probe")]),
    (b"3", [Packet(PacketType.PONG)]),
    (b"6", [Packet(PacketType.NOOP)]),
    (b"1", [Packet(PacketType.CLOSE)]),
    (b"5", [Packet(PacketType.UPGRADE)]),
    ("4€".encode(), [Packet(PacketType.MESSAGE, "€")]),
    (b"4", [Packet(PacketType.MESSAGE, "")]),
]


@pytest.mark.parametrize("wire, expected", PAYLOAD_EXAMPLES)
def test_polling_payload_decodes_spec_examples(
    wire: bytes, expected: list[Packet]
) -> None:
    """Clients' polling POSTs would be misread if the spec's examples did not decode."""
    assert packets.decode_payload(wire, 1_000_000, 100) == expected


@pytest.mark.parametrize("wire, expected", PAYLOAD_EXAMPLES)
def test_polling_payload_encodes_spec_examples(
    wire: bytes, expected: list[Packet]
) -> None:
    """Clients could not parse our poll answers if encoding differed from the spec."""
    assert packets.encode_payload(expected) == wire


WEBSOCKET_EXAMPLES = [
    (Packet(PacketType.MESSAGE, "hello"), b"4hello", False),
    (Packet(PacketType.MESSAGE, b"\x01\x02\x03\x04"), b"\x01\x02\x03\x04", True),
    (Packet(PacketType.PONG, "probe"), b"3probe", False),
    (Packet(PacketType.PING), b"2", False),
    (Packet(PacketType.MESSAGE, "é"), "4é".encode(), False),
]


@pytest.mark.parametrize("packet, frame, binary", WEBSOCKET_EXAMPLES)
def test_websocket_frames_follow_the_spec(
    packet: Packet, frame: bytes, binary: bool
) -> None:
    """WebSocket clients would get garbled frames (or text for binary) if this broke."""
    assert packets.encode_websocket(packet) == (frame, binary)
    assert packets.decode_websocket_message(_as_read(frame, binary), 0) == packet


@pytest.mark.parametrize(
    "wire",
    [
        b"",  # empty packet
        b"abc",  # unknown type (the official suite's "invalid packet format")
        b"7",
        b"4a\x1e",  # trailing empty packet
        b"\x1e4a",
        b"b!!!notbase64",
        b"bAQI",  # bad base64 padding
        b"4\xff\xfe",  # not UTF-8
    ],
)
def test_malformed_polling_payloads_are_protocol_errors(wire: bytes) -> None:
    """A malformed POST must close the session, not crash the server or deliver junk."""
    with pytest.raises(EngineIOProtocolError):
        packets.decode_payload(wire, 1_000_000, 100)


def _as_read(frame: bytes, binary: bool) -> str | bytes:
    """A message as the WebSocket transport hands it on: text frames decoded
    (the transport refuses non-UTF-8 with close 1007, see
    test_engineio_websocket), binary frames as bytes."""
    return frame if binary else frame.decode("utf-8")


@pytest.mark.parametrize("message", ["", "x", "9"])
def test_malformed_websocket_frames_are_protocol_errors(message: str) -> None:
    """A bad WebSocket frame must close the session rather than reach the application."""
    with pytest.raises(EngineIOProtocolError):
        packets.decode_websocket_message(message, 0)


def test_payload_over_max_bytes_is_refused_before_decoding() -> None:
    """A client could exhaust memory if oversized POST bodies were decoded."""
    with pytest.raises(PayloadTooLarge):
        packets.decode_payload(b"4" + b"a" * 100, 100, 100)
    assert packets.decode_payload(b"4" + b"a" * 99, 100, 100)[0].data == "a" * 99


def test_payload_with_too_many_packets_is_refused() -> None:
    """A client could flood the application with a POST of thousands of tiny packets."""
    with pytest.raises(TooManyPackets):
        packets.decode_payload(b"\x1e".join([b"3"] * 11), 0, 10)
    assert len(packets.decode_payload(b"\x1e".join([b"3"] * 10), 0, 10)) == 10


def test_websocket_message_over_max_bytes_is_refused() -> None:
    """Messages above maxPayload must not reach the application over WebSocket either."""
    with pytest.raises(PayloadTooLarge):
        packets.decode_websocket_message("4" + "a" * 10, 10)


def test_only_message_packets_carry_binary() -> None:
    """A binary ping or open would have no wire form; building one is refused."""
    with pytest.raises(EngineIOProtocolError):
        Packet(PacketType.PING, b"\x00")


_text = st.text(
    alphabet=st.characters(blacklist_characters="\x1e", blacklist_categories=("Cs",))
)
_packet = st.one_of(
    st.builds(Packet, st.sampled_from(list(PacketType)), _text),
    st.builds(lambda b: Packet(PacketType.MESSAGE, b), st.binary()),
)


@given(st.lists(_packet, min_size=1, max_size=20))
def test_polling_payload_round_trips(sent: list[Packet]) -> None:
    """Any packets we send over polling come back identical when decoded."""
    assert packets.decode_payload(packets.encode_payload(sent), 0, 0) == sent


@given(_packet)
def test_websocket_frame_round_trips(packet: Packet) -> None:
    """Any packet we send over WebSocket decodes to itself."""
    frame, binary = packets.encode_websocket(packet)
    assert packets.decode_websocket_message(_as_read(frame, binary), 0) == packet


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_payload_decoder(wire: bytes) -> None:
    """Whatever a client POSTs, the decoder answers with packets or a protocol error."""
    try:
        decoded = packets.decode_payload(wire, 1_000, 50)
    except EngineIOProtocolError:
        return
    assert all(isinstance(p, Packet) for p in decoded)
