"""Drive the official JavaScript socket.io-client from a pytest-twisted test.

L{JsClients} runs ``tests/interop/js/signaling_clients.js`` under Node.js as a
child process of the reactor and speaks its line protocol (one JSON command
in, one JSON answer out, matched by ``seq``). Every call returns a Deferred,
so tests wait on events, never on time.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

INTEROP = Path(__file__).resolve().parent
JS_DIR = INTEROP / "js"
BROWSER_DIR = INTEROP / "browser"


class JsError(Exception):
    """The Node side answered a command with an error (or died)."""


def node_binary() -> str:
    """The Node.js executable; the interop tests fail loudly without one."""
    found = shutil.which("node")
    if found is None:
        raise JsError("node not found on PATH: the interop tests need Node.js 18+")
    return found


def node_env() -> dict[str, str]:
    """Environment for Node: socket.io-client from ``js/node_modules`` (installed
    by ``.ci/run``), falling back to the browser test's copy of the same package."""
    env = {key: value for key, value in os.environ.items() if key in ("PATH", "HOME", "LANG", "TMPDIR")}
    env["NODE_PATH"] = os.pathsep.join(
        str(path / "node_modules") for path in (JS_DIR, BROWSER_DIR)
    )
    return env


def require_node_package(name: str) -> None:
    """Fail with the install command when a Node package the tests need is missing."""
    for base in (JS_DIR, BROWSER_DIR):
        if (base / "node_modules" / name / "package.json").exists():
            return
    raise JsError(
        f"Node package {name} is not installed: run `npm ci` in {JS_DIR} (.ci/run does)"
    )


class JsClients(protocol.ProcessProtocol):
    """The Node process holding named socket.io-client instances."""

    def __init__(self) -> None:
        self._seq = 0
        self._pending: dict[int, Deferred[dict[str, Any]]] = {}
        self._buffer = b""
        self.stderr = bytearray()
        self.ended: Deferred[int | None] = Deferred()

    @classmethod
    def spawn(cls, reactor: Any, client_dir: Path | None = None) -> JsClients:
        """Start the Node process.

        @param client_dir: the socket.io-client package to use (its folder
            under some C{node_modules}); the one C{js/} resolves by default.
        """
        require_node_package("socket.io-client")
        clients = cls()
        node = node_binary()
        env = node_env()
        if client_dir is not None:
            if not (client_dir / "package.json").exists():
                raise JsError(f"no socket.io-client in {client_dir}: run `npm ci` there")
            env["SOCKET_IO_CLIENT_DIR"] = str(client_dir)
        reactor.spawnProcess(
            clients,
            node,
            [node, str(JS_DIR / "signaling_clients.js")],
            env=env,
            path=str(JS_DIR),
        )
        return clients

    def call(self, cmd: str, **fields: Any) -> Deferred[dict[str, Any]]:
        """Send one command; the Deferred fires with its answer."""
        self._seq += 1
        seq = self._seq
        d: Deferred[dict[str, Any]] = Deferred()
        self._pending[seq] = d
        line = json.dumps({"cmd": cmd, "seq": seq, **fields}).encode("utf-8") + b"\n"
        transport: Any = self.transport
        assert transport is not None
        transport.write(line)
        return d

    async def connect(
        self,
        name: str,
        url: str,
        transport: str,
        headers: dict[str, str] | None = None,
        *,
        local_address: str | None = None,
        ca: str | None = None,
        reconnection: bool = False,
    ) -> dict[str, Any]:
        """Connect client C{name}.

        @param transport: C{"websocket"}, C{"polling"}, or C{"upgrade"}
            (polling, answered once upgraded to WebSocket).
        @param local_address: the source address of its connections
            (C{127.0.0.2} ...: another client, as far as the server can tell).
        @param ca: the PEM certificate an C{https://} server must present.
        @param reconnection: reconnect on its own after a lost connection;
            each reconnection queues C{{id, recovered}} as pseudo-event
            C{"reconnect"}, each disconnect reason as C{"lost"}.
        """
        fields: dict[str, Any] = {}
        if local_address is not None:
            fields["localAddress"] = local_address
        if ca is not None:
            fields["ca"] = ca
        if reconnection:
            fields["reconnection"] = True
        return await self.call(
            "connect", name=name, url=url, transport=transport, headers=headers or {}, **fields
        )

    async def emit(self, name: str, event: str, *args: Any, ack: bool = False) -> dict[str, Any]:
        return await self.call("emit", name=name, event=event, args=list(args), ack=ack)

    async def next(self, name: str, event: str, timeout_ms: int = 10_000) -> Any:
        """The oldest payload of C{event} client C{name} has not been given yet."""
        answer = await self.call("next", name=name, event=event, timeoutMs=timeout_ms)
        return answer["payload"]

    async def received(self, name: str, event: str) -> list[Any]:
        """Payloads of C{event} not given yet, without waiting for more."""
        answer = await self.call("received", name=name, event=event)
        return list(answer["payloads"])

    async def fetch(self, method: str, url: str, body: Any = None) -> dict[str, Any]:
        fields: dict[str, Any] = {"method": method, "url": url}
        if body is not None:
            fields["body"] = body
        return await self.call("fetch", **fields)

    async def quit(self) -> None:
        """Disconnect every client and wait for the process to exit."""
        transport: Any = self.transport
        if transport is not None and not self.ended.called:
            self.call("quit").addErrback(lambda _: None)
            transport.closeStdin()
        await self.ended

    # ProcessProtocol

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            answer = json.loads(line)
            d = self._pending.pop(answer.get("seq"), None)
            if d is None:
                continue
            if "error" in answer:
                d.errback(JsError(answer["error"]))
            else:
                d.callback(answer)

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def processEnded(self, reason: Failure) -> None:
        pending, self._pending = self._pending, {}
        for d in pending.values():
            d.errback(JsError("node exited: " + self.stderr.decode("utf-8", "replace")))
        self.ended.callback(getattr(reason.value, "exitCode", None))
