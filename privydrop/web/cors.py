"""CORS headers: one module for the REST API and the polling transport.

Whether an origin is allowed is one decision (L{privydrop.web.origins}); the
headers that follow from it differ by audience, as they do in the servers
this one replaces:

 - The REST API answers as the Node backend's C{cors} middleware (configured
   with a list of origins): C{Vary: Origin} and
   C{Access-Control-Allow-Credentials: true} on every answer,
   C{Access-Control-Allow-Origin} only for an allowed origin (a browser then
   withholds the answer from any other page), and on a preflight the allowed
   methods (GET, POST, OPTIONS) and request headers (Content-Type,
   Authorization), whatever the origin.
 - The Engine.IO polling transport answers as the reference Socket.IO server
   with its C{cors} option: an allowed origin is echoed with credentials and
   C{Vary: Origin}; with every origin allowed and none named, C{*}; nothing
   for an origin that is not allowed. A preflight also names the methods and
   echoes the requested headers.

Pure functions from an origin and L{OriginSettings} to header pairs, encoded
as bytes once: the results are cached per (origin, settings), with a bounded
cache, since clients choose the Origin header.
"""

from __future__ import annotations

import functools

from privydrop.settings import OriginSettings
from privydrop.web.origins import origin_allowed

#: One response header, name and value, as written on the wire.
Header = tuple[bytes, bytes]

API_ALLOWED_METHODS = b"GET,POST,OPTIONS"
API_ALLOWED_HEADERS = b"Content-Type,Authorization"
POLLING_ALLOWED_METHODS = b"GET, POST, OPTIONS"

#: Distinct (origin, settings) pairs whose headers are kept ready.
_CACHE_SIZE = 256


@functools.lru_cache(maxsize=_CACHE_SIZE)
def api_headers(origin: str | None, settings: OriginSettings) -> tuple[Header, ...]:
    """Headers for an ordinary (non-preflight) API answer to C{origin}."""
    headers: list[Header] = [(b"Vary", b"Origin")]
    if origin is not None and origin_allowed(origin, settings):
        headers.append((b"Access-Control-Allow-Origin", origin.encode("latin-1")))
    headers.append((b"Access-Control-Allow-Credentials", b"true"))
    return tuple(headers)


def api_preflight_headers(origin: str | None, settings: OriginSettings) -> tuple[Header, ...]:
    """Headers for the answer to an API preflight C{OPTIONS} request."""
    return api_headers(origin, settings) + (
        (b"Access-Control-Allow-Methods", API_ALLOWED_METHODS),
        (b"Access-Control-Allow-Headers", API_ALLOWED_HEADERS),
    )


@functools.lru_cache(maxsize=_CACHE_SIZE)
def polling_headers(origin: str | None, settings: OriginSettings) -> tuple[Header, ...]:
    """Headers for an Engine.IO polling answer to C{origin}."""
    if origin is None:
        if settings.allow_any:
            return ((b"Access-Control-Allow-Origin", b"*"),)
        return ()
    if not origin_allowed(origin, settings):
        return ()
    return (
        (b"Access-Control-Allow-Origin", origin.encode("latin-1")),
        (b"Access-Control-Allow-Credentials", b"true"),
        (b"Vary", b"Origin"),
    )
