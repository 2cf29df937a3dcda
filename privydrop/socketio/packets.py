"""Socket.IO v5 packet codec (socket.io-protocol v5, "Packet encoding").

Pure functions and one small state machine: text and bytes in, frozen
L{Packet}s out, and the reverse. Each Socket.IO packet travels as one
Engine.IO message; a packet carrying binary data is a text header whose JSON
holds C{{"_placeholder":true,"num":N}} objects, followed by one binary
Engine.IO message per attachment. L{encode} splits bytes out of a payload,
L{BinaryReassembler} puts them back.

This module knows nothing of sockets, namespaces as objects, or transports.
Every malformed or oversized input raises L{SocketIOProtocolError}.

Wire format::

    <type>[<attachments>-][<namespace>,][<ack id>][JSON payload]
"""

from __future__ import annotations

import enum
from operator import itemgetter
from typing import Any, Sequence, Union

import attrs
import orjson

#: One Engine.IO message payload: text, or binary (as in
#: L{privydrop.engineio.interface.Message}; repeated here to keep this codec free
#: of imports from the layer below).
Message = Union[str, bytes]

#: Event names the reference implementation reserves for its own use; a peer
#: sending one is in error (socket.io-parser, "RESERVED_EVENTS").
RESERVED_EVENTS: frozenset[str] = frozenset(
    {
        "connect",
        "connect_error",
        "disconnect",
        "disconnecting",
        "newListener",
        "removeListener",
    }
)

MAIN_NAMESPACE = "/"

# Digits allowed in the attachment count before the "-" (the count itself is
# capped by PacketLimits.max_attachments; this only bounds the int() parse).
_MAX_ATTACHMENT_COUNT_DIGITS = 6

#: The largest ack id: Number.MAX_SAFE_INTEGER, the largest integer a
#: JavaScript client holds exactly (16 digits).
MAX_ACK_ID = 2**53 - 1


class SocketIOProtocolError(Exception):
    """A peer sent something that is not a valid Socket.IO v5 packet, or that
    exceeds a limit.

    The receiving side closes that peer's connection; the message says which
    rule or limit was broken, and is logged, never sent back.
    """


class AuthTooLarge(SocketIOProtocolError):
    """A CONNECT whose payload (C{auth}) passes C{max_auth_bytes}; not parsed.

    Unlike other protocol errors it is answered with CONNECT_ERROR for its
    namespace rather than by closing the connection (see
    L{privydrop.socketio.server}).

    @ivar namespace: the namespace the CONNECT was for.
    """

    def __init__(self, namespace: str) -> None:
        super().__init__("CONNECT payload larger than max_auth_bytes")
        self.namespace = namespace


class PacketType(enum.IntEnum):
    """Packet types (socket.io-protocol v5, "Exchange protocol")."""

    CONNECT = 0
    DISCONNECT = 1
    EVENT = 2
    ACK = 3
    CONNECT_ERROR = 4
    BINARY_EVENT = 5
    BINARY_ACK = 6


_BINARY_TYPES = frozenset({PacketType.BINARY_EVENT, PacketType.BINARY_ACK})
# For the hot paths: a global's read, not an Enum member's through its class.
_EVENT = PacketType.EVENT
_new_tuple = tuple.__new__
_TYPE_BY_CHAR = {str(int(t)): t for t in PacketType}
_TYPE_CHARS: tuple[str, ...] = tuple(str(int(t)) for t in PacketType)


@attrs.frozen
class PacketLimits:
    """Limits the decoder enforces on what a peer sends.

    @ivar max_attachments: binary attachments one packet may announce.
    @ivar max_ack_id_digits: digits an ack id may have; whatever it says, an
        id above L{MAX_ACK_ID} is refused.
    @ivar max_packet_bytes: bytes of one packet: its text header plus all of
        its attachments.
    @ivar max_auth_bytes: bytes of a CONNECT packet's payload.
    """

    max_attachments: int = 10
    max_ack_id_digits: int = 16
    max_packet_bytes: int = 1_000_000
    max_auth_bytes: int = 4096


class Packet(tuple):
    """One Socket.IO packet.

    An immutable tuple rather than a frozen attrs class: one is built for
    every packet received and every event emitted, and a tuple costs a
    third of the attrs constructor.

    @ivar type: the packet type. L{encode} chooses the BINARY_ variant itself
        when C{data} contains bytes, so callers build EVENT and ACK packets.
    @ivar namespace: the namespace name, C{"/"} for the main one.
    @ivar data: the payload (a dict for CONNECT/CONNECT_ERROR, a list for
        EVENT/ACK, None when absent), with C{bytes} where binary data goes.
    @ivar ack_id: the acknowledgement id, or None.
    @ivar attachments: for a decoded BINARY_ header only: how many binary
        messages follow. Zero in complete packets.
    """

    __slots__ = ()

    def __new__(
        cls,
        type: PacketType,
        namespace: str = MAIN_NAMESPACE,
        data: Any = None,
        ack_id: int | None = None,
        attachments: int = 0,
    ) -> Packet:
        return tuple.__new__(cls, (type, namespace, data, ack_id, attachments))

    type: PacketType = property(itemgetter(0))  # type: ignore[assignment]
    namespace: str = property(itemgetter(1))  # type: ignore[assignment]
    data: Any = property(itemgetter(2))
    ack_id: int | None = property(itemgetter(3))  # type: ignore[assignment]
    attachments: int = property(itemgetter(4))  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            "Packet(type={!r}, namespace={!r}, data={!r}, ack_id={!r}, attachments={!r})"
        ).format(*self)


def _json_default(value: Any) -> Any:
    raise TypeError("cannot encode {!r} as JSON".format(type(value).__name__))


def _has_binary(data: Any) -> bool:
    """Whether C{data} holds bytes anywhere (iterative: depth costs no stack)."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, (bytes, bytearray, memoryview)):
            return True
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return False


def _deconstruct(data: Any, buffers: list[bytes]) -> Any:
    """Replace every bytes value with a placeholder, collecting the bytes."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        buffers.append(bytes(data))
        return {"_placeholder": True, "num": len(buffers) - 1}
    if isinstance(data, (list, tuple)):
        return [_deconstruct(item, buffers) for item in data]
    if isinstance(data, dict):
        return {key: _deconstruct(value, buffers) for key, value in data.items()}
    return data


def encode(packet: Packet) -> list[Message]:
    """Encode one packet into the Engine.IO messages that carry it.

    @return: the text header first, then one bytes message per attachment.
    @raise TypeError: the payload holds something JSON cannot carry (our bug,
        not the peer's).
    @raise ValueError: the payload is too deeply nested to encode.
    """
    packet_type, namespace, data, ack_id, _ = packet
    if (
        packet_type is _EVENT
        and ack_id is None
        and namespace == MAIN_NAMESPACE
        and data.__class__ is list
    ):
        # The usual packet, an event on the main namespace without an ack
        # id; one with bytes in it goes the general way below.
        try:
            return ["2" + orjson.dumps(data).decode("utf-8")]
        except TypeError:
            pass
    buffers: list[bytes] = []
    body = ""
    if data is not None:
        try:
            # orjson refuses bytes, bytearray and memoryview, so a payload
            # that encodes has no attachments: most packets are encoded
            # without walking them in Python first.
            body = orjson.dumps(data).decode("utf-8")
        except TypeError:
            if packet_type not in (PacketType.EVENT, PacketType.ACK) or not _has_binary(
                data
            ):
                try:
                    # Again, for the error message naming the type.
                    orjson.dumps(data, default=_json_default)
                except orjson.JSONEncodeError as e:
                    raise TypeError(str(e)) from None
                raise  # pragma: no cover - the second attempt fails too
            packet_type = (
                PacketType.BINARY_EVENT
                if packet_type is PacketType.EVENT
                else PacketType.BINARY_ACK
            )
            try:
                data = _deconstruct(data, buffers)
            except RecursionError:
                raise ValueError("payload nested too deeply to encode") from None
            try:
                body = orjson.dumps(data, default=_json_default).decode("utf-8")
            except orjson.JSONEncodeError as e:
                raise TypeError(str(e)) from None
    if namespace == MAIN_NAMESPACE and ack_id is None and not buffers:
        return [_TYPE_CHARS[packet_type] + body]
    parts = [_TYPE_CHARS[packet_type]]
    if packet_type in _BINARY_TYPES:
        parts.append(str(len(buffers)))
        parts.append("-")
    if namespace != MAIN_NAMESPACE:
        parts.append(namespace)
        parts.append(",")
    if ack_id is not None:
        parts.append(str(ack_id))
    parts.append(body)
    messages: list[Message] = ["".join(parts)]
    messages.extend(buffers)
    return messages


def _payload_valid(packet_type: PacketType, payload: Any, present: bool) -> bool:
    """The payload rules of socket.io-protocol v5 for each packet type, as
    socket.io-parser applies them.

    @param present: whether the packet had a payload at all (JSON C{null}
        is a payload, and not an object).
    """
    if packet_type is PacketType.CONNECT:
        return not present or isinstance(payload, dict)
    if packet_type is PacketType.DISCONNECT:
        return not present
    if packet_type is PacketType.CONNECT_ERROR:
        return isinstance(payload, (dict, str))
    if packet_type in (PacketType.EVENT, PacketType.BINARY_EVENT):
        return (
            isinstance(payload, list)
            and len(payload) > 0
            and isinstance(payload[0], str)
        )
    # ACK, BINARY_ACK: an array, possibly empty.
    return isinstance(payload, list)


def _utf8_length_exceeds(text: str, limit: int) -> bool:
    """Whether C{text} takes more than C{limit} bytes as UTF-8, encoding it
    only when the character count leaves the answer open."""
    if len(text) > limit:
        return True
    if len(text) * 4 <= limit:
        return False
    return len(text.encode("utf-8")) > limit


def decode(text: str, limits: PacketLimits) -> Packet:
    """Decode one text message into a packet.

    A BINARY_EVENT or BINARY_ACK comes back with C{attachments} set and its
    placeholders still in C{data}; L{BinaryReassembler} completes it.

    @raise AuthTooLarge: a CONNECT payload over C{max_auth_bytes}.
    @raise SocketIOProtocolError: unknown type, bad attachment count, bad ack
        id, invalid JSON, a payload the type does not allow, a reserved event
        name, or a limit exceeded.
    """
    limit = limits.max_packet_bytes
    if len(text) * 4 > limit and _utf8_length_exceeds(text, limit):
        raise SocketIOProtocolError("packet larger than max_packet_bytes")
    if text[:2] == "2[":
        # The usual packet, an event without namespace or ack id:
        # C{2["name",...]}.
        try:
            event: Any = orjson.loads(text[1:])
        except orjson.JSONDecodeError:
            raise SocketIOProtocolError("invalid JSON payload") from None
        if event.__class__ is not list or not event or event[0].__class__ is not str:
            raise SocketIOProtocolError("invalid payload for packet type")
        if event[0] in RESERVED_EVENTS:
            raise SocketIOProtocolError("reserved event name")
        return _new_tuple(Packet, (_EVENT, MAIN_NAMESPACE, event, None, 0))
    if not text:
        raise SocketIOProtocolError("empty packet")
    packet_type = _TYPE_BY_CHAR.get(text[0])
    if packet_type is None:
        raise SocketIOProtocolError("unknown packet type")
    length = len(text)
    i = 1
    attachments = 0
    if packet_type in _BINARY_TYPES:
        dash = text.find("-", 1, 1 + _MAX_ATTACHMENT_COUNT_DIGITS + 1)
        count = text[1:dash] if dash > 0 else ""
        if not (count.isascii() and count.isdigit()):
            raise SocketIOProtocolError("illegal attachment count")
        attachments = int(count)
        if attachments > limits.max_attachments:
            raise SocketIOProtocolError("too many attachments")
        i = dash + 1
    namespace = MAIN_NAMESPACE
    if i < length and text[i] == "/":
        comma = text.find(",", i)
        if comma < 0:
            namespace = text[i:]
            i = length
        else:
            namespace = text[i:comma]
            i = comma + 1
    ack_id: int | None = None
    start = i
    while i < length and "0" <= text[i] <= "9":
        i += 1
        if i - start > limits.max_ack_id_digits:
            raise SocketIOProtocolError("ack id longer than max_ack_id_digits")
    if i > start:
        ack_id = int(text[start:i])
        if ack_id > MAX_ACK_ID:
            raise SocketIOProtocolError("ack id above 2^53-1")
    if (
        packet_type is PacketType.CONNECT
        and length - i > 0
        and _utf8_length_exceeds(text[i:], limits.max_auth_bytes)
    ):
        raise AuthTooLarge(namespace)
    payload: Any = None
    present = i < length
    if present:
        try:
            payload = orjson.loads(text[i:])
        except orjson.JSONDecodeError:
            raise SocketIOProtocolError("invalid JSON payload") from None
    if ack_id is not None and packet_type not in (
        PacketType.EVENT,
        PacketType.BINARY_EVENT,
        PacketType.ACK,
        PacketType.BINARY_ACK,
    ):
        raise SocketIOProtocolError("ack id on a packet type that has none")
    if packet_type in (PacketType.ACK, PacketType.BINARY_ACK) and ack_id is None:
        raise SocketIOProtocolError("acknowledgement without an ack id")
    if not _payload_valid(packet_type, payload, present):
        raise SocketIOProtocolError("invalid payload for packet type")
    if packet_type in (PacketType.EVENT, PacketType.BINARY_EVENT):
        if payload[0] in RESERVED_EVENTS:
            raise SocketIOProtocolError("reserved event name")
    return Packet(
        type=packet_type,
        namespace=namespace,
        data=payload,
        ack_id=ack_id,
        attachments=attachments,
    )


def _is_placeholder(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and value.get("_placeholder") is True
        and type(value.get("num")) is int
    )


def _reconstruct(data: Any, buffers: Sequence[bytes], used: list[int]) -> Any:
    if isinstance(data, list):
        return [_reconstruct(item, buffers, used) for item in data]
    if isinstance(data, dict):
        if _is_placeholder(data):
            num = data["num"]
            if not 0 <= num < len(buffers):
                raise SocketIOProtocolError("placeholder refers to no attachment")
            used.append(num)
            return buffers[num]
        return {key: _reconstruct(value, buffers, used) for key, value in data.items()}
    return data


def reconstruct(header: Packet, buffers: Sequence[bytes]) -> Packet:
    """Put the attachments of a decoded BINARY_ header back into its payload.

    Each attachment must be referred to by exactly one placeholder, as the
    reference encoder produces them.

    @raise SocketIOProtocolError: the counts do not match, or a placeholder
        refers to an attachment that does not exist.
    """
    if len(buffers) != header.attachments:
        raise SocketIOProtocolError("attachment count mismatch")
    used: list[int] = []
    try:
        data = _reconstruct(header.data, buffers, used)
    except RecursionError:
        raise SocketIOProtocolError("payload nested too deeply") from None
    if sorted(used) != list(range(len(buffers))):
        raise SocketIOProtocolError("attachment count mismatch")
    return Packet(header.type, header.namespace, data, header.ack_id, 0)


class BinaryReassembler:
    """Turns one client's stream of Engine.IO messages into whole packets.

    Text messages are decoded at once, except a BINARY_ header, after which
    exactly the announced number of binary messages must follow. A binary
    message at any other time, or a text message while attachments are
    awaited, is a protocol error (socket.io-parser behaves the same).
    """

    # One per connection; the attachments' list exists only while a
    # BINARY_ packet awaits them. C{limits} and C{pending_header} are read
    # by the server's fast path for the usual event (no header pending).
    __slots__ = ("limits", "pending_header", "_buffers", "_bytes")

    def __init__(self, limits: PacketLimits) -> None:
        self.limits = limits
        self.pending_header: Packet | None = None
        self._buffers: list[bytes] | None = None
        self._bytes = 0

    @property
    def awaiting_attachments(self) -> bool:
        """Whether a BINARY_ header is waiting for its attachments."""
        return self.pending_header is not None

    def feed(self, message: Message) -> Packet | None:
        """Take one message.

        @return: a complete packet, or None while attachments are awaited.
        @raise SocketIOProtocolError: the message breaks the protocol or a
            limit; the reassembler should then be dropped with its connection.
        """
        if isinstance(message, str):
            if self.pending_header is not None:
                raise SocketIOProtocolError("text message while awaiting attachments")
            packet = decode(message, self.limits)
            if packet[0] in _BINARY_TYPES:
                if packet.attachments == 0:
                    return reconstruct(packet, ())
                self.pending_header = packet
                self._buffers = []
                self._bytes = len(message.encode("utf-8"))
                return None
            return packet
        header = self.pending_header
        buffers = self._buffers
        if header is None or buffers is None:
            raise SocketIOProtocolError("binary message without a binary packet header")
        self._bytes += len(message)
        if self._bytes > self.limits.max_packet_bytes:
            raise SocketIOProtocolError("packet larger than max_packet_bytes")
        buffers.append(bytes(message))
        if len(buffers) < header.attachments:
            return None
        self.pending_header = None
        self._buffers = None
        self._bytes = 0
        return reconstruct(header, buffers)
