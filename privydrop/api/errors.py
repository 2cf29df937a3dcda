"""The REST API's error answers: one exception type, rendered as JSON.

Routes raise L{APIError} for anything the client can fix (or must wait out);
L{privydrop.api.routes} turns it into the status code and a JSON body of the
Node backend's shape, C{{"error": "..."}}. This module knows nothing of the
store or of Klein.
"""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """An expected failure with the HTTP status and JSON body to answer with.

    @ivar code: the HTTP status code.
    @ivar message: the C{error} field, safe to show the client.
    @ivar headers: extra response headers (such as C{Retry-After}).
    """

    def __init__(
        self, code: int, message: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.headers = headers

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        return {"error": self.message}


def bad_request(message: str) -> APIError:
    """400 with C{message}."""
    return APIError(400, message)


#: Messages of the Node backend, kept word for word.
ROOM_ID_REQUIRED = "Room ID is required"
LEAVE_FIELDS_REQUIRED = "Room ID and Socket ID are required"
