"""Origin checks and CORS headers for the Engine.IO transports.

One rule for both transports, the REST API's (L{privydrop.origins}): a
request that carries an Origin header is accepted only if that origin is in
L{OriginSettings.origins}, full-matches one of L{OriginSettings.patterns}, or
the settings allow any origin (the protocol test servers). Requests without
Origin (non-browser clients) are accepted: the check exists to stop a page of
another origin from opening a session in a visitor's browser.
"""

from __future__ import annotations

from privydrop.config import OriginSettings
from privydrop.origins import origin_allowed

#: Methods announced in a CORS preflight answer.
ALLOWED_METHODS = b"GET, POST, OPTIONS"


def cors_headers(
    settings: OriginSettings, origin: str | None
) -> list[tuple[bytes, bytes]]:
    """Response headers for a polling request from C{origin}.

    Like the reference server with C{cors: {origin: "*"}} when any origin is
    allowed and the request names none; otherwise the allowed origin is
    echoed with credentials, and C{Vary: Origin} keeps caches honest.
    """
    if origin is None:
        if settings.allow_any:
            return [(b"Access-Control-Allow-Origin", b"*")]
        return []
    if not origin_allowed(origin, settings):
        return []
    return [
        (b"Access-Control-Allow-Origin", origin.encode("utf-8")),
        (b"Access-Control-Allow-Credentials", b"true"),
        (b"Vary", b"Origin"),
    ]
