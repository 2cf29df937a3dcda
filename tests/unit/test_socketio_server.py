"""The Socket.IO server over a fake Engine.IO connection and a fake clock.

Each test drives L{SocketIOServer} through its L{EngineApplication} methods
exactly as Engine.IO would, and reads what it sends back.
"""

from __future__ import annotations

from typing import Any, Sequence

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from privydrop.engineio.interface import CloseKind, EngineSid, Handshake, Message
from privydrop.logs.client_text import sid_label
from privydrop.settings import SocketIOSettings
from privydrop.socketio.errors import (
    AckLimitError,
    AckTimeout,
    ConnectionRefused,
    RoomLimitError,
    SocketDisconnected,
)
from privydrop.socketio.server import SocketIOServer
from privydrop.socketio.sockets import Socket


class FakeConnection:
    """An Engine.IO session as the application sees it; records output."""

    def __init__(self, server: SocketIOServer, sid: str) -> None:
        self._server = server
        self.sid = EngineSid(sid)
        self.handshake = Handshake(
            headers={"user-agent": "test"},
            remote_address="127.0.0.1",
            query={"EIO": "4", "transport": "websocket"},
            url="/socket.io/?EIO=4&transport=websocket",
            secure=False,
            issued_ms=0,
        )
        self.transport_name = "websocket"
        self.sent: list[Message] = []
        self.writes = 0
        self.closed: str | None = None
        self.close_kind: CloseKind | None = None

    def send(self, message: Message) -> None:
        self.sent.append(message)
        self.writes += 1

    def send_many(self, messages: Sequence[Message]) -> None:
        self.sent.extend(messages)
        self.writes += 1

    def close(self, reason: str = "forced close", kind: CloseKind = CloseKind.SERVER) -> None:
        """End the session; C{kind} is how (a client leaving, a lost transport, ...)."""
        if self.closed is None:
            self.closed = reason
            self.close_kind = kind
            self._server.on_close(self, reason)

    # test helpers

    def receive(self, *messages: Message) -> None:
        for message in messages:
            self._server.on_message(self, message)

    def take(self) -> list[Message]:
        sent, self.sent = self.sent, []
        return sent

    def take_text(self) -> list[str]:
        """Like take(), for a test that expects text messages only."""
        sent = self.take()
        assert all(isinstance(m, str) for m in sent), sent
        return [m for m in sent if isinstance(m, str)]


def connect_engine(server: SocketIOServer, sid: str = "e1") -> FakeConnection:
    conn = FakeConnection(server, sid)
    server.on_open(conn)
    return conn


def join(server: SocketIOServer, sid: str, namespace: str = "/", auth: str = "") -> tuple[FakeConnection, str]:
    """Open a connection and connect to a namespace; return the socket id."""
    conn = connect_engine(server, sid)
    prefix = "" if namespace == "/" else namespace + ","
    conn.receive("0" + prefix + auth)
    # What follows the CONNECT answer goes out one reactor turn later.
    server._clock.advance(0)  # type: ignore[attr-defined]
    first = conn.take_text()[0]
    assert first.startswith("0" + prefix)
    return conn, orjson.loads(first[1 + len(prefix):])["sid"]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(clock: Clock) -> SocketIOServer:
    return SocketIOServer(clock, SocketIOSettings(connect_timeout_ms=1000, recovery_window_ms=0))


# Connecting


def test_connect_answers_with_socket_id_distinct_from_engine_sid(server: SocketIOServer) -> None:
    """Clients get a socket id; the Engine.IO sid (which grants access to the
    session) is never what others can see."""
    conn, socket_id = join(server, "engine-secret")
    assert socket_id != "engine-secret"
    assert len(socket_id) >= 20
    assert server.of("/").get_socket(socket_id) is not None
    assert server.connection_count() == 1


def test_each_namespace_socket_gets_its_own_id(server: SocketIOServer) -> None:
    """Two namespaces on one connection are two sockets with two ids."""
    server.of("/custom")
    conn, main_id = join(server, "e1")
    conn.receive("0/custom,")
    server._clock.advance(0)  # type: ignore[attr-defined]
    custom_first = conn.take()[0]
    custom_id = orjson.loads(custom_first[len("0/custom,"):])["sid"]
    assert custom_id != main_id


def test_connect_handler_receives_auth_and_handshake(server: SocketIOServer) -> None:
    """Auth tokens and request headers reach the connect handler."""
    seen: list[Any] = []

    @server.of("/").on_connect
    def connected(socket: Socket, auth: Any) -> None:
        seen.append((auth, socket.handshake.headers["user-agent"],
                     socket.handshake.address, socket.handshake.query["EIO"]))

    join(server, "e1", auth='{"token":"123"}')
    assert seen == [({"token": "123"}, "test", "127.0.0.1", "4")]


def test_auth_is_not_kept_for_the_socket_s_life(server: SocketIOServer) -> None:
    """The CONNECT payload goes to the connect handlers and nowhere else: a
    socket does not hold it while it lives (a thousand sockets with a large
    auth each would hold it all in memory)."""
    kept: list[Socket] = []
    server.of("/").on_connect(lambda socket, auth: kept.append(socket))
    join(server, "e1", auth='{"token":"' + "x" * 4000 + '"}')
    assert not hasattr(kept[0].handshake, "auth")
    socket = kept[0]
    held = {name: getattr(socket, name, None) for name in type(socket).__slots__}
    assert "x" * 4000 not in repr(held)


def test_oversize_auth_is_refused_with_connect_error_without_parsing(clock: Clock) -> None:
    """A CONNECT whose payload passes SOCKETIO_MAX_AUTH_BYTES is answered with
    CONNECT_ERROR (socket.io-client reports connect_error and does not retry
    in a loop, as it would after a close), without the payload being parsed:
    even invalid JSON gets that answer. The connection stays usable."""
    server = SocketIOServer(clock, SocketIOSettings(max_auth_bytes=64))
    handled: list[Any] = []
    server.of("/").on_connect(lambda socket, auth: handled.append(auth))
    conn = connect_engine(server)
    with capturedLogs() as events:
        conn.receive('0{"token":"' + "x" * 64 + '"}')
        conn.receive("0{" + "[" * 100)  # not JSON: still a size refusal
    assert conn.take_text() == ['4{"message":"auth payload too large"}'] * 2
    assert conn.closed is None and handled == []
    assert len([e for e in events if e.get("log_level").name == "warn"]) == 1
    # Exactly at the cap is accepted; so is a session-recovery sized auth.
    small = '{"pid":"' + "p" * 20 + '","offset":"' + "o" * 20 + '"}'
    assert len(small) <= 64
    conn.receive("0" + small)
    clock.advance(0)
    assert conn.take_text()[0].startswith('0{"sid":')
    assert handled == [orjson.loads(small)]
    # Namespaced CONNECTs are capped the same way.
    server.of("/custom")
    conn.receive("0/custom," + '{"t":"' + "y" * 80 + '"}')
    assert conn.take_text() == ['4/custom,{"message":"auth payload too large"}']


def test_events_emitted_in_connect_handler_follow_connect_answer(
    server: SocketIOServer, clock: Clock
) -> None:
    """A client must see CONNECT first (an event before it would be lost),
    and in a write of its own (clients reading one message per listener, such
    as the official test-suite, would miss the next one otherwise)."""

    @server.of("/").on_connect
    def connected(socket: Socket, auth: Any) -> None:
        socket.emit("auth", dict(auth))

    conn = connect_engine(server)
    conn.receive('0{"token":"abc"}')
    out = conn.take_text()
    assert len(out) == 1 and out[0].startswith('0{"sid":')
    socket = server.of("/").get_socket(orjson.loads(out[0][1:])["sid"])
    assert socket is not None
    socket.emit("later", 1)  # sent meanwhile: still after "auth"
    clock.advance(0)
    assert conn.take() == ['2["auth",{"token":"abc"}]', '2["later",1]']


def test_unknown_namespace_gets_connect_error(server: SocketIOServer) -> None:
    """A typo in a namespace gives the client an explicit error, not silence."""
    conn = connect_engine(server)
    conn.receive("0/random")
    assert conn.take() == ['4/random,{"message":"Invalid namespace"}']
    assert conn.closed is None


def test_connect_handler_returning_false_refuses(server: SocketIOServer) -> None:
    """A refused client gets CONNECT_ERROR and is never a connected socket."""
    server.of("/").on_connect(lambda socket, auth: False)
    conn = connect_engine(server)
    conn.receive("0")
    assert conn.take() == ['4{"message":"Not authorized"}']
    assert len(server.of("/").sockets) == 0


def test_connection_refused_carries_message_and_data(server: SocketIOServer) -> None:
    """The client's connect_error shows the refusal reason the server chose."""

    def refuse(socket: Socket, auth: Any) -> None:
        socket.join("r")
        raise ConnectionRefused("room full", {"retry": 5})

    server.of("/").on_connect(refuse)
    conn = connect_engine(server)
    conn.receive("0")
    assert conn.take() == ['4{"message":"room full","data":{"retry":5}}']
    assert server.adapter.room_members("/", "r") == frozenset()  # type: ignore[attr-defined]


def test_async_connect_handler_is_awaited(server: SocketIOServer) -> None:
    """Connect handlers may look things up asynchronously before accepting."""
    gate: Deferred[bool] = Deferred()

    async def check(socket: Socket, auth: Any) -> bool:
        return await gate

    server.of("/").on_connect(check)
    conn = connect_engine(server)
    conn.receive("0")
    assert conn.take() == []
    gate.callback(True)
    assert conn.take_text()[0].startswith('0{"sid":')
    assert len(server.of("/").sockets) == 1


def test_client_gone_during_async_connect_handler_leaves_nothing(server: SocketIOServer) -> None:
    """A client that leaves while being authorized doesn't linger as a socket."""
    gate: Deferred[bool] = Deferred()
    disconnects: list[str] = []

    async def check(socket: Socket, auth: Any) -> bool:
        socket.join("room")
        return await gate

    ns = server.of("/")
    ns.on_connect(check)
    ns.on_disconnect(lambda socket, reason: disconnects.append(reason))
    conn = connect_engine(server)
    conn.receive("0")
    server.on_close(conn, "transport close")
    gate.callback(True)
    assert conn.take() == []
    assert len(ns.sockets) == 0
    assert server.adapter.room_members("/", "room") == frozenset()  # type: ignore[attr-defined]
    assert disconnects == []


def test_failing_connect_handler_refuses_and_logs(server: SocketIOServer) -> None:
    """A bug in a connect handler refuses that client without leaking details."""

    def broken(socket: Socket, auth: Any) -> None:
        raise RuntimeError("secret detail")

    server.of("/").on_connect(broken)
    conn = connect_engine(server)
    with capturedLogs() as events:
        conn.receive("0")
    assert conn.take() == ['4{"message":"Server error"}']
    assert any(e.get("log_failure") for e in events)


def test_no_connect_within_timeout_closes_connection(server: SocketIOServer, clock: Clock) -> None:
    """Clients that never join a namespace don't hold server resources."""
    conn = connect_engine(server)
    clock.advance(0.999)
    assert conn.closed is None
    clock.advance(0.002)
    assert conn.closed == "connect timeout"
    assert server.connection_count() == 0


def test_connected_client_is_not_closed_by_connect_timeout(server: SocketIOServer, clock: Clock) -> None:
    """The connect timeout only concerns clients that never connected."""
    conn, _ = join(server, "e1")
    clock.advance(10)
    assert conn.closed is None


def test_refused_client_is_still_closed_by_connect_timeout(server: SocketIOServer, clock: Clock) -> None:
    """Only a successful CONNECT counts; refusals don't keep a connection alive."""
    conn = connect_engine(server)
    conn.receive("0/nope,")
    clock.advance(1.001)
    assert conn.closed == "connect timeout"


# Events and acks


def test_event_reaches_handler_with_all_arguments(server: SocketIOServer) -> None:
    """Every argument the client sent reaches the handler, in order."""
    got: list[Any] = []
    server.of("/").on("message", lambda socket, *args: got.append(args))
    conn, _ = join(server, "e1")
    conn.receive('2["message",1,"2",{"3":[true]}]')
    assert got == [(1, "2", {"3": [True]})]
    assert conn.take() == []


def test_handler_return_value_is_the_ack(server: SocketIOServer) -> None:
    """Clients waiting on an ack get the handler's result: a tuple as several
    arguments, None as no argument."""
    ns = server.of("/")
    ns.on("many", lambda socket, *args: args)
    ns.on("none", lambda socket: None)
    ns.on("one", lambda socket: [1, 2])
    conn, _ = join(server, "e1")
    conn.receive('2456["many",1,"2",{"3":[false]}]', '27["none"]', '28["one"]')
    assert conn.take() == ['3456[1,"2",{"3":[false]}]', "37[]", "38[[1,2]]"]


def test_async_handler_acks_when_done(server: SocketIOServer) -> None:
    """Handlers that await something still answer the ack, once done."""
    gate: Deferred[str] = Deferred()

    async def slow(socket: Socket) -> str:
        return await gate

    server.of("/").on("slow", slow)
    conn, _ = join(server, "e1")
    conn.receive('25["slow"]')
    assert conn.take() == []
    gate.callback("done")
    assert conn.take() == ['35["done"]']


def test_no_ack_when_client_did_not_ask(server: SocketIOServer) -> None:
    """Unrequested acks would confuse the client's ack bookkeeping."""
    server.of("/").on("x", lambda socket: "value")
    conn, _ = join(server, "e1")
    conn.receive('2["x"]')
    assert conn.take() == []


def test_binary_event_reaches_handler_as_bytes_and_echoes_binary(server: SocketIOServer) -> None:
    """Files and binary chunks travel as bytes both ways."""
    ns = server.of("/")
    ns.on("message", lambda socket, *args: socket.emit("message-back", *args))
    ns.on("message-with-ack", lambda socket, *args: args)
    conn, _ = join(server, "e1")
    conn.receive(
        '52-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
        b"\x01\x02\x03",
        b"\x04\x05\x06",
    )
    assert conn.take() == [
        '52-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
        b"\x01\x02\x03",
        b"\x04\x05\x06",
    ]
    conn.receive(
        '52-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
        b"\x01\x02\x03",
        b"\x04\x05\x06",
    )
    assert conn.take() == [
        '62-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
        b"\x01\x02\x03",
        b"\x04\x05\x06",
    ]


def test_server_emit_with_callback_gets_client_ack(server: SocketIOServer) -> None:
    """The server can ask the client to confirm, and gets the client's answer,
    including binary."""
    got: list[Any] = []
    ns = server.of("/")
    conn, socket_id = join(server, "e1")
    socket = ns.get_socket(socket_id)
    assert socket is not None
    socket.emit("ping", 1, callback=lambda *args: got.append(args))
    socket.emit("ping", 2, callback=lambda *args: got.append(args))
    assert conn.take() == ['20["ping",1]', '21["ping",2]']
    conn.receive('31["b"]', '61-0["a",{"_placeholder":true,"num":0}]', b"\x09")
    assert got == [("b",), ("a", b"\x09")]


def test_emit_with_ack_times_out_on_the_clock(server: SocketIOServer, clock: Clock) -> None:
    """A silent client makes emit_with_ack fail after its timeout instead of
    waiting forever."""
    conn, socket_id = join(server, "e1")
    socket = server.of("/").get_socket(socket_id)
    assert socket is not None
    answered = socket.emit_with_ack("q", timeout_s=2)
    late = socket.emit_with_ack("q", timeout_s=2)
    conn.receive('30["yes"]')
    results: list[Any] = []
    answered.addCallback(results.append)
    assert results == [("yes",)]
    failures: list[Any] = []
    late.addErrback(failures.append)
    clock.advance(2)
    assert failures and failures[0].check(AckTimeout)
    conn.receive('31["too late"]')  # ignored, no crash
    assert conn.closed is None


def test_pending_acks_fail_when_socket_disconnects(server: SocketIOServer) -> None:
    """Code awaiting an ack from a client that left is told so."""
    conn, socket_id = join(server, "e1")
    socket = server.of("/").get_socket(socket_id)
    assert socket is not None
    d = socket.emit_with_ack("q")
    failures: list[Any] = []
    d.addErrback(failures.append)
    server.on_close(conn, "transport close")
    assert failures and failures[0].check(SocketDisconnected)


def test_pending_acks_are_capped(clock: Clock) -> None:
    """A client that never acks cannot make the server remember callbacks
    without bound."""
    server = SocketIOServer(clock, SocketIOSettings(max_pending_acks=2))
    conn, socket_id = join(server, "e1")
    socket = server.of("/").get_socket(socket_id)
    assert socket is not None
    socket.emit("a", callback=lambda: None)
    socket.emit("a", callback=lambda: None)
    with pytest.raises(AckLimitError):
        socket.emit("a", callback=lambda: None)
    socket.emit("no-ack-needed")
    conn.receive("30[]")
    socket.emit("a", callback=lambda: None)


def test_first_ack_after_a_long_idle_time_is_delivered(
    server: SocketIOServer, clock: Clock
) -> None:
    """A socket's table of awaited acks is made on first use: a socket that
    sat idle, then asks for acks, gets them in order with fresh ids, and
    after they are answered asks again with the next id."""
    conn, socket_id = join(server, "e1")
    socket = server.of("/").get_socket(socket_id)
    assert socket is not None
    clock.advance(3600)
    got: list[Any] = []
    socket.emit("q", 1, callback=lambda *args: got.append(args))
    answered = socket.emit_with_ack("q", 2)
    answered.addCallback(got.append)
    assert conn.take() == ['20["q",1]', '21["q",2]']
    conn.receive('31["two"]', '30["one"]')
    assert got == [("two",), ("one",)]
    socket.emit("q", 3, callback=lambda *args: got.append(args))
    assert conn.take() == ['22["q",3]']
    conn.receive('32["three"]')
    assert got[-1] == ("three",)
    assert conn.closed is None


def test_an_ack_nobody_awaits_on_an_idle_socket_is_ignored(server: SocketIOServer) -> None:
    """An ACK before the socket ever asked for one finds no table of awaited
    acks yet: it is ignored, and the connection stays open."""
    conn, socket_id = join(server, "e1")
    conn.receive('35["unasked"]')
    assert conn.closed is None
    socket = server.of("/").get_socket(socket_id)
    assert socket is not None
    got: list[Any] = []
    socket.emit("q", callback=lambda *args: got.append(args))
    conn.take()
    conn.receive('30["ok"]')
    assert got == [("ok",)]


def test_failing_handler_is_logged_and_others_continue(server: SocketIOServer) -> None:
    """One handler's bug doesn't cut off that client or anyone else."""
    ns = server.of("/")

    def broken(socket: Socket) -> None:
        raise RuntimeError("bug")

    ns.on("broken", broken)
    ns.on("ok", lambda socket: "fine")
    conn, _ = join(server, "e1")
    with capturedLogs() as events:
        conn.receive('21["broken"]', '22["ok"]')
    assert conn.take() == ['32["fine"]']
    assert conn.closed is None
    assert any(e.get("log_failure") and e.get("event") == "broken" for e in events)


def test_event_without_handler_is_ignored(server: SocketIOServer) -> None:
    """Unknown events are dropped quietly; the client stays connected."""
    conn, _ = join(server, "e1")
    conn.receive('21["unknown"]')
    assert conn.take() == []
    assert conn.closed is None


class Target:
    secret_called = False

    def secret(self, *args: Any) -> None:
        Target.secret_called = True


@pytest.mark.parametrize(
    "name", ["__init__", "__class__", "_dispatch", "emit", "on", "secret", "__getattribute__"]
)
def test_client_event_names_reach_only_registered_handlers(server: SocketIOServer, name: str) -> None:
    """No client-chosen event name can call into server internals."""
    ns = server.of("/")
    ns.on("hello", lambda socket: "hi")
    conn, _ = join(server, "e1")
    conn.receive("21" + orjson.dumps([name]).decode())
    assert conn.take() == []
    assert conn.closed is None
    assert not Target.secret_called


@pytest.mark.parametrize(
    "name",
    ["connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"],
)
def test_reserved_event_names_from_client_close_connection(server: SocketIOServer, name: str) -> None:
    """A client faking lifecycle events is cut off rather than obeyed."""
    conn, _ = join(server, "e1")
    conn.receive("2" + orjson.dumps([name]).decode())
    assert conn.closed == "parse error"


def test_registering_reserved_event_is_refused(server: SocketIOServer) -> None:
    """Server code cannot listen to names clients may not send, nor silently
    replace another module's handler."""
    with pytest.raises(ValueError):
        server.of("/").on("disconnect", lambda socket: None)
    server.of("/").on("x", lambda socket: None)
    with pytest.raises(ValueError):
        server.of("/").on("x", lambda socket: None)


# Malformed input


@pytest.mark.parametrize(
    "messages",
    [
        ["abc"],
        ["2{}"],
        ['2abc["message-with-ack",1]'],
        ["2[]"],
        ['511-["m"]'],  # more than max_attachments
        [b"\x00"],
        ['51-["m",{"_placeholder":true,"num":0}]', '2["m"]'],
        ['52-["m",{"_placeholder":true,"num":0}]', b"\x01", b"\x02"],
        ['4{"message":"x"}'],
    ],
)
def test_malformed_packet_closes_only_that_client(server: SocketIOServer, messages: list[Message]) -> None:
    """A broken or hostile client is disconnected; everyone else carries on."""
    events: list[Any] = []
    ns = server.of("/")
    ns.on("m", lambda socket, *args: events.append(args))
    bad, _ = join(server, "bad")
    good, good_id = join(server, "good")
    with capturedLogs() as logged:
        bad.receive(*messages)
    assert bad.closed == "parse error"
    assert good.closed is None
    assert server.connection_count() == 1
    good.receive('2["m",1]')
    assert events == [(1,)]
    # Named by its label, never by its sid (a session's credential).
    assert any(e.get("engine_sid") == sid_label("bad") for e in logged)


@pytest.mark.parametrize(
    "before, packet",
    [
        ([], '2["m"]'),  # EVENT before any CONNECT
        ([], '21["m"]'),
        ([], "31[]"),  # ACK before CONNECT
        ([], "1"),  # DISCONNECT before CONNECT
        (["0"], '2/other,["m"]'),  # EVENT for a namespace not connected
        (["0"], "3/other,1[]"),
        (["0"], "0"),  # a second CONNECT to a connected namespace
        (["0", "0/other,"], "0/other"),
        (["0", "1"], '2["m"]'),  # anything after the client's DISCONNECT of it
        (["0", "1"], "31[]"),
        (["0", "1"], "1"),
        (["0", "0/other,", "1/other"], '2/other,["m"]'),
    ],
)
def test_packets_the_namespace_state_does_not_allow_close_the_connection(
    server: SocketIOServer, before: list[str], packet: str
) -> None:
    """As the reference server: only CONNECT for a namespace the client is
    not in, and anything but CONNECT for one it is in. Anything else closes
    the Engine.IO connection, and reaches no handler."""
    got: list[Any] = []
    for name in ("/", "/other"):
        server.of(name).on("m", lambda socket: got.append(1))
    conn = connect_engine(server)
    conn.receive(*before)
    server._clock.advance(0)  # type: ignore[attr-defined]
    assert conn.closed is None
    with capturedLogs() as logged:
        conn.receive(packet)
    assert conn.closed == "forced server close"
    assert got == []
    assert server.connection_count() == 0
    assert any(e.get("engine_sid") == sid_label("e1") for e in logged)


@pytest.mark.parametrize("second", ['2["m"]', "0", "1"])
def test_packets_while_the_connect_handler_runs_close_the_connection(
    server: SocketIOServer, second: str
) -> None:
    """The socket is not connected until its connect handlers accepted it:
    an event, a second CONNECT or a DISCONNECT meanwhile is out of order."""
    gate: Deferred[bool] = Deferred()
    got: list[Any] = []

    async def check(socket: Socket, auth: Any) -> bool:
        return await gate

    ns = server.of("/")
    ns.on_connect(check)
    ns.on("m", lambda socket: got.append(1))
    conn = connect_engine(server)
    conn.receive("0")
    conn.receive(second)
    assert conn.closed == "forced server close"
    gate.callback(True)
    assert conn.take() == [] and got == []
    assert len(ns.sockets) == 0


def test_reconnecting_a_namespace_after_disconnecting_it_is_allowed(
    server: SocketIOServer,
) -> None:
    """A client that left a namespace may CONNECT to it again (a new socket)."""
    conn, first = join(server, "e1")
    conn.receive("1")
    conn.receive("0")
    server._clock.advance(0)  # type: ignore[attr-defined]
    answer = conn.take_text()[0]
    assert answer.startswith("0{") and orjson.loads(answer[1:])["sid"] != first
    assert conn.closed is None


# Rooms and broadcasting


def test_socket_rooms_exclude_its_own_id(server: SocketIOServer) -> None:
    """Signaling reads socket.rooms; a stray own-id entry would look like a room."""
    conn, socket_id = join(server, "e1")
    socket = server.of("/").get_socket(socket_id)
    assert socket is not None
    assert socket.rooms == frozenset()
    socket.join("a")
    socket.join("b")
    socket.leave("a")
    assert socket.rooms == frozenset({"b"})


def test_room_limit_per_socket(clock: Clock) -> None:
    """A client cannot be put into unbounded numbers of rooms."""
    server = SocketIOServer(clock, SocketIOSettings(max_rooms_per_socket=2))
    conn, socket_id = join(server, "e1")
    socket = server.of("/").get_socket(socket_id)
    assert socket is not None
    socket.join("a")
    socket.join("b")
    socket.join("b")  # already in: fine
    with pytest.raises(RoomLimitError):
        socket.join("c")


def test_socket_to_room_excludes_sender(server: SocketIOServer) -> None:
    """Peers in a room get a message; the sender doesn't get its own echo."""
    ns = server.of("/")
    ns.on("say", lambda socket, text: socket.to("room").emit("said", text))
    conns = []
    for i in range(3):
        conn, sid = join(server, "e" + str(i))
        s = ns.get_socket(sid)
        assert s is not None
        s.join("room")
        conns.append(conn)
    outsider, _ = join(server, "out")
    conns[0].receive('2["say","hi"]')
    assert conns[0].take() == []
    assert conns[1].take() == ['2["said","hi"]']
    assert conns[2].take() == ['2["said","hi"]']
    assert outsider.take() == []


def test_namespace_to_several_rooms_delivers_once(server: SocketIOServer) -> None:
    """A socket in two targeted rooms gets one copy, not two."""
    ns = server.of("/")
    conn, sid = join(server, "e1")
    s = ns.get_socket(sid)
    assert s is not None
    s.join("a")
    s.join("b")
    ns.to("a").to("b").emit("x", b"\x01")
    assert conn.take() == ['51-["x",{"_placeholder":true,"num":0}]', b"\x01"]


def test_broadcast_encodes_once_for_all_recipients(server: SocketIOServer) -> None:
    """Broadcasting costs one encoding, however big the room (the same
    message object goes to every connection)."""
    ns = server.of("/")
    conns = []
    for i in range(5):
        conn, sid = join(server, "e" + str(i))
        s = ns.get_socket(sid)
        assert s is not None
        s.join("r")
        conns.append(conn)
    ns.to("r").emit("x", {"big": "payload"})
    first = [c.take()[0] for c in conns]
    assert all(m is first[0] for m in first)


def test_namespace_emit_reaches_every_socket_of_that_namespace_only(server: SocketIOServer) -> None:
    """Namespace-wide emits stay inside the namespace."""
    server.of("/custom")
    a, _ = join(server, "a")
    b, _ = join(server, "b", "/custom")
    server.of("/").emit("all", 1)
    assert a.take() == ['2["all",1]']
    assert b.take() == []


def test_emit_to_socket_by_id(server: SocketIOServer) -> None:
    """Signaling can address one peer by its socket id."""
    ns = server.of("/")
    a, a_id = join(server, "a")
    b, _ = join(server, "b")
    ns.emit_to_socket(a_id, "offer", {"sdp": "x"})
    assert a.take() == ['2["offer",{"sdp":"x"}]']
    assert b.take() == []


def test_room_named_like_socket_id_receives_nothing_addressed_to_socket(server: SocketIOServer) -> None:
    """Joining a room named after someone's socket id doesn't let a client
    read what is addressed to that socket."""
    ns = server.of("/")
    victim, victim_id = join(server, "victim")
    spy, spy_id = join(server, "spy")
    spy_socket = ns.get_socket(spy_id)
    assert spy_socket is not None
    spy_socket.join(victim_id)
    ns.emit_to_socket(victim_id, "secret", 1)
    assert victim.take() == ['2["secret",1]']
    assert spy.take() == []
    # And broadcasting to that room doesn't reach the victim either.
    ns.to(victim_id).emit("room", 2)
    assert victim.take() == []
    assert spy.take() == ['2["room",2]']


def test_emit_to_socket_only_if_in_room(server: SocketIOServer) -> None:
    """A stranger's offer is not delivered to a socket outside the room."""
    ns = server.of("/")
    a, a_id = join(server, "a")
    a_socket = ns.get_socket(a_id)
    assert a_socket is not None
    ns.emit_to_socket(a_id, "offer", 1, only_if_in_room="room1")
    assert a.take() == []
    a_socket.join("room1")
    ns.emit_to_socket(a_id, "offer", 2, only_if_in_room="room1")
    assert a.take() == ['2["offer",2]']


def test_emit_to_unknown_socket_does_nothing(server: SocketIOServer) -> None:
    """Addressing a socket that left is harmless."""
    server.of("/").emit_to_socket("nobody", "x")


# Disconnecting


def test_client_namespace_disconnect_keeps_connection(server: SocketIOServer) -> None:
    """Leaving one namespace doesn't drop the client's other namespaces."""
    ns = server.of("/custom")
    reasons: list[str] = []
    ns.on_disconnect(lambda socket, reason: reasons.append(reason))
    conn, _ = join(server, "e1")
    conn.receive("0/custom,")
    server._clock.advance(0)  # type: ignore[attr-defined]
    conn.take()
    conn.receive("1/custom")
    assert reasons == ["client namespace disconnect"]
    assert conn.closed is None
    assert len(ns.sockets) == 0
    assert len(server.of("/").sockets) == 1


def test_disconnecting_sees_rooms_and_disconnect_after_leaving(server: SocketIOServer) -> None:
    """Signaling needs a leaving socket's rooms to notify its peers."""
    ns = server.of("/")
    seen: list[Any] = []
    ns.on_disconnecting(lambda socket, reason: seen.append(("disconnecting", socket.rooms, reason)))
    ns.on_disconnect(lambda socket, reason: seen.append(("disconnect", socket.rooms, reason)))
    conn, sid = join(server, "e1")
    s = ns.get_socket(sid)
    assert s is not None
    s.join("r")
    server.on_close(conn, "transport close")
    assert seen == [
        ("disconnecting", frozenset({"r"}), "transport close"),
        ("disconnect", frozenset(), "transport close"),
    ]
    assert ns.get_socket(sid) is None
    assert server.adapter.room_members("/", "r") == frozenset()  # type: ignore[attr-defined]
    assert server.connection_count() == 0


def test_server_side_namespace_disconnect_tells_client(server: SocketIOServer) -> None:
    """The client learns it was disconnected (so it doesn't reconnect)."""
    ns = server.of("/")
    reasons: list[str] = []
    ns.on_disconnect(lambda socket, reason: reasons.append(reason))
    conn, sid = join(server, "e1")
    s = ns.get_socket(sid)
    assert s is not None
    s.disconnect()
    assert conn.take() == ["1"]
    assert not s.connected
    assert reasons == ["server namespace disconnect"]
    assert conn.closed is None
    s.emit("after")  # ignored
    assert conn.take() == []


def test_disconnect_with_close_closes_connection(server: SocketIOServer) -> None:
    """disconnect(close=True) drops the whole connection, every namespace."""
    server.of("/custom")
    conn, sid = join(server, "e1")
    conn.receive("0/custom,")
    server._clock.advance(0)  # type: ignore[attr-defined]
    conn.take()
    s = server.of("/").get_socket(sid)
    assert s is not None
    s.disconnect(close=True)
    assert sorted(conn.take()) == ["1", "1/custom,"]
    assert conn.closed == "forced server close"
    assert server.connection_count() == 0
    assert server.socket_count() == 0


def test_connection_count_tracks_open_clients(server: SocketIOServer) -> None:
    """/health/detailed shows how many clients are connected."""
    a, _ = join(server, "a")
    b = connect_engine(server, "b")
    assert server.connection_count() == 2
    assert server.socket_count() == 1
    server.on_close(a, "transport close")
    server.on_close(b, "transport close")
    assert server.connection_count() == 0


def test_protocol_error_warnings_are_throttled_per_cause(server: SocketIOServer, clock: Clock) -> None:
    """A flood of broken clients leaves one warning per cause and interval in
    the log, with a count of what was left out, instead of one per client."""
    with capturedLogs() as events:
        for i in range(5):
            conn, _ = join(server, "bad" + str(i))
            conn.receive("2{}")
            assert conn.closed == "parse error"
        clock.advance(11)
        conn, _ = join(server, "late")
        conn.receive("2{}")
    warnings = [e for e in events if e.get("error") is not None]
    assert [(w["engine_sid"], w["suppressed"]) for w in warnings] == [
        (sid_label("bad0"), 0), (sid_label("late"), 4)]


def test_disconnect_from_disconnecting_handler_runs_handlers_once(server: SocketIOServer) -> None:
    """Cleanup code that disconnects again doesn't run the cleanup twice."""
    ns = server.of("/")
    calls: list[str] = []

    def disconnecting(socket: Socket, reason: str) -> None:
        calls.append("disconnecting")
        socket.disconnect()

    ns.on_disconnecting(disconnecting)
    ns.on_disconnect(lambda socket, reason: calls.append("disconnect:" + reason))
    conn, _ = join(server, "e1")
    server.on_close(conn, "transport close")
    assert calls == ["disconnecting", "disconnect:transport close"]


def test_disconnect_in_connect_handler_refuses(server: SocketIOServer) -> None:
    """A connect handler that disconnects the socket leaves the client with a
    clear refusal instead of a connection that never answers."""
    server.of("/").on_connect(lambda socket, auth: socket.disconnect())
    conn = connect_engine(server)
    conn.receive("0")
    assert conn.take() == ['4{"message":"Not authorized"}']
    assert len(server.of("/").sockets) == 0


def test_server_disconnect_right_after_connect_keeps_order(server: SocketIOServer, clock: Clock) -> None:
    """Events from the connect handler still arrive, before the DISCONNECT,
    even when the server disconnects in the same turn."""
    ns = server.of("/")
    ns.on_connect(lambda socket, auth: socket.emit("welcome"))
    conn = connect_engine(server)
    conn.receive("0")
    sid = orjson.loads(conn.take_text()[0][1:])["sid"]
    socket = ns.get_socket(sid)
    assert socket is not None
    socket.disconnect()
    clock.advance(0)
    assert conn.take() == ['2["welcome"]', "1"]


client_frames = st.lists(
    st.one_of(
        st.text(max_size=40),
        st.binary(max_size=8),
        st.sampled_from(
            [
                "0", "0/custom,", "1", "40", '2["m",1]', "21[\"m\"]", "30[]",
                '51-["m",{"_placeholder":true,"num":0}]', "0/nope", '2["m",{"_placeholder":true}]',
            ]
        ),
        st.builds(lambda t, a: t + a, st.sampled_from(["0", "1", "2", "3", "4", "5", "6"]), st.text(max_size=20)),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=client_frames)
def test_arbitrary_client_input_never_escapes_the_server(frames: list[Message]) -> None:
    """Whatever a client sends, the server either handles it or closes that
    client; nothing raises into Engine.IO, no bug of ours is hit, and a
    bystander is unaffected."""
    clock = Clock()
    server = SocketIOServer(clock, SocketIOSettings())
    server.of("/custom")
    server.of("/").on("m", lambda socket, *args: args)
    bystander, _ = join(server, "bystander")
    conn = connect_engine(server, "fuzz")
    with capturedLogs() as events:
        for frame in frames:
            conn.receive(frame)
            clock.advance(0)
    # Client errors are warnings; a logged failure would be a bug of ours.
    assert [e for e in events if e.get("log_failure")] == []
    assert bystander.closed is None
    bystander.receive('21["m","still here"]')
    assert bystander.take() == ['31["still here"]']
    if conn.closed is not None:
        assert server.connection_count() == 1


def test_oversize_auth_to_an_unknown_namespace_is_an_invalid_namespace(clock: Clock) -> None:
    """Whatever its payload, a CONNECT to a namespace nobody registered gets
    the usual answer, and nothing about it is logged."""
    server = SocketIOServer(clock, SocketIOSettings(max_auth_bytes=8))
    conn = connect_engine(server)
    with capturedLogs() as events:
        conn.receive('0/nowhere,{"t":"' + "y" * 80 + '"}')
    assert conn.take_text() == ['4/nowhere,{"message":"Invalid namespace"}']
    assert not [e for e in events if "nowhere" in repr(e)]
