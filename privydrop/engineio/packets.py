"""Engine.IO v4 packet codec: pure functions from str/bytes to packets and back.

Follows engine.io-protocol v4, "Packet encoding". A packet is a type digit
followed by its data. Over WebSocket each packet is one frame, binary data is
sent as a binary frame as is. Over HTTP long-polling packets are joined with
the record separator C{\\x1e} and binary data is written as C{b} + base64.

This module never touches a transport or a clock, and knows nothing of
Socket.IO. Every malformed input raises one exception family,
L{EngineIOProtocolError}; decoding also enforces the size and packet-count
limits it is given.
"""

from __future__ import annotations

import binascii
from base64 import b64decode, b64encode
from collections.abc import Iterable
from enum import IntEnum
from operator import itemgetter

#: The polling payload separator (engine.io-protocol v4, "HTTP long-polling").
SEPARATOR = "\x1e"
_SEPARATOR_BYTE = b"\x1e"
#: Prefix of a base64-encoded binary packet inside a polling payload.
BINARY_PREFIX = "b"


class PacketType(IntEnum):
    """Engine.IO packet types (engine.io-protocol v4, "Protocol")."""

    OPEN = 0
    CLOSE = 1
    PING = 2
    PONG = 3
    MESSAGE = 4
    UPGRADE = 5
    NOOP = 6


#: The wire character of each packet type, indexed by type.
TYPE_CHARS: tuple[str, ...] = tuple(str(t.value) for t in PacketType)
_TYPE_CHARS = TYPE_CHARS
_TYPES_BY_CHAR: dict[str, PacketType] = {str(t.value): t for t in PacketType}

PacketData = str | bytes


class EngineIOProtocolError(Exception):
    """Input that does not follow the Engine.IO v4 wire format."""


class PayloadTooLarge(EngineIOProtocolError):
    """A payload or message is larger than the configured maximum."""


class TooManyPackets(EngineIOProtocolError):
    """A polling payload carries more packets than allowed."""


class Packet(tuple):
    """One Engine.IO packet.

    An immutable tuple rather than a frozen attrs class: one is built for
    every message sent, and a tuple costs a third of the attrs constructor.

    @ivar type: the packet type.
    @ivar data: text (any type) or bytes (message packets only).
    """

    __slots__ = ()

    def __new__(cls, type: PacketType, data: PacketData = "") -> Packet:
        if data.__class__ is not str and isinstance(data, bytes) and type is not PacketType.MESSAGE:
            raise EngineIOProtocolError("only message packets may carry binary data")
        return tuple.__new__(cls, (type, data))

    type: PacketType = property(itemgetter(0))  # type: ignore[assignment]
    data: PacketData = property(itemgetter(1))  # type: ignore[assignment]

    @property
    def binary(self) -> bool:
        return isinstance(self[1], bytes)

    def __repr__(self) -> str:
        return "Packet(type={!r}, data={!r})".format(*self)


#: Packets without data, shared instead of allocated for every use.
PING = Packet(PacketType.PING)
PONG = Packet(PacketType.PONG)
CLOSE = Packet(PacketType.CLOSE)
NOOP = Packet(PacketType.NOOP)
UPGRADE = Packet(PacketType.UPGRADE)
PING_PROBE = Packet(PacketType.PING, "probe")
PONG_PROBE = Packet(PacketType.PONG, "probe")


def encode_websocket(packet: Packet) -> tuple[bytes, bool]:
    """Encode one packet as the payload of one WebSocket frame.

    @return: the frame payload and whether it is a binary frame.
    """
    data = packet.data
    if isinstance(data, bytes):
        return data, True
    return (_TYPE_CHARS[packet.type] + data).encode("utf-8"), False


def _decode_text_packet(text: str) -> Packet:
    if not text:
        raise EngineIOProtocolError("empty packet")
    head = text[0]
    if head == BINARY_PREFIX:
        try:
            return Packet(PacketType.MESSAGE, b64decode(text[1:], validate=True))
        except (binascii.Error, ValueError) as e:
            raise EngineIOProtocolError("invalid base64 in binary packet") from e
    packet_type = _TYPES_BY_CHAR.get(head)
    if packet_type is None:
        raise EngineIOProtocolError("unknown packet type")
    return Packet(packet_type, text[1:])


def decode_websocket_message(message: str | bytes, max_bytes: int) -> Packet:
    """Decode a WebSocket message already read as text (str) or binary (bytes).

    @param max_bytes: largest accepted message; 0 means no limit. For text
        this counts characters, a lower bound of the UTF-8 size: the
        transport limits frames by their bytes before they get here.
    @raise PayloadTooLarge: the message is larger than C{max_bytes}.
    @raise EngineIOProtocolError: the message is not a valid packet.
    """
    if max_bytes and len(message) > max_bytes:
        raise PayloadTooLarge("message larger than max_payload")
    if isinstance(message, str):
        return _decode_text_packet(message)
    return Packet(PacketType.MESSAGE, bytes(message))


def encode_payload(packets: Iterable[Packet]) -> bytes:
    """Encode packets as one HTTP long-polling payload (UTF-8)."""
    parts: list[str] = []
    append = parts.append
    for packet in packets:
        data = packet.data
        if isinstance(data, bytes):
            append(BINARY_PREFIX + b64encode(data).decode("ascii"))
        else:
            append(_TYPE_CHARS[packet.type] + data)
    return SEPARATOR.join(parts).encode("utf-8")


def decode_payload(body: bytes, max_bytes: int, max_packets: int) -> list[Packet]:
    """Decode an HTTP long-polling payload sent by a client.

    The limits are checked before anything is split or decoded, so an
    oversized body costs no more than a length check and a byte count.

    @param body: the raw request body.
    @param max_bytes: largest accepted body; 0 means no limit.
    @param max_packets: most packets accepted in one body; 0 means no limit.
    @raise PayloadTooLarge: the body is larger than C{max_bytes}.
    @raise TooManyPackets: it holds more than C{max_packets} packets.
    @raise EngineIOProtocolError: any packet is malformed.
    """
    if max_bytes and len(body) > max_bytes:
        raise PayloadTooLarge("payload larger than max_payload")
    if max_packets and body.count(_SEPARATOR_BYTE) >= max_packets:
        raise TooManyPackets("too many packets in payload")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise EngineIOProtocolError("payload is not UTF-8") from e
    return [_decode_text_packet(part) for part in text.split(SEPARATOR)]
