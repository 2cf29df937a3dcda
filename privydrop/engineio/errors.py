"""Engine.IO wire error codes, as the reference server answers them.

A request the server refuses before it reaches a session gets an HTTP error
whose JSON body is C{{"code": N, "message": "..."}}:

==== ================================ ====== =====================================
code message                          status when
==== ================================ ====== =====================================
0    Transport unknown                400    C{transport} missing or not enabled
1    Session ID unknown               400    C{sid} names no open session
2    Bad handshake method             400    a handshake (no C{sid}) that is not GET
3    Bad request                      400    transport mismatch, malformed payload,
                                             C{transport=websocket} without Upgrade
4    Forbidden                        403    Origin not in the allowlist
5    Unsupported protocol version     400    C{EIO} missing or not C{4}
==== ================================ ====== =====================================

Two answers have no code in the reference and keep their HTTP meaning: a
polling body over C{max_payload} gets 413, and a handshake refused because
its client holds too many sessions (or too many silent ones) gets 429 with
code 3.
"""

from __future__ import annotations

from enum import IntEnum

import orjson


class EngineError(IntEnum):
    """The reference server's error codes."""

    UNKNOWN_TRANSPORT = 0
    UNKNOWN_SID = 1
    BAD_HANDSHAKE_METHOD = 2
    BAD_REQUEST = 3
    FORBIDDEN = 4
    UNSUPPORTED_PROTOCOL_VERSION = 5


ERROR_MESSAGES: dict[EngineError, str] = {
    EngineError.UNKNOWN_TRANSPORT: "Transport unknown",
    EngineError.UNKNOWN_SID: "Session ID unknown",
    EngineError.BAD_HANDSHAKE_METHOD: "Bad handshake method",
    EngineError.BAD_REQUEST: "Bad request",
    EngineError.FORBIDDEN: "Forbidden",
    EngineError.UNSUPPORTED_PROTOCOL_VERSION: "Unsupported protocol version",
}


class EngineRequestError(Exception):
    """A request refused with one of the wire error codes.

    @ivar code: the wire code.
    @ivar status: the HTTP status to answer with.
    """

    def __init__(self, code: EngineError, status: int | None = None) -> None:
        super().__init__(ERROR_MESSAGES[code])
        self.code = code
        self.status = status if status is not None else http_status(code)

    @property
    def message(self) -> str:
        return ERROR_MESSAGES[self.code]

    def body(self) -> bytes:
        return error_body(self.code)


def http_status(code: EngineError) -> int:
    """The HTTP status the reference server uses for C{code}."""
    return 403 if code is EngineError.FORBIDDEN else 400


def error_body(code: EngineError) -> bytes:
    """The JSON body for C{code}."""
    return orjson.dumps({"code": int(code), "message": ERROR_MESSAGES[code]})
