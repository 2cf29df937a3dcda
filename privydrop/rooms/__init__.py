"""PrivyDrop's room rules: ids, creation, allocation, joining and leaving.

No I/O of its own beyond calling the store (L{privydrop.store.interface}).
"""

from privydrop.rooms.ids import InvalidRoomId, RoomId, validate_room_id
from privydrop.rooms.rooms import (
    CreateOutcome,
    JoinDecision,
    RoomIdsExhausted,
    Rooms,
)
from privydrop.store.interface import JoinOutcome

__all__ = [
    "CreateOutcome",
    "InvalidRoomId",
    "JoinDecision",
    "JoinOutcome",
    "RoomId",
    "RoomIdsExhausted",
    "Rooms",
    "validate_room_id",
]
