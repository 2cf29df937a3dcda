"""The Sentinel parts of the Redis client without a server: answers, roles, READONLY.

Connections are real L{PipelinedProtocol}s on in-memory transports, as in
C{tests/unit/test_redis_client.py}; what the Sentinels and Redis would
answer is fed as RESP bytes or reply values. The real processes are in
C{tests/integration/test_redis_sentinel.py}.
"""

from __future__ import annotations

import pytest
import txredisapi
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs

from privydrop.redis.errors import ConnectionLost, NotConnected
from privydrop.redis.handshake import ROLE_STEP, Handshake
from privydrop.redis.pool import ConnectionPool
from privydrop.redis.sentinel import (
    MasterNotFound,
    SentinelRefused,
    SentinelWatcher,
    judge_master_reply,
    master_query,
    parse_switch,
)
from privydrop.settings import RedisSettings, SentinelSettings
from tests.unit.test_redis_client import NAME, OK, commands, connect, failure_of, ready

SENTINEL = SentinelSettings(addresses=(("s1", 26379), ("s2", 26379)), master="mymaster")
SETTINGS = RedisSettings(command_timeout=1.0, connect_timeout=3.0, pool_size=2, sentinel=SENTINEL)


def role(*reply: object) -> bytes:
    """A ROLE reply as RESP: C{*n} of bulk strings and integers."""
    parts = [b"*%d\r\n" % len(reply)]
    for value in reply:
        if isinstance(value, int):
            parts.append(b":%d\r\n" % value)
        else:
            data = str(value).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


# -- asking a Sentinel (pure) ------------------------------------------------------------


def test_the_question_authenticates_only_with_a_sentinel_password() -> None:
    """The Sentinels' password, never the master's, goes to the Sentinels."""
    assert master_query(SENTINEL) == (("SENTINEL", "get-master-addr-by-name", "mymaster"),)
    with_password = SentinelSettings(addresses=SENTINEL.addresses, master="m", password="pw")
    assert master_query(with_password) == (
        ("AUTH", "pw"),
        ("SENTINEL", "get-master-addr-by-name", "m"),
    )


@pytest.mark.parametrize(
    "replies, setting, reason",
    [
        ([None], "REDIS_SENTINEL_MASTER", "monitors no master named 'mymaster'"),
        ([txredisapi.ResponseError("NOAUTH Authentication required.")],
         "REDIS_SENTINEL_PASSWORD", "authentication failed"),
        ([txredisapi.ResponseError("WRONGPASS invalid username-password pair"), None],
         "REDIS_SENTINEL_PASSWORD", "WRONGPASS"),
        ([txredisapi.ResponseError("ERR unknown command 'SENTINEL'")],
         "REDIS_SENTINELS", "is it a Sentinel?"),
        ([["10.0.0.1"]], "REDIS_SENTINELS", "unexpected answer"),
        ([["10.0.0.1", "port"]], "REDIS_SENTINELS", "unexpected answer"),
        ([["10.0.0.1", "0"]], "REDIS_SENTINELS", "unexpected answer"),
        (["OK"], "REDIS_SENTINELS", "unexpected answer"),
    ],
)
def test_a_sentinel_answer_that_names_no_master_says_which_setting_to_check(
    replies: list[object], setting: str, reason: str
) -> None:
    """A wrong password, a wrong master name and a server that is no
    Sentinel are three different mistakes, each with its own setting."""
    with pytest.raises(SentinelRefused) as caught:
        judge_master_reply(replies, SENTINEL)
    assert caught.value.setting == setting
    assert reason in caught.value.reason


def test_a_sentinel_answer_names_the_master() -> None:
    assert judge_master_reply([["10.0.0.1", "6380"]], SENTINEL) == ("10.0.0.1", 6380)
    assert judge_master_reply(["OK", ["redis-a", "6379"]], SENTINEL) == ("redis-a", 6379)


def test_master_not_found_lists_every_sentinel_and_the_telling_settings_first() -> None:
    """A Sentinel that answered "no such master" says more than one that
    could not be reached: its setting comes first in the hint."""
    error = MasterNotFound(
        "m",
        [
            (("s1", 26379), SentinelRefused("cannot connect", "REDIS_SENTINELS")),
            (("::1", 26380), SentinelRefused("monitors no master named 'm'",
                                             "REDIS_SENTINEL_MASTER")),
        ],
    )
    assert str(error) == (
        "no Sentinel named the master 'm' (s1:26379: cannot connect;"
        " [::1]:26380: monitors no master named 'm')"
    )
    assert error.settings_to_check == ("REDIS_SENTINEL_MASTER", "REDIS_SENTINELS")
    assert MasterNotFound("m", []).settings_to_check == ("REDIS_SENTINELS",)


def test_only_a_switch_of_our_master_is_followed() -> None:
    """Sentinels may monitor several masters; only ours moves the pools."""
    assert parse_switch("mymaster 10.0.0.1 6379 10.0.0.2 6380", "mymaster") == ("10.0.0.2", 6380)
    assert parse_switch("other 10.0.0.1 6379 10.0.0.2 6380", "mymaster") is None
    assert parse_switch("mymaster 10.0.0.1 6379", "mymaster") is None
    assert parse_switch("mymaster a 1 b port", "mymaster") is None

    switched: list[tuple[str, int]] = []
    watcher = SentinelWatcher(SENTINEL, MemoryReactorClock(), switched.append)
    watcher.announced("other 10.0.0.1 6379 10.0.0.2 6380")
    watcher.announced("mymaster 10.0.0.1 6379 10.0.0.2 6380")
    assert switched == [("10.0.0.2", 6380)]


def test_the_watcher_reconnects_soon_after_a_loss() -> None:
    """The connection that hears switches is back within the reconnection
    limit of the Sentinel settings, however long the Sentinels were away."""
    watcher = SentinelWatcher(SENTINEL, MemoryReactorClock(), lambda master: None)
    delays = [watcher.retry_delay(attempt) for attempt in range(1, 40)]
    assert delays[0] == watcher.initial_delay
    assert max(delays) == SENTINEL.reconnect_max_delay == delays[-1]


# -- the master's role ------------------------------------------------------------------


def test_the_role_is_asked_only_when_the_master_must_be_verified() -> None:
    """A fixed address is used as it is; an address from Sentinel may be out
    of date, so the handshake asks ROLE last (optional: an ACL may forbid it)."""
    assert ROLE_STEP not in Handshake(name="n").steps()
    steps = Handshake(password="pw", name="n", verify_master=True).steps()
    assert steps[-1] == ROLE_STEP and not ROLE_STEP.required
    assert Handshake.wrong_role(ROLE_STEP, ["master", 10, []]) is None
    assert Handshake.wrong_role(ROLE_STEP, ["slave", "10.0.0.1", 6379, "connected", 10]) == "slave"
    assert Handshake.wrong_role(ROLE_STEP, ["sentinel", ["mymaster"]]) == "sentinel"
    assert Handshake.wrong_role(ROLE_STEP, "OK") == "unknown"
    assert Handshake.wrong_role(steps[0], ["slave"]) is None


@pytest.fixture
def reactor() -> MemoryReactorClock:
    return MemoryReactorClock()


def test_a_replica_is_dropped_after_the_handshake_and_reported_once(
    reactor: MemoryReactorClock,
) -> None:
    """A server that is not the master never carries a command; the log
    says so once while attempts repeat, not once per attempt."""
    pool = ConnectionPool(SETTINGS, reactor, name=NAME)
    with capturedLogs() as events:
        for _ in range(2):
            conn, transport = connect(pool)
            assert transport.value() == commands(("CLIENT", "SETNAME", NAME), ("ROLE",))
            fired = conn.whenConnected()
            conn.dataReceived(OK + role("slave", "10.0.0.1", 6379, "connected", 5))
            assert not fired.called and not conn.usable
            assert not transport.connected
            assert pool.connections == ()
    warnings = [e for e in events if e["log_level"] == LogLevel.warn]
    assert len(warnings) == 1 and warnings[0]["role"] == "slave"
    conn, transport = connect(pool)
    conn.dataReceived(OK + role("master", 0, []))
    assert conn.usable and pool.connections == (conn,)
    pool.close()


def test_a_role_forbidden_by_an_acl_is_skipped(reactor: MemoryReactorClock) -> None:
    """ROLE is in the @admin category: an ACL user without it still works
    (a replica then shows itself by refusing writes)."""
    pool = ConnectionPool(SETTINGS, reactor, name=NAME)
    conn, _ = connect(pool)
    with capturedLogs() as events:
        conn.dataReceived(OK + b"-NOPERM this user has no permissions to run the 'role' command\r\n")
    assert conn.usable
    assert [e["command"] for e in events if e["log_level"] == LogLevel.warn] == ["ROLE"]
    pool.close()


def test_a_readonly_reply_gives_the_connection_up(reactor: MemoryReactorClock) -> None:
    """A master that became a replica under a connection refuses the write
    with READONLY: that caller gets the refusal, later commands on the
    connection fail at once rather than each being refused in turn, and
    the next command waits for a new connection (to the new master)."""
    pool = ConnectionPool(RedisSettings(command_timeout=1.0, pool_size=1), reactor, name=NAME)
    conn, transport = ready(pool)
    first = pool.execute(("SET", "a", "1"))
    second = pool.execute(("GET", "a"))
    with capturedLogs() as events:
        conn.dataReceived(b"-READONLY You can't write against a read only replica.\r\n")
    refused = failure_of(first)
    assert refused.check(txredisapi.ResponseError) and "READONLY" in str(refused.value)
    assert failure_of(second).check(ConnectionLost)
    assert conn.broken and not transport.connected and pool.connections == ()
    assert [e["server"] for e in events if e["log_level"] == LogLevel.warn] == ["192.168.1.1:54321"]
    third = pool.execute(("GET", "a"))
    assert not third.called and pool.waiting == 1
    reactor.advance(1.0)
    assert failure_of(third).check(NotConnected)
    pool.close()
