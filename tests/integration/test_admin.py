"""C{privydrop-admin} against a real Redis: referrers, monitor, cleanup.

Keys are written with the test's own RESP client (L{tests.redis_server}),
as the server would have left them, and read back the same way after the
command ran.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from privydrop.admin import cleanup
from privydrop.admin.cli import run
from privydrop.admin.client import RedisClient
from privydrop.settings import RedisSettings
from tests.conftest import TEST_REDIS_PASSWORD
from tests.redis_server import RedisServer, free_port

ADMIN = Path(sys.executable).parent / "privydrop-admin"


@pytest.fixture(autouse=True)
def no_env_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run where no .env.<NODE_ENV> file is, so only the given variables count."""
    monkeypatch.chdir(tmp_path)


def admin(redis: RedisServer, db: int, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    environ = {"REDIS_URL": f"redis://127.0.0.1:{redis.port}/{db}"}
    code = run(list(argv), environ, out, err)
    return code, out.getvalue(), err.getvalue()


def test_referrers_export_as_csv_and_json_within_dates(redis_server: RedisServer, redis_db: int) -> None:
    """An operator gets the same statistics the Node backend's export script gave."""
    r = lambda *a: redis_server.command(*a, db=redis_db)  # noqa: E731
    r("HSET", "referrers:daily:2024-06-01", "news.example", "3", "a,b \"quoted\"", "5")
    r("HSET", "referrers:daily:2024-06-02", "news.example", "1")
    r("HSET", "referrers:daily:not-a-date", "x", "1")
    code, out, err = admin(redis_server, redis_db, "referrers")
    assert (code, err) == (0, "")
    assert out == (
        "date,referrer,count\n"
        '2024-06-01,"a,b ""quoted""",5\n'
        "2024-06-01,news.example,3\n"
        "2024-06-02,news.example,1\n"
    )
    code, out, _ = admin(redis_server, redis_db, "referrers", "--from", "2024-06-02", "--format", "json")
    assert code == 0
    assert json.loads(out) == [{"date": "2024-06-02", "referrer": "news.example", "count": 1}]
    code, out, _ = admin(redis_server, redis_db, "referrers", "--to", "2024-05-31")
    assert (code, out) == (0, "date,referrer,count\n")
    code, _, err = admin(redis_server, redis_db, "referrers", "--from", "2024-06-02", "--to", "2024-06-01")
    assert code == 1 and "after" in err


def populate(redis: RedisServer, db: int) -> None:
    """Two rooms as the server leaves them, one member without binding, one key without TTL."""
    r = lambda *a: redis.command(*a, db=db)  # noqa: E731
    r("HSET", "room:1234", "created_at", "1700000000000")
    r("EXPIRE", "room:1234", 86400)
    r("SADD", "room:1234:sockets", "sock-a", "sock-gone")
    r("EXPIRE", "room:1234:sockets", 86400)
    r("SET", "socket:sock-a", "1234", "EX", 90000)
    r("ZADD", "ratelimit:join:198.51.100.7", "1700000000000", "1700000000000-x")
    r("EXPIRE", "ratelimit:join:198.51.100.7", 5)
    r("HSET", "room:9999", "created_at", "1700000000000")  # no TTL: not the server's doing
    r("SET", "unrelated", "kept")  # not of the schema: never touched


def test_monitor_counts_what_redis_holds(redis_server: RedisServer, redis_db: int) -> None:
    """The live view shows rooms, sockets, windows, stray keys and Redis memory."""
    populate(redis_server, redis_db)
    code, out, err = admin(redis_server, redis_db, "monitor", "--once", "--json")
    assert (code, err) == (0, "")
    snapshot = json.loads(out)
    assert {k: snapshot[k] for k in ("rooms", "joinedSockets", "socketBindings", "rateLimitWindows")} == {
        "rooms": 2, "joinedSockets": 2, "socketBindings": 1, "rateLimitWindows": 1
    }
    assert snapshot["keysWithoutTtl"] == ["room:9999"]
    assert snapshot["processes"] == []
    assert snapshot["memory"]["maxmemory_policy"]
    code, out, _ = admin(redis_server, redis_db, "monitor", "--once")
    assert code == 0
    assert "rooms               2\n" in out and "keys without TTL    1 (privydrop-admin cleanup)" in out


def test_monitor_shows_the_live_processes_from_their_heartbeats(
    redis_server: RedisServer, redis_db: int
) -> None:
    """Each process appears with its name, pid, last heartbeat and traffic;
    one that died and is being cleaned up is marked so."""

    def r(*args: object) -> object:
        return redis_server.command(*args, db=redis_db)

    seconds, _ = r("TIME")  # type: ignore[misc]
    now_ms = int(seconds) * 1000
    r("HSET", "cluster:heartbeats", "aaaa", "17", "bbbb", "4")
    r("HSET", "cluster:node:aaaa:info", "name", "web-1|tcp:3001", "pid", "4242",
      "listen", "tcp:3001", "started_ms", str(now_ms - 60_000), "beat_ms", str(now_ms - 1500),
      "connections", "12", "published", "900", "deliveries", "900", "received", "880",
      "unroutable", "0")
    r("HSET", "cluster:node:bbbb:info", "name", "web-1|tcp:3002", "pid", "4343",
      "started_ms", str(now_ms - 30_000), "beat_ms", str(now_ms - 20_000))
    r("SET", "cluster:reap:bbbb", "aaaa", "PX", 10_000)
    code, out, err = admin(redis_server, redis_db, "monitor", "--once", "--json")
    assert (code, err) == (0, "")
    first, second = json.loads(out)["processes"]
    assert first["node"] == "aaaa" and first["pid"] == 4242 and first["name"] == "web-1|tcp:3001"
    assert 1000 <= first["beatAgeMs"] < 10_000
    assert (first["connections"], first["deliveries"], first["reapedBy"]) == (12, 900, None)
    assert second["node"] == "bbbb" and second["reapedBy"] == "aaaa"
    assert second["connections"] is None
    code, out, _ = admin(redis_server, redis_db, "monitor", "--once")
    assert "processes           2\n" in out
    assert "aaaa  web-1|tcp:3001  pid 4242" in out and "12 connections" in out
    assert "DEAD, being cleaned up by aaaa" in out


def test_cleanup_is_a_dry_run_until_applied(redis_server: RedisServer, redis_db: int) -> None:
    """Stray keys and dead members are listed first, removed only with --apply, and nothing else is."""
    populate(redis_server, redis_db)
    r = lambda *a: redis_server.command(*a, db=redis_db)  # noqa: E731
    code, out, _ = admin(redis_server, redis_db, "cleanup")
    assert code == 0
    assert "key without TTL: room:9999\n" in out
    assert "member without binding: room:1234:sockets sock-gone\n" in out
    assert r("EXISTS", "room:9999") == 1 and r("SCARD", "room:1234:sockets") == 2

    code, out, _ = admin(redis_server, redis_db, "cleanup", "--apply")
    assert code == 0 and out.endswith("removed 1 keys, 1 members\n")
    assert r("EXISTS", "room:9999") == 0
    assert r("SMEMBERS", "room:1234:sockets") == ["sock-a"]
    assert r("EXISTS", "room:1234") == r("EXISTS", "unrelated") == 1
    assert r("TTL", "room:1234:sockets") > 0
    assert admin(redis_server, redis_db, "cleanup")[1] == "nothing to clean up\n"


def test_cleanup_leaves_what_changed_since_it_looked(redis_server: RedisServer, redis_db: int) -> None:
    """A key that got its TTL, or a socket bound again, after the dry run is not removed."""
    populate(redis_server, redis_db)
    r = lambda *a: redis_server.command(*a, db=redis_db)  # noqa: E731
    settings = RedisSettings(host="127.0.0.1", port=redis_server.port, db=redis_db)
    with RedisClient(settings) as client:
        findings = cleanup.find(client)
        assert findings.keys_without_ttl == ("room:9999",)
        r("EXPIRE", "room:9999", 900)
        r("SET", "socket:sock-gone", "1234", "EX", 90000)
        assert cleanup.apply(client, findings) == (0, 0)
    assert r("EXISTS", "room:9999") == 1 and r("SCARD", "room:1234:sockets") == 2


def test_installed_command_reads_the_server_settings(password_redis: RedisServer, tmp_path: Path) -> None:
    """The console script is installed, and finds Redis (with its password) as the server does."""
    env_file = tmp_path / "admin.env"
    env_file.write_text(
        f"REDIS_HOST=127.0.0.1\nREDIS_PORT={password_redis.port}\nREDIS_PASSWORD='{TEST_REDIS_PASSWORD}'\n"
    )
    done = subprocess.run(
        [str(ADMIN), "--env-file", str(env_file), "monitor", "--once", "--json"],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rooms"] == 0


@pytest.mark.parametrize(
    "environ, message",
    [
        ({}, "no Redis configured"),
        ({"REDIS_URL": "redis://127.0.0.1:%d/0"}, "cannot reach Redis at 127.0.0.1:"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL"),
    ],
)
def test_settings_and_redis_failures_are_one_clear_line(environ: dict[str, str], message: str) -> None:
    """A wrong setting or an unreachable Redis is explained, with exit status 1, not a traceback."""
    environ = {k: (v % free_port() if "%d" in v else v) for k, v in environ.items()}
    out, err = io.StringIO(), io.StringIO()
    assert run(["monitor", "--once"], environ, out, err) == 1
    assert err.getvalue().startswith("privydrop-admin: ") and message in err.getvalue()
    assert err.getvalue().count("\n") == 1


def test_bad_arguments_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    """A mistyped date or interval is refused before anything connects."""
    for argv in (["referrers", "--from", "June"], ["monitor", "--interval", "0"]):
        with pytest.raises(SystemExit) as stopped:
            run(argv, {}, io.StringIO(), io.StringIO())
        assert stopped.value.code == 2
    assert "expected a date" in capsys.readouterr().err
