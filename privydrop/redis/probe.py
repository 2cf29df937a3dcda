"""A blocking start-up check that Redis answers: connect, AUTH, SELECT, PING.

It runs once in L{privydrop.tap.makeService}, before the reactor runs, so a
production server whose Redis is unreachable or rejects the password can exit
non-zero without ever listening (twistd offers no way to set the exit code
once the reactor runs). It speaks just enough RESP for three commands and is
never used while serving; the store's own connection pool does that.
"""

from __future__ import annotations

import socket
from typing import BinaryIO

from privydrop.settings import RedisSettings


class RedisProbeError(Exception):
    """Redis could not be reached or refused us; the message says which and how."""


def _command(*args: str) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode("utf-8")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _read_line(reader: BinaryIO, limit: int = 4096) -> bytes:
    line = reader.readline(limit)
    if not line.endswith(b"\r\n"):
        raise RedisProbeError("connection closed or reply malformed")
    return line[:-2]


def probe_redis(settings: RedisSettings) -> None:
    """Check that Redis at C{settings} accepts our password and answers PING.

    @raise RedisProbeError: naming the address and the setting to fix, when
        the connection fails or times out (C{connect_timeout}), or a command
        is refused (a wrong password: C{REDIS_PASSWORD} / C{REDIS_URL}).
    """
    where = "%s:%d" % (settings.host, settings.port)
    try:
        with socket.create_connection(
            (settings.host, settings.port), timeout=settings.connect_timeout
        ) as conn:
            steps: list[tuple[str, tuple[str, ...]]] = []
            if settings.password is not None:
                steps.append(("AUTH", ("AUTH", settings.password)))
            if settings.db:
                steps.append(("SELECT", ("SELECT", str(settings.db))))
            steps.append(("PING", ("PING",)))
            conn.sendall(b"".join(_command(*args) for _, args in steps))
            reader = conn.makefile("rb")
            try:
                for name, _ in steps:
                    reply = _read_line(reader)
                    if reply.startswith(b"-"):
                        error = reply[1:].decode("utf-8", "replace")
                        hint = (
                            "check REDIS_PASSWORD or the password in REDIS_URL"
                            if name == "AUTH" or "NOAUTH" in error or "WRONGPASS" in error
                            else "check REDIS_URL / REDIS_DB"
                        )
                        raise RedisProbeError(
                            "Redis at %s refused %s: %s (%s)" % (where, name, error, hint)
                        )
            finally:
                reader.close()
    except OSError as e:
        reason = "timed out" if isinstance(e, socket.timeout) else (e.strerror or str(e))
        raise RedisProbeError(
            "cannot reach Redis at %s: %s (check REDIS_HOST/REDIS_PORT or REDIS_URL)"
            % (where, reason)
        ) from None
