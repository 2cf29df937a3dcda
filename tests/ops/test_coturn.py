"""The shipped coturn configuration accepts the backend's credentials, and only those.

Debian's coturn runs C{docker/coturn/turnserver.conf} through
C{docker/coturn/run-turnserver} (as the Docker compose file does) with the
test secret as C{TURN_SECRET}. A real service tree configured with the same
C{TURN_SECRET} hands out credentials from C{GET /api/ice_servers}; coturn's
own test client, C{turnutils_uclient}, allocates relays with them and sends
data from one relay to the other. It exits 0 even when nothing got through,
so the test reads what it reports: every message sent was received. Expired
and forged credentials get no allocation.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, reactor
from twisted.internet.utils import getProcessOutputAndValue

from privydrop.settings import TurnSettings
from privydrop.turn import ice_servers, rest_api_credential
from tests.interop.service_tree import RunningTree, start_tree, tree_settings
from tests.ops.programs import (
    COTURN_CONFIG,
    COTURN_DEV_CONFIG,
    TEST_TURN_SECRET,
    Coturn,
    program,
)
from tests.redis_server import RedisServer

MESSAGES = 5


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[Coturn]:
    server = Coturn(tmp_path / "coturn")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest_twisted.async_yield_fixture
async def tree(coturn: Coturn, redis_server: RedisServer, redis_db: int) -> AsyncIterator[RunningTree]:
    settings = tree_settings(
        redis_server, redis_db, TURN_SECRET=TEST_TURN_SECRET, TURN_URLS=coturn.url
    )
    running = await start_tree(settings, reactor)
    try:
        yield running
    finally:
        await running.stop()


async def uclient(coturn: Coturn, username: str, credential: str) -> str:
    """Run turnutils_uclient: two relays on coturn, MESSAGES messages between them."""
    binary = program("turnutils_uclient", "coturn")
    out, err, _code = await getProcessOutputAndValue(
        binary,
        ["-y", "-n", str(MESSAGES), "-m", "1", "-u", username, "-w", credential,
         "-p", str(coturn.port), "127.0.0.1"],
        env={},
        reactor=reactor,
    )
    return (out + err).decode("utf-8", "replace")


def relayed(report: str) -> tuple[int, int] | None:
    """(sent, received) messages from uclient's final summary, None when it has none."""
    found = re.findall(r"start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)", report)
    if not found:
        return None
    sent, received = found[-1]
    return int(sent), int(received)


def refused(report: str) -> bool:
    return "Cannot complete Allocation" in report and relayed(report) is None


@pytest_twisted.ensureDeferred
async def test_credentials_from_the_api_allocate_a_relay_and_bad_ones_do_not(
    coturn: Coturn, tree: RunningTree
) -> None:
    """A browser's credentials from /api/ice_servers work on coturn; stale or forged ones do not.

    If the first part broke, users who need a relay (strict NATs, corporate
    networks) could not transfer at all; if the second did, anyone could use
    the relay with credentials they made up or kept.
    """
    response = await treq.get(tree.url + "/api/ice_servers")
    body: dict[str, Any] = await response.json()
    assert response.code == 200, body
    [server] = body["iceServers"]
    assert server["urls"] == [coturn.url]
    username, credential = server["username"], server["credential"]

    settings = TurnSettings(secret=TEST_TURN_SECRET, urls=(coturn.url,), credential_ttl_s=600)
    expired = ice_servers(settings, time.time() - 700, "expired")
    assert expired is not None
    stale = expired.servers[0]
    expiry, user = username.split(":", 1)
    later = f"{int(expiry) + 86400}:{user}"

    good, stale_report, wrong_secret, stretched = await defer.gatherResults([
        defer.Deferred.fromCoroutine(uclient(coturn, username, credential)),
        defer.Deferred.fromCoroutine(uclient(coturn, stale["username"], stale["credential"])),
        defer.Deferred.fromCoroutine(
            uclient(coturn, username, rest_api_credential("another-secret-0123456789", username))
        ),
        # The user name's expiry moved on without the signature following it.
        defer.Deferred.fromCoroutine(uclient(coturn, later, credential)),
    ])
    assert relayed(good) == (MESSAGES * 4, MESSAGES * 4), good[-3000:]
    assert "Total lost packets 0 " in good
    for report in (stale_report, wrong_secret, stretched):
        assert refused(report), report[-3000:]


def test_production_and_development_files_use_the_shared_secret_scheme() -> None:
    """Both shipped coturn files check credentials with the secret, and hold no secret themselves."""
    for path in (COTURN_CONFIG, COTURN_DEV_CONFIG):
        lines = [line.strip() for line in path.read_text().splitlines()]
        options = [line for line in lines if line and not line.startswith("#")]
        assert "use-auth-secret" in options
        assert not any(line.startswith(("static-auth-secret", "user=", "lt-cred-mech")) for line in options)
    production = COTURN_CONFIG.read_text()
    assert "\nallow-loopback-peers" not in production
    assert "\ndenied-peer-ip=10.0.0.0-10.255.255.255" in production


def test_run_turnserver_refuses_to_start_without_the_secret(tmp_path: Path) -> None:
    """A coturn started without TURN_SECRET would refuse every user; say so at once instead."""
    import subprocess

    from tests.ops.programs import RUN_TURNSERVER

    done = subprocess.run(
        [str(RUN_TURNSERVER), str(COTURN_CONFIG)],
        env={"PATH": "/usr/bin:/bin", "TURN_RUNTIME_DIR": str(tmp_path)},
        capture_output=True,
    )
    assert done.returncode == 2
    assert b"TURN_SECRET is not set" in done.stderr
    assert not (tmp_path / "turnserver.conf").exists()
