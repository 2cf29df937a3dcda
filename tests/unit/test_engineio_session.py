"""Engine.IO sessions and the server registry on a fake clock, with fake transports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import orjson
import pytest
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs

from privydrop.engineio import packets
from privydrop.engineio.errors import EngineError, EngineRequestError
from privydrop.engineio.interface import EngineConnection, Handshake, Message
from privydrop.engineio.packets import Packet, PacketType
from privydrop.engineio.server import (
    REASON_EVICTED,
    EngineServer,
    TooManySessions,
    handshake_client_key,
)
from privydrop.engineio.session import (
    REASON_BUFFER_LIMIT,
    REASON_PING_TIMEOUT,
    REASON_TRANSPORT_CLOSE,
    REASON_TRANSPORT_ERROR,
    Session,
    SessionState,
)
from privydrop.settings import EngineSettings, OriginSettings

SETTINGS = EngineSettings(
    ping_interval_ms=1000, ping_timeout_ms=500, upgrade_timeout_s=3.0
)
HANDSHAKE = Handshake(
    headers={}, remote_address="127.0.0.1", query={}, url="/", secure=False, issued_ms=0
)


class FakePoll:
    """A held GET: records the one body it is answered with."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def respond(self, body: bytes) -> None:
        self.bodies.append(body)

    @property
    def packets(self) -> list[Packet]:
        assert len(self.bodies) == 1, self.bodies
        return packets.decode_payload(self.bodies[0], 0, 0)


class FakeChannel:
    """A WebSocket connection: records frames and the close."""

    def __init__(self) -> None:
        self.sent: list[Packet] = []
        self.writes = 0
        self.closed: tuple[int, str] | None = None

    def send_packets(self, outgoing: Sequence[Packet]) -> None:
        self.writes += 1
        self.sent.extend(outgoing)

    def close_channel(self, code: int, reason: str) -> None:
        if self.closed is None:
            self.closed = (code, reason)


@attrs.define
class RecordingApp:
    opened: list[EngineConnection] = attrs.Factory(list)
    messages: list[Message] = attrs.Factory(list)
    closed: list[tuple[str, str]] = attrs.Factory(list)
    explode: bool = False

    def on_open(self, connection: EngineConnection) -> None:
        self.opened.append(connection)

    def on_message(self, connection: EngineConnection, message: Message) -> None:
        if self.explode:
            raise ZeroDivisionError("application bug")
        self.messages.append(message)

    def on_close(self, connection: EngineConnection, reason: str) -> None:
        self.closed.append((connection.sid, reason))


def msg(data: Message) -> Packet:
    return Packet(PacketType.MESSAGE, data)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app() -> RecordingApp:
    return RecordingApp()


def make_server(clock: Clock, app: RecordingApp, **changes: Any) -> EngineServer:
    return EngineServer(clock, attrs.evolve(SETTINGS, **changes), app)


def open_polling(server: EngineServer) -> tuple[Session, FakePoll]:
    """A polling session after its handshake GET was answered."""
    session = server.create_session("polling", HANDSHAKE)
    handshake_poll = FakePoll()
    session.attach_poll(handshake_poll)
    server.open(session)
    return session, handshake_poll


def open_websocket(server: EngineServer) -> tuple[Session, FakeChannel]:
    session = server.create_session("websocket", HANDSHAKE)
    channel = FakeChannel()
    session.attach_websocket(channel)
    server.open(session)
    return session, channel


# -- handshake and registry ------------------------------------------------


def test_polling_handshake_answers_open_packet_with_settings(
    clock: Clock, app: RecordingApp
) -> None:
    """Clients could not connect at all if the open packet lacked or misstated a field."""
    server = make_server(clock, app)
    session, poll = open_polling(server)
    (open_packet,) = poll.packets
    assert open_packet.type is PacketType.OPEN
    assert orjson.loads(open_packet.data) == {
        "sid": session.sid,
        "upgrades": ["websocket"],
        "pingInterval": 1000,
        "pingTimeout": 500,
        "maxPayload": 1_000_000,
    }
    assert app.opened == [session]
    assert server.clients_count == 1


def test_websocket_handshake_offers_no_upgrades(
    clock: Clock, app: RecordingApp
) -> None:
    """A WebSocket client told it may upgrade would try to probe itself."""
    server = make_server(clock, app)
    session, channel = open_websocket(server)
    assert channel.sent[0].type is PacketType.OPEN
    assert orjson.loads(channel.sent[0].data)["upgrades"] == []
    assert session.transport_name == "websocket"


def test_sids_are_unique_and_unguessable_length(
    clock: Clock, app: RecordingApp
) -> None:
    """Short or repeated sids would let one client reach another's session."""
    server = make_server(clock, app, max_pending_sessions_per_ip=200, max_sessions_per_ip=200)
    sids = {server.create_session("polling", HANDSHAKE).sid for _ in range(200)}
    assert len(sids) == 200
    assert all(
        len(s) == 20 and s.replace("-", "").replace("_", "").isalnum() for s in sids
    )


@pytest.mark.parametrize(
    "query, method, upgrade, origin, code",
    [
        ({"EIO": "4"}, "GET", False, None, EngineError.UNKNOWN_TRANSPORT),
        (
            {"EIO": "4", "transport": "abc"},
            "GET",
            False,
            None,
            EngineError.UNKNOWN_TRANSPORT,
        ),
        (
            {"transport": "polling"},
            "GET",
            False,
            None,
            EngineError.UNSUPPORTED_PROTOCOL_VERSION,
        ),
        (
            {"EIO": "3", "transport": "polling"},
            "GET",
            False,
            None,
            EngineError.UNSUPPORTED_PROTOCOL_VERSION,
        ),
        (
            {"EIO": "4", "transport": "polling", "sid": "nope"},
            "GET",
            False,
            None,
            EngineError.UNKNOWN_SID,
        ),
        (
            {"EIO": "4", "transport": "polling"},
            "POST",
            False,
            None,
            EngineError.BAD_HANDSHAKE_METHOD,
        ),
        (
            {"EIO": "4", "transport": "polling"},
            "PUT",
            False,
            None,
            EngineError.BAD_HANDSHAKE_METHOD,
        ),
        (
            {"EIO": "4", "transport": "websocket"},
            "GET",
            False,
            None,
            EngineError.BAD_REQUEST,
        ),
        (
            {"EIO": "4", "transport": "polling"},
            "GET",
            False,
            "https://evil.example",
            EngineError.FORBIDDEN,
        ),
    ],
)
def test_request_checks_answer_the_reference_error_codes(
    clock: Clock,
    app: RecordingApp,
    query: dict[str, str],
    method: str,
    upgrade: bool,
    origin: str | None,
    code: EngineError,
) -> None:
    """Clients and the official suite rely on these exact codes to tell errors apart."""
    server = make_server(
        clock, app, origins=OriginSettings(origins=("https://privydrop.app",))
    )
    with pytest.raises(EngineRequestError) as raised:
        server.verify(query, method, upgrade, origin)
    assert raised.value.code is code
    assert raised.value.status == (403 if code is EngineError.FORBIDDEN else 400)


def test_allowed_origin_and_pattern_pass_request_checks(
    clock: Clock, app: RecordingApp
) -> None:
    """The PrivyDrop frontend (and LAN dev hosts) must be able to connect."""
    server = make_server(
        clock,
        app,
        origins=OriginSettings(
            origins=("https://privydrop.app",),
            patterns=(r"http://192\.168\.\d+\.\d+:3002",),
        ),
    )
    query = {"EIO": "4", "transport": "polling"}
    assert server.verify(query, "GET", False, "https://privydrop.app") is None
    assert server.verify(query, "GET", False, "http://192.168.1.20:3002") is None
    assert server.verify(query, "GET", False, None) is None
    with pytest.raises(EngineRequestError):
        server.verify(query, "GET", False, "http://192.168.1.20:3002.evil.example")


def test_transport_mismatch_after_upgrade_is_bad_request(
    clock: Clock, app: RecordingApp
) -> None:
    """A stale poll after an upgrade must not steal packets meant for the WebSocket."""
    server = make_server(clock, app)
    session, _ = open_websocket(server)
    with pytest.raises(EngineRequestError) as raised:
        server.verify(
            {"EIO": "4", "transport": "polling", "sid": session.sid}, "GET", False, None
        )
    assert raised.value.code is EngineError.BAD_REQUEST


def handshake_from(address: str, forwarded: str | None = None) -> Handshake:
    headers = {"x-forwarded-for": forwarded} if forwarded else {}
    return attrs.evolve(HANDSHAKE, remote_address=address, headers=headers)


def open_polling_from(server: EngineServer, handshake: Handshake) -> Session:
    session = server.create_session("polling", handshake)
    session.attach_poll(FakePoll())
    server.open(session)
    return session


def test_silent_sessions_are_capped_per_client_until_they_speak(
    clock: Clock, app: RecordingApp
) -> None:
    """One address opening handshakes it never continues is refused (429)
    past its own cap, and only its own handshakes are: the cap frees up as
    its sessions speak."""
    server = make_server(clock, app, max_pending_sessions_per_ip=2)
    flooder = handshake_from("203.0.113.66")
    first = open_polling_from(server, flooder)
    open_polling_from(server, flooder)
    with capturedLogs() as events, pytest.raises(TooManySessions) as raised:
        server.create_session("polling", flooder)
    assert raised.value.status == 429
    assert [e.get("limit") for e in events if e.get("limit")] == ["max_pending_sessions_per_ip"]
    assert not any("203.0.113.66" in repr(e) for e in events)
    open_polling_from(server, handshake_from("198.51.100.7"))
    first.receive(msg("hi"))
    assert server.admit(flooder) == "203.0.113.66"
    open_polling_from(server, flooder)
    assert server.pending_count == 3


def test_open_sessions_are_capped_per_client(clock: Clock, app: RecordingApp) -> None:
    """Sessions that do speak are capped per client too, and a closed one
    makes room again."""
    server = make_server(clock, app, max_sessions_per_ip=3)
    client = handshake_from("203.0.113.66")
    sessions = [open_polling_from(server, client) for _ in range(3)]
    for session in sessions:
        session.receive(msg("hi"))
    with pytest.raises(TooManySessions) as raised:
        server.admit(client)
    assert raised.value.limit == "max_sessions_per_ip"
    open_polling_from(server, handshake_from("198.51.100.7"))
    sessions[0].receive(Packet(PacketType.CLOSE))
    open_polling_from(server, client)
    assert server.clients_count == 4


def test_ipv6_clients_are_capped_per_network(clock: Clock, app: RecordingApp) -> None:
    """Every address of one /64 is one client: a fresh address per handshake
    does not escape the cap; the next /64 is another client."""
    server = make_server(clock, app, max_pending_sessions_per_ip=2)
    open_polling_from(server, handshake_from("2001:db8:1:2::1"))
    open_polling_from(server, handshake_from("2001:db8:1:2::2"))
    with pytest.raises(TooManySessions):
        server.admit(handshake_from("2001:db8:1:2::3"))
    open_polling_from(server, handshake_from("2001:db8:1:3::1"))


def test_client_behind_a_trusted_proxy_is_its_forwarded_address(
    clock: Clock, app: RecordingApp
) -> None:
    """Behind nginx every visitor arrives from the proxy's address: the caps
    count the address the proxy forwards, as the API and the join window do."""
    server = EngineServer(
        clock,
        attrs.evolve(SETTINGS, max_pending_sessions_per_ip=1),
        app,
        client_key=handshake_client_key(("127.0.0.0/8",), 64),
    )
    open_polling_from(server, handshake_from("127.0.0.1", "203.0.113.66"))
    with pytest.raises(TooManySessions):
        server.admit(handshake_from("127.0.0.1", "6.6.6.6, 203.0.113.66"))
    open_polling_from(server, handshake_from("127.0.0.1", "198.51.100.7"))
    # Without a trusted proxy the header is the client's own claim.
    direct = make_server(clock, app, max_pending_sessions_per_ip=1)
    open_polling_from(direct, handshake_from("127.0.0.1", "203.0.113.66"))
    with pytest.raises(TooManySessions):
        direct.admit(handshake_from("127.0.0.1", "198.51.100.7"))


def test_full_process_evicts_its_oldest_silent_session_for_a_new_visitor(
    clock: Clock, app: RecordingApp
) -> None:
    """When silent sessions fill the process (a flood from many addresses),
    a new visitor still gets in: the session silent longest is closed for it,
    and sessions that spoke are never evicted."""
    server = make_server(clock, app, max_pending_sessions=3)
    talker = open_polling_from(server, handshake_from("198.51.100.1"))
    talker.receive(msg("hi"))
    silent = [open_polling_from(server, handshake_from(f"203.0.113.{n}")) for n in range(3)]
    with capturedLogs() as events:
        visitor = open_polling_from(server, handshake_from("198.51.100.2"))
    assert silent[0].state is SessionState.CLOSED
    assert silent[0].close_reason == REASON_EVICTED
    assert (silent[0].sid, REASON_EVICTED) in app.closed
    assert server.get_session(silent[0].sid) is None
    assert [e.get("limit") for e in events if e.get("limit")] == ["max_pending_sessions"]
    assert server.pending_count == 3
    visitor.receive(msg("hello"))
    for n in range(10):
        open_polling_from(server, handshake_from(f"203.0.114.{n}"))
    assert server.pending_count == 3
    assert talker.state is SessionState.OPEN and visitor.state is SessionState.OPEN
    assert server.clients_count == 5
    # An evicted client's counts are released with its session.
    assert server.admit(handshake_from("203.0.113.0")) == "203.0.113.0"


def test_close_all_closes_every_session(clock: Clock, app: RecordingApp) -> None:
    """On shutdown, clients must be told (close packet / going-away) rather than left hanging."""
    server = make_server(clock, app)
    polling, _ = open_polling(server)
    poll = FakePoll()
    polling.attach_poll(poll)
    _ws, channel = open_websocket(server)
    server.close_all()
    assert poll.packets == [packets.CLOSE]
    assert channel.closed is not None and channel.closed[0] == 1001
    assert server.clients_count == 0
    assert sorted(reason for _, reason in app.closed) == ["server shutting down"] * 2


def test_close_all_tells_idle_polling_client_on_its_next_get(
    clock: Clock, app: RecordingApp
) -> None:
    """A polling client between two GETs must learn of a shutdown from a close
    packet (and reconnect), not from a 400 it reports as a transport error."""
    server = make_server(clock, app)
    session, _ = open_polling(server)
    session.send("last words")
    server.close_all()
    assert server.get_session(session.sid) is session
    poll = FakePoll()
    session.attach_poll(poll)
    assert poll.packets == [msg("last words"), packets.CLOSE]
    assert server.clients_count == 0
    assert app.closed == [(session.sid, "server shutting down")]


def test_server_close_with_nothing_queued_still_reaches_idle_polling_client(
    clock: Clock, app: RecordingApp
) -> None:
    """A polling client between two GETs must get a close packet (and reconnect
    cleanly) even when the server had nothing else to send."""
    server = make_server(clock, app)
    session, _ = open_polling(server)
    session.close("server disconnect")
    assert server.get_session(session.sid) is session
    assert app.closed == []
    poll = FakePoll()
    session.attach_poll(poll)
    assert poll.packets == [packets.CLOSE]
    assert app.closed == [(session.sid, "server disconnect")]


# -- outbound queue ----------------------------------------------------------


def test_messages_of_one_turn_leave_in_one_poll_answer(
    clock: Clock, app: RecordingApp
) -> None:
    """Without batching every message would cost the client a full HTTP round trip."""
    server = make_server(clock, app)
    session, _ = open_polling(server)
    poll = FakePoll()
    session.attach_poll(poll)
    session.send("a")
    session.send_many(["b", b"\x00"])
    assert poll.bodies == []
    clock.advance(0)
    assert poll.bodies == [b"4a\x1e4b\x1ebAA=="]


def test_messages_of_one_turn_leave_in_one_websocket_write(
    clock: Clock, app: RecordingApp
) -> None:
    """Per-message writes would make broadcasts slow under load."""
    server = make_server(clock, app)
    session, channel = open_websocket(server)
    writes = channel.writes
    for i in range(5):
        session.send(str(i))
    clock.advance(0)
    assert channel.writes == writes + 1
    assert [p.data for p in channel.sent[1:]] == ["0", "1", "2", "3", "4"]


def test_queued_messages_wait_for_the_next_get(clock: Clock, app: RecordingApp) -> None:
    """Messages sent between polls must be delivered to the next GET, not dropped."""
    server = make_server(clock, app)
    session, _ = open_polling(server)
    session.send("later")
    clock.advance(0)
    poll = FakePoll()
    session.attach_poll(poll)
    assert poll.packets == [msg("later")]


def test_buffered_bytes_cap_closes_session(clock: Clock, app: RecordingApp) -> None:
    """A client that never polls must not make the server queue messages forever."""
    server = make_server(clock, app, max_buffered_bytes=100)
    session, _ = open_polling(server)
    with capturedLogs() as events:
        for _ in range(20):
            session.send("x" * 10)
    assert session.state is SessionState.CLOSED
    assert app.closed == [(session.sid, REASON_BUFFER_LIMIT)]
    assert any(e.get("limit") == "max_buffered_bytes" for e in events)


# -- heartbeat -----------------------------------------------------------------


def test_server_pings_every_interval_while_client_pongs(
    clock: Clock, app: RecordingApp
) -> None:
    """Without pings the client would consider the connection dead after interval+timeout."""
    server = make_server(clock, app)
    session, _ = open_polling(server)
    for _ in range(3):
        poll = FakePoll()
        session.attach_poll(poll)
        clock.advance(0.999)
        assert poll.bodies == []
        clock.advance(0.001)
        clock.advance(0)
        assert poll.packets == [packets.PING]
        clock.advance(0.4)
        session.receive(packets.PONG)
    clock.advance(0.2)
    assert session.state is SessionState.OPEN


def test_missing_pong_closes_session_with_ping_timeout(
    clock: Clock, app: RecordingApp
) -> None:
    """Dead clients would stay in rooms forever if ping timeouts did not close them."""
    server = make_server(clock, app)
    session, channel = open_websocket(server)
    clock.advance(1.0)
    clock.advance(0)
    assert channel.sent[-1] == packets.PING
    clock.advance(0.499)
    assert session.state is SessionState.OPEN
    clock.advance(0.001)
    assert session.state is SessionState.CLOSED
    assert app.closed == [(session.sid, REASON_PING_TIMEOUT)]
    assert channel.closed is not None
    assert server.get_session(session.sid) is None


def test_unsolicited_pong_does_not_add_pings(clock: Clock, app: RecordingApp) -> None:
    """Extra pongs must not multiply the server's timers (a cheap amplification)."""
    server = make_server(clock, app)
    session, channel = open_websocket(server)
    session.receive(packets.PONG)
    session.receive(packets.PONG)
    clock.advance(1.0)
    clock.advance(0)
    assert channel.sent.count(packets.PING) == 1


def test_client_ping_is_a_protocol_error(clock: Clock, app: RecordingApp) -> None:
    """In v4 only the server pings; a client ping means a broken or v3 client."""
    server = make_server(clock, app)
    session, _ = open_websocket(server)
    session.receive(packets.PING)
    assert session.state is SessionState.CLOSED


# -- close -------------------------------------------------------------------------


def test_client_close_answers_pending_get_with_noop(
    clock: Clock, app: RecordingApp
) -> None:
    """The official suite (and clients) expect the held poll to end with a noop on close."""
    server = make_server(clock, app)
    session, _ = open_polling(server)
    poll = FakePoll()
    session.attach_poll(poll)
    session.receive_many([packets.CLOSE, msg("ignored")])
    assert poll.packets == [packets.NOOP]
    assert app.closed == [(session.sid, REASON_TRANSPORT_CLOSE)]
    assert app.messages == []


def test_second_get_closes_session_and_first_get_gets_close(
    clock: Clock, app: RecordingApp
) -> None:
    """Two GETs at once would reorder packets; the spec demands the session be closed."""
    server = make_server(clock, app)
    session, _ = open_polling(server)
    first = FakePoll()
    assert session.attach_poll(first) is True
    assert session.attach_poll(FakePoll()) is False
    assert first.packets == [packets.CLOSE]
    assert app.closed == [(session.sid, REASON_TRANSPORT_ERROR)]


def test_second_post_in_flight_closes_session(clock: Clock, app: RecordingApp) -> None:
    """engine.io-protocol v4: one active POST at a time (packet order); a
    second one while the first is still arriving closes the session."""
    server = make_server(clock, app)
    session, _ = open_polling(server)
    first, second = object(), object()
    assert session.begin_post(first) is True
    with capturedLogs() as events:
        assert session.begin_post(second) is False
    assert session.state is SessionState.CLOSED
    assert app.closed == [(session.sid, REASON_TRANSPORT_ERROR)]
    assert server.get_session(session.sid) is None
    warnings = [e["cause"] for e in events if e.get("log_level") == LogLevel.warn]
    assert warnings == ["overlapping POST"]


def test_posts_one_after_the_other_keep_the_session(clock: Clock, app: RecordingApp) -> None:
    """A POST that ended (answered or its connection lost) is no longer active."""
    server = make_server(clock, app)
    session, _ = open_polling(server)
    for _ in range(3):
        post = object()
        assert session.begin_post(post)
        session.end_post(post)
    stale = object()
    session.end_post(stale)  # ending one that never began changes nothing
    assert session.begin_post(object())
    assert session.state is SessionState.OPEN


def test_graceful_close_delivers_queue_then_close_packet(
    clock: Clock, app: RecordingApp
) -> None:
    """A server-side disconnect must not swallow the last message sent before it."""
    server = make_server(clock, app)
    session, _ = open_polling(server)
    session.send("bye")
    session.close("server disconnect")
    session.send("too late")
    assert session.state is SessionState.CLOSING
    poll = FakePoll()
    session.attach_poll(poll)
    assert poll.packets == [msg("bye"), packets.CLOSE]
    assert app.closed == [(session.sid, "server disconnect")]


def test_graceful_close_gives_up_after_close_timeout(
    clock: Clock, app: RecordingApp
) -> None:
    """A client that vanished must not keep a closing session alive forever."""
    server = make_server(clock, app, polling_close_timeout_s=5.0)
    session, _ = open_polling(server)
    session.send("bye")
    session.close()
    clock.advance(4.9)
    assert server.clients_count == 1
    clock.advance(0.1)
    assert server.clients_count == 0


def test_graceful_close_over_websocket_flushes_then_closes(
    clock: Clock, app: RecordingApp
) -> None:
    """The last message must reach a WebSocket client before the close frame."""
    server = make_server(clock, app)
    session, channel = open_websocket(server)
    session.send("bye")
    session.close()
    assert channel.sent[-1] == msg("bye")
    assert channel.closed is not None
    assert session.state is SessionState.CLOSED


def test_application_error_closes_only_that_session(
    clock: Clock, app: RecordingApp
) -> None:
    """A bug triggered by one client's message must not take down other clients."""
    server = make_server(clock, app)
    broken, _ = open_websocket(server)
    healthy, _ = open_websocket(server)
    app.explode = True
    with capturedLogs() as events:
        broken.receive(msg("boom"))
    assert broken.state is SessionState.CLOSED
    assert healthy.state is SessionState.OPEN
    assert any(e.get("log_failure") is not None for e in events)


def test_lost_get_keeps_the_session_and_the_next_get_gets_its_packets(
    clock: Clock, app: RecordingApp
) -> None:
    """A long-poll dropped by the network (mobile clients lose connections
    all the time) does not end the session: what was queued for it, and
    what comes after, reaches the client's next GET once and in order."""
    server = make_server(clock, app)
    session, _ = open_polling(server)
    poll = FakePoll()
    session.attach_poll(poll)
    session.send("m1")  # queued in this turn, not yet written to the GET
    session.poll_lost(poll)
    session.send("m2")
    clock.advance(0)
    assert poll.bodies == []
    assert session.state is SessionState.OPEN
    clock.advance(0.4)  # within the ping timeout (0.5 s)
    retry = FakePoll()
    session.attach_poll(retry)
    assert retry.packets == [msg("m1"), msg("m2")]
    clock.advance(0.2)  # past the ping timeout since the loss: the GET came in time
    later = FakePoll()
    session.attach_poll(later)
    session.send("m3")
    clock.advance(0)
    assert later.packets == [msg("m3")]
    assert app.closed == []


def test_packets_handed_to_a_get_are_not_sent_again(
    clock: Clock, app: RecordingApp
) -> None:
    """Once a GET is answered its packets count as delivered: Engine.IO has
    no acknowledgement, so a connection lost after the answer was written
    cannot be told from one lost after the client read it, and sending them
    again could deliver a message twice. Only what no GET took is kept."""
    server = make_server(clock, app)
    session, _ = open_polling(server)
    poll = FakePoll()
    session.attach_poll(poll)
    session.send("handed over")
    clock.advance(0)
    assert poll.packets == [msg("handed over")]
    session.poll_lost(poll)  # the answered GET's connection dies afterwards
    assert session.state is SessionState.OPEN
    retry = FakePoll()
    session.attach_poll(retry)
    session.send("next")
    clock.advance(0)
    assert retry.packets == [msg("next")]


def test_client_that_does_not_poll_again_is_closed_after_the_ping_timeout(
    clock: Clock, app: RecordingApp
) -> None:
    """A client gone for good after its GET was dropped is cleaned up
    within the ping timeout, not kept until the heartbeat notices."""
    server = make_server(clock, app)
    session, _ = open_polling(server)
    poll = FakePoll()
    session.attach_poll(poll)
    clock.advance(0.25)
    session.poll_lost(poll)
    clock.advance(0.375)
    assert session.state is SessionState.OPEN
    clock.advance(0.125)  # the ping timeout (0.5 s) since the loss
    assert session.state is SessionState.CLOSED
    assert app.closed == [(session.sid, REASON_TRANSPORT_ERROR)]
    assert server.get_session(session.sid) is None
    assert clock.getDelayedCalls() == []


def test_heartbeat_still_ends_a_session_whose_client_keeps_polling_without_pong(
    clock: Clock, app: RecordingApp
) -> None:
    """A client that comes back after a dropped GET but never answers the
    ping is still closed by the heartbeat."""
    server = make_server(clock, app)
    session, _ = open_polling(server)
    poll = FakePoll()
    session.attach_poll(poll)
    session.poll_lost(poll)
    retry = FakePoll()
    session.attach_poll(retry)
    clock.advance(1.0)
    clock.advance(0)
    assert retry.packets == [packets.PING]
    session.attach_poll(FakePoll())
    clock.advance(0.5)
    assert app.closed == [(session.sid, REASON_PING_TIMEOUT)]


def test_get_lost_during_an_upgrade_does_not_close_the_upgraded_session(
    clock: Clock, app: RecordingApp
) -> None:
    """A client that finishes its upgrade after its last GET was dropped
    stays connected over WebSocket."""
    server = make_server(clock, app)
    session, _ = open_polling(server)
    poll = FakePoll()
    session.attach_poll(poll)
    channel = FakeChannel()
    session.begin_upgrade(channel)
    session.poll_lost(poll)
    session.receive_websocket(channel, packets.PING_PROBE)
    session.receive_websocket(channel, packets.UPGRADE)
    clock.advance(0.6)
    session.receive_websocket(channel, packets.PONG)
    assert session.state is SessionState.OPEN and session.upgraded


# -- upgrade (engine.io-protocol v4, "Upgrade") ------------------------------------


def test_upgrade_releases_pending_get_and_switches_without_loss(
    clock: Clock, app: RecordingApp
) -> None:
    """Messages sent during an upgrade must arrive once and in order on the new transport."""
    server = make_server(clock, app)
    session, _ = open_polling(server)
    poll = FakePoll()
    session.attach_poll(poll)
    channel = FakeChannel()
    assert session.begin_upgrade(channel)
    session.receive_websocket(channel, packets.PING_PROBE)
    assert channel.sent == [packets.PONG_PROBE]
    assert poll.packets == [packets.NOOP]
    # The client paused polling; the application keeps sending.
    session.send("m1")
    session.send("m2")
    clock.advance(0)
    session.receive(msg("posted during upgrade"))
    session.receive_websocket(channel, packets.UPGRADE)
    session.send("m3")
    clock.advance(0)
    assert [p.data for p in channel.sent[1:]] == ["m1", "m2", "m3"]
    assert session.transport_name == "websocket"
    assert session.upgraded
    session.receive_websocket(channel, msg("over ws"))
    assert app.messages == ["posted during upgrade", "over ws"]


def test_get_during_upgrade_collects_queue_before_noop(
    clock: Clock, app: RecordingApp
) -> None:
    """A poll arriving mid-upgrade takes what is queued, so nothing is stranded or duplicated."""
    server = make_server(clock, app)
    session, _ = open_polling(server)
    channel = FakeChannel()
    session.begin_upgrade(channel)
    session.receive_websocket(channel, packets.PING_PROBE)
    session.send("queued")
    clock.advance(0)
    poll = FakePoll()
    session.attach_poll(poll)
    assert poll.packets == [msg("queued")]
    idle_poll = FakePoll()
    session.attach_poll(idle_poll)
    assert idle_poll.packets == [packets.NOOP]
    session.receive_websocket(channel, packets.UPGRADE)
    assert channel.sent == [packets.PONG_PROBE]


def test_upgrade_timeout_closes_probe_and_keeps_polling(
    clock: Clock, app: RecordingApp
) -> None:
    """A failed upgrade must leave the client working over polling."""
    server = make_server(clock, app)
    session, _ = open_polling(server)
    channel = FakeChannel()
    session.begin_upgrade(channel)
    session.receive_websocket(channel, packets.PING_PROBE)
    clock.advance(3.0)
    assert channel.closed is not None
    session.receive(packets.PONG)
    assert session.state is SessionState.OPEN
    assert session.transport_name == "polling"
    assert session.begin_upgrade(FakeChannel())


def test_second_websocket_cannot_upgrade(clock: Clock, app: RecordingApp) -> None:
    """Two WebSockets for one session would split its packets between them."""
    server = make_server(clock, app)
    session, _ = open_polling(server)
    first = FakeChannel()
    assert session.begin_upgrade(first)
    assert not session.begin_upgrade(FakeChannel())
    session.receive_websocket(first, packets.PING_PROBE)
    session.receive_websocket(first, packets.UPGRADE)
    assert not session.begin_upgrade(FakeChannel())


def test_unexpected_packet_on_probe_ends_only_the_probe(
    clock: Clock, app: RecordingApp
) -> None:
    """A confused upgrade attempt must not kill the working polling session."""
    server = make_server(clock, app)
    session, _ = open_polling(server)
    channel = FakeChannel()
    session.begin_upgrade(channel)
    session.receive_websocket(channel, msg("too early"))
    assert channel.closed is not None
    assert session.state is SessionState.OPEN
    assert app.messages == []


def test_upgrade_packet_before_the_probe_ends_only_that_websocket(
    clock: Clock, app: RecordingApp
) -> None:
    """C{5} is only the answer to a completed probe: a WebSocket that skips
    the probe is closed, and the polling session keeps its queue and its GET."""
    server = make_server(clock, app)
    session, _ = open_polling(server)
    channel = FakeChannel()
    assert session.begin_upgrade(channel)
    session.receive_websocket(channel, packets.UPGRADE)
    assert channel.closed is not None and channel.closed[0] == 1002
    assert session.state is SessionState.OPEN
    assert session.transport_name == "polling" and not session.upgraded
    session.send("still polling")
    clock.advance(0)
    assert channel.sent == []
    poll = FakePoll()
    session.attach_poll(poll)
    assert poll.packets == [msg("still polling")]
    # A later, well-behaved upgrade still works.
    second = FakeChannel()
    assert session.begin_upgrade(second)
    session.receive_websocket(second, packets.PING_PROBE)
    session.receive_websocket(second, packets.UPGRADE)
    assert session.upgraded and session.uses(second)


@pytest.mark.parametrize(
    "probe",
    [
        Packet(PacketType.PING, ""),
        Packet(PacketType.PING, "probe "),
        Packet(PacketType.PING, "PROBE"),
        Packet(PacketType.PONG, "probe"),
        Packet(PacketType.NOOP, ""),
    ],
)
def test_a_probe_other_than_2probe_ends_only_that_websocket(
    clock: Clock, app: RecordingApp, probe: Packet
) -> None:
    """Only C{2probe} opens an upgrade; anything else closes that WebSocket
    (code 1002) and leaves the polling session as it was."""
    server = make_server(clock, app)
    session, _ = open_polling(server)
    poll = FakePoll()
    session.attach_poll(poll)
    channel = FakeChannel()
    assert session.begin_upgrade(channel)
    session.receive_websocket(channel, probe)
    assert channel.closed is not None and channel.closed[0] == 1002
    assert channel.sent == []
    assert poll.bodies == []  # the GET was not released for an upgrade
    session.receive_websocket(channel, packets.UPGRADE)
    assert session.state is SessionState.OPEN
    assert session.transport_name == "polling" and not session.upgraded
    session.send("m")
    clock.advance(0)
    assert poll.packets == [msg("m")]


def test_lost_websocket_closes_upgraded_session(
    clock: Clock, app: RecordingApp
) -> None:
    """When the WebSocket drops after an upgrade the application must hear of it."""
    server = make_server(clock, app)
    session, _ = open_polling(server)
    channel = FakeChannel()
    session.begin_upgrade(channel)
    session.receive_websocket(channel, packets.PING_PROBE)
    session.receive_websocket(channel, packets.UPGRADE)
    session.websocket_lost(channel)
    assert app.closed == [(session.sid, REASON_TRANSPORT_CLOSE)]


# -- rejection warnings --------------------------------------------------------------


def test_rejection_warnings_are_rate_limited_per_cause(clock: Clock) -> None:
    """A client hammering the server with bad input must not flood the logs,
    and one noisy cause must not silence another."""
    from twisted.logger import Logger

    from privydrop.logs.throttle import WarningThrottle

    log = Logger()
    rejections = WarningThrottle(clock, interval_s=10.0)
    with capturedLogs() as events:
        results = [
            rejections.warn(log, "bad payload", "bad {n}", n=i) for i in range(4)
        ]
        assert rejections.warn(log, "overlapping GET", "overlap")
        clock.advance(10.0)
        assert rejections.warn(log, "bad payload", "bad again")
    assert results == [True, False, False, False]
    assert [(e["cause"], e["suppressed"]) for e in events] == [
        ("bad payload", 0),
        ("overlapping GET", 0),
        ("bad payload", 3),
    ]
    assert all(e["log_level"].name == "warn" for e in events)


def test_close_all_without_linger_ends_idle_polling_sessions_now(
    clock: Clock, app: RecordingApp
) -> None:
    """On process shutdown (listener already gone) a polling user between two
    GETs must be cleaned up at once, or their room binding outlives the process."""
    server = make_server(clock, app)
    session, _ = open_polling(server)
    server.close_all(linger=False)
    assert server.get_session(session.sid) is None
    assert server.clients_count == 0
    assert app.closed == [(session.sid, "server shutting down")]


# -- flushing many sessions ----------------------------------------------------


def test_one_timer_flushes_every_session_written_to_in_a_turn(
    clock: Clock, app: RecordingApp
) -> None:
    """A timer per session and turn made every relayed message pay for a
    DelayedCall; a broadcast to many sessions must still leave in one turn."""
    server = make_server(clock, app)
    opened = [open_websocket(server) for _ in range(3)]
    clock.advance(0)
    before = [channel.writes for _, channel in opened]
    for session, _ in opened:
        session.send("x")
        session.send("y")
    assert len(clock.getDelayedCalls()) == len(opened) + 1  # pings + one flush
    clock.advance(0)
    assert [channel.writes for _, channel in opened] == [n + 1 for n in before]
    assert [[p.data for p in channel.sent[-2:]] for _, channel in opened] == [["x", "y"]] * 3


def test_held_flushes_are_written_when_the_read_is_handled(
    clock: Clock, app: RecordingApp
) -> None:
    """What a client's read makes the server send must leave right after that
    read, without waiting a reactor turn (latency under load)."""
    server = make_server(clock, app)
    session, channel = open_websocket(server)
    clock.advance(0)
    calls = len(clock.getDelayedCalls())
    server.flushes.hold()
    session.send("a")
    session.send("b")
    assert len(clock.getDelayedCalls()) == calls  # no timer while held
    assert [p.data for p in channel.sent[1:]] == []
    server.flushes.release()
    assert [p.data for p in channel.sent[1:]] == ["a", "b"]
    clock.advance(0)
    assert [p.data for p in channel.sent[1:]] == ["a", "b"]


def test_closed_session_leaves_no_flush_timer_behind(
    clock: Clock, app: RecordingApp
) -> None:
    """A session closed with packets queued must not be flushed (or keep a
    timer) afterwards."""
    server = make_server(clock, app)
    session, channel = open_websocket(server)
    clock.advance(0)
    session.send("late")
    session.force_close("test")
    assert clock.getDelayedCalls() == []
    assert [p.data for p in channel.sent[1:]] == []


def test_a_failing_flush_closes_only_its_own_session(
    clock: Clock, app: RecordingApp
) -> None:
    """One broken transport must not stop the others' writes of the turn."""
    server = make_server(clock, app)
    (broken, broken_channel), (healthy, healthy_channel) = (
        open_websocket(server),
        open_websocket(server),
    )
    clock.advance(0)

    def explode(outgoing: Sequence[Packet]) -> None:
        raise OSError("gone")

    broken_channel.send_packets = explode  # type: ignore[method-assign]
    broken.send("x")
    healthy.send("y")
    clock.advance(0)
    assert broken.state is SessionState.CLOSED
    assert [p.data for p in healthy_channel.sent[1:]] == ["y"]


# -- how a session ended (close_kind) ----------------------------------------------


@attrs.define
class KindApp(RecordingApp):
    kinds: list[object] = attrs.Factory(list)

    def on_close(self, connection: EngineConnection, reason: str) -> None:
        super().on_close(connection, reason)
        self.kinds.append(connection.close_kind)


def test_close_kinds_tell_leaving_from_losing(clock: Clock) -> None:
    """The layer above keeps a socket recoverable only when its transport
    was lost or the server shut down, so each end reports its kind."""
    from privydrop.engineio.interface import CloseKind

    app = KindApp()
    server = make_server(clock, app)

    closed_by_client, _ = open_websocket(server)
    assert closed_by_client.close_kind is None
    closed_by_client.receive(packets.CLOSE)

    timed_out, _ = open_websocket(server)
    polling_gone, _ = open_polling(server)
    held = FakePoll()
    polling_gone.attach_poll(held)
    polling_gone.poll_lost(held)
    refused, _ = open_websocket(server)
    refused.receive(Packet(PacketType.OPEN, ""))
    for step in (1.0, 0, 0.5):  # ping interval, the flush, ping timeout
        clock.advance(step)
    # (A dropped GET ends the session only when no new one came in time.)
    kinds = dict(zip([sid for sid, _ in app.closed], app.kinds))
    assert kinds == {
        closed_by_client.sid: CloseKind.CLIENT,
        timed_out.sid: CloseKind.LOST,
        polling_gone.sid: CloseKind.LOST,
        refused.sid: CloseKind.SERVER,
    }

    app.kinds.clear()
    open_websocket(server)
    server.close_all(linger=False)
    assert app.kinds == [CloseKind.SHUTDOWN]


def test_polling_client_that_stops_polling_is_lost(clock: Clock) -> None:
    """No GET comes, so no pong: the ping timeout ends it as lost."""
    from privydrop.engineio.interface import CloseKind

    app = KindApp()
    server = make_server(clock, app)
    open_polling(server)
    for step in (1.0, 0, 0.5):
        clock.advance(step)
    assert app.closed and app.closed[0][1] == REASON_PING_TIMEOUT
    assert app.kinds == [CloseKind.LOST]


def test_polling_close_packet_is_a_leave_only_while_a_get_is_held(clock: Clock) -> None:
    """engine.io-client sends a close packet after a failed poll too, just
    before it reconnects; then no GET is held here, and it must not count
    as the client leaving."""
    from privydrop.engineio.interface import CloseKind

    app = KindApp()
    server = make_server(clock, app)
    leaving, _ = open_polling(server)
    leaving.attach_poll(FakePoll())
    leaving.receive_many([packets.CLOSE])
    after_failed_poll, _ = open_polling(server)
    after_failed_poll.receive_many([packets.CLOSE])
    assert app.kinds == [CloseKind.CLIENT, CloseKind.LOST]
