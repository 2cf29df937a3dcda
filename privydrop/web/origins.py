"""Which browser origins may call the API and open sockets.

A pure decision over L{privydrop.settings.OriginSettings}, shared by the REST
API's CORS handling and Engine.IO's handshake check. It knows nothing of HTTP.
"""

from __future__ import annotations

import functools
import re

from privydrop.settings import OriginSettings


@functools.lru_cache(maxsize=64)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(pattern) for pattern in patterns)


def origin_allowed(origin: str | None, settings: OriginSettings) -> bool:
    """Whether a request's C{Origin} header names an allowed origin.

    Exact origins compare as strings (browsers send them without a trailing
    slash); patterns must match the whole origin, so a LAN pattern cannot be
    satisfied by C{http://192.168.1.2:3002.evil.example}.

    @param origin: the C{Origin} header's value, or None when absent.
    @return: True when allowed. An absent origin is never "allowed": callers
        decide separately what to do with requests that carry none (non-browser
        clients), because no CORS headers are needed for them.
    """
    if not origin:
        return False
    if settings.allow_any:
        return True
    if origin in settings.origins:
        return True
    return any(p.fullmatch(origin) for p in _compiled(settings.patterns))
