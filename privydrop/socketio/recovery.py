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
"""

from __future__ import annotations

import secrets
from collections import deque
from typing import Sequence

import attrs

from privydrop.socketio.packets import Message

#: Random bytes of a private session id (as hex: 32 characters).
PID_BYTES = 16


def new_pid() -> str:
    """A private session id: random, never shown to any other client."""
    return secrets.token_hex(PID_BYTES)


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
        number = self._next = self._next + 1
        return self._prefix + "%x" % number


class PacketLog:
    """The last events delivered to one socket, encoded, oldest first.

    Entries past C{max_packets}, or that make the total exceed
    C{max_bytes}, push the oldest ones out; an entry larger than
    C{max_bytes} on its own empties the log.
    """

    __slots__ = ("_entries", "_bytes", "_max_packets", "_max_bytes")

    def __init__(self, max_packets: int, max_bytes: int) -> None:
        self._entries: deque[tuple[Sequence[Message], int]] = deque()
        self._bytes = 0
        self._max_packets = max_packets
        self._max_bytes = max_bytes

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        """Bytes held."""
        return self._bytes

    def add(self, messages: Sequence[Message]) -> None:
        """Keep one event (its encoded messages: text, then attachments)."""
        if len(messages) == 1:
            size = len(messages[0])
        else:
            size = sum(len(m) for m in messages)
        entries = self._entries
        entries.append((messages, size))
        held = self._bytes + size
        if held > self._max_bytes or len(entries) > self._max_packets:
            # Once full, every event pushes one or more out: counted here,
            # on a local, with the limits read once.
            max_packets = self._max_packets
            max_bytes = self._max_bytes
            while len(entries) > max_packets or held > max_bytes:
                held -= entries.popleft()[1]
        self._bytes = held

    def after(self, offset: str) -> list[Message] | None:
        """The messages of the events after the one with C{offset}, in order.

        @return: None when no kept event has that offset (never issued,
            or pushed out of the log): what the client missed is unknown.
        """
        suffix = '"' + offset + '"]'
        entries = self._entries
        for index in range(len(entries) - 1, -1, -1):
            first = entries[index][0][0]
            if isinstance(first, str) and first.endswith(suffix):
                missed: list[Message] = []
                for later in range(index + 1, len(entries)):
                    missed.extend(entries[later][0])
                return missed
        return None
