"""Which request bodies the API reads: JSON, in UTF-8, not encoded.

A cross-site page can make its visitors' browsers POST a C{text/plain},
C{application/x-www-form-urlencoded} or C{multipart/form-data} body without
asking first (a CORS "simple" request has no preflight), and the browser
sends it with the visitor's address. Parsing such a body as JSON whatever
its type would let any web page create rooms and count referrers through
its visitors; requiring C{Content-Type: application/json}, which is not
simple, puts every such request behind the CORS preflight. The PrivyDrop
frontend sends C{application/json}.

A body the server would have to decode first (C{Content-Encoding: gzip},
...) is refused too: nothing decodes it, and its bytes are not JSON.

Pure: header values in, the reason for a 415 (or C{None}) out.
"""

from __future__ import annotations

from collections.abc import Sequence

#: The one media type of request bodies.
JSON_MEDIA_TYPE = "application/json"
#: Its one charset (RFC 8259: JSON exchanged between systems is UTF-8).
JSON_CHARSET = "utf-8"

#: The 415 answers.
NOT_JSON = "Content-Type must be application/json"
ENCODED = "Content-Encoding is not supported"

#: Methods whose requests carry no body the API reads.
BODILESS_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS"})


def is_json_content_type(value: str) -> bool:
    """Whether a C{Content-Type} value is C{application/json}, with at most
    a C{charset=utf-8} parameter (any case, quoted or not)."""
    media_type, *parameters = value.split(";")
    if media_type.strip().lower() != JSON_MEDIA_TYPE:
        return False
    for parameter in parameters:
        name, equals, raw = parameter.partition("=")
        if not equals or name.strip().lower() != "charset":
            return False
        if raw.strip().strip('"').lower() != JSON_CHARSET:
            return False
    return True


def body_refusal(
    method: bytes,
    content_types: Sequence[bytes],
    content_encodings: Sequence[bytes],
    has_body: bool,
) -> str | None:
    """Why a request's body must be refused with 415, or C{None} to read it.

    @param method: the request method.
    @param content_types: its C{Content-Type} headers, as sent.
    @param content_encodings: its C{Content-Encoding} headers, as sent.
    @param has_body: whether it carries body bytes.
    @return: the error message of the 415, or C{None}.
    """
    if method in BODILESS_METHODS:
        return None
    for header in content_encodings:
        for coding in header.split(b","):
            if coding.strip().lower() not in (b"", b"identity"):
                return ENCODED
    if not has_body and not content_types:
        # Nothing to parse (an empty body is {}), and nothing claimed.
        return None
    if len(content_types) != 1:
        return NOT_JSON
    if not is_json_content_type(content_types[0].decode("latin-1")):
        return NOT_JSON
    return None
