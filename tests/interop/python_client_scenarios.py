"""Runs one scenario of the python-socketio client against a Socket.IO server
(driven by tests/interop/test_python_client.py, as a subprocess so that the
client's blocking calls never touch the test's reactor).

    python python_client_scenarios.py <base url> <mode> <scenario> [offsets]

mode: "websocket", "polling", or "upgrade" (polling, then websocket).
scenario: "exchange" or "reconnect". With "offsets" the server has
connection state recovery on: python-socketio does not recover, and its
handlers receive each event's offset as one more argument, as with the
reference server; the handlers here check it is there and strip it.
Prints JSON lines like the Node driver:
{"result": {...}} at the end, or {"error": ...} with exit code 1. Bytes are
written as {"buffer": [bytes]}. Waits are on events, each with a deadline.
"""

from __future__ import annotations

import json
import queue
import sys
from typing import Any

import socketio  # the third-party python-socketio client, not privydrop.socketio

DEADLINE_S = 10.0

#: Whether events carry an offset as their last argument (set by main).
OFFSETS = False


def event_args(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """An event's own arguments: without its offset when the server sends one."""
    if not OFFSETS:
        return args
    if not args or not isinstance(args[-1], str):
        raise RuntimeError("event without an offset: {!r}".format(args))
    return args[:-1]


def first(args: tuple[Any, ...]) -> Any:
    (value,) = event_args(args)
    return value


def plain(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return {"buffer": list(value)}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


class Events:
    """Every event a client saw, to wait on one by name."""

    def __init__(self) -> None:
        self._queues: dict[str, queue.Queue[Any]] = {}

    def _queue(self, name: str) -> queue.Queue[Any]:
        return self._queues.setdefault(name, queue.Queue())

    def put(self, name: str, value: Any) -> None:
        self._queue(name).put(value)

    def get(self, name: str) -> Any:
        try:
            return self._queue(name).get(timeout=DEADLINE_S)
        except queue.Empty:
            raise RuntimeError("no {!r} event before the deadline".format(name)) from None


def transports(mode: str) -> list[str]:
    return {"websocket": ["websocket"], "polling": ["polling"]}.get(mode, ["polling", "websocket"])


def wait_for_upgrade(sio: socketio.Client, mode: str, events: Events) -> None:
    if mode != "upgrade":
        return
    # python-socketio exposes no upgrade event; a round trip after the
    # upgrade's probe shows whether the transport changed.
    for _ in range(50):
        if sio.transport() == "websocket":
            return
        sio.call("message-with-ack", "probe", timeout=DEADLINE_S)
    raise RuntimeError("no upgrade to websocket")


def exchange(url: str, mode: str) -> dict[str, Any]:
    events = Events()
    sio = socketio.Client(reconnection=False)
    sio.on("auth", lambda *args: events.put("auth", first(args)), namespace="/")
    sio.on("auth", lambda *args: events.put("custom-auth", first(args)), namespace="/custom")
    sio.on("message-back", lambda *args: events.put("message-back", event_args(args)))
    sio.on("client-answered", lambda *args: events.put("client-answered", event_args(args)))
    sio.on("question", lambda question: ("answer", question, b"\x09"))
    sio.on("disconnect", lambda *reason: events.put("disconnect", reason), namespace="/")
    sio.connect(
        url,
        auth={"token": "py-1"},
        transports=transports(mode),
        namespaces=["/", "/custom"],
        wait_timeout=DEADLINE_S,
    )
    result: dict[str, Any] = {}
    result["id"] = sio.get_sid("/")
    result["customId"] = sio.get_sid("/custom")
    result["auth"] = plain(events.get("auth"))
    result["customAuth"] = plain(events.get("custom-auth"))
    wait_for_upgrade(sio, mode, events)
    result["transport"] = sio.transport()

    sio.emit("message", (1, "2", {"3": [True]}, b"\x01\x02\x03"))
    result["messageBack"] = plain(events.get("message-back"))

    sio.emit("message-with-ack", ("x", b"\x04\x05"), callback=lambda *args: events.put("ack", args))
    result["ack"] = plain(events.get("ack"))

    sio.emit("ask-client")
    result["clientAnswered"] = plain(events.get("client-answered"))

    sio.emit("disconnect-me")
    result["disconnectReason"] = list(events.get("disconnect"))
    result["customStillConnected"] = sio.get_sid("/custom") is not None
    sio.disconnect()
    return result


def reconnect(url: str, mode: str) -> dict[str, Any]:
    events = Events()
    sio = socketio.Client(
        reconnection=True,
        reconnection_delay=0.01,
        reconnection_delay_max=0.05,
        randomization_factor=0,
    )
    sio.on("connect", lambda: events.put("connect", sio.get_sid("/")))
    sio.on("disconnect", lambda *reason: events.put("disconnect", reason))
    sio.connect(url, transports=transports(mode), wait_timeout=DEADLINE_S)
    result: dict[str, Any] = {"firstId": events.get("connect")}
    wait_for_upgrade(sio, mode, events)
    result["firstTransport"] = sio.transport()
    sio.emit("cut-me")
    result["disconnectReason"] = list(events.get("disconnect"))
    result["secondId"] = events.get("connect")
    result["ackAfterReconnect"] = plain(
        [sio.call("message-with-ack", "again", timeout=DEADLINE_S)]
    )
    sio.disconnect()
    return result


def main(argv: list[str]) -> int:
    global OFFSETS
    url, mode, scenario, *flags = argv
    OFFSETS = "offsets" in flags
    try:
        result = {"exchange": exchange, "reconnect": reconnect}[scenario](url, mode)
    except Exception as e:
        print(json.dumps({"error": repr(e)}), flush=True)
        return 1
    print(json.dumps({"result": result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
