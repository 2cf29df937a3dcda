"""A small blocking Redis client for the admin command: RESP2 over one socket.

The server's own client (L{privydrop.redis}) is asynchronous and lives on the
reactor; a command-line tool wants plain calls that return values. This one
sends commands (one at a time, or several at once as a pipeline) and parses
replies; nothing more.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from typing import Any

from privydrop.redis.probe import RedisProbeError, find_master
from privydrop.redis.sentinel import format_address
from privydrop.settings import RedisSettings


class RedisError(Exception):
    """Redis answered with an error, could not be reached, or broke the protocol."""


def _encode(args: Sequence[Any]) -> bytes:
    parts = [b"*%d\r\n" % (len(args),)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode("utf-8")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class RedisClient:
    """One connection to the deployment's Redis, authenticated and on its database."""

    def __init__(self, settings: RedisSettings) -> None:
        """Connect, then C{AUTH} and C{SELECT} as the server does; with
        Sentinel settings, to the master the Sentinels name.

        @raise RedisError: naming the address when Redis cannot be reached or
            refuses the password, or no Sentinel names the master.
        """
        address = (settings.host, settings.port)
        if settings.sentinel is not None:
            try:
                address = find_master(settings.sentinel)
            except RedisProbeError as e:
                raise RedisError(str(e)) from None
        self.address = format_address(address)
        try:
            self._socket = socket.create_connection(address, timeout=settings.connect_timeout)
        except OSError as e:
            raise RedisError("cannot reach Redis at %s: %s" % (self.address, e)) from None
        self._socket.settimeout(max(settings.command_timeout, 5.0))
        self._stream = self._socket.makefile("rb")
        try:
            if settings.password:
                self.command("AUTH", settings.password)
            if settings.db:
                self.command("SELECT", settings.db)
        except RedisError:
            self.close()
            raise

    def close(self) -> None:
        self._stream.close()
        self._socket.close()

    def __enter__(self) -> RedisClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def command(self, *args: Any) -> Any:
        """Run one command and return its reply.

        @raise RedisError: for an error reply, or a broken connection.
        """
        [reply] = self.pipeline([args])
        if isinstance(reply, RedisError):
            raise reply
        return reply

    def pipeline(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send every command at once and read the replies in order.

        An error reply is returned in its place as a L{RedisError} value.

        @raise RedisError: when the connection breaks.
        """
        if not commands:
            return []
        try:
            self._socket.sendall(b"".join(_encode(args) for args in commands))
            return [self._reply() for _ in commands]
        except OSError as e:
            raise RedisError("Redis at %s: %s" % (self.address, e)) from None

    def scan(self, pattern: str, count: int = 1000) -> Iterator[str]:
        """Every key matching C{pattern}, with C{SCAN} (never C{KEYS}, which blocks Redis)."""
        cursor = "0"
        while True:
            cursor, keys = self.command("SCAN", cursor, "MATCH", pattern, "COUNT", count)
            yield from keys
            if cursor == "0":
                return

    def _reply(self) -> Any:
        line = self._stream.readline()
        if not line.endswith(b"\r\n"):
            raise RedisError("Redis at %s closed the connection" % (self.address,))
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode("utf-8", "replace")
        if kind == b"-":
            return RedisError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            length = int(rest)
            if length < 0:
                return None
            data = self._stream.read(length + 2)
            if len(data) != length + 2:
                raise RedisError("Redis at %s closed the connection" % (self.address,))
            return data[:-2].decode("utf-8", "replace")
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self._reply() for _ in range(count)]
        raise RedisError("Redis at %s sent %r, not RESP" % (self.address, line[:40]))
