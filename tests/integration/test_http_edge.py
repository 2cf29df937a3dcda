"""The HTTP edge over real sockets: refused bodies, bursts of idle connections.

The server runs in the test's reactor on a loopback port; clients are
blocking ones (urllib, raw sockets) run in threads or driven without the
reactor, as the clients that found these defects were.
"""

from __future__ import annotations

import errno
import socket
import time
import urllib.error
import urllib.request
from typing import Any, AsyncIterator

import attrs
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.threads import deferToThread

from privydrop.service import build_service
from privydrop.settings import ApiSettings, HttpSettings, Settings

LISTEN = "tcp:0:interface=127.0.0.1"


@attrs.define
class Running:
    service: Any
    port: int

    @property
    def base(self) -> str:
        return "http://127.0.0.1:%d" % (self.port,)


async def start(settings: Settings) -> Running:
    service = build_service(settings, reactor)
    service.startService()
    port = await service.getServiceNamed("http")._waitingForPort
    return Running(service, port.getHost().port)


@pytest_twisted.async_yield_fixture
async def server() -> AsyncIterator[Running]:
    running = await start(Settings(listen=LISTEN))
    try:
        yield running
    finally:
        await running.service.stopService()


def _post_large(url: str, size: int) -> int | str:
    """POST C{size} bytes of JSON with urllib; the status, or the error's name."""
    body = b'{"roomId": "' + b"a" * (size - 14) + b'"}'
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        e.read()
        return e.code
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        return type(reason).__name__


@pytest_twisted.ensureDeferred
async def test_a_refused_body_reaches_urllib_as_413_every_time(server: Running) -> None:
    """A 2 MB POST over MAX_BODY_BYTES: the client reads its 413, never a reset.

    The server answers as soon as the declared length passes the cap, while
    the client is still sending; closing then would make the kernel reset the
    connection (unread data), and the client would lose the answer.
    """
    url = server.base + "/api/check_room"
    outcomes = []
    for _ in range(30):
        outcomes.append(await deferToThread(_post_large, url, 2_000_000))
    assert outcomes == [413] * 30


@pytest_twisted.ensureDeferred
async def test_a_refused_chunked_body_reaches_urllib_as_413(server: Running) -> None:
    """Also when the cap is passed while reading a body without a declared length."""

    def post_chunked() -> int | str:
        def chunks() -> Any:
            for _ in range(40):
                yield b"a" * 50_000

        request = urllib.request.Request(
            server.base + "/api/check_room", data=chunks(), method="POST",
            headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return int(response.status)
        except urllib.error.HTTPError as e:
            e.read()
            return e.code
        except (urllib.error.URLError, OSError) as e:
            return type(getattr(e, "reason", e)).__name__

    outcomes = [await deferToThread(post_chunked) for _ in range(10)]
    assert outcomes == [413] * 10


def _is_closed(sock: socket.socket) -> bool:
    """Whether the server has closed C{sock} (EOF or reset), without blocking."""
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


@pytest_twisted.ensureDeferred
async def test_hundreds_of_silent_connections_all_close_at_the_header_deadline() -> None:
    """300 connections opened at once that never send a request are all
    closed after HTTP_HEADER_TIMEOUT, and a real request meanwhile is fast.

    With Twisted's default listen backlog (50) most of them would wait in the
    kernel's queue, out of reach of the server's deadline.
    """
    header_timeout = 1.0
    running = await start(
        Settings(listen=LISTEN, http=HttpSettings(header_timeout_s=header_timeout))
    )
    socks: list[socket.socket] = []
    try:
        for _ in range(300):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            code = sock.connect_ex(("127.0.0.1", running.port))
            assert code in (0, errno.EINPROGRESS)
            socks.append(sock)
        started = reactor.seconds()

        # Meanwhile a real request is answered promptly.
        answered = await deferToThread(_get_health_seconds, running.base + "/health")
        assert answered < 1.0

        deadline = started + header_timeout + 3.0
        while True:
            open_ = [s for s in socks if not _is_closed(s)]
            if not open_ or reactor.seconds() > deadline:
                break
            await task.deferLater(reactor, 0.1)
        assert len(open_) == 0, "%d of 300 still open" % (len(open_),)
    finally:
        for sock in socks:
            sock.close()
        await running.service.stopService()


def _get_health_seconds(url: str) -> float:
    began = time.monotonic()
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        response.read()
    return time.monotonic() - began


@pytest_twisted.ensureDeferred
async def test_small_bodies_still_pass(server: Running) -> None:
    """The cap refuses only what passes it."""
    assert await deferToThread(_post_large, server.base + "/api/check_room", 1000) == 400
    settings = Settings(listen=LISTEN, api=ApiSettings(max_body_bytes=2_000_000))
    big = await start(settings)
    try:
        outcome = await deferToThread(_post_large, big.base + "/api/check_room", 1_500_000)
        assert outcome == 400  # too long a room id: read, parsed and refused by the route
    finally:
        await big.service.stopService()
