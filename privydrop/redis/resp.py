"""RESP2, the Redis wire format: commands out, replies in. A pure codec.

txredisapi encodes each argument through several Python calls and parses
replies line by line: every line is split off the buffer and decoded, and a
bulk string followed by more data pauses the protocol and resumes it on a
later reactor turn (C{callLater(0)}), once per bulk string (docs/performance.md
has the cost). This module does the same work in a few calls per reply; every
connection of the client reads with it (L{privydrop.redis.protocol}), and so
does the start-up probe.

The values are txredisapi's, for a connection built with
C{convertNumbers=False}, so code above sees no difference:

=============  =========================================================
C{+OK}        C{"OK"} (text)
C{-ERR x}     a C{txredisapi.ResponseError("ERR x")} I{value} (raised
               only when it is the whole reply, by the caller)
C{:5}         C{5}
C{$3 abc}     C{"abc"}: text when it decodes with the charset, else
               bytes (always bytes with charset None)
C{$-1}        C{None}
C{*2 ...}     a list; C{*-1} is C{None}
=============  =========================================================

Nothing here touches a transport or knows a command's meaning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import txredisapi

_CRLF = b"\r\n"
_BULK = 36  # $
_ARRAY = 42  # *
_INTEGER = 58  # :
_STATUS = 43  # +
_ERROR = 45  # -


class RESPProtocolError(Exception):
    """The bytes received are not RESP2: the connection cannot be trusted."""


class _Incomplete(Exception):
    """More bytes are needed for the reply that starts at the given offset."""


def encode_argument(value: Any, charset: str = "utf-8") -> bytes:
    """One command argument as bytes, as txredisapi encodes it.

    @raise txredisapi.InvalidData: for text that does not encode (a lone
        surrogate), before anything is written.
    """
    if isinstance(value, str):
        try:
            return value.encode(charset)
        except UnicodeEncodeError as e:
            raise txredisapi.InvalidData(
                f"Error encoding unicode value '{value!r}': {e}"
            ) from None
    if isinstance(value, bytes):
        return value
    if type(value) is int:
        return b"%d" % (value,)
    if isinstance(value, float):
        return format(value, "f").encode()
    if isinstance(value, bytearray):
        return bytes(value)
    # bool and anything else: their str(), as txredisapi does.
    return str(value).encode()


def encode_command(args: Sequence[Any], charset: str = "utf-8") -> bytes:
    """A command (name and arguments) as one RESP2 array of bulk strings.

    @raise txredisapi.InvalidData: see L{encode_argument}.
    """
    parts = [b"*%d\r\n" % (len(args),)]
    append = parts.append
    for arg in args:
        if type(arg) is str:
            try:
                data = arg.encode(charset)
            except UnicodeEncodeError:
                data = encode_argument(arg, charset)  # raises InvalidData
        else:
            data = encode_argument(arg, charset)
        append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class ReplyParser:
    """Turns the bytes of a connection into complete replies, in order.

    @param charset: bulk strings are decoded with it when they can be;
        None keeps them as bytes.
    """

    def __init__(self, charset: str | None = "utf-8") -> None:
        self._charset = charset
        self._buffer = b""

    def feed(self, data: bytes) -> list[Any]:
        """Add received bytes; return every reply they complete (maybe none).

        @raise RESPProtocolError: on bytes that are not RESP2; the parser is
            then unusable (so is the connection).
        """
        buf = self._buffer + data if self._buffer else data
        replies: list[Any] = []
        pos = 0
        end = len(buf)
        parse = self._parse
        try:
            while pos < end:
                value, pos = parse(buf, pos)
                replies.append(value)
        except _Incomplete:
            pass
        self._buffer = buf[pos:] if pos < end else b""
        return replies

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete reply."""
        return len(self._buffer)

    def _parse(self, buf: bytes, pos: int) -> tuple[Any, int]:
        eol = buf.find(_CRLF, pos)
        if eol < 0:
            raise _Incomplete()
        kind = buf[pos]
        try:
            if kind == _BULK:
                length = int(buf[pos + 1 : eol])
                start = eol + 2
                if length < 0:
                    return None, start
                stop = start + length
                if len(buf) < stop + 2:
                    raise _Incomplete()
                if buf[stop : stop + 2] != _CRLF:
                    raise RESPProtocolError("bulk string not followed by CRLF")
                data = buf[start:stop]
                charset = self._charset
                if charset is not None:
                    try:
                        return data.decode(charset), stop + 2
                    except UnicodeDecodeError:
                        pass
                return data, stop + 2
            if kind == _ARRAY:
                count = int(buf[pos + 1 : eol])
                pos = eol + 2
                if count < 0:
                    return None, pos
                items = []
                parse = self._parse
                for _ in range(count):
                    item, pos = parse(buf, pos)
                    items.append(item)
                return items, pos
            if kind == _INTEGER:
                return int(buf[pos + 1 : eol]), eol + 2
            if kind == _STATUS:
                return buf[pos + 1 : eol].decode("utf-8", "replace"), eol + 2
            if kind == _ERROR:
                message = buf[pos + 1 : eol].decode("utf-8", "replace")
                return txredisapi.ResponseError(message), eol + 2
        except ValueError:
            raise RESPProtocolError(
                f"malformed length or integer: {buf[pos:eol][:64]!r}"
            ) from None
        raise RESPProtocolError(f"unknown reply type {bytes([kind])!r}")


__all__ = ["RESPProtocolError", "ReplyParser", "encode_argument", "encode_command"]
