"""A real redis-server process for tests, and a tiny blocking client to inspect it.

Tests never rely on a system Redis: L{RedisServer} starts its own on a free
loopback port in a temporary directory, with persistence off, and waits for
it by connecting (a bounded number of attempts). The binary is
C{$PRIVYDROP_TEST_REDIS_SERVER}, or ``redis-server`` on PATH; when neither
exists the tests fail loudly instead of skipping.

L{RedisServer.command} speaks just enough RESP over a blocking socket to
flush databases and read keys back, independently of the code under test.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

BINARY_VARIABLE = "PRIVYDROP_TEST_REDIS_SERVER"
HOST = "127.0.0.1"

#: Longest wait for a started server to accept connections, seconds.
START_TIMEOUT_S = 10.0
#: Pause between two connection attempts while waiting for it, seconds.
POLL_INTERVAL_S = 0.01


class RedisServerError(RuntimeError):
    """The test Redis could not be found, started or talked to."""


def redis_binary() -> str:
    """The redis-server to run; raises L{RedisServerError} when there is none."""
    configured = os.environ.get(BINARY_VARIABLE)
    candidate = configured or "redis-server"
    found = shutil.which(candidate)
    if found is None:
        raise RedisServerError(
            f"redis-server not found ({BINARY_VARIABLE}={configured!r}); the store"
            " contract tests need a real Redis: install redis-server or set"
            f" {BINARY_VARIABLE} to its path"
        )
    return found


def free_port() -> int:
    """A TCP port that was free on the loopback interface a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _encode(*args: Any) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode("utf-8")
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _read_reply(stream: Any) -> Any:
    line = stream.readline()
    if not line:
        raise RedisServerError("connection closed by redis-server")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisServerError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        length = int(rest)
        if length < 0:
            return None
        data = stream.read(length + 2)[:-2]
        return data.decode("utf-8")
    if kind == b"*":
        count = int(rest)
        if count < 0:
            return None
        return [_read_reply(stream) for _ in range(count)]
    raise RedisServerError(f"unexpected reply {line!r}")


class RedisServer:
    """One redis-server child process on 127.0.0.1.

    @ivar port: its port (kept across L{restart}).
    @ivar password: the C{requirepass} it was started with, if any.
    """

    def __init__(
        self, workdir: Path, password: str | None = None, extra_args: tuple[str, ...] = ()
    ) -> None:
        """
        @param extra_args: more C{--option value} arguments for redis-server
            (a replica's C{--replicaof}, say).
        """
        self.binary = redis_binary()
        self.workdir = workdir
        self.password = password
        self.extra_args = extra_args
        self.port = free_port()
        self.host = HOST
        self._process: subprocess.Popen[bytes] | None = None

    def _argv(self) -> list[str]:
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--databases", "16",
            "--loglevel", "warning",
        ]
        if self.password is not None:
            argv += ["--requirepass", self.password]
        return argv + list(self.extra_args)

    def start(self) -> None:
        """Start the process and return once it answers PING (bounded wait)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "redis.log", "ab") as log:
            self._process = subprocess.Popen(
                self._argv(), cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._process.poll() is not None:
                output = (self.workdir / "redis.log").read_text(errors="replace")
                raise RedisServerError(
                    f"redis-server exited with {self._process.returncode}: {output[-2000:]}"
                )
            try:
                self.command("PING", timeout=1.0)
                return
            except (OSError, RedisServerError) as e:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RedisServerError(
                        f"redis-server on port {self.port} not ready after"
                        f" {START_TIMEOUT_S}s: {e}"
                    ) from e
            time.sleep(POLL_INTERVAL_S)

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.pid

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT: a paused server answers again."""
        os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        """Stop the process for good (resuming it first if it is paused)."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGCONT)
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def crash(self) -> None:
        """SIGKILL: the process dies at once, as in a crash (no shutdown, no goodbye)."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.kill()
        process.wait(timeout=5)

    def restart(self) -> None:
        """Kill and start again on the same port (an empty dataset)."""
        self.kill()
        self.start()

    def command(self, *args: Any, db: int = 0, timeout: float = 5.0) -> Any:
        """Run one command on a fresh blocking connection and return its reply."""
        with socket.create_connection((HOST, self.port), timeout=timeout) as conn:
            prelude = b""
            replies = 0
            if self.password is not None:
                prelude += _encode("AUTH", self.password)
                replies += 1
            if db:
                prelude += _encode("SELECT", db)
                replies += 1
            conn.sendall(prelude + _encode(*args))
            stream = conn.makefile("rb")
            for _ in range(replies):
                _read_reply(stream)
            return _read_reply(stream)
