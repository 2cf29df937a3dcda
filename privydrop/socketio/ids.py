"""Identity types of the Socket.IO layer.

A client has two ids: the Engine.IO session id (L{privydrop.engineio.interface.EngineSid},
which grants access to the session and is never shown to anyone else) and one
L{SocketId} per namespace it joined (random and unrelated to the session id,
safe to show to other clients). Distinct types keep them from being mixed up.
"""

from __future__ import annotations

import secrets
from typing import NewType

#: The id of one client's connection to one namespace; other clients may see it.
SocketId = NewType("SocketId", str)

#: The name of a room inside a namespace. A room is never a socket: addressing
#: one socket goes by its L{SocketId}, never through room names.
RoomId = NewType("RoomId", str)


def new_socket_id() -> SocketId:
    """A fresh random socket id (20 URL-safe characters, 120 bits).

    Drawn from C{secrets}, independently of the Engine.IO session id, so
    knowing a socket id tells nothing about the session.
    """
    return SocketId(secrets.token_urlsafe(15))
