"""CORS for the REST API, as the Node backend's C{cors} middleware does it.

Credentials allowed; methods GET, POST, OPTIONS; request headers
Content-Type and Authorization; every C{OPTIONS} request answered as a
preflight (204); C{Vary: Origin} on every answer, since it depends on the
Origin. An origin that is not allowed simply gets no
C{Access-Control-Allow-Origin}, so the browser withholds the answer. As
that middleware (configured with a list of origins) does, the other headers
do not depend on the origin: C{Access-Control-Allow-Credentials} on every
answer, the allowed methods and headers on every preflight.

Pure functions from an origin and L{OriginSettings} to header pairs; the
origin decision itself is L{privydrop.origins.origin_allowed}.
"""

from __future__ import annotations

from privydrop.config import OriginSettings
from privydrop.origins import origin_allowed

ALLOWED_METHODS = "GET,POST,OPTIONS"
ALLOWED_HEADERS = "Content-Type,Authorization"

Headers = list[tuple[str, str]]


def cors_headers(origin: str | None, settings: OriginSettings) -> Headers:
    """Headers for an ordinary (non-preflight) answer to a request from C{origin}."""
    headers: Headers = [("Vary", "Origin")]
    if origin is not None and origin_allowed(origin, settings):
        headers.append(("Access-Control-Allow-Origin", origin))
    headers.append(("Access-Control-Allow-Credentials", "true"))
    return headers


def preflight_headers(origin: str | None, settings: OriginSettings) -> Headers:
    """Headers for the answer to a preflight C{OPTIONS} request."""
    headers = cors_headers(origin, settings)
    headers.append(("Access-Control-Allow-Methods", ALLOWED_METHODS))
    headers.append(("Access-Control-Allow-Headers", ALLOWED_HEADERS))
    return headers
