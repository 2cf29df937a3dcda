"""The cluster wire contract: channel names and the versioned message codec.

Several server processes (on one host or many) share one Redis. When a
process broadcasts to rooms or sends to a socket that is not connected to
it, it publishes one I{cluster message}; every other process receives it and
delivers it to its own sockets. This module defines what travels, and
nothing else: it is pure (bytes in, frozen attrs values out, and back), knows
no connection, socket or reactor, and raises L{ClusterMessageError} for
anything it cannot read.

Channels
========
One channel per Socket.IO namespace::

    <prefix>#<namespace>#          e.g.  privydrop#/#

The prefix defaults to L{DEFAULT_CHANNEL_PREFIX}; deployments that share a
Redis between unrelated clusters give each its own prefix. Every process
subscribes to the pattern C{<prefix>#*} (L{channel_pattern}), so namespaces
created after start-up need no new subscription. Operators can watch the
traffic with C{redis-cli PSUBSCRIBE 'privydrop#*'}. Pub/sub ignores database
indexes: the prefix alone separates clusters.

Message format (version 1)
==========================
One JSON object (UTF-8) per publication::

    {"v": 1, "kind": "broadcast", "origin": "<node id>", "ns": "/",
     "rooms": ["r1", ...], "except": ["<socket id>", ...], "msgs": [...]}

    {"v": 1, "kind": "socket", "origin": "<node id>", "ns": "/",
     "sid": "<socket id>", "room": "<room>" | null, "msgs": [...]}

C{rooms} empty means every socket of the namespace. C{room} is the
C{only_if_in_room} condition of a send. C{msgs} are the Engine.IO messages
of one already encoded Socket.IO packet, in order, each framed as one JSON
string: C{"t" + text} for a text message, C{"b" + base64} for a binary
attachment. The first message is always text (the packet header).

Versioning: a reader accepts only the versions it knows (L{VERSION}) and
refuses others with L{ClusterMessageError}; within one version, fields it
does not know are ignored, so optional fields can be added without a new
version. A change that old readers would misread needs a new version number.
"""

from __future__ import annotations

import binascii
from base64 import b64decode, b64encode
from collections.abc import Sequence
from typing import Any

import attrs
import orjson

from privydrop.socketio.ids import RoomId, SocketId
from privydrop.socketio.packets import Message

#: The format version this module writes and the only one it reads.
VERSION = 1

#: Channel prefix used when none is configured.
DEFAULT_CHANNEL_PREFIX = "privydrop"

#: Largest publication a reader accepts, in bytes (Socket.IO packets are
#: limited to about 1 MB; base64 and the envelope add a third and a little).
DEFAULT_MAX_MESSAGE_BYTES = 4_000_000

_KIND_BROADCAST = "broadcast"
_KIND_SOCKET = "socket"
_TEXT = "t"
_BINARY = "b"
# Characters Redis glob patterns give a meaning to; a prefix must avoid them
# so that C{<prefix>#*} matches only our channels.
_GLOB_CHARACTERS = frozenset("*?[]\\")


class ClusterMessageError(ValueError):
    """A cluster message could not be read (garbage, wrong shape, unknown
    version, too large) or written (a value JSON cannot carry).

    Receivers log it and drop that one message.
    """


@attrs.frozen
class ClusterBroadcast:
    """Deliver a packet to the sockets of a namespace in some rooms.

    @ivar namespace: the Socket.IO namespace.
    @ivar rooms: recipients are the sockets in any of these rooms; all the
        namespace's sockets when empty.
    @ivar exclude: sockets that must not receive it (e.g. the sender).
    @ivar messages: the encoded packet (text header, then binary attachments).
    @ivar origin: the node id of the publisher.
    """

    namespace: str
    rooms: frozenset[RoomId]
    exclude: frozenset[SocketId]
    messages: tuple[Message, ...]
    origin: str


@attrs.frozen
class ClusterSend:
    """Deliver a packet to one socket, by id, wherever it is connected.

    @ivar namespace: the Socket.IO namespace.
    @ivar socket_id: the recipient.
    @ivar only_if_in_room: deliver only when the recipient is in this room.
    @ivar messages: the encoded packet (text header, then binary attachments).
    @ivar origin: the node id of the publisher.
    """

    namespace: str
    socket_id: SocketId
    only_if_in_room: RoomId | None
    messages: tuple[Message, ...]
    origin: str


ClusterMessage = ClusterBroadcast | ClusterSend


def check_channel_prefix(prefix: str) -> str:
    """Return C{prefix} if it can name our channels.

    @raise ValueError: empty, or holding C{#} or a glob character.
    """
    if not isinstance(prefix, str) or not prefix:
        raise ValueError("the cluster channel prefix must be a non-empty string")
    if "#" in prefix or _GLOB_CHARACTERS & set(prefix):
        raise ValueError("the cluster channel prefix must not contain '#', '*', '?', '[', ']' or '\\'")
    return prefix


def channel_name(prefix: str, namespace: str) -> str:
    """The channel carrying cluster messages of C{namespace}."""
    return f"{prefix}#{namespace}#"


def channel_pattern(prefix: str) -> str:
    """The Redis pattern matching every channel of L{channel_name}."""
    return f"{check_channel_prefix(prefix)}#*"


def _frame(message: Message) -> str:
    if isinstance(message, str):
        return _TEXT + message
    if isinstance(message, (bytes, bytearray, memoryview)):
        return _BINARY + b64encode(bytes(message)).decode("ascii")
    raise ClusterMessageError(
        f"an Engine.IO message is str or bytes, not {type(message).__name__}"
    )


def _unframe(framed: Any) -> Message:
    if not isinstance(framed, str) or not framed:
        raise ClusterMessageError("a framed message must be a non-empty string")
    tag, body = framed[0], framed[1:]
    if tag == _TEXT:
        return body
    if tag == _BINARY:
        try:
            return b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise ClusterMessageError("invalid base64 in a binary message") from None
    raise ClusterMessageError(f"unknown message frame {tag!r}")


def _check_messages(messages: Sequence[Message]) -> None:
    if not messages:
        raise ClusterMessageError("a cluster message carries at least one Engine.IO message")
    if not isinstance(messages[0], str):
        raise ClusterMessageError("the first Engine.IO message of a packet is its text header")


def _dumps(document: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(document)
    except (orjson.JSONEncodeError, TypeError) as e:
        raise ClusterMessageError(f"cannot encode cluster message: {e}") from None


def encode_message(message: ClusterMessage) -> bytes:
    """Serialise a cluster message for publication.

    @return: UTF-8 JSON.
    @raise ClusterMessageError: no messages, a non-text first message, or a
        string JSON cannot carry (a lone surrogate).
    """
    _check_messages(message.messages)
    msgs = [_frame(m) for m in message.messages]
    if isinstance(message, ClusterBroadcast):
        return _dumps(
            {
                "v": VERSION,
                "kind": _KIND_BROADCAST,
                "origin": message.origin,
                "ns": message.namespace,
                "rooms": sorted(message.rooms),
                "except": sorted(message.exclude),
                "msgs": msgs,
            }
        )
    if isinstance(message, ClusterSend):
        return _dumps(
            {
                "v": VERSION,
                "kind": _KIND_SOCKET,
                "origin": message.origin,
                "ns": message.namespace,
                "sid": message.socket_id,
                "room": message.only_if_in_room,
                "msgs": msgs,
            }
        )
    raise ClusterMessageError(f"not a cluster message: {type(message).__name__}")


def _string(document: dict[str, Any], field: str) -> str:
    value = document.get(field)
    if not isinstance(value, str) or not value:
        raise ClusterMessageError(f"field {field!r} must be a non-empty string")
    return value


def _strings(document: dict[str, Any], field: str) -> list[str]:
    value = document.get(field)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ClusterMessageError(f"field {field!r} must be a list of strings")
    return value


def decode_message(
    data: bytes | str, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> ClusterMessage:
    """Read one publication.

    @param data: the publication as received (bytes, or text when the Redis
        client already decoded it).
    @param max_bytes: larger publications are refused before parsing.
    @raise ClusterMessageError: not JSON, not an object, an unknown version
        or kind, a missing or mistyped field, a bad frame or base64, or too
        large.
    """
    if isinstance(data, str):
        size = len(data)
        if size * 4 > max_bytes:
            size = len(data.encode("utf-8", "surrogatepass"))
    elif isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data)
        size = len(data)
    else:
        raise ClusterMessageError(f"a cluster message is bytes or str, not {type(data).__name__}")
    if size > max_bytes:
        raise ClusterMessageError(f"cluster message of {size} bytes exceeds {max_bytes}")
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ClusterMessageError("cluster message is not JSON") from None
    if not isinstance(document, dict):
        raise ClusterMessageError("cluster message is not a JSON object")
    version = document.get("v")
    if type(version) is not int:
        raise ClusterMessageError("cluster message has no version")
    if version != VERSION:
        raise ClusterMessageError(
            f"unsupported cluster message version {version} (this node reads {VERSION})"
        )
    origin = _string(document, "origin")
    namespace = _string(document, "ns")
    if not namespace.startswith("/"):
        raise ClusterMessageError("namespace must start with '/'")
    framed = document.get("msgs")
    if not isinstance(framed, list):
        raise ClusterMessageError("field 'msgs' must be a list")
    messages = tuple(_unframe(item) for item in framed)
    _check_messages(messages)
    kind = document.get("kind")
    if kind == _KIND_BROADCAST:
        return ClusterBroadcast(
            namespace=namespace,
            rooms=frozenset(RoomId(r) for r in _strings(document, "rooms")),
            exclude=frozenset(SocketId(s) for s in _strings(document, "except")),
            messages=messages,
            origin=origin,
        )
    if kind == _KIND_SOCKET:
        room = document.get("room")
        if room is not None and not isinstance(room, str):
            raise ClusterMessageError("field 'room' must be a string or null")
        return ClusterSend(
            namespace=namespace,
            socket_id=SocketId(_string(document, "sid")),
            only_if_in_room=None if room is None else RoomId(room),
            messages=messages,
            origin=origin,
        )
    raise ClusterMessageError(f"unknown cluster message kind {kind!r}")
