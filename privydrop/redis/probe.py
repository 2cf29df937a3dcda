"""A blocking start-up check that Redis answers: the connection handshake, then PING.

It runs once in L{privydrop.tap.makeService}, before the reactor runs, so a
production server whose Redis is unreachable or rejects the password can exit
non-zero without ever listening (twistd offers no way to set the exit code
once the reactor runs). It sends the handshake every connection of the client
sends (L{privydrop.redis.handshake}, named C{privydrop:probe}), judges the
replies the same way, and is never used while serving; the connection pools
do that.

With Sentinel settings it first asks the Sentinels where the master is, as
the pools do (L{privydrop.redis.sentinel}), and checks that the server there
is the master (C{ROLE}). Every failure names the setting to fix:
C{REDIS_SENTINELS}, C{REDIS_SENTINEL_MASTER}, C{REDIS_SENTINEL_PASSWORD},
C{REDIS_PASSWORD}, C{REDIS_DB}. L{find_master} serves C{privydrop-admin} too.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

import txredisapi

from privydrop.redis.endpoint import describe
from privydrop.redis.handshake import Handshake, HandshakeStep, client_name
from privydrop.redis.resp import ReplyParser, RESPProtocolError, encode_command
from privydrop.redis.sentinel import (
    ADDRESS_SETTING,
    MasterNotFound,
    SentinelRefused,
    format_address,
    judge_master_reply,
    master_query,
)
from privydrop.settings import RedisSettings, SentinelSettings

_PASSWORD_HINT = "check REDIS_PASSWORD or the password in REDIS_URL"
_DATABASE_HINT = "check REDIS_URL / REDIS_DB"
_ADDRESS_HINT = "check REDIS_HOST/REDIS_PORT or REDIS_URL"
_SENTINEL_PASSWORD_HINT = "check REDIS_PASSWORD, the master's password"
_SENTINEL_DATABASE_HINT = "check REDIS_DB"

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


def _exchange(
    address: tuple[str, int], commands: Sequence[Sequence[Any]], timeout: float
) -> list[Any]:
    """Write the commands on a fresh connection and read their replies.

    @raise OSError: the connection failed or timed out.
    @raise RedisProbeError: the connection closed early, or the reply is not RESP.
    """
    with socket.create_connection(address, timeout=timeout) as conn:
        conn.sendall(b"".join(encode_command(args) for args in commands))
        return _read_replies(conn, len(commands))


def _reason(error: OSError) -> str:
    return "timed out" if isinstance(error, socket.timeout) else (error.strerror or str(error))


def find_master(settings: SentinelSettings) -> tuple[str, int]:
    """Ask the Sentinels, in order, where the master is (blocking).

    @return: the master's C{(host, port)}, as the first Sentinel that knows says.
    @raise RedisProbeError: no Sentinel named it; the message gives each
        Sentinel's reason and the settings to check.
    """
    failures: list[tuple[tuple[str, int], SentinelRefused]] = []
    for sentinel in settings.addresses:
        try:
            replies = _exchange(sentinel, master_query(settings), settings.timeout)
            return judge_master_reply(replies, settings)
        except OSError as e:
            failures.append((sentinel, SentinelRefused(_reason(e), ADDRESS_SETTING)))
        except RedisProbeError as e:
            failures.append((sentinel, SentinelRefused(str(e), ADDRESS_SETTING)))
        except SentinelRefused as e:
            failures.append((sentinel, e))
    error = MasterNotFound(settings.master, failures)
    raise RedisProbeError(f"{error} (check {', '.join(error.settings_to_check)})")


def probe_redis(settings: RedisSettings) -> None:
    """Check that Redis at C{settings} accepts our handshake and answers PING.

    @raise RedisProbeError: naming the address and the setting to fix, when
        the connection fails or times out (C{connect_timeout}), or a command
        is refused (a wrong password: C{REDIS_PASSWORD} / C{REDIS_URL}); with
        Sentinel also when no Sentinel names the master, or the server named
        is not the master.
    """
    sentinel = settings.sentinel
    if sentinel is None:
        address = (settings.host, settings.port)
        where = describe(settings)
        address_hint, password_hint, database_hint = (
            _ADDRESS_HINT,
            _PASSWORD_HINT,
            _DATABASE_HINT,
        )
    else:
        address = find_master(sentinel)
        where = f"{format_address(address)} ({describe(settings)})"
        address_hint = (
            "the Sentinels name it as the master but it does not answer; a failover"
            f" under way? check SENTINEL MASTER {sentinel.master} on a Sentinel"
        )
        password_hint, database_hint = _SENTINEL_PASSWORD_HINT, _SENTINEL_DATABASE_HINT
    handshake = Handshake(
        settings.password,
        settings.db,
        client_name("probe"),
        verify_master=sentinel is not None,
    )
    steps = (*handshake.steps(), HandshakeStep("PING", ("PING",)))
    try:
        replies = _exchange(address, [step.args for step in steps], settings.connect_timeout)
    except RedisProbeError as e:
        raise RedisProbeError(f"Redis at {where}: {e}") from None
    except OSError as e:
        raise RedisProbeError(
            f"cannot reach Redis at {where}: {_reason(e)} ({address_hint})"
        ) from None
    for step, reply in zip(steps, replies):
        if not isinstance(reply, txredisapi.ResponseError):
            role = Handshake.wrong_role(step, reply)
            if role is not None:
                raise RedisProbeError(
                    f"Redis at {where} is a {role}, not the master ({address_hint})"
                )
            continue
        error = str(reply)
        refusal = Handshake.refusal(step, error)
        if refusal is None:
            continue  # an optional step: the server runs fine without it
        hint = password_hint if refusal.is_auth or step.command == "AUTH" else database_hint
        raise RedisProbeError(f"Redis at {where} refused {step.command}: {error} ({hint})")
