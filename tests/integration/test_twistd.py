"""The server as operators run it: C{twistd privydrop} in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, error, protocol, reactor, task
from twisted.web.client import HTTPConnectionPool

from tests.redis_server import free_port

REPO = Path(__file__).resolve().parents[2]
#: twistd itself (not "python -m twisted", which runs the newer "twist").
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a server subprocess: the checkout first on the path."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("NODE_ENV", "REDIS_HOST", "REDIS_URL", "PORT", "BACKEND_PORT")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


class _Collect(protocol.ProcessProtocol):
    """Keeps a child's output and fires C{ended} with its exit code."""

    def __init__(self) -> None:
        self.output = b""
        self.ended: defer.Deferred[int | None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        value = reason.value
        code = getattr(value, "exitCode", None)
        if isinstance(value, error.ProcessTerminated) and value.signal is not None:
            code = -value.signal
        self.ended.callback(code)


def spawn(argv: list[str], cwd: Path, env: dict[str, str]) -> _Collect:
    proc = _Collect()
    reactor.spawnProcess(proc, argv[0], argv, env=env, path=str(cwd))
    return proc


async def wait_for_health(url: str, proc: _Collect, timeout_s: float = 20.0) -> dict[str, Any]:
    """Poll C{url} until it answers 200, the process dies, or the deadline passes."""
    pool = HTTPConnectionPool(reactor, persistent=False)
    deadline = reactor.seconds() + timeout_s
    try:
        while True:
            if proc.ended.called:
                raise AssertionError("server exited early: %r" % proc.output[-2000:])
            try:
                response = await treq.get(url, pool=pool)
                if response.code == 200:
                    result: dict[str, Any] = await treq.json_content(response)
                    return result
            except (error.ConnectError, error.ConnectionRefusedError):
                pass
            if reactor.seconds() > deadline:
                raise AssertionError("no /health within %ss: %r" % (timeout_s, proc.output[-2000:]))
            await task.deferLater(reactor, 0.05)
    finally:
        await pool.closeCachedConnections()


async def ended_within(proc: _Collect, timeout_s: float) -> int | None:
    code: int | None = await proc.ended.addTimeout(timeout_s, reactor)
    return code


#: The two runners: twistd (what scripts/serve and Docker use) and
#: "python -m twisted" (Twisted's newer "twist", always in the foreground).
RUNNERS = {
    "twistd": TWISTD + ["-n", "--pidfile="],
    "python -m twisted": [sys.executable, "-m", "twisted"],
}


@pytest.mark.parametrize("runner", sorted(RUNNERS))
@pytest_twisted.ensureDeferred
async def test_server_serves_health_and_stops_cleanly_on_sigterm(
    runner: str, tmp_path: Path
) -> None:
    """The plugin answers /health under either runner and shuts down cleanly on SIGTERM (docker stop)."""
    port = free_port()
    proc = spawn(RUNNERS[runner] + ["privydrop", "--listen", "tcp:%d:interface=127.0.0.1" % port],
                 tmp_path, child_env())
    try:
        body = await wait_for_health("http://127.0.0.1:%d/health" % port, proc)
        assert body["status"] == "healthy"
        assert body["environment"] == "development"
    finally:
        if not proc.ended.called:
            os.kill(reactor_pid(proc), signal.SIGTERM)
    code = await ended_within(proc, 15)
    # Both runners stop the service tree, then re-raise the signal they
    # stopped for, so "clean" is death by SIGTERM after the reactor stopped,
    # with no traceback.
    assert code in (0, -signal.SIGTERM), proc.output[-2000:]
    assert b"Main loop terminated." in proc.output or b"Server Shut Down." in proc.output
    assert b"Traceback" not in proc.output
    assert b"in-memory store" in proc.output


def reactor_pid(proc: _Collect) -> int:
    pid: int = proc.transport.pid  # type: ignore[attr-defined]
    return pid


@pytest_twisted.ensureDeferred
async def test_production_without_redis_refuses_to_start(tmp_path: Path) -> None:
    """In production, forgetting Redis stops start-up with a message naming the variable."""
    port = free_port()
    proc = spawn(TWISTD + ["-n", "--pidfile=", "privydrop",
                           "--listen", "tcp:%d:interface=127.0.0.1" % port],
                 tmp_path, child_env(NODE_ENV="production"))
    code = await ended_within(proc, 20)
    assert code not in (0, None)
    assert b"REDIS_HOST" in proc.output and b"REDIS_URL" in proc.output


@pytest_twisted.ensureDeferred
async def test_production_with_unreachable_redis_refuses_to_start(tmp_path: Path) -> None:
    """In production, a Redis that is down stops start-up before listening."""
    port = free_port()
    proc = spawn(TWISTD + ["-n", "--pidfile=", "privydrop",
                           "--listen", "tcp:%d:interface=127.0.0.1" % port,
                           "--redis", "redis://127.0.0.1:%d/0" % free_port(),
                           "--redis-connect-timeout", "2"],
                 tmp_path, child_env(NODE_ENV="production"))
    code = await ended_within(proc, 20)
    assert code not in (0, None)
    assert b"cannot reach Redis" in proc.output


@pytest_twisted.ensureDeferred
async def test_invalid_value_names_variable_and_value(tmp_path: Path) -> None:
    """PORT=abc stops start-up with a message naming PORT and 'abc'."""
    proc = spawn(TWISTD + ["-n", "--pidfile=", "privydrop"], tmp_path, child_env(PORT="abc"))
    code = await ended_within(proc, 20)
    assert code not in (0, None)
    assert b"PORT" in proc.output and b"'abc'" in proc.output


@pytest.mark.parametrize("runner", ["twistd", "twist"])
def test_help_lists_options(runner: str, tmp_path: Path) -> None:
    """Operators can discover every setting from --help, with either runner."""
    argv = TWISTD if runner == "twistd" else [sys.executable, "-m", "twisted"]
    result = subprocess.run(argv + ["privydrop", "--help"], cwd=tmp_path, env=child_env(),
                            capture_output=True, timeout=30)
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    for option in ("--listen", "--redis", "--env-file", "--api-rate-limit",
                   "--trusted-proxies", "--max-body-bytes", "--cors-origin"):
        assert option in out


async def _log_of_one_request(tmp_path: Path, **env: str) -> bytes:
    """Run twistd -n privydrop, make one request, stop it; its whole output."""
    port = free_port()
    proc = spawn(TWISTD + ["-n", "--pidfile=", "privydrop",
                           "--listen", "tcp:%d:interface=127.0.0.1" % port],
                 tmp_path, child_env(**env))
    try:
        await wait_for_health("http://127.0.0.1:%d/health" % port, proc)
    finally:
        if not proc.ended.called:
            os.kill(reactor_pid(proc), signal.SIGTERM)
    await ended_within(proc, 15)
    return proc.output


@pytest_twisted.ensureDeferred
async def test_twistd_records_info_and_above_by_default(tmp_path: Path) -> None:
    """twistd has no --log-level: the server itself keeps debug lines out (Docker, systemd)."""
    output = await _log_of_one_request(tmp_path)
    assert b"[privydrop.service#info]" in output  # "listening on ..."
    assert b"[privydrop.web.site#debug]" not in output, output[-2000:]
    assert b"#debug]" not in output


@pytest_twisted.ensureDeferred
async def test_twistd_records_debug_with_log_level_debug(tmp_path: Path) -> None:
    """LOG_LEVEL=debug brings the per-request lines back."""
    output = await _log_of_one_request(tmp_path, LOG_LEVEL="debug")
    assert b"[privydrop.web.site#debug]" in output, output[-2000:]
    assert b"GET /health 200" in output


@pytest_twisted.ensureDeferred
async def test_twistd_log_level_warn_hides_info(tmp_path: Path) -> None:
    output = await _log_of_one_request(tmp_path, LOG_LEVEL="warn")
    assert b"[privydrop.service#info]" not in output
    # The in-memory store warning is still there.
    assert b"in-memory store" in output
