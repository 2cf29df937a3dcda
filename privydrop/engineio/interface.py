"""The seam between Engine.IO and whatever runs on top of it.

Engine.IO delivers whole messages (text or binary) of one client session and
knows nothing of Socket.IO. The layer above (C{privydrop.socketio}, or the
plain echo in C{examples/engineio_echo.py}) implements L{EngineApplication};
Engine.IO hands it an L{EngineConnection} for each session.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from typing import NewType, Protocol, Union

import attrs

#: The Engine.IO session id (C{sid} of the handshake). Never shown to other clients.
EngineSid = NewType("EngineSid", str)

#: One Engine.IO message payload: text, or binary.
Message = Union[str, bytes]


class CloseKind(Enum):
    """How a session ended, as far as the transport can tell.

    The layer above decides what each kind means for it (Socket.IO keeps a
    socket recoverable after L{LOST} and L{SHUTDOWN}); Engine.IO only reports.
    """

    #: The client closed on purpose: an Engine.IO close packet, or a
    #: WebSocket close frame with code 1000, 1001 or none.
    CLIENT = "client"
    #: The transport went away without a close: ping timeout, a connection
    #: reset or closed without a close frame (or with an error code), a held
    #: GET whose connection died, a write that failed.
    LOST = "lost"
    #: The server closed it: a limit, a protocol fault, or the application.
    SERVER = "server"
    #: The server is shutting down (the client is expected to reconnect).
    SHUTDOWN = "shutdown"


#: Header names, query names and values most handshakes carry. A connection
#: keeps its handshake's headers and query for its lifetime; with these, it
#: refers to one shared string for each rather than to its own copy.
_COMMON_TEXT = {
    text: text
    for text in (
        # query
        "EIO", "4", "transport", "websocket", "polling", "sid", "t",
        # header names (lower-cased by both transports)
        "host", "upgrade", "connection", "origin", "user-agent", "cookie",
        "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
        "sec-websocket-protocol", "accept-encoding", "accept-language", "cache-control",
        "pragma", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip",
        # header values
        "Upgrade", "upgrade", "keep-alive, Upgrade", "13", "no-cache",
        "gzip, deflate", "gzip, deflate, br", "gzip, deflate, br, zstd",
        "permessage-deflate; client_max_window_bits", "http", "https",
    )
}


def shared_text(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """A dict of C{pairs} (names and values as text) with the common names
    and values replaced by the shared strings of L{_COMMON_TEXT}: for the
    L{Handshake} of either transport."""
    common = _COMMON_TEXT
    return {common.get(name, name): common.get(value, value) for name, value in pairs}


@attrs.frozen
class Handshake:
    """What the client's first request said, kept for the session's lifetime.

    @ivar headers: request headers, lower-cased names; a header sent on
        several lines is joined with C{", "}, whatever the transport.
    @ivar remote_address: the direct peer's IP address.
    @ivar query: query string parameters of the first request.
    @ivar url: the first request's path and query.
    @ivar secure: whether it came over TLS.
    @ivar issued_ms: when the session was opened, ms since the epoch.
    """

    headers: Mapping[str, str]
    remote_address: str
    query: Mapping[str, str]
    url: str
    secure: bool
    issued_ms: int


class EngineConnection(Protocol):
    """One open Engine.IO session, as the application sees it."""

    @property
    def sid(self) -> EngineSid: ...

    @property
    def handshake(self) -> Handshake: ...

    @property
    def transport_name(self) -> str:
        """C{"polling"} or C{"websocket"} (changes after an upgrade)."""

    @property
    def close_kind(self) -> CloseKind | None:
        """How the session ended (None while it is open); set before
        L{EngineApplication.on_close} is called."""

    def send(self, message: Message) -> None:
        """Queue one message; it is flushed with others queued in the same turn."""

    def send_many(self, messages: Sequence[Message]) -> None:
        """Queue several messages in order, as one write where the transport allows."""

    def close(self, reason: str = "forced close") -> None:
        """Close the session; L{EngineApplication.on_close} follows."""


class EngineApplication(Protocol):
    """Callbacks Engine.IO makes into the layer above. They must not raise;
    an exception is logged and closes that one session."""

    def on_open(self, connection: EngineConnection) -> None:
        """A session completed its handshake."""

    def on_message(self, connection: EngineConnection, message: Message) -> None:
        """A whole message arrived on a session."""

    def on_close(self, connection: EngineConnection, reason: str) -> None:
        """A session ended (client close, transport error, ping timeout, limit);
        C{connection.close_kind} says which kind of end it was."""
