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
Each process (node) subscribes to its own channel, and every node to one
shared channel::

    <prefix>#node#<node id>        what is addressed to that node
    <prefix>#all#                  what every node must see

e.g. C{privydrop#node#5f0c1a2b3c4d5e6f} and C{privydrop#all#}. A message
for one socket goes to the channel of the node holding it, a broadcast to
a tracked room (L{privydrop.socketio.adapter}) to the channels of the nodes
holding its members; only broadcasts to rooms no local socket tracks (and
to a whole namespace) use the shared channel. The prefix defaults to
L{DEFAULT_CHANNEL_PREFIX}; deployments that share a Redis between unrelated
clusters give each its own prefix. On Redis 7 and later the channels are
sharded (C{SSUBSCRIBE}/C{SPUBLISH}), otherwise classic
(C{SUBSCRIBE}/C{PUBLISH}); operators watch one node with C{redis-cli
SSUBSCRIBE 'privydrop#node#<id>'} (or C{SUBSCRIBE}). Pub/sub ignores
database indexes: the prefix alone separates clusters.

Message format (version 2)
==========================
One JSON object (UTF-8) per publication::

    {"v": 2, "kind": "broadcast", "origin": "<node id>", "ns": "/",
     "rooms": ["r1", ...], "except": ["<socket id>", ...], "msgs": [...],
     "to": ["<socket id>", ...], "gone": ["<socket id>", ...]}

    {"v": 2, "kind": "socket", "origin": "<node id>", "ns": "/",
     "sid": "<socket id>", "room": "<room>" | null, "msgs": [...]}

    {"v": 2, "kind": "members", "origin": "<node id>", "ns": "/",
     "room": "<room>", "add": {"<socket id>": "<node id>", ...},
     "remove": ["<socket id>", ...]}

    {"v": 2, "kind": "server", "origin": "<node id>", "ns": "/",
     "event": "<name>", "args": [...]}

    {"v": 2, "kind": "handover", "origin": "<node id>", "ns": "/",
     "id": "<request id>", "pid": "<private session id>", "offset": "<offset>"}

    {"v": 2, "kind": "log", "origin": "<node id>", "ns": "/",
     "id": "<request id>", "status": "found" | "offset-unknown" | "missing",
     "events": [[<framed message>, ...], ...]}

A broadcast reaches the receiving node's sockets that are in any of
C{rooms} (all sockets when it names none), minus C{except}; with C{to} (the
recipients the sender knew) only those of them. C{gone} names sockets that
left the rooms (the node forgets them). C{room} is the C{only_if_in_room}
condition of a send. A C{members} message tells a node that tracks the room
who entered (with their node) or left it. A C{server} message calls a
server-event handler of the namespace with JSON C{args}. A C{handover}
asks the node that held a socket (connection state recovery) for the
events after the client's offset and to let the socket go; the C{log}
answer, to the asking node, carries them (each event its framed messages).
C{msgs} are the
Engine.IO messages of one already encoded Socket.IO packet, in order, each
framed as one JSON string: C{"t" + text} for a text message, C{"b" + base64}
for a binary attachment. The first message is always text (the packet
header).

Versioning: a reader accepts only the versions it knows (L{VERSION}) and
refuses others with L{ClusterMessageError}; within one version, fields it
does not know are ignored, so optional fields can be added without a new
version. A change that old readers would misread needs a new version number.
Version 1 (one channel per namespace, every node receiving everything) is
not read: all processes of a cluster run one release.
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
VERSION = 2

#: Channel prefix used when none is configured.
DEFAULT_CHANNEL_PREFIX = "privydrop"

#: Largest publication a reader accepts, in bytes (Socket.IO packets are
#: limited to about 1 MB; base64 and the envelope add a third and a little).
DEFAULT_MAX_MESSAGE_BYTES = 4_000_000

_KIND_BROADCAST = "broadcast"
_KIND_SOCKET = "socket"
_KIND_MEMBERS = "members"
_KIND_SERVER = "server"
_KIND_HANDOVER = "handover"
_KIND_LOG = "log"
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
    @ivar recipients: when given, only these sockets may receive it (the
        members the sender knew of when it sent).
    @ivar departed: sockets that left the rooms (receivers forget them).
    """

    namespace: str
    rooms: frozenset[RoomId]
    exclude: frozenset[SocketId]
    messages: tuple[Message, ...]
    origin: str
    recipients: frozenset[SocketId] | None = None
    departed: frozenset[SocketId] = frozenset()


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


@attrs.frozen
class ClusterMembers:
    """Sockets entered or left a tracked room.

    @ivar namespace: the Socket.IO namespace.
    @ivar room: the room.
    @ivar added: sockets that entered it, with the node holding each.
    @ivar removed: sockets that left it.
    @ivar origin: the node id of the publisher.
    """

    namespace: str
    room: RoomId
    added: dict[SocketId, str] = attrs.field(hash=False)
    removed: frozenset[SocketId]
    origin: str


@attrs.frozen
class ClusterServerEvent:
    """Call a server-event handler of a namespace on the receiving node.

    @ivar namespace: the Socket.IO namespace.
    @ivar event: the handler's name.
    @ivar args: its arguments (JSON values).
    @ivar origin: the node id of the publisher.
    """

    namespace: str
    event: str
    args: tuple[Any, ...]
    origin: str


@attrs.frozen
class ClusterHandover:
    """Ask the node holding a socket for its log after C{offset}, and to let
    the socket go (its client came back to C{origin}).

    @ivar request_id: echoed in the answer.
    """

    namespace: str
    request_id: str
    pid: str
    offset: str
    origin: str


@attrs.frozen
class ClusterLog:
    """The answer to a L{ClusterHandover}.

    @ivar status: a L{privydrop.socketio.recovery.LogStatus} value.
    @ivar events: the events after the offset, each its encoded messages.
    """

    namespace: str
    request_id: str
    status: str
    events: tuple[tuple[Message, ...], ...]
    origin: str


ClusterMessage = (
    ClusterBroadcast
    | ClusterSend
    | ClusterMembers
    | ClusterServerEvent
    | ClusterHandover
    | ClusterLog
)


def check_channel_prefix(prefix: str) -> str:
    """Return C{prefix} if it can name our channels.

    @raise ValueError: empty, or holding C{#} or a glob character.
    """
    if not isinstance(prefix, str) or not prefix:
        raise ValueError("the cluster channel prefix must be a non-empty string")
    if "#" in prefix or _GLOB_CHARACTERS & set(prefix):
        raise ValueError("the cluster channel prefix must not contain '#', '*', '?', '[', ']' or '\\'")
    return prefix


def node_channel(prefix: str, node_id: str) -> str:
    """The channel of one node: what is addressed to it."""
    return f"{prefix}#node#{node_id}"


def all_channel(prefix: str) -> str:
    """The channel every node subscribes to."""
    return f"{prefix}#all#"


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
    if isinstance(message, ClusterMembers):
        return _dumps(
            {
                "v": VERSION,
                "kind": _KIND_MEMBERS,
                "origin": message.origin,
                "ns": message.namespace,
                "room": message.room,
                "add": dict(message.added),
                "remove": sorted(message.removed),
            }
        )
    if isinstance(message, ClusterServerEvent):
        return _dumps(
            {
                "v": VERSION,
                "kind": _KIND_SERVER,
                "origin": message.origin,
                "ns": message.namespace,
                "event": message.event,
                "args": list(message.args),
            }
        )
    if isinstance(message, ClusterHandover):
        return _dumps(
            {
                "v": VERSION,
                "kind": _KIND_HANDOVER,
                "origin": message.origin,
                "ns": message.namespace,
                "id": message.request_id,
                "pid": message.pid,
                "offset": message.offset,
            }
        )
    if isinstance(message, ClusterLog):
        for event in message.events:
            _check_messages(event)
        return _dumps(
            {
                "v": VERSION,
                "kind": _KIND_LOG,
                "origin": message.origin,
                "ns": message.namespace,
                "id": message.request_id,
                "status": message.status,
                "events": [[_frame(m) for m in event] for event in message.events],
            }
        )
    _check_messages(message.messages)
    msgs = [_frame(m) for m in message.messages]
    if isinstance(message, ClusterBroadcast):
        document: dict[str, Any] = {
            "v": VERSION,
            "kind": _KIND_BROADCAST,
            "origin": message.origin,
            "ns": message.namespace,
            "rooms": sorted(message.rooms),
            "except": sorted(message.exclude),
            "msgs": msgs,
        }
        if message.recipients is not None:
            document["to"] = sorted(message.recipients)
        if message.departed:
            document["gone"] = sorted(message.departed)
        return _dumps(document)
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
    kind = document.get("kind")
    if kind == _KIND_MEMBERS:
        added = document.get("add")
        if not isinstance(added, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in added.items()
        ):
            raise ClusterMessageError("field 'add' must map socket ids to node ids")
        return ClusterMembers(
            namespace=namespace,
            room=RoomId(_string(document, "room")),
            added={SocketId(k): v for k, v in added.items()},
            removed=frozenset(SocketId(s) for s in _strings(document, "remove")),
            origin=origin,
        )
    if kind == _KIND_SERVER:
        args = document.get("args")
        if not isinstance(args, list):
            raise ClusterMessageError("field 'args' must be a list")
        return ClusterServerEvent(
            namespace=namespace,
            event=_string(document, "event"),
            args=tuple(args),
            origin=origin,
        )
    if kind == _KIND_HANDOVER:
        offset = document.get("offset")
        if not isinstance(offset, str):
            raise ClusterMessageError("field 'offset' must be a string")
        return ClusterHandover(
            namespace=namespace,
            request_id=_string(document, "id"),
            pid=_string(document, "pid"),
            offset=offset,
            origin=origin,
        )
    if kind == _KIND_LOG:
        events = document.get("events")
        if not isinstance(events, list) or not all(isinstance(e, list) for e in events):
            raise ClusterMessageError("field 'events' must be a list of lists")
        decoded = tuple(tuple(_unframe(item) for item in event) for event in events)
        for event in decoded:
            _check_messages(event)
        return ClusterLog(
            namespace=namespace,
            request_id=_string(document, "id"),
            status=_string(document, "status"),
            events=decoded,
            origin=origin,
        )
    framed = document.get("msgs")
    if not isinstance(framed, list):
        raise ClusterMessageError("field 'msgs' must be a list")
    messages = tuple(_unframe(item) for item in framed)
    _check_messages(messages)
    if kind == _KIND_BROADCAST:
        recipients = None
        if "to" in document:
            recipients = frozenset(SocketId(s) for s in _strings(document, "to"))
        departed: frozenset[SocketId] = frozenset()
        if "gone" in document:
            departed = frozenset(SocketId(s) for s in _strings(document, "gone"))
        return ClusterBroadcast(
            namespace=namespace,
            rooms=frozenset(RoomId(r) for r in _strings(document, "rooms")),
            exclude=frozenset(SocketId(s) for s in _strings(document, "except")),
            messages=messages,
            origin=origin,
            recipients=recipients,
            departed=departed,
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
