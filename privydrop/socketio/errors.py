"""Exceptions of the Socket.IO server API (the codec's own is
L{privydrop.socketio.packets.SocketIOProtocolError})."""

from __future__ import annotations

from typing import Any


class ConnectionRefused(Exception):
    """Raised by a connect handler to refuse a client's connection to a namespace.

    The client receives a CONNECT_ERROR packet with C{{"message": message}}
    (and C{"data"} when given), and its C{connect_error} listeners fire.
    """

    def __init__(self, message: str = "Not authorized", data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


class RoomLimitError(Exception):
    """A socket tried to join more rooms than C{max_rooms_per_socket} allows."""


class AckLimitError(Exception):
    """An emit asked for an acknowledgement while C{max_pending_acks} are
    already awaited from that client (it is not answering)."""


class AckTimeout(Exception):
    """The client did not acknowledge within the time given to
    L{privydrop.socketio.sockets.Socket.emit_with_ack}."""


class SocketDisconnected(Exception):
    """The socket disconnected before it acknowledged."""
