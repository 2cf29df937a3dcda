"""The official socket.io-protocol test-suite's Socket.IO cases, as our own
tests.

The suite itself is not in any registry (see C{examples/socketio_echo.py} for
running it); these tests send the same frames over a raw WebSocket to the
same echo server on a real loopback port and expect the same answers, byte
for byte. Heartbeats are slowed down so no ping gets between the messages
under test; the connect timeout is shortened so its test is quick.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Union

import attrs
import orjson
import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint

from examples.socketio_echo import SUITE_ENGINE_SETTINGS
from privydrop.settings import SocketIOSettings
from tests.interop.socketio_harness import RunningServer, start_server, stop_server

ENGINE_SETTINGS = attrs.evolve(SUITE_ENGINE_SETTINGS, ping_interval_ms=25_000, ping_timeout_ms=20_000)
SOCKETIO_SETTINGS = SocketIOSettings(connect_timeout_ms=300, recovery_window_ms=0)

Frame = Union[str, bytes]


class RawClient(WebSocketClientProtocol):
    """A WebSocket client that queues every message it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.received: DeferredQueue[Frame] = DeferredQueue()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.received.put(payload if isBinary else payload.decode("utf-8"))

    def next(self) -> Deferred[Frame]:
        return self.received.get()

    def send(self, frame: Frame) -> None:
        if isinstance(frame, bytes):
            self.sendMessage(frame, isBinary=True)
        else:
            self.sendMessage(frame.encode("utf-8"))


@pytest_twisted.async_yield_fixture
async def server() -> AsyncIterator[RunningServer]:
    running = await start_server(ENGINE_SETTINGS, SOCKETIO_SETTINGS)
    yield running
    await stop_server(running)


@pytest_twisted.async_yield_fixture
async def connect(server: RunningServer) -> AsyncIterator[Any]:
    """Open raw WebSocket clients that have received the Engine.IO handshake."""
    clients: list[RawClient] = []

    async def open_client() -> RawClient:
        port = server.url.rsplit(":", 1)[1]
        factory = WebSocketClientFactory(
            "ws://127.0.0.1:{}/socket.io/?EIO=4&transport=websocket".format(port)
        )
        factory.protocol = RawClient
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", int(port))
        client: RawClient = await endpoint.connect(factory)
        clients.append(client)
        await client.is_open
        handshake = await client.next()
        assert isinstance(handshake, str) and handshake.startswith("0{")
        return client

    yield open_client
    for client in clients:
        client.dropConnection(abort=True)
        await client.is_closed


async def socketio_connection(open_client: Any) -> RawClient:
    """As the suite's initSocketIOConnection: connected to "/" and "auth" read."""
    client = await open_client()
    client.send("40")
    assert str(await client.next()).startswith("40")
    assert await client.next() == '42["auth",{}]'
    return client


def handshake_sid(frame: Frame, prefix: str) -> str:
    assert isinstance(frame, str) and frame.startswith(prefix)
    body = orjson.loads(frame[len(prefix):])
    assert list(body) == ["sid"] and isinstance(body["sid"], str)
    return str(body["sid"])


@pytest_twisted.ensureDeferred
async def test_connect_to_main_namespace(connect: Any) -> None:
    """Clients connecting to "/" get a socket id, then the server's events."""
    client = await connect()
    client.send("40")
    handshake_sid(await client.next(), "40")
    assert await client.next() == '42["auth",{}]'


@pytest_twisted.ensureDeferred
async def test_connect_to_main_namespace_with_payload(connect: Any) -> None:
    """The auth payload reaches the server's connect handler."""
    client = await connect()
    client.send('40{"token":"123"}')
    handshake_sid(await client.next(), "40")
    assert await client.next() == '42["auth",{"token":"123"}]'


@pytest_twisted.ensureDeferred
async def test_connect_to_custom_namespace(connect: Any) -> None:
    """Custom namespaces answer with their own prefix, with and without auth."""
    client = await connect()
    client.send("40/custom,")
    handshake_sid(await client.next(), "40/custom,")
    assert await client.next() == '42/custom,["auth",{}]'
    other = await connect()
    other.send('40/custom,{"token":"abc"}')
    handshake_sid(await other.next(), "40/custom,")
    assert await other.next() == '42/custom,["auth",{"token":"abc"}]'


@pytest_twisted.ensureDeferred
async def test_unknown_namespace_is_refused(connect: Any) -> None:
    """A namespace nobody registered gets CONNECT_ERROR "Invalid namespace"."""
    client = await connect()
    client.send("40/random")
    assert await client.next() == '44/random,{"message":"Invalid namespace"}'


@pytest_twisted.ensureDeferred
async def test_invalid_handshake_closes_connection(connect: Any) -> None:
    """Garbage instead of CONNECT ends the connection."""
    client = await connect()
    client.send("4abc")
    await client.is_closed


@pytest_twisted.ensureDeferred
async def test_no_handshake_closes_connection(connect: Any) -> None:
    """A client that never sends CONNECT is closed after connect_timeout_ms."""
    client = await connect()
    await client.is_closed


@pytest_twisted.ensureDeferred
async def test_disconnect_from_main_namespace_keeps_the_connection(connect: Any) -> None:
    """After leaving "/" the connection stays open (the suite waits for the
    next ping on it): another namespace can still be joined."""
    client = await socketio_connection(connect)
    client.send("41")
    client.send("40/custom,")
    handshake_sid(await client.next(), "40/custom,")


@pytest.mark.parametrize(
    "frames",
    [
        ["41", '42["message","after leaving"]'],  # after the client's DISCONNECT
        ["40"],  # a second CONNECT to "/"
        ['42/custom,["message","never connected"]'],
        ["43/custom,1[]"],
    ],
)
@pytest_twisted.ensureDeferred
async def test_packets_out_of_namespace_state_close_the_connection(
    connect: Any, frames: list[str]
) -> None:
    """As the reference server: a packet its namespace's state does not
    allow closes the connection, and gets no answer."""
    client = await socketio_connection(connect)
    for frame in frames:
        client.send(frame)
    await client.is_closed
    assert client.received.pending == []


@pytest.mark.parametrize("frame", ["40null", '40"x"', "40[]", "40/custom,null"])
@pytest_twisted.ensureDeferred
async def test_connect_with_a_payload_that_is_not_an_object_closes_the_connection(
    connect: Any, frame: str
) -> None:
    """socket.io-parser refuses such a CONNECT, and the reference server
    closes the connection: no socket is created."""
    client = await connect()
    client.send(frame)
    await client.is_closed
    assert client.received.pending == []


@pytest_twisted.ensureDeferred
async def test_event_before_connect_closes_the_connection(connect: Any) -> None:
    """Nothing but CONNECT is allowed before the client is connected."""
    client = await connect()
    client.send('42["message","too early"]')
    await client.is_closed
    assert client.received.pending == []


@pytest_twisted.ensureDeferred
async def test_connect_then_disconnect_from_custom_namespace(connect: Any) -> None:
    """Leaving a custom namespace leaves "/" working on the same connection."""
    client = await socketio_connection(connect)
    client.send("40/custom")
    handshake_sid(await client.next(), "40/custom,")
    assert await client.next() == '42/custom,["auth",{}]'
    client.send("41/custom")
    client.send('42["message","message to main namespace"]')
    assert await client.next() == '42["message-back","message to main namespace"]'


@pytest_twisted.ensureDeferred
async def test_plain_text_event(connect: Any) -> None:
    """Event arguments come back exactly as sent."""
    client = await socketio_connection(connect)
    client.send('42["message",1,"2",{"3":[true]}]')
    assert await client.next() == '42["message-back",1,"2",{"3":[true]}]'


@pytest_twisted.ensureDeferred
async def test_event_with_binary_attachments(connect: Any) -> None:
    """Binary attachments come back as binary frames after their header."""
    client = await socketio_connection(connect)
    client.send('452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]')
    client.send(b"\x01\x02\x03")
    client.send(b"\x04\x05\x06")
    assert await client.next() == (
        '452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'
    )
    assert await client.next() == b"\x01\x02\x03"
    assert await client.next() == b"\x04\x05\x06"


@pytest_twisted.ensureDeferred
async def test_event_with_ack(connect: Any) -> None:
    """The ack carries the same id and the handler's answer."""
    client = await socketio_connection(connect)
    client.send('42456["message-with-ack",1,"2",{"3":[false]}]')
    assert await client.next() == '43456[1,"2",{"3":[false]}]'


@pytest_twisted.ensureDeferred
async def test_binary_event_with_binary_ack(connect: Any) -> None:
    """A binary answer to an ack is a BINARY_ACK with its attachments."""
    client = await socketio_connection(connect)
    client.send(
        '452-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'
    )
    client.send(b"\x01\x02\x03")
    client.send(b"\x04\x05\x06")
    assert await client.next() == '462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'
    assert await client.next() == b"\x01\x02\x03"
    assert await client.next() == b"\x04\x05\x06"


@pytest_twisted.ensureDeferred
async def test_ack_id_of_16_digits_is_answered(connect: Any) -> None:
    """The largest ack id a JavaScript client holds exactly comes back as sent."""
    client = await socketio_connection(connect)
    client.send('429007199254740991["message-with-ack",1]')
    assert await client.next() == "439007199254740991[1]"


@pytest_twisted.ensureDeferred
async def test_invalid_packets_close_connection(connect: Any) -> None:
    """Unknown type, bad payload and bad ack id each close the connection."""
    for frame in (
        "4abc",
        "42{}",
        '42abc["message-with-ack",1,"2",{"3":[false]}]',
        '4212345678901234567["message-with-ack",1]',  # 17 digits
        '429007199254740992["message-with-ack",1]',  # 2^53
    ):
        client = await socketio_connection(connect)
        client.send(frame)
        await client.is_closed
