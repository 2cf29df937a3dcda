"""Origin checks and CORS headers for the Engine.IO transports.

One rule for both transports: a request that carries an Origin header is
accepted only if that origin is in L{OriginSettings.origins}, full-matches one
of L{OriginSettings.patterns}, or the settings allow any origin (the protocol
test servers). Requests without Origin (non-browser clients) are accepted:
the check exists to stop a page of another origin from opening a session in
a visitor's browser.
"""

from __future__ import annotations

import re
from functools import lru_cache

from privydrop.config import OriginSettings

#: Methods announced in a CORS preflight answer.
ALLOWED_METHODS = b"GET, POST, OPTIONS"


@lru_cache(maxsize=64)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p) for p in patterns)


def origin_allowed(settings: OriginSettings, origin: str) -> bool:
    """Whether a browser page of C{origin} may use the server."""
    if settings.allow_any:
        return True
    if origin in settings.origins:
        return True
    return any(p.fullmatch(origin) for p in _compiled(settings.patterns))


def cors_headers(settings: OriginSettings, origin: str | None) -> list[tuple[bytes, bytes]]:
    """Response headers for a polling request from C{origin}.

    Like the reference server with C{cors: {origin: "*"}} when any origin is
    allowed and the request names none; otherwise the allowed origin is
    echoed with credentials, and C{Vary: Origin} keeps caches honest.
    """
    if origin is None:
        if settings.allow_any:
            return [(b"Access-Control-Allow-Origin", b"*")]
        return []
    if not origin_allowed(settings, origin):
        return []
    return [
        (b"Access-Control-Allow-Origin", origin.encode("utf-8")),
        (b"Access-Control-Allow-Credentials", b"true"),
        (b"Vary", b"Origin"),
    ]
