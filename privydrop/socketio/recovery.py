"""Connection state recovery: offsets, private session ids, per-socket logs.

socket.io-client 4.6+ implements the client half: when the CONNECT answer
carries a private session id (C{pid}) and events carry an offset as their
last argument, the client keeps the last offset it processed and, after a
reconnection, sends C{{pid, offset}} in its CONNECT. The server half here:

  - L{Offsets} appends an offset to every event sent without an
    acknowledgement (broadcast or to one socket; never to acks), so a
    broadcast is still encoded once for all its recipients.
  - Each socket keeps a L{PacketLog}: the encoded events delivered to it,
    newest last, capped in count and bytes. It is written for every event,
    sent or not, so what was written to a connection that then died is
    replayed too: the client's offset decides what it missed, not the
    moment the server noticed the loss.
  - Finding the client's offset costs a scan of that one log, at recovery
    time only: an entry's offset is the last argument of its encoded text,
    so the log stores no offsets of its own and the relay path does no
    more than one append.

Across processes (a L{RecoveryBackend}, wired by the service tree with a
cluster): a private session id is C{<socket id>.<random>}, so any process
can find the socket's record from the pid alone; a CONNECT whose pid is not
known here is claimed through the backend, the socket is rebuilt here in
its rooms, and the process that held it hands its log over on request.
"""

from __future__ import annotations

import secrets
import enum
from typing import TYPE_CHECKING, Mapping, Protocol, Sequence, Union

import attrs
from twisted.internet.defer import Deferred

from privydrop.socketio.packets import Message

#: Random bytes of a private session id (as hex: 32 characters).
PID_BYTES = 16


if TYPE_CHECKING:
    from privydrop.socketio.sockets import Socket

#: An event as kept in a log: its encoded messages (text, then attachments).
Event = Sequence[Message]
#: What a L{PacketLog} keeps of one event: the text of a one-message event,
#: or all of its messages.
_Entry = Union[str, tuple[Message, ...]]


def _size(entry: tuple[Message, ...]) -> int:
    return sum(len(message) for message in entry)


def _messages(entry: _Entry) -> Event:
    return (entry,) if isinstance(entry, str) else entry


def new_pid(socket_id: str) -> str:
    """A private session id, C{<socket id>.<random>}: the random part is
    never shown to any other client; the socket id lets any process find
    the socket's record (socket ids never contain C{.})."""
    return socket_id + "." + secrets.token_hex(PID_BYTES)


def pid_socket_id(pid: str) -> str | None:
    """The socket id a private session id names, or None when malformed."""
    socket_id, dot, secret = pid.partition(".")
    if not dot or not socket_id or len(secret) != 2 * PID_BYTES:
        return None
    return socket_id


class LogStatus(enum.Enum):
    """What the process that held a socket answered for its log."""

    #: The events after the client's offset (possibly none).
    FOUND = "found"
    #: The client's offset is not in the log: what it missed is unknown.
    OFFSET_UNKNOWN = "offset-unknown"
    #: No answer in time, or the socket was not there: nothing to replay.
    MISSING = "missing"


@attrs.frozen
class RemoteClaim:
    """A socket of another process (or of none) now recorded here.

    @ivar socket_id: its id.
    @ivar rooms: its rooms, each with its members and the node of each.
    @ivar old_node: the process that held it ("" when none was recorded).
    """

    socket_id: str
    rooms: Mapping[str, Mapping[str, str]]
    old_node: str


@attrs.frozen
class RemoteLog:
    """The answer of the process that held a socket.

    @ivar status: see L{LogStatus}.
    @ivar events: the events after the client's offset, oldest first.
    """

    status: LogStatus
    events: Sequence[Event] = ()


class RecoveryBackend(Protocol):
    """Recovery across processes (implemented above this layer, with the
    store and the cluster)."""

    def claim(self, namespace: str, pid: str) -> Deferred[RemoteClaim | None]:
        """Record the socket C{pid} names on this process, if it can be
        recovered; None otherwise."""

    def fetch_log(self, namespace: str, claim: RemoteClaim, pid: str, offset: str) -> Deferred[RemoteLog]:
        """Ask the process that held it for the events after C{offset}
        (and to let its old connection go), within a bounded wait."""

    def detached(self, socket: Socket) -> None:
        """Its connection was lost: its window runs (a deadline any process
        can act on)."""

    def resumed(self, socket: Socket) -> None:
        """Recovered in this process: its window no longer runs."""

    def window_ended(self, socket: Socket) -> Deferred[bool]:
        """Its window ended here: whether this process ends it (False: it
        was recovered or ended elsewhere; it leaves here quietly)."""


@attrs.frozen
class RecoverySettings:
    """What recovery keeps, for how long.

    @ivar window_s: how long a socket whose transport was lost waits for
        its client.
    @ivar max_packets: events kept per socket.
    @ivar max_bytes: bytes of events kept per socket.
    """

    window_s: float
    max_packets: int
    max_bytes: int


class Offsets:
    """Issues the offsets appended to events: unique in this process, and
    across processes through a random prefix."""

    __slots__ = ("_prefix", "_next")

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(4) + "-"
        self._next = 0

    def next(self) -> str:
        # Inlined in L{privydrop.socketio.namespace.Namespace.emit_to_socket}.
        number = self._next = self._next + 1
        return self._prefix + "%x" % number


class PacketLog:
    """The last events delivered to one socket, encoded, oldest first.

    Entries past C{max_packets}, or that make the total exceed
    C{max_bytes}, push the oldest ones out; an entry larger than
    C{max_bytes} on its own empties the log.

    A I{custodial} log is kept for a socket whose process died: it starts
    mid-stream, after whatever the client saw, so a client's offset that it
    does not hold means "everything here is missed".

    An event of one message (always its text) is kept as that string alone,
    anything else as its sequence of messages; sizes are not stored but
    taken again when an entry leaves. A relay adds an event to a full log
    every time and pushes the oldest one out, so what an entry costs to
    keep and to free (objects last touched long ago, out of the caches) is
    paid per relayed message.

    Once the log holds C{max_packets} entries, a one-message event that
    fits takes the place of the oldest one: the list is then a ring whose
    oldest entry is at C{_start} (0 while it is not one), so the relay's
    add moves no other entry. Everything else (a larger event, one with
    attachments, any read) first puts the list back in order.
    """

    __slots__ = ("_entries", "_start", "_bytes", "_max_packets", "_max_bytes", "custodial")

    def __init__(self, max_packets: int, max_bytes: int, custodial: bool = False) -> None:
        # A list, not a deque: an empty deque is about 600 bytes, and every
        # joined socket has a log.
        self._entries: list[_Entry] = []
        self._start = 0
        self._bytes = 0
        self._max_packets = max_packets
        self._max_bytes = max_bytes
        self.custodial = custodial

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        """Bytes held."""
        return self._bytes

    def _ordered(self) -> list[_Entry]:
        """The entries oldest first, the ring (if any) undone."""
        start = self._start
        if start:
            entries = self._entries
            self._entries = entries[start:] + entries[:start]
            self._start = 0
        return self._entries

    def add(self, messages: Sequence[Message]) -> None:
        """Keep one event (its encoded messages: text, then attachments)."""
        entries = self._entries
        if (
            len(entries) == self._max_packets
            and entries
            and len(messages) == 1
            and (text := messages[0]).__class__ is str
        ):
            # Full by count, the relay's case: the event replaces the
            # oldest one when that is a text and the bytes stay within cap.
            start = self._start
            oldest = entries[start]
            if oldest.__class__ is str:
                held = self._bytes + len(text) - len(oldest)
                if held <= self._max_bytes:
                    entries[start] = text
                    start += 1
                    self._start = 0 if start == len(entries) else start
                    self._bytes = held
                    return
        entries = self._ordered()
        entry: _Entry
        if len(messages) == 1 and isinstance(text := messages[0], str):
            entry = text
            held = self._bytes + len(text)
        else:
            entry = tuple(messages)
            held = self._bytes + _size(entry)
        entries.append(entry)
        if held > self._max_bytes or len(entries) > self._max_packets:
            # Counted on a local, with the limits read once.
            max_packets = self._max_packets
            max_bytes = self._max_bytes
            kept = len(entries)
            gone = 0
            while kept > max_packets or held > max_bytes:
                entry = entries[gone]
                held -= len(entry) if isinstance(entry, str) else _size(entry)
                gone += 1
                kept -= 1
            del entries[:gone]
        self._bytes = held

    def put_first(self, events: Sequence[Event]) -> None:
        """Put events handed over by another process before the ones kept
        here (which arrived later), within the caps."""
        later = self._ordered()
        self._entries = []
        self._bytes = 0
        for event in events:
            self.add(event)
        for entry in later:
            self.add(_messages(entry))
        self.custodial = False

    def _find(self, offset: str) -> int | None:
        """The index of the entry with C{offset}, newest first; None if none."""
        suffix = '"' + offset + '"]'
        entries = self._ordered()
        for index in range(len(entries) - 1, -1, -1):
            entry = entries[index]
            first = entry if isinstance(entry, str) else entry[0]
            if isinstance(first, str) and first.endswith(suffix):
                return index
        return None

    def events_after(self, offset: str) -> list[Event] | None:
        """The events after the one with C{offset}, oldest first.

        @return: None when no kept event has that offset (all of them when
            the log is custodial).
        """
        index = self._find(offset)
        entries = self._entries
        if index is not None:
            return [_messages(entries[later]) for later in range(index + 1, len(entries))]
        if self.custodial:
            return [_messages(entry) for entry in entries]
        return None

    def after(self, offset: str) -> list[Message] | None:
        """The messages of the events after the one with C{offset}, in order.

        @return: None when no kept event has that offset (never issued,
            or pushed out of the log): what the client missed is unknown.
        """
        events = self.events_after(offset)
        if events is None:
            return None
        return [message for event in events for message in event]
