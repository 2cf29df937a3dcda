"""Connection state recovery in the Socket.IO server, on a fake clock with
fake Engine.IO connections (the official clients are driven in
tests/interop/test_recovery_js.py)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from privydrop.engineio.interface import CloseKind
from privydrop.settings import SocketIOSettings
from privydrop.socketio.recovery import LogStatus, PacketLog, RemoteClaim, RemoteLog
from privydrop.socketio.server import SocketIOServer
from privydrop.socketio.sockets import Socket, SocketState
from tests.unit.test_socketio_server import FakeConnection, connect_engine

WINDOW_MS = 10_000


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(clock: Clock) -> SocketIOServer:
    return SocketIOServer(
        clock, SocketIOSettings(recovery_window_ms=WINDOW_MS, recovery_max_packets=8)
    )


class Lifecycle:
    """Records the namespace's disconnect handler calls."""

    def __init__(self, server: SocketIOServer) -> None:
        self.disconnects: list[tuple[str, str]] = []
        server.of("/").on_disconnect(lambda socket, reason: self.disconnects.append((socket.id, reason)))


def connect(
    server: SocketIOServer, clock: Clock, sid: str, auth: dict[str, Any] | None = None
) -> tuple[FakeConnection, dict[str, Any]]:
    """Open a connection, send CONNECT, return it and the CONNECT answer."""
    conn = connect_engine(server, sid)
    conn.receive("0" + (orjson.dumps(auth).decode() if auth is not None else ""))
    answer = conn.take_text()[0]
    assert answer.startswith("0{"), answer
    return conn, orjson.loads(answer[1:])


def events(conn: FakeConnection, clock: Clock) -> list[list[Any]]:
    """Events sent so far (after the turn that releases held messages)."""
    clock.advance(0)
    return [orjson.loads(m[1:]) for m in conn.take_text() if m.startswith("2")]


def offset_of(event: list[Any]) -> str:
    assert isinstance(event[-1], str)
    return event[-1]


def socket_of(server: SocketIOServer, socket_id: str) -> Socket:
    socket = server.of("/")._local_socket(socket_id)  # type: ignore[arg-type]
    assert socket is not None
    return socket


def test_connect_answer_carries_a_private_session_id(server: SocketIOServer, clock: Clock) -> None:
    """Without a pid in the CONNECT answer socket.io-client never tries to recover."""
    conn, answer = connect(server, clock, "e1")
    assert set(answer) == {"sid", "pid"}
    assert answer["pid"] != answer["sid"] and len(answer["pid"]) >= 32


def test_events_carry_offsets_but_acks_and_ack_requests_do_not(
    server: SocketIOServer, clock: Clock
) -> None:
    """Offsets go where the reference server puts them; an ack packet or an
    event awaiting an ack carries none (the client would take it for data)."""
    ns = server.of("/")
    ns.on("ping-me", lambda socket, *args: "pong")
    conn, answer = connect(server, clock, "e1")
    socket = socket_of(server, answer["sid"])
    socket.join("r")
    socket.emit("direct", 1)
    ns.to("r").emit("room", 2)
    ns.emit_to_socket(socket.id, "by-id", 3)
    ns.emit("all", 4)
    socket.emit("with-ack", 5, callback=lambda *a: None)
    conn.receive('21["ping-me"]')
    clock.advance(0)
    sent = conn.take_text()
    offsets = [orjson.loads(m[1:])[-1] for m in sent[:4]]
    assert [orjson.loads(m[1:])[:2] for m in sent[:4]] == [
        ["direct", 1], ["room", 2], ["by-id", 3], ["all", 4]
    ]
    assert all(isinstance(o, str) for o in offsets) and len(set(offsets)) == 4
    assert sent[4] == '20["with-ack",5]'
    assert sent[5] == '31["pong"]'


def test_recovery_off_changes_nothing(clock: Clock) -> None:
    server = SocketIOServer(clock, SocketIOSettings(recovery_window_ms=0))
    conn, answer = connect(server, clock, "e1")
    assert set(answer) == {"sid"}
    socket_of(server, answer["sid"]).emit("direct", 1)
    assert events(conn, clock) == [["direct", 1]]
    conn.close("ping timeout", CloseKind.LOST)
    assert server.of("/")._local_socket(answer["sid"]) is None


def test_lost_connection_detaches_and_recovery_replays_what_was_missed(
    server: SocketIOServer, clock: Clock
) -> None:
    """Same id, same rooms, recovered, and every event after the client's
    offset once and in order, including one written to the dying connection."""
    lifecycle = Lifecycle(server)
    ns = server.of("/")
    conn, answer = connect(server, clock, "e1")
    socket = socket_of(server, answer["sid"])
    socket.join("room")
    ns.to("room").emit("candidate", 1)
    (first,) = events(conn, clock)
    ns.to("room").emit("candidate", 2)  # written, but the client never read it
    conn.close("ping timeout", CloseKind.LOST)
    assert socket.state is SocketState.DETACHED
    assert not socket.connected and ns.get_socket(socket.id) is None
    ns.to("room").emit("candidate", 3)
    ns.emit_to_socket(socket.id, "candidate", 4, only_if_in_room="room")
    assert lifecycle.disconnects == []
    assert server.detached_count() == 1

    new, again = connect(server, clock, "e2", {"pid": answer["pid"], "offset": offset_of(first)})
    assert again == answer
    assert socket_of(server, answer["sid"]) is socket
    assert socket.recovered and socket.connected and socket.rooms == {"room"}
    assert [e[:2] for e in events(new, clock)] == [
        ["candidate", 2], ["candidate", 3], ["candidate", 4]
    ]
    ns.to("room").emit("candidate", 5)
    assert [e[:2] for e in events(new, clock)] == [["candidate", 5]]
    clock.advance(WINDOW_MS / 1000.0 + 1)
    assert lifecycle.disconnects == []
    assert server.detached_count() == 0


def test_window_end_leaves_once_with_the_original_reason(
    server: SocketIOServer, clock: Clock
) -> None:
    lifecycle = Lifecycle(server)
    conn, answer = connect(server, clock, "e1")
    conn.close("ping timeout", CloseKind.LOST)
    clock.advance(WINDOW_MS / 1000.0 - 0.001)
    assert lifecycle.disconnects == []
    clock.advance(0.001)
    assert lifecycle.disconnects == [(answer["sid"], "ping timeout")]
    assert server.of("/")._local_socket(answer["sid"]) is None
    clock.advance(WINDOW_MS)
    assert len(lifecycle.disconnects) == 1


@pytest.mark.parametrize("kind", [CloseKind.CLIENT, CloseKind.SERVER])
def test_deliberate_close_leaves_at_once(
    server: SocketIOServer, clock: Clock, kind: CloseKind
) -> None:
    lifecycle = Lifecycle(server)
    conn, answer = connect(server, clock, "e1")
    conn.close("transport close", kind)
    assert lifecycle.disconnects == [(answer["sid"], "transport close")]
    new, fresh = connect(server, clock, "e2", {"pid": answer["pid"], "offset": "x"})
    assert fresh["sid"] != answer["sid"]


def test_socketio_disconnect_leaves_at_once_and_its_pid_is_dead(
    server: SocketIOServer, clock: Clock
) -> None:
    lifecycle = Lifecycle(server)
    conn, answer = connect(server, clock, "e1")
    socket_of(server, answer["sid"]).emit("direct", 1)
    (first,) = events(conn, clock)
    conn.receive("1")
    assert lifecycle.disconnects == [(answer["sid"], "client namespace disconnect")]
    new, fresh = connect(server, clock, "e2", {"pid": answer["pid"], "offset": offset_of(first)})
    assert fresh["sid"] != answer["sid"]


def test_shutdown_detaches(server: SocketIOServer, clock: Clock) -> None:
    """A server going away leaves sockets recoverable (by another process)."""
    lifecycle = Lifecycle(server)
    conn, answer = connect(server, clock, "e1")
    conn.close("server shutting down", CloseKind.SHUTDOWN)
    assert lifecycle.disconnects == []
    assert server.end_all_detached() == 1
    assert lifecycle.disconnects == [(answer["sid"], "server shutting down")]


@pytest.mark.parametrize(
    "auth",
    [
        {"pid": "unknown", "offset": "x"},
        {"pid": None, "offset": "x"},
        {"pid": 5},
    ],
)
def test_unknown_or_malformed_pid_gets_a_new_socket(
    server: SocketIOServer, clock: Clock, auth: dict[str, Any]
) -> None:
    lifecycle = Lifecycle(server)
    conn, answer = connect(server, clock, "e1")
    conn.close("ping timeout", CloseKind.LOST)
    new, fresh = connect(server, clock, "e2", auth)
    assert fresh["sid"] != answer["sid"]
    # The detached socket still waits for its own client.
    assert lifecycle.disconnects == []
    assert server.detached_count() == 1


@pytest.mark.parametrize("offset", [None, "never-issued", "x" * 100])
def test_known_pid_with_unknown_offset_ends_the_old_socket_now(
    server: SocketIOServer, clock: Clock, offset: str | None
) -> None:
    """The client is back under a new socket: its old one leaves at once
    rather than at the window's end."""
    lifecycle = Lifecycle(server)
    conn, answer = connect(server, clock, "e1")
    conn.close("ping timeout", CloseKind.LOST)
    auth: dict[str, Any] = {"pid": answer["pid"]}
    if offset is not None:
        auth["offset"] = offset
    new, fresh = connect(server, clock, "e2", auth)
    assert fresh["sid"] != answer["sid"]
    assert lifecycle.disconnects == [(answer["sid"], "recovery failed")]


def test_offset_pushed_out_of_the_log_cannot_be_recovered(
    server: SocketIOServer, clock: Clock
) -> None:
    """The log is capped (recovery_max_packets = 8 here): what the client
    missed beyond it is unknown, so it gets a new socket."""
    conn, answer = connect(server, clock, "e1")
    socket = socket_of(server, answer["sid"])
    socket.emit("e", 0)
    (first,) = events(conn, clock)
    conn.close("ping timeout", CloseKind.LOST)
    for n in range(1, 9):
        server.of("/").emit_to_socket(socket.id, "e", n)
    new, fresh = connect(server, clock, "e2", {"pid": answer["pid"], "offset": offset_of(first)})
    assert fresh["sid"] != answer["sid"]


def test_takeover_of_a_socket_the_server_thinks_connected(
    server: SocketIOServer, clock: Clock
) -> None:
    """The client noticed the loss first: its new connection takes the
    socket over, the old one is closed, and nobody is told anything."""
    lifecycle = Lifecycle(server)
    ns = server.of("/")
    old, answer = connect(server, clock, "e1")
    socket = socket_of(server, answer["sid"])
    socket.join("room")
    ns.to("room").emit("candidate", 1)
    (first,) = events(old, clock)
    ns.to("room").emit("candidate", 2)
    clock.advance(0)
    old.take()  # sent to a connection that no longer reaches anyone

    new, again = connect(server, clock, "e2", {"pid": answer["pid"], "offset": offset_of(first)})
    assert again == answer
    assert old.closed == "taken over"
    assert [e[:2] for e in events(new, clock)] == [["candidate", 2]]
    ns.to("room").emit("candidate", 3)
    assert [e[:2] for e in events(new, clock)] == [["candidate", 3]]
    assert events(old, clock) == []
    assert lifecycle.disconnects == []
    assert socket.connected and server.connection_count() == 1


def test_events_from_a_recovered_socket_reach_handlers(
    server: SocketIOServer, clock: Clock
) -> None:
    seen: list[tuple[str, Any]] = []
    server.of("/").on("hello", lambda socket, arg: seen.append((socket.id, arg)))
    conn, answer = connect(server, clock, "e1")
    socket_of(server, answer["sid"]).emit("direct", 1)
    (first,) = events(conn, clock)
    conn.close("transport error", CloseKind.LOST)
    new, _ = connect(server, clock, "e2", {"pid": answer["pid"], "offset": offset_of(first)})
    new.receive('2["hello","again"]')
    assert seen == [(answer["sid"], "again")]


def test_connect_handlers_do_not_run_again_on_recovery(
    server: SocketIOServer, clock: Clock
) -> None:
    connects: list[str] = []
    server.of("/").on_connect(lambda socket, auth: connects.append(socket.id))
    conn, answer = connect(server, clock, "e1")
    socket_of(server, answer["sid"]).emit("direct", 1)
    (first,) = events(conn, clock)
    conn.close("ping timeout", CloseKind.LOST)
    connect(server, clock, "e2", {"pid": answer["pid"], "offset": offset_of(first)})
    assert connects == [answer["sid"]]


def test_server_disconnect_of_a_detached_socket_ends_it(
    server: SocketIOServer, clock: Clock
) -> None:
    lifecycle = Lifecycle(server)
    conn, answer = connect(server, clock, "e1")
    conn.close("ping timeout", CloseKind.LOST)
    socket_of(server, answer["sid"]).disconnect()
    assert lifecycle.disconnects == [(answer["sid"], "server namespace disconnect")]
    clock.advance(WINDOW_MS)
    assert len(lifecycle.disconnects) == 1


def test_packet_log_caps_count_and_bytes() -> None:
    log = PacketLog(max_packets=3, max_bytes=50)
    for n in range(5):
        log.add(['2["e",%d,"o%d"]' % (n, n)])  # 13 characters each
    assert len(log) == 3 and log.size == 39
    assert log.after("o1") is None
    assert log.after("o2") == ['2["e",3,"o3"]', '2["e",4,"o4"]']
    assert log.after("o4") == []
    log.add(["x" * 30])
    assert len(log) == 2 and log.size == 43
    log.add(["x" * 51])
    assert len(log) == 0 and log.size == 0


def test_packet_log_replays_binary_events_whole() -> None:
    log = PacketLog(max_packets=10, max_bytes=1000)
    log.add(['2["a","o1"]'])
    log.add(['51-["b",{"_placeholder":true,"num":0},"o2"]', b"\x01\x02"])
    log.add(['2["c","o3"]'])
    assert log.after("o1") == [
        '51-["b",{"_placeholder":true,"num":0},"o2"]', b"\x01\x02", '2["c","o3"]'
    ]
    assert log.after("o2") == ['2["c","o3"]']


def test_packet_log_keeps_events_whole_across_a_handover_and_the_caps() -> None:
    """One-message and binary events come back as the same messages, in
    order, after events handed over from another process were put first;
    the byte count follows what is kept as events are pushed out."""
    log = PacketLog(max_packets=4, max_bytes=1000)
    log.add(['2["late","o3"]'])
    log.add(['51-["bin",{"_placeholder":true,"num":0},"o4"]', b"\x01\x02\x03"])
    log.put_first([['2["early","o1"]'], ['2["early","o2"]']])
    assert len(log) == 4
    assert log.size == sum(len(m) for e in (
        ['2["early","o1"]'], ['2["early","o2"]'], ['2["late","o3"]'],
        ['51-["bin",{"_placeholder":true,"num":0},"o4"]', b"\x01\x02\x03"],
    ) for m in e)
    events = log.events_after("o1")
    assert events is not None
    assert [list(event) for event in events] == [
        ['2["early","o2"]'],
        ['2["late","o3"]'],
        ['51-["bin",{"_placeholder":true,"num":0},"o4"]', b"\x01\x02\x03"],
    ]
    log.add(['2["next","o5"]'])  # pushes o1 out
    assert log.after("o1") is None
    assert log.after("o3") == [
        '51-["bin",{"_placeholder":true,"num":0},"o4"]', b"\x01\x02\x03", '2["next","o5"]'
    ]
    assert log.size == sum(
        len(m) for m in ['2["early","o2"]', '2["late","o3"]', '2["next","o5"]']
    ) + len('51-["bin",{"_placeholder":true,"num":0},"o4"]') + 3


def test_packet_log_full_by_count_replays_in_order_after_wrapping() -> None:
    """Once full by count, text events take the oldest one's place; reads,
    byte-cap push-outs and events with attachments still see them oldest
    first, each once."""
    log = PacketLog(max_packets=4, max_bytes=1000)
    for n in range(11):
        log.add(['2["e","o%d"]' % n])
    assert len(log) == 4 and log.size == 3 * 11 + 12
    assert log.after("o6") is None
    assert log.after("o7") == ['2["e","o8"]', '2["e","o9"]', '2["e","o10"]']
    for n in range(11, 14):
        log.add(['2["e","o%d"]' % n])
    binary = ['51-["b",{"_placeholder":true,"num":0},"o14"]', b"\x01"]
    log.add(binary)
    assert log.after("o10") is None
    assert log.after("o11") == ['2["e","o12"]', '2["e","o13"]', *binary]
    for n in range(15, 18):
        log.add(['2["e","o%d"]' % n])
    assert log.after("o14") == ['2["e","o15"]', '2["e","o16"]', '2["e","o17"]']
    assert log.after("o15") == ['2["e","o16"]', '2["e","o17"]']
    log.add(['2["e","o18"]'])  # pushes the binary event out
    assert log.after("o14") is None
    assert log.after("o15") == ['2["e","o16"]', '2["e","o17"]', '2["e","o18"]']
    assert log.size == 4 * 12
    big = '2["big","%s","o19"]' % ("x" * 950)
    log.add([big])  # over the byte cap: two go
    assert log.after("o17") == ['2["e","o18"]', big]
    assert len(log) == 3 and log.size == 2 * 12 + len(big)


# -- the server's side of recovery across processes ------------------------------------


class HeldClaims:
    """A recovery backend whose claims the test answers, to see what the
    server asks of it and when (the cluster's own backend is driven by
    tests/integration/test_cluster_recovery.py with real processes)."""

    def __init__(self, log: RemoteLog = RemoteLog(LogStatus.MISSING)) -> None:
        self.claims: list[tuple[str, Deferred[RemoteClaim | None]]] = []
        self.log = log

    def claim(self, namespace: str, pid: str) -> Deferred[RemoteClaim | None]:
        d: Deferred[RemoteClaim | None] = Deferred()
        self.claims.append((pid, d))
        return d

    def fetch_log(
        self, namespace: str, claim: RemoteClaim, pid: str, offset: str
    ) -> Deferred[RemoteLog]:
        return succeed(self.log)

    def detached(self, socket: Socket) -> None:
        pass

    def resumed(self, socket: Socket) -> None:
        pass

    def window_ended(self, socket: Socket) -> Deferred[bool]:
        return succeed(True)


def test_a_socket_ended_here_for_an_unknown_offset_is_not_claimed_elsewhere(
    server: SocketIOServer, clock: Clock
) -> None:
    """This process held the socket and ended it (the offset is not in its
    log): the client gets a new socket at once, and the store is not asked
    to recover the socket that just ended."""
    backend = HeldClaims()
    server.set_recovery_backend(backend)
    conn, answer = connect(server, clock, "e1")
    conn.close("ping timeout", CloseKind.LOST)
    new, fresh = connect(server, clock, "e2", {"pid": answer["pid"], "offset": "never-issued"})
    assert fresh["sid"] != answer["sid"]
    assert backend.claims == []


def test_a_second_connect_while_a_remote_recovery_runs_is_refused(
    server: SocketIOServer, clock: Clock
) -> None:
    """While the socket a pid names is being claimed from another process,
    the namespace is being connected: another CONNECT to it is a protocol
    error (as a CONNECT to a connecting namespace), not a second socket
    that the recovery would then overwrite and leave behind."""
    backend = HeldClaims()
    server.set_recovery_backend(backend)
    ns = server.of("/")
    conn = connect_engine(server, "e1")
    conn.receive('0{"pid":"elsewhere.%s","offset":"x"}' % ("ab" * 16))
    assert len(backend.claims) == 1
    conn.receive("0")
    assert conn.closed is not None
    backend.claims[0][1].callback(None)
    clock.advance(WINDOW_MS / 1000 + 1)
    assert list(ns._all) == []


def test_a_socket_claimed_from_elsewhere_with_an_unknown_offset_leaves_and_a_new_one_answers(
    server: SocketIOServer, clock: Clock
) -> None:
    """The process that held it does not know the client's offset: the
    claimed socket leaves (disconnect handlers run, as for a socket whose
    peers must be told) and the client gets a new socket."""
    lifecycle = Lifecycle(server)
    backend = HeldClaims(RemoteLog(LogStatus.OFFSET_UNKNOWN))
    server.set_recovery_backend(backend)
    conn = connect_engine(server, "e1")
    conn.receive('0{"pid":"elsewhere.%s","offset":"x"}' % ("ab" * 16))
    backend.claims[0][1].callback(
        RemoteClaim(socket_id="elsewhere", rooms={"r": {"elsewhere": "n1"}}, old_node="n1")
    )
    answer = orjson.loads(conn.take_text()[0][1:])
    assert answer["sid"] != "elsewhere"
    assert lifecycle.disconnects == [("elsewhere", "recovery failed")]
    assert server.of("/")._local_socket("elsewhere") is None  # type: ignore[arg-type]
