"""The systemd units, checked by systemd's own tools, and socket activation run for real.

C{systemd-analyze verify} reads the shipped units (with the installation
prefix C{/opt/privydrop} replaced by this checkout, so that the
C{ExecStart} binary exists) and must have nothing to say. Socket activation
runs without systemd as PID 1: C{systemd-socket-activate} listens, then
replaces itself with C{twistd ... --listen systemd:domain=INET:index=0}, as
the units do; and since that tool cannot restart anything, the restart
property is shown by this test holding the listening socket itself, as
systemd does, and handing it to one server process after another.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.ops.programs import POLL_INTERVAL_S, ROOT, free_port, program, stop

UNITS = ROOT / "systemd"
INSTALL_PREFIX = "/opt/privydrop"
TWISTD = Path(sys.executable).parent / "twistd"
#: The server command of the units (after the binary), as docs/deployment.md gives it.
SERVER_ARGS = ["-n", "--pidfile=", "privydrop", "--listen", "systemd:domain=INET:index=0"]
#: The descriptor name the socket units set (FileDescriptorName=).
FD_NAME = "privydrop"
#: What the test (and docs/deployment.md) asks systemd-analyze.
VERIFY_ARGS = [
    "verify", "./privydrop.service", "./privydrop.socket",
    "./privydrop@3001.service", "./privydrop@3001.socket",
]
#: Longest wait for one HTTP answer from a starting server, seconds.
ANSWER_TIMEOUT_S = 30.0


def server_environment() -> dict[str, str]:
    """What the environment file would hold, for a development server without Redis."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NODE_ENV": "development"}


def socket_activate_args(port: int) -> list[str]:
    """systemd-socket-activate's options: the port, the descriptor's name, the environment."""
    return ["-l", f"127.0.0.1:{port}", f"--fdname={FD_NAME}", "-ENODE_ENV=development"]


def http_get(sock: socket.socket, path: str) -> tuple[int, Any]:
    """One request on a connected socket; waits (bounded) for the whole answer."""
    sock.settimeout(ANSWER_TIMEOUT_S)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


def get(port: int, path: str) -> tuple[int, Any]:
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT_S) as sock:
        return http_get(sock, path)


def installed_units(directory: Path) -> list[Path]:
    """The shipped units with the installation prefix pointing at this checkout.

    Templates are also written as one instance each (C{privydrop@3001.*}):
    systemd verifies instances, not templates.
    """
    written = []
    for unit in sorted(UNITS.glob("privydrop*")):
        text = unit.read_text().replace(INSTALL_PREFIX, str(ROOT))
        names = [unit.name]
        if "@." in unit.name:
            names.append(unit.name.replace("@.", "@3001."))
        for name in names:
            target = directory / name
            target.write_text(text)
            if "@." not in name:
                written.append(target)
    return written


def test_units_pass_systemd_analyze_verify_without_a_word(tmp_path: Path) -> None:
    """systemd would load every unit as written: no unknown key, no missing binary, no bad value."""
    analyze = program("systemd-analyze", "systemd")
    units = installed_units(tmp_path)
    assert {u.name for u in units} == {
        "privydrop.service", "privydrop.socket", "privydrop@3001.service", "privydrop@3001.socket"
    }
    done = subprocess.run(
        [analyze, *VERIFY_ARGS],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_verify_would_notice_a_mistake(tmp_path: Path) -> None:
    """The check above can fail: a misspelt directive is reported."""
    analyze = program("systemd-analyze", "systemd")
    [service] = [u for u in installed_units(tmp_path) if u.name == "privydrop.service"]
    service.write_text(service.read_text().replace("ProtectSystem=", "ProtectSytem="))
    done = subprocess.run(
        [analyze, "verify", "./privydrop.service"], cwd=tmp_path, capture_output=True, text=True
    )
    assert "ProtectSytem" in done.stdout + done.stderr


def test_units_run_twistd_on_the_inherited_socket() -> None:
    """Every service starts the command the tests below run, on the socket of its socket unit."""
    for name in ("privydrop.service", "privydrop@.service"):
        text = (UNITS / name).read_text()
        assert f"\nExecStart={INSTALL_PREFIX}/.venv/bin/twistd {' '.join(SERVER_ARGS)}\n" in text
        assert "\nRestart=on-failure\n" in text and "\nUser=privydrop\n" in text
    for name in ("privydrop.socket", "privydrop@.socket"):
        assert f"\nFileDescriptorName={FD_NAME}\n" in (UNITS / name).read_text()


def test_systemd_socket_activate_starts_the_server_on_its_socket(tmp_path: Path) -> None:
    """Under socket activation the server answers on the socket it was handed.

    systemd-socket-activate listens, and on the first connection replaces
    itself with twistd, which must find the descriptor (with its name, as
    systemd always gives one) and serve that very connection.
    """
    activate = program("systemd-socket-activate", "systemd")
    port = free_port()
    argv = [activate, *socket_activate_args(port), str(TWISTD), *SERVER_ARGS]
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        status, body = _first_answer(port, "/health/detailed", process, log)
        assert status == 200, body
        assert body["service"] == "privydrop-backend"
        # The tool replaced itself with the server: same process.
        assert body["system"]["pid"] == process.pid
    finally:
        stop(process)


def _first_answer(
    port: int, path: str, process: subprocess.Popen[bytes], log: Path
) -> tuple[int, Any]:
    """Connect once the tool listens (bounded attempts), then wait for the answer."""
    for _ in range(1000):
        if process.poll() is not None:
            pytest.fail(f"exited with {process.returncode}: {log.read_text(errors='replace')[-3000:]}")
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT_S)
        except ConnectionRefusedError:
            time.sleep(POLL_INTERVAL_S)
            continue
        with sock:
            return http_get(sock, path)
    pytest.fail("systemd-socket-activate never listened")
    raise AssertionError("unreachable")


def start_on_inherited_socket(listener: socket.socket, cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """twistd with C{listener} as descriptor 3 and the variables systemd sets (LISTEN_*)."""
    handover = (
        "import os, sys; os.dup2(int(sys.argv[1]), 3); "
        f"os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', LISTEN_FDNAMES='{FD_NAME}'); "
        "os.execv(sys.argv[2], sys.argv[2:])"
    )
    argv = [sys.executable, "-c", handover, str(listener.fileno()), str(TWISTD), *SERVER_ARGS]
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv, cwd=cwd, env=server_environment(), pass_fds=(listener.fileno(),),
            stdout=out, stderr=subprocess.STDOUT,
        )


def test_a_connection_made_while_no_server_runs_is_served_by_the_next(tmp_path: Path) -> None:
    """Restarting the server refuses nobody: the socket outlives the process.

    The test holds the listening socket, as systemd does for a socket unit.
    A first server serves on it and stops; a client connects while no server
    runs (the kernel queues the connection) and sends its request; the next
    server, handed the same socket, answers it.
    """
    log = tmp_path / "server.log"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port = listener.getsockname()[1]

        first = start_on_inherited_socket(listener, tmp_path, log)
        try:
            status, body = get(port, "/health/detailed")
            assert (status, body["system"]["pid"]) == (200, first.pid)
        finally:
            first.send_signal(signal.SIGTERM)
            # After its clean shutdown twistd ends by the signal it was
            # stopped with, which systemd counts as a clean stop (no restart).
            ended = first.wait(timeout=ANSWER_TIMEOUT_S)
            assert ended == -signal.SIGTERM, log.read_text(errors="replace")[-3000:]
            assert "Server Shut Down." in log.read_text(errors="replace")

        # No server runs now; the connection is still accepted by the kernel.
        with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT_S) as waiting:
            second = start_on_inherited_socket(listener, tmp_path, log)
            try:
                status, body = http_get(waiting, "/health/detailed")
                assert status == 200, body
                assert body["system"]["pid"] == second.pid != first.pid
            finally:
                stop(second)
