"""Room ids: generating candidates and validating what clients send.

Pure functions with an injectable random source, so tests can seed it and
force collisions. Generated ids follow the Node backend: four decimal digits
first (easy to read out loud), four characters of C{[A-Za-z0-9]} when the
numeric space is crowded.

Validation is ours (the Node backend accepted anything truthy): ids end up in
Redis keys, log lines and Socket.IO room names, so they must be bounded, free
of control characters, and free of C{:} (a room named C{abc:sockets} would
otherwise be the member set of room C{abc}; see L{privydrop.store.keys}).
"""

from __future__ import annotations

import os
import random
import string
import weakref
from typing import NewType, Protocol

from privydrop.store import keys

#: A validated room id.
RoomId = NewType("RoomId", str)

NUMERIC_ALPHABET = string.digits
ALPHANUMERIC_ALPHABET = string.ascii_uppercase + string.ascii_lowercase + string.digits
#: Length of generated ids (both kinds).
GENERATED_ID_LENGTH = 4


class RandomSource(Protocol):
    """What id generation needs from a random number generator.

    C{random.Random(seed)} and C{random.SystemRandom()} both provide it.
    """

    def choice(self, seq: str) -> str: ...

    def random(self) -> float: ...


class UrandomSource:
    """The operating system's generator, read in blocks.

    C{random.SystemRandom} makes one C{os.urandom} call per character drawn:
    a C{GET /api/get_room} drew 40 characters for its digit batch, and 200
    more for the letter batch, and that was a fifth of its CPU. This source
    reads C{os.urandom} a block at a time and turns bytes into characters by
    rejection sampling (a byte is used only when it is below the largest
    multiple of the alphabet's size), so every character stays uniform and
    unpredictable, as with C{SystemRandom}.
    """

    _BLOCK = 4096

    def __init__(self) -> None:
        self._pool = b""
        self._fallback = random.SystemRandom()
        #: alphabet -> (translation table, bytes to delete) for L{strings}.
        self._tables: dict[str, tuple[bytes, bytes]] = {}
        _SOURCES.add(self)

    def forget(self) -> None:
        """Drop the bytes read ahead (a forked child must not reuse its parent's)."""
        self._pool = b""

    def _take(self, count: int) -> bytes:
        pool = self._pool
        if len(pool) < count:
            pool += os.urandom(max(self._BLOCK, count))
        taken, self._pool = pool[:count], pool[count:]
        return taken

    def _table(self, alphabet: str) -> tuple[bytes, bytes]:
        table = self._tables.get(alphabet)
        if table is None:
            size = len(alphabet)
            encoded = alphabet.encode("ascii")
            usable = 256 - 256 % size
            table = (
                bytes(encoded[b % size] if b < usable else 0 for b in range(256)),
                bytes(range(usable, 256)),
            )
            self._tables[alphabet] = table
        return table

    def strings(self, alphabet: str, length: int, count: int) -> list[str]:
        """C{count} strings of C{length} characters drawn uniformly from C{alphabet}.

        @param alphabet: at most 256 ASCII characters.
        """
        table, rejected = self._table(alphabet)
        wanted = length * count
        chars = b""
        while len(chars) < wanted:
            # Rejection keeps at least half of the bytes for any alphabet.
            chars += self._take(2 * (wanted - len(chars)) + 8).translate(table, rejected)
        text = chars[:wanted].decode("ascii")
        return [text[i : i + length] for i in range(0, wanted, length)]

    def choice(self, seq: str) -> str:
        if len(seq) > 256 or not seq.isascii():
            return self._fallback.choice(seq)
        return self.strings(seq, 1, 1)[0]

    def random(self) -> float:
        return (int.from_bytes(self._take(7), "big") >> 3) * 2.0**-53


_SOURCES: weakref.WeakSet[UrandomSource] = weakref.WeakSet()


def _forget_after_fork() -> None:
    for source in list(_SOURCES):
        source.forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def default_random() -> RandomSource:
    """The production source: the operating system's generator (L{UrandomSource})."""
    return UrandomSource()


class InvalidRoomId(ValueError):
    """A room id a client sent cannot be used.

    @ivar reason: a short human-readable reason, safe to return to the client.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def numeric_id(rng: RandomSource) -> str:
    """A random id of four decimal digits (leading zeros kept: C{"0427"})."""
    return "".join(rng.choice(NUMERIC_ALPHABET) for _ in range(GENERATED_ID_LENGTH))


def alphanumeric_id(rng: RandomSource) -> str:
    """A random id of four characters from C{[A-Za-z0-9]}."""
    return "".join(
        rng.choice(ALPHANUMERIC_ALPHABET) for _ in range(GENERATED_ID_LENGTH)
    )


def numeric_candidates(rng: RandomSource, count: int) -> list[str]:
    """C{count} numeric ids, duplicates removed (order kept)."""
    if isinstance(rng, UrandomSource):
        return list(dict.fromkeys(rng.strings(NUMERIC_ALPHABET, GENERATED_ID_LENGTH, count)))
    return list(dict.fromkeys(numeric_id(rng) for _ in range(count)))


def alphanumeric_candidates(rng: RandomSource, count: int) -> list[str]:
    """C{count} alphanumeric ids, duplicates removed (order kept)."""
    if isinstance(rng, UrandomSource):
        return list(
            dict.fromkeys(rng.strings(ALPHANUMERIC_ALPHABET, GENERATED_ID_LENGTH, count))
        )
    return list(dict.fromkeys(alphanumeric_id(rng) for _ in range(count)))


def validate_room_id(value: object, max_length: int) -> RoomId:
    """Check a room id received from a client.

    @param value: whatever the client sent (JSON-decoded).
    @param max_length: the longest id accepted, in characters
        (C{RoomSettings.max_room_id_length}).
    @return: the id, unchanged.
    @raise InvalidRoomId: when it is not a non-empty string of at most
        C{max_length} characters without control characters or C{:}, or
        when it is blank or begins or ends with whitespace (an id nobody
        can tell apart from another when it is read out or typed).
    """
    if not isinstance(value, str):
        raise InvalidRoomId("Room ID must be a string")
    if not value:
        raise InvalidRoomId("Room ID is required")
    if len(value) > max_length:
        raise InvalidRoomId(f"Room ID is longer than {max_length} characters")
    if ":" in value:
        raise InvalidRoomId("Room ID must not contain ':'")
    if keys.contains_control_characters(value):
        raise InvalidRoomId("Room ID must not contain control characters")
    if value != value.strip():
        if not value.strip():
            raise InvalidRoomId("Room ID must not be blank")
        raise InvalidRoomId("Room ID must not begin or end with whitespace")
    return RoomId(value)
