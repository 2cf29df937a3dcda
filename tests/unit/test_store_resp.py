"""The RESP2 codec the store's connections use instead of txredisapi's.

The code above the store was written against txredisapi's reply values, so
the parser is checked against txredisapi's own parser on the same bytes
(split at every possible place), and the encoder against txredisapi's
command builder.
"""

from __future__ import annotations

from typing import Any

import pytest
import txredisapi
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport

from privydrop.redis.resp import ReplyParser, RESPProtocolError, encode_command


def stock_replies(data: bytes, charset: str | None = "utf-8") -> list[Any]:
    """What txredisapi's own protocol makes of C{data} (convertNumbers=False)."""
    protocol = txredisapi.BaseRedisProtocol(charset=charset, convertNumbers=False)
    protocol.transport = StringTransport()
    replies: list[Any] = []
    protocol.replyReceived = replies.append  # type: ignore[method-assign]
    # Its bulk-string path pauses and resumes on a later reactor turn; run
    # that "later" at once.
    protocol.callLater = lambda _delay, f, *a: f(*a)  # type: ignore[method-assign]
    protocol.dataReceived(data)
    return replies


def comparable(value: Any) -> Any:
    """Replies with error values compared by type and message."""
    if isinstance(value, list):
        return [comparable(v) for v in value]
    if isinstance(value, Exception):
        return (type(value), str(value))
    return value


def resp(value: Any) -> bytes:
    """The RESP2 bytes of a reply tree (test helper: str status, bytes bulk)."""
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, str):
        return b"+" + value.encode() + b"\r\n"
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if isinstance(value, Exception):
        return b"-" + str(value).encode() + b"\r\n"
    return b"*%d\r\n" % len(value) + b"".join(resp(v) for v in value)


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        (b"+OK\r\n", ["OK"]),
        (b":42\r\n", [42]),
        (b":-1\r\n", [-1]),
        (b"$3\r\nabc\r\n", ["abc"]),
        (b"$0\r\n\r\n", [""]),
        (b"$-1\r\n", [None]),
        (b"*-1\r\n", [None]),
        (b"*0\r\n", [[]]),
        (b"$2\r\n\xff\xfe\r\n", [b"\xff\xfe"]),
        (b"$4\r\na\r\nb\r\n", ["a\r\nb"]),
        (
            b"*4\r\n$6\r\njoined\r\n$4\r\n1234\r\n:-1\r\n:0\r\n",
            [["joined", "1234", -1, 0]],
        ),
        (b"*2\r\n*1\r\n:1\r\n$-1\r\n", [[[1], None]]),
        (b"+OK\r\n:1\r\n$1\r\nx\r\n", ["OK", 1, "x"]),
    ],
)
def test_replies_have_the_values_txredisapi_gives(wire: bytes, expected: list[Any]) -> None:
    """Code written against txredisapi's values (text, ints, None) reads the same values."""
    assert ReplyParser().feed(wire) == expected
    assert stock_replies(wire) == expected


def test_error_replies_are_values_with_the_servers_message() -> None:
    """A NOSCRIPT or WRONGPASS reply is recognised by its message, as before."""
    wire = b"-NOSCRIPT No matching script. Please use EVAL.\r\n*2\r\n-ERR inner\r\n:1\r\n"
    ours = ReplyParser().feed(wire)
    assert comparable(ours) == comparable(stock_replies(wire))
    assert isinstance(ours[0], txredisapi.ResponseError)
    assert str(ours[0]).startswith("NOSCRIPT")


def test_a_reply_split_anywhere_is_assembled_once_complete() -> None:
    """TCP may cut a reply at any byte; nothing is delivered early, nothing is lost."""
    wire = (
        b"*4\r\n$6\r\njoined\r\n$10\r\nroom-\xc3\xa9t\xc3\xa9\r\n:-1\r\n:0\r\n"
        b"+OK\r\n$-1\r\n:7\r\n"
    )
    whole = ReplyParser().feed(wire)
    assert whole == [["joined", "room-été", -1, 0], "OK", None, 7]
    for cut in range(1, len(wire)):
        for second in range(cut, len(wire) + 1):
            parser = ReplyParser()
            parts = parser.feed(wire[:cut]) + parser.feed(wire[cut:second])
            parts += parser.feed(wire[second:])
            assert parts == whole, (cut, second)
            assert parser.buffered == 0


def test_bytes_kept_when_no_charset() -> None:
    """A subscriber factory with charset None receives bytes, as with txredisapi."""
    wire = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\nabc\r\n"
    assert ReplyParser(None).feed(wire) == [[b"message", b"ch", b"abc"]]
    assert stock_replies(wire, charset=None) == [[b"message", b"ch", b"abc"]]


@pytest.mark.parametrize(
    "wire", [b"?what\r\n", b":12x\r\n", b"$abc\r\n", b"*x\r\n", b"$3\r\nabcde\r\n"]
)
def test_bytes_that_are_not_resp_are_refused(wire: bytes) -> None:
    """A confused stream is an error (the connection is dropped), never a guessed reply."""
    with pytest.raises(RESPProtocolError):
        ReplyParser().feed(wire)


_leaves = (
    st.none()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
        max_size=12,
    )
    | st.binary(max_size=16)
    | st.builds(
        lambda m: txredisapi.ResponseError("ERR " + m),
        st.text(alphabet="abcdefgh xyz", max_size=10),
    )
)
_replies = st.recursive(_leaves, lambda children: st.lists(children, max_size=5), max_leaves=20)


@given(st.lists(_replies, min_size=1, max_size=5), st.data())
def test_parser_agrees_with_txredisapi_on_any_reply_stream(replies: list[Any], data: Any) -> None:
    """Whatever Redis sends, the store sees what txredisapi would have produced."""
    wire = b"".join(resp(r) for r in replies)
    expected = comparable(stock_replies(wire))
    cut = data.draw(st.integers(min_value=0, max_value=len(wire)))
    parser = ReplyParser()
    got = parser.feed(wire[:cut]) + parser.feed(wire[cut:])
    assert comparable(got) == expected
    assert len(got) == len(replies)


@given(
    st.lists(
        st.text(max_size=20) | st.binary(max_size=20) | st.integers() | st.floats(allow_nan=False),
        min_size=1,
        max_size=8,
    )
)
def test_commands_are_encoded_as_txredisapi_encodes_them(args: list[Any]) -> None:
    """Every argument reaches Redis as the same bytes as before (ints, text, floats)."""
    stock = txredisapi.BaseRedisProtocol(convertNumbers=False)
    try:
        expected = stock._build_command(*args)
    except txredisapi.InvalidData:
        with pytest.raises(txredisapi.InvalidData):
            encode_command(args)
        return
    assert encode_command(args) == expected


def test_text_that_cannot_be_encoded_is_refused_before_sending() -> None:
    """A lone surrogate in a client's text is an encoding error, not a corrupt command."""
    with pytest.raises(txredisapi.InvalidData):
        encode_command(("GET", "socket:\ud800"))
