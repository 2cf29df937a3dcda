"""Room ids: generating candidates and validating what clients send.

Pure functions with an injectable random source, so tests can seed it and
force collisions. Generated ids follow the Node backend: four decimal digits
first (easy to read out loud), four characters of ``[A-Za-z0-9]`` when the
numeric space is crowded.

Validation is ours (the Node backend accepted anything truthy): ids end up in
Redis keys, log lines and Socket.IO room names, so they must be bounded, free
of control characters, and free of ``:`` (a room named ``abc:sockets`` would
otherwise be the member set of room ``abc``; see L{privydrop.store.keys}).
"""

from __future__ import annotations

import random
import string
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


def default_random() -> RandomSource:
    """The production source: the operating system's generator."""
    return random.SystemRandom()


class InvalidRoomId(ValueError):
    """A room id a client sent cannot be used.

    @ivar reason: a short human-readable reason, safe to return to the client.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def numeric_id(rng: RandomSource) -> str:
    """A random id of four decimal digits (leading zeros kept: ``"0427"``)."""
    return "".join(rng.choice(NUMERIC_ALPHABET) for _ in range(GENERATED_ID_LENGTH))


def alphanumeric_id(rng: RandomSource) -> str:
    """A random id of four characters from ``[A-Za-z0-9]``."""
    return "".join(
        rng.choice(ALPHANUMERIC_ALPHABET) for _ in range(GENERATED_ID_LENGTH)
    )


def numeric_candidates(rng: RandomSource, count: int) -> list[str]:
    """``count`` numeric ids, duplicates removed (order kept)."""
    return list(dict.fromkeys(numeric_id(rng) for _ in range(count)))


def alphanumeric_candidates(rng: RandomSource, count: int) -> list[str]:
    """``count`` alphanumeric ids, duplicates removed (order kept)."""
    return list(dict.fromkeys(alphanumeric_id(rng) for _ in range(count)))


def validate_room_id(value: object, max_length: int) -> RoomId:
    """Check a room id received from a client.

    @param value: whatever the client sent (JSON-decoded).
    @param max_length: the longest id accepted, in characters
        (C{RoomSettings.max_room_id_length}).
    @return: the id, unchanged.
    @raise InvalidRoomId: when it is not a non-empty string of at most
        C{max_length} characters without control characters or ``:``.
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
    return RoomId(value)
