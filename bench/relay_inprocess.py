"""The WebSocket relay in one process, without sockets: work per relayed message.

P pairs of clients, each client an L{EngineWebSocketProtocol} built by the
real L{EngineWebSocketFactory} on a C{StringTransport}, joined to a room of
its own pair through Engine.IO, Socket.IO, signaling and the
L{ClusterAdapter} (memory store, the server's settings: connection state
recovery on, so every relayed event gets an offset and goes into the
recipient's recovery log). Each client's read is one masked
C{ice-candidate} frame of the load generator's shape (about 330 bytes),
relayed to its peer; the round goes over every pair in turn, as the
C{relay_Px1} points of C{bench/run} do.

What it gives, with no reactor and no system calls:

    - CPU per relayed message (C{time.process_time}), printed;
    - instructions per relayed message, when run under valgrind twice with
      two message counts and the difference taken (start-up and set-up
      cancel out)::

        for n in 2000 12000; do
          valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
            .venv/bin/python bench/relay_inprocess.py --messages $n --pairs 50
        done   # (Ir of the second - Ir of the first) / 10000

      (add C{--cache-sim=yes} for simulated cache misses).

C{docs/performance.md} has the figures and what they are good for.
"""

from __future__ import annotations

import argparse
import gc
import json
import struct
import time
from typing import Any

import attrs
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from privydrop.cluster.routing import ClusterAdapter
from privydrop.engineio.websocket import EngineWebSocketFactory, unmask
from privydrop.rooms.rooms import Rooms
from privydrop.service.realtime import build_realtime
from privydrop.settings import Settings
from privydrop.store.memory import MemoryStore
from privydrop.tap import tune_garbage_collector

UPGRADE = (
    b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
MASK = b"\x11\x22\x33\x44"
#: Rounds between two clearings of the transports' buffers.
CLEAR_EVERY = 32


class _Transport(StringTransport):
    """Keeps what is written; lets the HTTP channel hand the connection over."""

    def unregisterProducer(self) -> None:
        self.producer = None


def client_frame(text: str) -> bytes:
    """A final, masked text frame, as a browser sends it."""
    body = text.encode("utf-8")
    size = len(body)
    head = b"\x81" + (bytes([0x80 | size]) if size < 126 else b"\xfe" + struct.pack("!H", size))
    return head + MASK + unmask(body, MASK)


def server_texts(data: bytes) -> list[str]:
    """The text frames the server wrote (unmasked, at most 65,535 bytes each)."""
    texts, i = [], 0
    while i < len(data):
        size, start = data[i + 1] & 0x7F, i + 2
        if size == 126:
            size, start = struct.unpack("!H", data[i + 2 : i + 4])[0], i + 4
        texts.append(data[start : start + size].decode("utf-8"))
        i = start + size
    return texts


def candidate_event(peer_id: str, k: int) -> str:
    """An C{ice-candidate} event for C{peer_id}, shaped as the load generator's."""
    port = 40000 + k % 20000
    line = (
        f"candidate:{1000000000 + k * 7919} 1 udp 1677729535 203.0.113.{k % 250 + 1} {port} "
        f"typ srflx raddr 192.168.0.{k % 250 + 1} rport {port} generation 0 "
        f"ufrag {0x1000 + k:x} network-id 1 network-cost 10"
    )
    candidate = {
        "candidate": line,
        "sdpMid": "0",
        "sdpMLineIndex": 0,
        "usernameFragment": f"{0x1000 + k:x}",
        "bench": "1234:1733212345678.123",
    }
    event = ["ice-candidate", {"peerId": peer_id, "candidate": candidate}]
    return "42" + json.dumps(event, separators=(",", ":"))


Pair = tuple[Any, _Transport, bytes, Any, _Transport, bytes]


def build(pairs: int, recovery: bool = True) -> list[Pair]:
    """Connect and join C{pairs} pairs; each with the frame each side sends."""
    clock = Clock()
    settings = Settings()
    settings = attrs.evolve(
        settings,
        engine=attrs.evolve(
            settings.engine, max_sessions_per_ip=10**7, max_pending_sessions_per_ip=10**7
        ),
        rooms=attrs.evolve(settings.rooms, join_rate_limit_enabled=False),
    )
    if not recovery:
        settings = attrs.evolve(
            settings, socketio=attrs.evolve(settings.socketio, recovery_window_ms=0)
        )
    store = MemoryStore(clock)
    rooms = Rooms(store, settings.rooms, clock, node_id=lambda: "n1")
    adapter = ClusterAdapter("n1", lambda channel, data: None, clock=clock)
    realtime = build_realtime(settings, clock, rooms, adapter=adapter)
    factory = EngineWebSocketFactory(realtime.engine_server)

    def connect() -> tuple[Any, _Transport, str]:
        protocol = factory.buildProtocol(None)
        transport = _Transport()
        protocol.makeConnection(transport)
        protocol.dataReceived(UPGRADE)
        transport.clear()
        protocol.dataReceived(client_frame("40"))
        clock.advance(0)
        socket_id = json.loads(server_texts(transport.value())[-1][2:])["sid"]
        transport.clear()
        return protocol, transport, socket_id

    built: list[Pair] = []
    for k in range(pairs):
        room = "r%05d" % k
        ensureDeferred(rooms.create(room))
        clock.advance(0)
        a, ta, sid_a = connect()
        b, tb, sid_b = connect()
        for protocol in (a, b):
            protocol.dataReceived(client_frame('42["join",{"roomId":"%s"}]' % room))
            clock.advance(0)
        ta.clear()
        tb.clear()
        frame_a = client_frame(candidate_event(sid_b, k))
        frame_b = client_frame(candidate_event(sid_a, k + 1))
        built.append((a, ta, frame_a, b, tb, frame_b))
    a, ta, frame_a, b, tb, frame_b = built[0]
    a.dataReceived(frame_a)
    relayed = server_texts(tb.value())
    if len(relayed) != 1 or not relayed[0].startswith('42["ice-candidate"'):
        raise SystemExit("the relay did not deliver: %r" % (relayed,))
    for pair in built:
        pair[1].clear()
        pair[4].clear()
    return built


def relay(built: list[Pair], messages: int) -> float:
    """Relay about C{messages} messages; CPU seconds per relayed message."""
    gc.collect()
    tune_garbage_collector()  # as the server runs
    rounds = max(1, messages // (2 * len(built)))
    started = time.process_time()
    for n in range(rounds):
        for a, _, frame_a, b, _, frame_b in built:
            a.dataReceived(frame_a)
            b.dataReceived(frame_b)
        if n % CLEAR_EVERY == 0:
            for pair in built:
                pair[1].clear()
                pair[4].clear()
    return (time.process_time() - started) / (rounds * 2 * len(built))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--no-recovery", action="store_true", help="connection state recovery off")
    options = parser.parse_args()
    built = build(options.pairs, recovery=not options.no_recovery)
    seconds = relay(built, options.messages)
    print("%.3f us CPU per relayed message" % (seconds * 1e6))


if __name__ == "__main__":
    main()
