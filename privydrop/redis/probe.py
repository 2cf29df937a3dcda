"""A blocking start-up check that Redis answers: the connection handshake, then PING.

It runs once in L{privydrop.tap.makeService}, before the reactor runs, so a
production server whose Redis is unreachable or rejects the password can exit
non-zero without ever listening (twistd offers no way to set the exit code
once the reactor runs). It sends the handshake every connection of the client
sends (L{privydrop.redis.handshake}, named C{privydrop:probe}), judges the
replies the same way, and is never used while serving; the connection pools
do that.
"""

from __future__ import annotations

import socket
from typing import Any

import txredisapi

from privydrop.redis.endpoint import describe
from privydrop.redis.handshake import Handshake, HandshakeStep, client_name
from privydrop.redis.resp import ReplyParser, RESPProtocolError, encode_command
from privydrop.settings import RedisSettings

_PASSWORD_HINT = "check REDIS_PASSWORD or the password in REDIS_URL"
_DATABASE_HINT = "check REDIS_URL / REDIS_DB"
_ADDRESS_HINT = "check REDIS_HOST/REDIS_PORT or REDIS_URL"

#: Bytes read from the socket at a time.
_READ_SIZE = 4096


class RedisProbeError(Exception):
    """Redis could not be reached or refused us; the message says which and how."""


def _read_replies(conn: socket.socket, count: int) -> list[Any]:
    parser = ReplyParser()
    replies: list[Any] = []
    while len(replies) < count:
        data = conn.recv(_READ_SIZE)
        if not data:
            raise RedisProbeError("connection closed")
        try:
            replies += parser.feed(data)
        except RESPProtocolError as e:
            raise RedisProbeError(f"reply malformed ({e})") from None
    return replies


def probe_redis(settings: RedisSettings) -> None:
    """Check that Redis at C{settings} accepts our handshake and answers PING.

    @raise RedisProbeError: naming the address and the setting to fix, when
        the connection fails or times out (C{connect_timeout}), or a command
        is refused (a wrong password: C{REDIS_PASSWORD} / C{REDIS_URL}).
    """
    where = describe(settings)
    handshake = Handshake(settings.password, settings.db, client_name("probe"))
    steps = (*handshake.steps(), HandshakeStep("PING", ("PING",)))
    try:
        with socket.create_connection(
            (settings.host, settings.port), timeout=settings.connect_timeout
        ) as conn:
            conn.sendall(b"".join(encode_command(step.args) for step in steps))
            try:
                replies = _read_replies(conn, len(steps))
            except RedisProbeError as e:
                raise RedisProbeError(f"Redis at {where}: {e}") from None
    except OSError as e:
        reason = "timed out" if isinstance(e, socket.timeout) else (e.strerror or str(e))
        raise RedisProbeError(
            f"cannot reach Redis at {where}: {reason} ({_ADDRESS_HINT})"
        ) from None
    for step, reply in zip(steps, replies):
        if not isinstance(reply, txredisapi.ResponseError):
            continue
        error = str(reply)
        refusal = Handshake.refusal(step, error)
        if refusal is None:
            continue  # an optional step: the server runs fine without it
        hint = _PASSWORD_HINT if refusal.is_auth or step.command == "AUTH" else _DATABASE_HINT
        raise RedisProbeError(f"Redis at {where} refused {step.command}: {error} ({hint})")
