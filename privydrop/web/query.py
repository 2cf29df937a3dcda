"""Query strings as text, the way the Engine.IO resource reads them.

One parse per request: the site parses the query of an Engine.IO request
when something first asks for it (L{privydrop.web.site.LimitedRequest.query_params}),
which may be before the body has arrived (a POST's head), and the answer is
kept for the render.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes


def parse_query(query: bytes) -> dict[str, str]:
    """The parameters of a query string (without its C{?}) as text.

    The rules of C{twisted.web}'s C{request.args} (C{parse_qs} keeping blank
    values: pairs split on C{&} and C{;}, an item without C{=} skipped, C{+}
    a space, percent-escapes decoded as bytes), with each name and value
    then decoded as UTF-8 (bad sequences replaced) and the last value of a
    repeated name winning.

    @param query: the query as sent, after the C{?}.
    @return: name to value, in the order names first appear.
    """
    out: dict[str, str] = {}
    if b"%" not in query and b"+" not in query and b";" not in query:
        # The usual Engine.IO query (EIO, transport, sid): nothing to
        # unescape, so one decode for all of it. Splitting after the decode
        # gives the same as decoding each piece: "&" and "=" are ASCII, which
        # UTF-8 never uses inside a character, and a bad sequence's
        # replacement never takes the ASCII byte after it.
        for text in query.decode("utf-8", "replace").split("&"):
            name, sep, value = text.partition("=")
            if sep:
                out[name] = value
        return out
    for part in query.split(b"&"):
        for item in part.split(b";") if b";" in part else (part,):
            raw_name, equals, raw_value = item.partition(b"=")
            if equals:
                out[_text(raw_name)] = _text(raw_value)
    return out


def _text(raw: bytes) -> str:
    if b"%" in raw or b"+" in raw:
        raw = unquote_to_bytes(raw.replace(b"+", b" "))
    return raw.decode("utf-8", "replace")
