"""Run the programs the operations files configure: nginx, coturn, openssl, envsubst.

The tests under C{tests/ops/} start Debian's own programs (installed by
C{scripts/bootstrap --test}) on loopback ports with the files shipped in
C{docker/}, used as they are: only the variables the files declare are
filled in, with the same commands C{docs/deployment.md} gives. A program
that is missing fails the test with the install hint instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Mapping

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
NGINX_TEMPLATE = DOCKER / "nginx" / "privydrop.conf.template"
COTURN_CONFIG = DOCKER / "coturn" / "turnserver.conf"
COTURN_DEV_CONFIG = DOCKER / "coturn" / "turnserver.dev.conf"

#: The variables of the nginx template, as envsubst's SHELL-FORMAT argument
#: (docs/deployment.md gives the same command).
NGINX_VARIABLES = (
    "PRIVYDROP_SERVER_NAME",
    "PRIVYDROP_PUBLIC_HOST",
    "PRIVYDROP_HTTP_LISTEN",
    "PRIVYDROP_HTTPS_LISTEN",
    "PRIVYDROP_TLS_CERTIFICATE",
    "PRIVYDROP_TLS_CERTIFICATE_KEY",
    "PRIVYDROP_UPSTREAM_SERVERS",
)
NGINX_SHELL_FORMAT = " ".join("${%s}" % name for name in NGINX_VARIABLES)

#: Longest wait for a started program to accept connections, seconds.
START_TIMEOUT_S = 10.0
#: Pause between two connection attempts while waiting, seconds.
POLL_INTERVAL_S = 0.01


def program(name: str, package: str) -> str:
    """The path of a program, or fail naming the Debian package to install."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        pytest.fail(f"{name} not found: install Debian's {package} (scripts/bootstrap --test does)")
    return found


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    """A port that was free on C{host} a moment ago."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def wait_for_tcp(port: int, process: subprocess.Popen[bytes], log: Path, host: str = "127.0.0.1") -> None:
    """Return once C{host:port} accepts a connection; fail if C{process} exits or time runs out."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            pytest.fail(f"{process.args!r} exited with {process.returncode}: {log.read_text(errors='replace')[-3000:]}")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"{process.args!r} not listening on {host}:{port} after {START_TIMEOUT_S}s")
        time.sleep(POLL_INTERVAL_S)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate a child (kill it if it does not exit) and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def self_signed_certificate(directory: Path, name: str = "127.0.0.1") -> tuple[Path, Path]:
    """A throw-away certificate and key for C{name} (an IP address), made with openssl."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            program("openssl", "openssl"), "req", "-x509", "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
            "-subj", f"/CN={name}", "-addext", f"subjectAltName=IP:{name}",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def envsubst(template: Path, shell_format: str, variables: Mapping[str, str]) -> str:
    """C{envsubst SHELL-FORMAT < template} with exactly C{variables} in the environment."""
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **variables}
    done = subprocess.run(
        [program("envsubst", "gettext-base"), shell_format],
        input=template.read_bytes(),
        env=environ,
        check=True,
        capture_output=True,
    )
    return done.stdout.decode("utf-8")


RUN_TURNSERVER = DOCKER / "coturn" / "run-turnserver"
#: A secret for the test coturn and backends (TURN_SECRET).
TEST_TURN_SECRET = "test-turn-secret-0123456789"


class Coturn:
    """Debian's coturn on loopback, started with the shipped file by C{run-turnserver}.

    The shipped C{turnserver.conf} is used as it is; the command line adds
    only what a test on loopback needs: listening and relay address
    127.0.0.1, free ports, a test certificate, and C{--allow-loopback-peers}
    (coturn refuses loopback peers otherwise, and every peer here is one).

    @ivar port: the turn:/stun: port (UDP and TCP).
    """

    def __init__(self, directory: Path, config: Path = COTURN_CONFIG) -> None:
        self.directory = directory
        self.config = config
        self.port = free_port()
        self.tls_port = free_port()
        self.log = directory / "turnserver.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The TURN URL a backend hands out for this server (TURN_URLS)."""
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def start(self) -> None:
        program("turnserver", "coturn")
        self.directory.mkdir(parents=True, exist_ok=True)
        cert, key = self_signed_certificate(self.directory)
        argv = [
            str(RUN_TURNSERVER), str(self.config),
            "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1",
            f"--listening-port={self.port}", f"--tls-listening-port={self.tls_port}",
            f"--cert={cert}", f"--pkey={key}",
            "--allow-loopback-peers",
            f"--pidfile={self.directory}/turnserver.pid",
        ]
        environ = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "TURN_SECRET": TEST_TURN_SECRET,
            "TURN_RUNTIME_DIR": str(self.directory / "runtime"),
        }
        with open(self.log, "wb") as out:
            self._process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=environ, cwd=self.directory
            )
        wait_for_tcp(self.port, self._process, self.log)

    def stop(self) -> None:
        if self._process is not None:
            stop(self._process)
