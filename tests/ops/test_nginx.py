"""The shipped nginx configuration in front of two backend processes on one Redis.

Debian's nginx runs C{docker/nginx/privydrop.conf.template} with only its
variables filled in (by C{envsubst}, as docs/deployment.md does it): TLS with
a throw-away certificate on one loopback port, the HTTP redirect on another,
and an upstream of two real service trees sharing the test Redis, each on
its own port with C{TRUSTED_PROXIES=127.0.0.1/32} (nginx's address, as the
guide sets it). The official socket.io-client (Node) connects through nginx
over WebSocket, long-polling and polling upgraded to WebSocket, from several
loopback source addresses (127.0.0.2, 127.0.0.3, ...), which the backends
must see as different clients.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet import reactor, ssl
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS

from tests.interop.js_clients import JsClients
from tests.interop.service_tree import RunningTree, start_tree, tree_settings
from tests.ops.programs import (
    NGINX_SHELL_FORMAT,
    NGINX_TEMPLATE,
    envsubst,
    free_port,
    program,
    self_signed_certificate,
    stop,
    wait_for_tcp,
)
from tests.redis_server import RedisServer

RATE_LIMITED = re.compile(r"^Rate limit exceeded\. Try again in [1-5]s\. Attempts left: 0\.$")
OFFER = {"type": "offer", "sdp": "v=0\r\n"}
ANSWER = {"type": "answer", "sdp": "v=0\r\n"}
#: Source addresses tried until both backends hold a polling session.
POLLING_SOURCES = [f"127.0.1.{n}" for n in range(1, 17)]


def main_config(directory: Path, site: Path) -> str:
    """The test's own nginx.conf: process settings in a temporary folder, then the shipped site."""
    # As root (CI), nginx's workers would switch to www-data, which cannot
    # read the test's private temporary folder.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    temp = directory / "temp"
    temp.mkdir()
    return (
        f"{user}daemon off;\nworker_processes 1;\npid {directory}/nginx.pid;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        "    access_log off;\n"
        f"    client_body_temp_path {temp}/body;\n    proxy_temp_path {temp}/proxy;\n"
        f"    fastcgi_temp_path {temp}/fastcgi;\n    uwsgi_temp_path {temp}/uwsgi;\n"
        f"    scgi_temp_path {temp}/scgi;\n"
        f"    include {site};\n"
        "}\n"
    )


@attrs.frozen
class Proxied:
    """nginx in front of two service trees.

    @ivar url: the HTTPS origin clients use.
    @ivar http_port: the plain HTTP port (redirects).
    @ivar ca: the certificate nginx presents (PEM), for clients to trust.
    """

    url: str
    http_port: int
    ca: str
    backends: tuple[RunningTree, ...]
    redis: RedisServer
    db: int

    def client(self, source: str) -> HTTPClient:
        """A treq client trusting the test certificate, connecting from C{source}."""
        policy = BrowserLikePolicyForHTTPS(trustRoot=ssl.Certificate.loadPEM(self.ca.encode()))
        return HTTPClient(Agent(reactor, contextFactory=policy, bindAddress=(source, 0)))

    async def new_room(self, source: str = "127.0.0.9") -> str:
        response = await self.client(source).get(self.url + "/api/get_room")
        assert response.code == 200
        room: str = (await response.json())["roomId"]
        return room


@pytest_twisted.async_yield_fixture
async def proxied(
    tmp_path: Path, redis_server: RedisServer, redis_db: int
) -> AsyncIterator[Proxied]:
    nginx = program("nginx", "nginx")
    backends: list[RunningTree] = []
    process = None
    try:
        for _ in range(2):
            settings = tree_settings(redis_server, redis_db, TRUSTED_PROXIES="127.0.0.1/32")
            backends.append(await start_tree(settings, reactor))
        cert, key = self_signed_certificate(tmp_path)
        https_port, http_port = free_port(), free_port()
        site = tmp_path / "privydrop.conf"
        site.write_text(
            envsubst(
                NGINX_TEMPLATE,
                NGINX_SHELL_FORMAT,
                {
                    "PRIVYDROP_SERVER_NAME": "127.0.0.1",
                    "PRIVYDROP_PUBLIC_HOST": f"127.0.0.1:{https_port}",
                    "PRIVYDROP_HTTP_LISTEN": f"127.0.0.1:{http_port}",
                    "PRIVYDROP_HTTPS_LISTEN": f"127.0.0.1:{https_port}",
                    "PRIVYDROP_TLS_CERTIFICATE": str(cert),
                    "PRIVYDROP_TLS_CERTIFICATE_KEY": str(key),
                    "PRIVYDROP_UPSTREAM_SERVERS": " ".join(
                        f"server 127.0.0.1:{tree.port};" for tree in backends
                    ),
                },
            )
        )
        main = tmp_path / "nginx.conf"
        main.write_text(main_config(tmp_path, site))
        log = tmp_path / "nginx.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [nginx, "-e", str(log), "-p", str(tmp_path), "-c", str(main)],
                stdout=out, stderr=subprocess.STDOUT,
            )
        wait_for_tcp(https_port, process, log)
        wait_for_tcp(http_port, process, log)
        yield Proxied(
            url=f"https://127.0.0.1:{https_port}",
            http_port=http_port,
            ca=cert.read_text(),
            backends=tuple(backends),
            redis=redis_server,
            db=redis_db,
        )
    finally:
        if process is not None:
            stop(process)
        for tree in backends:
            await tree.stop()


@pytest_twisted.async_yield_fixture
async def js() -> AsyncIterator[JsClients]:
    clients = JsClients.spawn(reactor)
    try:
        yield clients
    finally:
        await clients.quit()


def test_the_template_declares_exactly_the_variables_it_uses() -> None:
    """Every ${...} of the template is filled by the documented envsubst command, and only those."""
    used = set(re.findall(r"\$\{(\w+)\}", NGINX_TEMPLATE.read_text()))
    assert used == set(re.findall(r"\$\{(\w+)\}", NGINX_SHELL_FORMAT))


def test_proxy_timeouts_outlast_a_quiet_engineio_connection() -> None:
    """nginx must not cut a long-poll or a quiet WebSocket that the heartbeat still keeps alive."""
    from privydrop.settings import EngineSettings

    engine = EngineSettings()
    quiet_s = (engine.ping_interval_ms + engine.ping_timeout_ms) / 1000
    text = NGINX_TEMPLATE.read_text()
    socketio = text.split("location /socket.io/", 1)[1].split("}", 1)[0]
    for directive in ("proxy_read_timeout", "proxy_send_timeout"):
        found = re.search(directive + r"\s+(\d+)s;", socketio)
        assert found is not None, directive
        assert int(found.group(1)) > quiet_s


@pytest_twisted.ensureDeferred
async def test_plain_http_is_redirected_to_the_configured_https_host(proxied: Proxied) -> None:
    """A browser typing http:// lands on HTTPS, on our host whatever Host header it sent."""
    with socket.create_connection(("127.0.0.1", proxied.http_port), timeout=5) as conn:
        conn.sendall(b"GET /api/get_room?x=1 HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    assert head.startswith("HTTP/1.1 301")
    assert f"\r\nLocation: {proxied.url}/api/get_room?x=1" in head
    assert "nginx/" not in head


@pytest_twisted.ensureDeferred
async def test_socketio_transports_and_the_api_work_through_nginx(
    proxied: Proxied, js: JsClients
) -> None:
    """WebSocket, long-polling and an upgrade from polling all signal through nginx and TLS.

    If this breaks, users behind the documented nginx cannot connect over one
    of the transports the PrivyDrop frontend uses, or the upgrade fails.
    """
    room = await proxied.new_room()
    a = await js.connect("a", proxied.url, "websocket", local_address="127.0.0.2", ca=proxied.ca)
    b = await js.connect("b", proxied.url, "polling", local_address="127.0.0.3", ca=proxied.ca)
    c = await js.connect("c", proxied.url, "upgrade", local_address="127.0.0.4", ca=proxied.ca)
    assert (a["transport"], b["transport"], c["transport"]) == ("websocket", "polling", "websocket")

    for name in ("a", "b", "c"):
        await js.emit(name, "join", {"roomId": room})
        response = await js.next(name, "joinResponse")
        assert response["success"] is True, response
    assert await js.next("a", "ready") == {"peerId": b["id"]}
    assert await js.next("a", "ready") == {"peerId": c["id"]}
    assert await js.next("b", "ready") == {"peerId": c["id"]}

    await js.emit("a", "offer", {"peerId": b["id"], "offer": OFFER})
    assert await js.next("b", "offer") == {"offer": OFFER, "from": a["id"], "peerId": a["id"]}
    await js.emit("b", "answer", {"peerId": a["id"], "answer": ANSWER})
    assert await js.next("a", "answer") == {"answer": ANSWER, "from": b["id"], "peerId": b["id"]}
    await js.emit("b", "ice-candidate", {"peerId": c["id"], "candidate": {"candidate": "x"}})
    assert (await js.next("c", "ice-candidate"))["peerId"] == b["id"]


@pytest_twisted.ensureDeferred
async def test_polling_sessions_stay_on_the_process_that_holds_them(
    proxied: Proxied, js: JsClients
) -> None:
    """Every request of a long-polling session reaches its process, whichever process that is.

    Clients from more and more source addresses connect over polling until
    both backends hold sessions; each then receives signaling that takes
    several polling requests. Without stickiness a request lands on the
    other process, which answers 400 "Session ID unknown", and the client
    breaks.
    """
    room = await proxied.new_room()
    first = await js.connect("p0", proxied.url, "polling", local_address=POLLING_SOURCES[0], ca=proxied.ca)
    await js.emit("p0", "join", {"roomId": room})
    assert (await js.next("p0", "joinResponse"))["success"] is True
    joined = []
    for n, source in enumerate(POLLING_SOURCES[1:], start=1):
        counts = [tree.realtime.sio_server.connection_count() for tree in proxied.backends]
        if all(counts) and n > 2:
            break
        name = f"p{n}"
        info = await js.connect(name, proxied.url, "polling", local_address=source, ca=proxied.ca)
        await js.emit(name, "join", {"roomId": room})
        assert (await js.next(name, "joinResponse"))["success"] is True
        assert await js.next("p0", "ready") == {"peerId": info["id"]}
        joined.append((name, info["id"]))
    counts = [tree.realtime.sio_server.connection_count() for tree in proxied.backends]
    assert all(counts), f"every client was sent to one backend: {counts}"
    for name, _ in joined:
        await js.emit("p0", "offer", {"peerId": dict(joined)[name], "offer": OFFER})
        assert await js.next(name, "offer") == {"offer": OFFER, "from": first["id"], "peerId": first["id"]}


@pytest_twisted.ensureDeferred
async def test_join_rate_limit_counts_source_addresses_and_ignores_forged_forwarding(
    proxied: Proxied, js: JsClients
) -> None:
    """Behind nginx each client address has its own join budget, and a client cannot pick it.

    Three sockets from 127.0.0.5, each claiming another address in its own
    X-Forwarded-For, share one budget (the third join is refused), while a
    client from 127.0.0.6 still joins. Redis holds the window of 127.0.0.5
    only: not of nginx's address, not of the forged ones.
    """
    room = await proxied.new_room()
    answers = []
    for n in range(3):
        name = f"f{n}"
        forged = {"X-Forwarded-For": f"203.0.113.{n + 1}"}
        await js.connect(name, proxied.url, "websocket", forged, local_address="127.0.0.5", ca=proxied.ca)
        await js.emit(name, "join", {"roomId": room})
        answers.append(await js.next(name, "joinResponse"))
    assert [answer["success"] for answer in answers] == [True, True, False]
    assert RATE_LIMITED.match(answers[2]["message"]), answers[2]

    await js.connect("other", proxied.url, "polling", local_address="127.0.0.6", ca=proxied.ca)
    await js.emit("other", "join", {"roomId": room})
    assert (await js.next("other", "joinResponse"))["success"] is True

    def redis(*args: Any) -> Any:
        return proxied.redis.command(*args, db=proxied.db)

    assert redis("ZCARD", "ratelimit:join:127.0.0.5") == 3
    assert redis("ZCARD", "ratelimit:join:127.0.0.6") == 1
    assert sorted(redis("KEYS", "ratelimit:join:*")) == [
        "ratelimit:join:127.0.0.5", "ratelimit:join:127.0.0.6"
    ]
