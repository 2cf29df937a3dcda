"""Memory per idle joined WebSocket connection, measured in process.

Not a benchmark: nothing is timed, and the machine's load does not change
the figures. The real service tree (store on a private redis-server, the
cluster adapter, Engine.IO, Socket.IO, signaling, the HTTP site) runs in
this process under C{tracemalloc}; a client process (this file with
C{--client}) opens idle WebSocket connections over loopback as the
load generator's C{conns} point does (bench/loadgen/loadgen.js): per pair a
room is created (C{POST /api/create_room}), the first client connects
(Engine.IO open, Socket.IO CONNECT) and joins, then the second, which makes
the first receive C{ready}. Pings are answered.

Phases: a warm-up of a tenth of the pairs (opened, then closed), a baseline,
then C{--conns} connections held; at each step the garbage collector runs
and the traced memory is read. Printed: bytes per connection from
C{tracemalloc.get_traced_memory} (the marginal cost), the largest growths
by line and by traceback (C{Snapshot.compare_to}), and the growth of
C{gc.get_objects()} counts by type, per connection.

Note on attribution: CPython keeps free lists of dicts, lists, tuples and
other small objects; an object taken from one keeps the trace of the
allocation that first made its memory. So a line that made a short-lived
dict (Twisted's C{callWithContext} copies one per read) may be charged
with a connection's dicts made elsewhere. The totals are exact; by-line
figures are hints, to be checked against the type counts.

    .venv/bin/python bench/conn_memory.py --conns 2000
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import os
import selectors
import socket
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any, cast

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


# ---------------------------------------------------------------- the client process


def _frame(text: str) -> bytes:
    """A final, masked client text frame."""
    payload = text.encode("utf-8")
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        head = bytes((0x81, 0x80 | size))
    else:
        head = bytes((0x81, 0x80 | 126)) + size.to_bytes(2, "big")
    body = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    return head + mask + body


class _Client:
    """One idle WebSocket client: open, CONNECT, join, answer pings."""

    def __init__(self, port: int, room: str, on_event: Any) -> None:
        self.room = room
        self.on_event = on_event
        self.sock = socket.create_connection((HOST, port))
        self.sock.setblocking(False)
        self.buffer = b""
        self.upgraded = False
        self.out = b""
        key = base64.b64encode(os.urandom(16)).decode()
        self.send_raw(
            (
                f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
                f"Host: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def send_raw(self, data: bytes) -> None:
        self.out += data
        self.flush()

    def flush(self) -> None:
        while self.out:
            try:
                sent = self.sock.send(self.out)
            except BlockingIOError:
                return
            self.out = self.out[sent:]

    def readable(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return True
        except ConnectionError:
            data = b""
        if not data:
            return False
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return True
            if not self.buffer.startswith(b"HTTP/1.1 101"):
                raise RuntimeError("upgrade refused: %r" % self.buffer[:200])
            self.buffer = self.buffer[end + 4 :]
            self.upgraded = True
        while len(self.buffer) >= 2:
            size = self.buffer[1] & 0x7F
            start = 2
            if size == 126:
                if len(self.buffer) < 4:
                    break
                size = int.from_bytes(self.buffer[2:4], "big")
                start = 4
            elif size == 127:
                if len(self.buffer) < 10:
                    break
                size = int.from_bytes(self.buffer[2:10], "big")
                start = 10
            if len(self.buffer) < start + size:
                break
            opcode = self.buffer[0] & 0x0F
            payload = self.buffer[start : start + size]
            self.buffer = self.buffer[start + size :]
            if opcode == 8:
                return False
            if opcode == 1:
                self.packet(payload.decode("utf-8"))
        return True

    def packet(self, text: str) -> None:
        if text.startswith("0"):
            self.send_raw(_frame("40"))
        elif text == "2":
            self.send_raw(_frame("3"))
        elif text.startswith("40"):
            self.send_raw(_frame('42["join",{"roomId":%s}]' % json.dumps(self.room)))
        elif text.startswith("42"):
            event = json.loads(text[2:])
            self.on_event(self, event[0], event[1] if len(event) > 1 else None)
        elif text.startswith("44"):
            raise RuntimeError("connect refused: " + text)


def _create_rooms(port: int, rooms: list[str]) -> None:
    import http.client

    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    for room in rooms:
        body = json.dumps({"roomId": room})
        connection.request(
            "POST", "/api/create_room", body, {"Content-Type": "application/json"}
        )
        answer = connection.getresponse()
        text = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"create_room {room}: {answer.status} {text[:200]!r}")
    connection.close()


def client_main(port: int) -> None:
    """Read commands on stdin: C{open <first> <pairs>}, C{close}, C{quit};
    answer C{ok <clients>} once done."""
    selector = selectors.DefaultSelector()
    clients: list[_Client] = []
    tag = os.urandom(3).hex()
    stdin = sys.stdin.fileno()
    selector.register(stdin, selectors.EVENT_READ, None)
    pending: list[tuple[str, int]] = []  # rooms still to set up
    in_flight = 0
    waiting_ready: dict[str, _Client] = {}
    done_pairs = 0
    wanted = 0
    concurrency = 50
    closing = 0

    def on_event(client: _Client, event: str, data: Any) -> None:
        nonlocal in_flight, done_pairs
        if event == "joinResponse":
            if not data or data.get("success") is not True:
                raise RuntimeError("join failed: %r" % (data,))
            if client.room not in waiting_ready:
                waiting_ready[client.room] = client
                second = _Client(port, client.room, on_event)
                clients.append(second)
                selector.register(second.sock, selectors.EVENT_READ, second)
        elif event == "ready":
            waiting_ready.pop(client.room, None)
            in_flight -= 1
            done_pairs += 1
            start_more()

    def start_more() -> None:
        nonlocal in_flight
        while pending and in_flight < concurrency:
            room, _ = pending.pop()
            in_flight += 1
            first = _Client(port, room, on_event)
            clients.append(first)
            selector.register(first.sock, selectors.EVENT_READ, first)

    while True:
        for key, _ in selector.select(timeout=1.0):
            if key.data is None:
                line = sys.stdin.readline().split()
                if not line or line[0] == "quit":
                    return
                if line[0] == "open":
                    first, pairs = int(line[1]), int(line[2])
                    rooms = [f"mem-{tag}-{i}" for i in range(first, first + pairs)]
                    _create_rooms(port, rooms)
                    pending = [(room, 0) for room in reversed(rooms)]
                    done_pairs = 0
                    wanted = pairs
                    start_more()
                elif line[0] == "close":
                    # A close frame without a code, as socket.io-client's
                    # close(): the client leaves on purpose, so its socket
                    # ends at once instead of waiting to be recovered.
                    closing = len(clients)
                    for client in clients:
                        client.send_raw(bytes((0x88, 0x80)) + os.urandom(4))
                continue
            client = key.data
            if not client.readable():
                selector.unregister(client.sock)
                client.sock.close()
                if not closing:
                    raise RuntimeError("server closed a connection")
                closing -= 1
                if not closing:
                    clients.clear()
                    print("ok 0", flush=True)
                continue
            if wanted and done_pairs == wanted:
                wanted = 0
                print("ok %d" % len(clients), flush=True)


# ---------------------------------------------------------------- the server side


def _settings(redis_url: str) -> Any:
    from privydrop.settings.sources import settings_from_options

    variables = {
        "NODE_ENV": "production",
        "REDIS_URL": redis_url,
        "DISABLE_JOIN_RATE_LIMIT": "1",
        "API_RATE_LIMIT": "0",
        "ENGINE_MAX_SESSIONS_PER_IP": "1000000",
        "ENGINE_MAX_PENDING_SESSIONS_PER_IP": "1000000",
        "CORS_ORIGIN": "http://127.0.0.1",
    }
    return settings_from_options(
        {"listen": f"tcp:0:interface={HOST}"}, variables, cwd=str(Path(__file__).parent)
    )


def _type_counts() -> Counter[str]:
    return Counter(type(o).__qualname__ for o in gc.get_objects())


def _sizes_by_type() -> Counter[str]:
    """Bytes by type of every gc-tracked object and what it refers to
    directly (strings, numbers and untracked dicts and tuples too)."""
    seen: set[int] = set()
    sizes: Counter[str] = Counter()

    def count(o: Any) -> None:
        if id(o) in seen:
            return
        seen.add(id(o))
        sizes[type(o).__qualname__] += sys.getsizeof(o)

    for o in gc.get_objects():
        count(o)
        for r in gc.get_referents(o):
            if not gc.is_tracked(r):
                count(r)
        if type(o) is dict:
            for k in o:
                if not gc.is_tracked(k):
                    count(k)
    return sizes


def _layout(protocol: Any) -> None:
    """The attributes one open connection's objects keep, with sizes."""

    def show(title: str, o: Any) -> None:
        if o is None:
            return
        d = getattr(o, "__dict__", None)
        slots = [n for c in type(o).__mro__ for n in getattr(c, "__slots__", ())]
        print(f"\n-- {title}: {type(o).__qualname__} {sys.getsizeof(o)} B", end="")
        if d is not None:
            print(f", dict {sys.getsizeof(d)} B, {len(d)} names")
            for k, v in d.items():
                print(f"     {k} = {type(v).__qualname__} {sys.getsizeof(v)} B")
        else:
            print(f", slots {slots}")

    show("protocol", protocol)
    show("transport", protocol.transport)
    session = protocol._session
    show("session", session)
    show("handshake", session.handshake)
    client = session._application._clients.get(session.sid)
    show("client", client)
    for socket in client.sockets.values():
        show("socket", socket)


def _print_top(title: str, stats: list[Any], per: int, limit: int) -> None:
    print(f"\n== {title} (bytes per connection, largest first)")
    for stat in stats[:limit]:
        if stat.size_diff <= 0:
            continue
        print(f"{stat.size_diff / per:8.1f} B {stat.count_diff / per:6.2f} blocks  ", end="")
        lines = stat.traceback.format()
        if len(stat.traceback) == 1:
            print(lines[-1].strip())
        else:
            print()
            for line in lines:
                print("      " + line)


async def _measure(reactor: Any, options: argparse.Namespace) -> None:
    from twisted.internet import protocol
    from twisted.internet.defer import Deferred

    from tests.interop.service_tree import start_tree  # the interop tests' starter
    from tests.redis_server import RedisServer

    import tempfile

    workdir = tempfile.TemporaryDirectory(prefix="conn-memory-")
    redis = RedisServer(Path(workdir.name))
    redis.start()
    try:
        tree = await start_tree(_settings(f"redis://{HOST}:{redis.port}/0"), reactor)

        class Lines(protocol.ProcessProtocol):
            def __init__(self) -> None:
                self.waiting: Deferred[str] | None = None
                self.buffer = b""

            def outReceived(self, data: bytes) -> None:
                self.buffer += data
                while b"\n" in self.buffer:
                    line, self.buffer = self.buffer.split(b"\n", 1)
                    waiting, self.waiting = self.waiting, None
                    if waiting is not None:
                        waiting.callback(line.decode())

            def errReceived(self, data: bytes) -> None:
                sys.stderr.write(data.decode(errors="replace"))

            def command(self, text: str) -> Deferred[str]:
                self.waiting = Deferred()
                assert self.transport is not None
                self.transport.write(text.encode() + b"\n")
                return self.waiting

        lines = Lines()
        env = dict(os.environ, PYTHONPATH=str(REPO))
        reactor.spawnProcess(
            lines,
            sys.executable,
            [sys.executable, __file__, "--client", str(tree.port)],
            env=env,
            childFDs={0: "w", 1: "r", 2: "r"},
        )
        pairs = options.conns // 2
        warm = max(50, pairs // 10)
        await lines.command(f"open 0 {warm}")
        await lines.command("close")
        await _settle(reactor, tree)
        gc.collect()
        base_traced = tracemalloc.get_traced_memory()[0]
        base_snapshot = tracemalloc.take_snapshot()
        # A snapshot holds a tuple per trace: both counts include the first one.
        base_types = _type_counts()
        base_sizes = _sizes_by_type() if options.sizes else Counter()
        answer = await lines.command(f"open {warm} {pairs}")
        held = int(answer.split()[1])
        await _sleep(reactor, 0.5)
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0]
        types = _type_counts()
        sizes = _sizes_by_type() if options.sizes else Counter()
        snapshot = tracemalloc.take_snapshot()
        connections = tree.realtime.sio_server.connection_count()
        print(f"connections held: {held} (server: {connections})")
        print(f"traced per connection: {(traced - base_traced) / held:.0f} B")
        filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
        by_line = snapshot.filter_traces(filters).compare_to(
            base_snapshot.filter_traces(filters), "lineno"
        )
        _print_top("by line", by_line, held, options.top)
        if options.tracebacks:
            by_tb = snapshot.filter_traces(filters).compare_to(
                base_snapshot.filter_traces(filters), "traceback"
            )
            _print_top("by traceback", by_tb, held, options.tracebacks)
        if options.layout:
            from privydrop.engineio.websocket import EngineWebSocketProtocol

            for o in gc.get_objects():
                if isinstance(o, EngineWebSocketProtocol) and o._session is not None:
                    _layout(o)
                    break
        if options.sizes:
            print("\n== bytes per connection by type (objects and their direct referents)")
            for name, size in (sizes - base_sizes).most_common(options.top):
                print(f"{size / held:8.1f} {name}")
        print("\n== gc-tracked objects per connection, by type")
        growth = types - base_types
        for name, count in growth.most_common(options.top):
            print(f"{count / held:8.2f} {name}")
        await lines.command("close")
        lines.transport.write(b"quit\n")  # type: ignore[union-attr]
        await _settle(reactor, tree)
        await tree.stop()
    finally:
        redis.kill()
        workdir.cleanup()


async def _sleep(reactor: Any, seconds: float) -> None:
    from twisted.internet.task import deferLater

    await deferLater(reactor, seconds, lambda: None)


async def _settle(reactor: Any, tree: Any) -> None:
    """Wait until the server has ended every connection and its clean-up."""
    for _ in range(200):
        await _sleep(reactor, 0.05)
        if not tree.realtime.sio_server.connection_count():
            break
    await tree.realtime.signaling.wait_idle()
    await _sleep(reactor, 0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--conns", type=int, default=2000, help="connections held (even)")
    parser.add_argument("--top", type=int, default=25, help="lines and types shown")
    parser.add_argument("--tracebacks", type=int, default=0, help="tracebacks shown")
    parser.add_argument("--sizes", action="store_true", help="bytes by type (slow)")
    parser.add_argument("--layout", action="store_true", help="one connection's attributes")
    parser.add_argument("--frames", type=int, default=12, help="frames kept per trace")
    options = parser.parse_args()
    if options.client:
        client_main(options.client)
        return
    sys.path.insert(0, str(REPO))
    from twisted.internet import reactor as _reactor
    from twisted.internet.defer import Deferred
    from twisted.logger import ILogObserver, globalLogBeginner

    reactor: Any = _reactor

    # Log events go nowhere (twistd would write them out; kept, they would
    # pile up in the start-up buffer and be counted).
    discard = cast(ILogObserver, lambda event: None)
    globalLogBeginner.beginLoggingTo([discard], redirectStandardIO=False)
    tracemalloc.start(options.frames)
    failures: list[Any] = []

    def run() -> None:
        d = Deferred.fromCoroutine(_measure(reactor, options))
        d.addErrback(failures.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(run)
    reactor.run()
    if failures:
        sys.stderr.write(failures[0].getTraceback())
        sys.exit(1)


if __name__ == "__main__":
    main()
