"""Text a client wrote, made fit for a log field.

Clients choose the length of what they send (an event name, a namespace and
a request path can each be up to a megabyte) and some of it is a
credential: the C{sid} query parameter is an Engine.IO session's only
secret, so a URI with it in a log would let whoever reads the log take the
session over. Every field of a log event that holds client text goes
through L{clip}, and every logged request URI through L{redact_uri}. Lines
about one session name it by L{sid_label}, which tells sessions apart
without giving the sid away (the package's logger puts it in every
C{engine_sid} field, L{privydrop.logs.levels.Logger}).
"""

from __future__ import annotations

import hashlib
from urllib.parse import unquote_to_bytes

#: Characters of one client-supplied text kept in a log field: enough to
#: recognise what was sent, too few to make the log a storage for clients.
MAX_LOGGED_TEXT = 200

#: What stands for a redacted query value.
REDACTED = "<redacted>"

#: Query parameters whose values are never logged.
SECRET_PARAMETERS = frozenset({b"sid"})


def sid_label(sid: object) -> str:
    """A name for an Engine.IO session in the log: the same for every line
    of one session, and no use to anyone who would take the session over.

    A hash of the sid: the sid is random (120 bits), so the hash cannot be
    turned back into it.
    """
    digest = hashlib.blake2b(str(sid).encode("utf-8", "replace"), digest_size=5).hexdigest()
    return "~" + digest


def clip(value: str | bytes, limit: int = MAX_LOGGED_TEXT) -> str:
    """C{value} cut to C{limit} characters, saying how many more there were.

    Bytes are decoded as UTF-8 (invalid sequences replaced); only the part
    kept is ever decoded.
    """
    if isinstance(value, bytes):
        total = len(value)
        text = value[: limit * 4].decode("utf-8", "replace")
        if total <= limit:
            return text
        return "%s...(%d bytes in all)" % (text[:limit], total)
    if len(value) <= limit:
        return value
    return "%s...(%d characters in all)" % (value[:limit], len(value))


def redact_uri(uri: bytes | str, limit: int = MAX_LOGGED_TEXT) -> str:
    """A request URI for a log line: secret query values replaced, then clipped.

    A parameter is recognised whatever its percent-encoding (C{%73id} is
    C{sid} to the server's query parser, so it is to this one too).
    """
    raw = uri.encode("utf-8", "surrogateescape") if isinstance(uri, str) else uri
    path, mark, query = raw.partition(b"?")
    if not mark:
        return clip(raw, limit)
    parts = []
    for part in query.split(b"&"):
        name, equals, _ = part.partition(b"=")
        if equals and unquote_to_bytes(name.replace(b"+", b" ")).lower() in SECRET_PARAMETERS:
            part = name + b"=" + REDACTED.encode("ascii")
        parts.append(part)
    return clip(path + b"?" + b"&".join(parts), limit)
