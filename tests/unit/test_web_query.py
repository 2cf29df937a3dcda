"""Query strings read as text: the same answer as twisted.web's C{request.args}."""

from __future__ import annotations

import random

import pytest
from twisted.web.http import parse_qs

from privydrop.web.query import parse_query


def _from_twisted_args(query: bytes) -> dict[str, str]:
    """What the Engine.IO resource read from C{request.args} before."""
    out: dict[str, str] = {}
    for name, values in parse_qs(query, 1).items():
        if values:
            out[name.decode("utf-8", "replace")] = values[-1].decode("utf-8", "replace")
    return out


@pytest.mark.parametrize(
    "query",
    [
        b"",
        b"EIO=4&transport=polling&sid=abc",
        b"sid=",
        b"sid",
        b"&&",
        b"a=1;b=2&c=3",
        b"x=1&x=2&x=",
        b"name+with+spaces=v+v",
        b"%41%42=%e2%82%ac",
        b"bad=%ff%fe&half=%4",
        b"=value&key==",
        b"t=1&EIO=4&t=2",
        b"a=\xc3&b=\xe2\x82=c&\xff=\xc3\xa9",
    ],
)
def test_same_answer_as_twisted_args(query: bytes) -> None:
    parsed = parse_query(query)
    expected = _from_twisted_args(query)
    assert parsed == expected
    assert list(parsed) == list(expected)


def test_same_answer_on_random_queries() -> None:
    pieces = [
        b"a", b"sid", b"=", b"&", b";", b"+", b"%", b"%41", b"%ff", b"%2", b"\xc3\xa9", b" ",
        b"\xc3", b"\xe2\x82", b"\xff",
    ]
    rng = random.Random(7)
    for _ in range(20000):
        query = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 10)))
        assert parse_query(query) == _from_twisted_args(query), query
