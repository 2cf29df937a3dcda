"""Two server processes' worth of Socket.IO, sharing one real Redis.

Each node is a real L{SocketIOServer} + L{EngineServer} site on its own
loopback port, with a L{ClusterAdapter} whose L{ClusterService} holds real
txredisapi connections. Clients are raw Autobahn WebSocket clients speaking
Engine.IO v4 / Socket.IO v5 (C{0} open, C{40} connect, C{42[...]} events,
C{43} acks), so what is asserted is what a browser would receive.

Pub/sub ignores Redis database indexes, so every test uses a channel prefix
of its own. The Redis here is 7.x: nodes use sharded pub/sub unless told
to use classic (the fallback for older servers), which some tests force.
The rooms are joined without their members (no store here), so they are
routed through the shared channel; tracked rooms are exercised with the
whole server in C{test_cluster_signaling.py}. Tests that restart, pause or password-protect Redis run their
own redis-server, so the shared one is never pulled from under other tests.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.web.resource import Resource
from twisted.web.server import Site

from privydrop.cluster.pubsub import ClusterService, PublishError, PubSubMode, RedisPublisher
from privydrop.cluster.routing import ClusterAdapter
from privydrop.engineio.resource import build_engineio_resource
from privydrop.engineio.server import EngineServer
from privydrop.settings import EngineSettings, OriginSettings, SocketIOSettings
from privydrop.socketio.packets import Packet, PacketType
from privydrop.socketio.server import SocketIOServer
from tests.conftest import redis_settings
from tests.redis_server import RedisServer

ENGINE_SETTINGS = EngineSettings(path="/socket.io/", origins=OriginSettings(allow_any=True))

#: Longest wait for anything a test expects; a failure, not a hang, past it.
WAIT_S = 10.0


def within(d: Deferred[Any]) -> Deferred[Any]:
    """C{d}, failing with TimeoutError if it has not fired within L{WAIT_S}."""
    return d.addTimeout(WAIT_S, reactor)


class SocketIOClient(WebSocketClientProtocol):
    """A minimal Socket.IO v5 client over the Engine.IO v4 WebSocket transport.

    Events (text header plus any binary attachments) are queued raw; acks
    are matched by id.
    """

    def __init__(self) -> None:
        super().__init__()
        self.events: DeferredQueue[list[str | bytes]] = DeferredQueue()
        self.sio_connected: Deferred[str] = Deferred()
        self.sio_closed: Deferred[None] = Deferred()
        self._acks: dict[int, Deferred[Any]] = {}
        self._ack_ids = itertools.count()
        self._partial: list[str | bytes] | None = None
        self._missing = 0

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            assert self._partial is not None and self._missing > 0
            self._partial.append(payload)
            self._missing -= 1
            if self._missing == 0:
                self.events.put(self._partial)
                self._partial = None
            return
        text = payload.decode("utf-8")
        if text.startswith("0"):  # Engine.IO open: connect to "/"
            self.sendMessage(b"40")
        elif text == "2":  # Engine.IO ping
            self.sendMessage(b"3")
        elif text.startswith("40"):
            self.sio_connected.callback(orjson.loads(text[2:])["sid"])
        elif text.startswith("42"):
            self.events.put([text[1:]])
        elif text.startswith("45"):
            self._missing = int(text[2 : text.index("-")])
            self._partial = [text[1:]]
        elif text.startswith("43"):
            body = text[2:]
            split = body.index("[")
            self._acks.pop(int(body[:split])).callback(orjson.loads(body[split:]))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.sio_connected.called:
            self.sio_connected.errback(ConnectionError(f"closed before connecting: {reason}"))
        for d in self._acks.values():
            d.errback(ConnectionError("closed"))
        self._acks = {}
        self.sio_closed.callback(None)

    def emit(self, event: str, *args: Any) -> None:
        self.sendMessage(b"42" + orjson.dumps([event, *args]))

    def call(self, event: str, *args: Any) -> Deferred[Any]:
        """Emit with an ack; fires with the ack's arguments."""
        ack_id = next(self._ack_ids)
        d: Deferred[Any] = Deferred()
        self._acks[ack_id] = d
        self.sendMessage(b"42%d" % ack_id + orjson.dumps([event, *args]))
        return within(d)

    async def next_event(self) -> list[str | bytes]:
        event: list[str | bytes] = await within(self.events.get())
        return event

    def pending_events(self) -> list[list[str | bytes]]:
        return list(self.events.pending)


@attrs.define
class Node:
    """One process of the cluster: Socket.IO, Engine.IO, a site, the adapter service."""

    sio: SocketIOServer
    engine: EngineServer
    service: ClusterService
    port: IListeningPort
    clients: list[SocketIOClient] = attrs.Factory(list)

    async def client(self) -> tuple[SocketIOClient, str]:
        number = self.port.getHost().port
        factory = WebSocketClientFactory(
            f"ws://127.0.0.1:{number}/socket.io/?EIO=4&transport=websocket"
        )
        factory.protocol = SocketIOClient
        client: SocketIOClient = await TCP4ClientEndpoint(reactor, "127.0.0.1", number).connect(
            factory
        )
        self.clients.append(client)
        socket_id = await within(client.sio_connected)
        return client, socket_id


def _install_handlers(sio: SocketIOServer) -> None:
    ns = sio.of("/")

    def join(socket: Any, room: str) -> bool:
        socket.join(room)
        return True

    ns.on("join", join)
    ns.on("ping-me", lambda socket: True)
    ns.on("to-room", lambda socket, room, *args: socket.to(room).emit("room-event", *args))
    ns.on(
        "to-peer",
        lambda socket, room, target, *args: ns.emit_to_socket(
            target, "direct", *args, only_if_in_room=room
        ),
    )


StartNode = Callable[..., Awaitable[Node]]


@pytest_twisted.async_yield_fixture
async def start_node() -> AsyncIterator[StartNode]:
    nodes: list[Node] = []

    async def start(server: RedisServer, prefix: str, pubsub: str = "auto") -> Node:
        service = ClusterService(
            redis_settings(server),
            reactor,
            channel_prefix=prefix,
            pubsub=pubsub,
            reconnect_initial_delay=0.05,
            reconnect_max_delay=0.5,
        )
        sio = SocketIOServer(reactor, SocketIOSettings(recovery_window_ms=0), adapter=service.adapter)
        _install_handlers(sio)
        engine = EngineServer(reactor, ENGINE_SETTINGS, sio)
        root = Resource()
        root.putChild(b"socket.io", build_engineio_resource(engine))
        site = Site(root)
        site.noisy = False
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(site)
        node = Node(sio, engine, service, port)
        nodes.append(node)
        service.startService()
        await within(service.wait_subscribed())
        return node

    yield start

    for node in nodes:
        node.engine.close_all()
        for client in node.clients:
            if client.transport is not None:
                client.dropConnection(abort=True)
        await DeferredList([c.sio_closed for c in node.clients])
        await node.port.stopListening()
        if node.service.running:
            await node.service.stopService()


@pytest.fixture
def prefix() -> str:
    return "test-" + secrets.token_hex(4)


async def roundtrip(client: SocketIOClient) -> None:
    """Everything the server sent this client before now has arrived."""
    assert await client.call("ping-me") == [True]


def publish_raw(server: RedisServer, node: Node, channel: str, payload: str) -> int:
    """Publish as a stranger would, with the commands the cluster uses."""
    mode = node.service.mode
    assert mode is not None
    result: int = server.command(mode.publish_command, channel, payload)
    return result


@pytest.mark.parametrize("pubsub", ["auto", "classic"])
@pytest_twisted.ensureDeferred
async def test_room_event_from_node_a_reaches_socket_on_node_b(
    redis_server: RedisServer, start_node: StartNode, prefix: str, pubsub: str
) -> None:
    """Two peers whose browsers landed on different processes could not
    signal each other at all (with sharded pub/sub, and with the classic
    commands older Redis servers have)."""
    a = await start_node(redis_server, prefix, pubsub)
    b = await start_node(redis_server, prefix, pubsub)
    expected = PubSubMode.SHARDED if pubsub == "auto" else PubSubMode.CLASSIC
    assert a.service.mode is b.service.mode is expected
    # Each node holds its two subscriptions of that kind (CLIENT LIST).
    field = "ssub" if expected is PubSubMode.SHARDED else "sub"
    subscribers = [
        line for line in redis_server.command("CLIENT", "LIST").splitlines()
        if f"privydrop:{a.service.node_id}:subscribe" in line
    ]
    assert len(subscribers) == 1 and f" {field}=2 " in subscribers[0]
    alice, _ = await a.client()
    bob, _ = await b.client()
    carol, _ = await b.client()
    assert await alice.call("join", "room-1") == [True]
    assert await bob.call("join", "room-1") == [True]

    alice.emit("to-room", "room-1", {"type": "offer", "n": 1})
    assert await bob.next_event() == ['2["room-event",{"type":"offer","n":1}]']
    await roundtrip(alice)
    await roundtrip(carol)
    assert alice.pending_events() == [] and carol.pending_events() == []
    assert a.service.adapter.published >= 1 and a.service.adapter.publish_failures == 0


@pytest.mark.parametrize("pubsub", ["auto", "classic"])
@pytest_twisted.ensureDeferred
async def test_send_to_socket_id_on_the_other_node(
    redis_server: RedisServer, start_node: StartNode, prefix: str, pubsub: str
) -> None:
    """An answer addressed to one peer reaches it on another process, and
    only when that peer is in the room the sender names."""
    a = await start_node(redis_server, prefix, pubsub)
    b = await start_node(redis_server, prefix, pubsub)
    alice, _ = await a.client()
    bob, bob_id = await b.client()
    assert await alice.call("join", "r") == [True]

    assert await bob.call("join", "lobby") == [True]

    alice.emit("to-peer", "r", bob_id, "too early")  # bob is not in "r" yet
    # Node A publishes in order, so once the marker arrived, node B has
    # already decided about the message before it.
    alice.emit("to-room", "lobby", "marker")
    assert await bob.next_event() == ['2["room-event","marker"]']
    assert await bob.call("join", "r") == [True]
    alice.emit("to-peer", "r", bob_id, {"type": "answer"})
    assert await bob.next_event() == ['2["direct",{"type":"answer"}]']
    assert bob.pending_events() == []


@pytest_twisted.ensureDeferred
async def test_binary_event_crosses_nodes_intact(
    redis_server: RedisServer, start_node: StartNode, prefix: str
) -> None:
    """Binary data emitted on one process reaches clients of another byte for byte."""
    a = await start_node(redis_server, prefix)
    b = await start_node(redis_server, prefix)
    bob, _ = await b.client()
    assert await bob.call("join", "r") == [True]
    blob = bytes(range(256))
    a.sio.of("/").to("r").emit("blob", blob, "tail")
    assert await bob.next_event() == [
        '51-["blob",{"_placeholder":true,"num":0},"tail"]',
        blob,
    ]


@pytest_twisted.ensureDeferred
async def test_garbage_on_the_channel_does_not_stop_delivery(
    redis_server: RedisServer, start_node: StartNode, prefix: str
) -> None:
    """Something else publishing on our channel must not break signaling."""
    a = await start_node(redis_server, prefix)
    b = await start_node(redis_server, prefix)
    alice, _ = await a.client()
    bob, _ = await b.client()
    assert await bob.call("join", "r") == [True]
    receivers = publish_raw(redis_server, a, a.service.adapter.shared_channel, "junk")
    assert receivers == 2
    alice.emit("to-room", "r", "after junk")
    assert await bob.next_event() == ['2["room-event","after junk"]']
    assert b.service.adapter.dropped == 1


@pytest_twisted.ensureDeferred
async def test_stopping_a_node_unsubscribes_it(
    redis_server: RedisServer, start_node: StartNode, prefix: str
) -> None:
    """A stopped process must not stay subscribed (Redis would keep sending
    it every message of the cluster)."""
    a = await start_node(redis_server, prefix)
    b = await start_node(redis_server, prefix)
    channel = a.service.adapter.shared_channel
    assert publish_raw(redis_server, a, channel, "probe") == 2
    assert publish_raw(redis_server, a, b.service.adapter.channel, "probe") == 1
    await b.service.stopService()
    assert not b.service.subscribed
    assert publish_raw(redis_server, a, channel, "probe") == 1
    assert publish_raw(redis_server, a, b.service.adapter.channel, "probe") == 0
    await a.service.stopService()
    assert publish_raw(redis_server, a, channel, "probe") == 0


@pytest_twisted.ensureDeferred
async def test_delivery_resumes_after_redis_restart(
    private_redis: RedisServer, start_node: StartNode, prefix: str
) -> None:
    """After a Redis restart (failover, upgrade) processes must subscribe
    again by themselves; otherwise cross-process signaling would stay
    silently dead until the servers were restarted."""
    a = await start_node(private_redis, prefix)
    b = await start_node(private_redis, prefix)
    alice, _ = await a.client()
    bob, bob_id = await b.client()
    assert await bob.call("join", "r") == [True]
    alice.emit("to-room", "r", "before")
    assert await bob.next_event() == ['2["room-event","before"]']

    for restart in range(2):  # every reconnection, not just the first
        seen_a, seen_b = a.service.subscriptions, b.service.subscriptions
        private_redis.restart()
        assert await within(a.service.wait_subscribed(seen_a)) == seen_a + 1
        assert await within(b.service.wait_subscribed(seen_b)) == seen_b + 1
        alice.emit("to-room", "r", f"after restart {restart}")
        assert await bob.next_event() == [f'2["room-event","after restart {restart}"]']
    a.sio.of("/").emit_to_socket(bob_id, "direct", "after restart")
    assert await bob.next_event() == ['2["direct","after restart"]']


@pytest_twisted.ensureDeferred
async def test_publish_gives_up_within_its_deadline_when_redis_is_down(tmp_path: Path) -> None:
    """With Redis unreachable, an emit must not leave work queued for ever:
    each publication fails after its deadline and is counted as lost."""
    down = RedisServer(tmp_path / "never-started")  # a free port, nothing listening
    publisher = RedisPublisher(
        redis_settings(down, connect_timeout=0.5), reactor, timeout=0.3,
        reconnect_initial_delay=0.05, reconnect_max_delay=0.1,
    )
    publisher.mode = PubSubMode.CLASSIC
    publications: list[Deferred[Any]] = []

    def publish(channel: str, payload: bytes) -> Deferred[Any]:
        publications.append(publisher.publish(channel, payload))
        return publications[-1]

    adapter = ClusterAdapter("lonely", publish, clock=reactor)
    publisher.start()
    try:
        with pytest.raises(PublishError, match="no Redis connection within 0.3s"):
            await within(publisher.publish("p#all#", b"{}"))
        adapter.broadcast(Packet(PacketType.EVENT, "/", ["x"]), frozenset(), frozenset())
        # The adapter's errback has handled the loss once this fires.
        assert await within(publications[0]) is None
        assert adapter.publish_failures == 1
    finally:
        await publisher.close()
    with pytest.raises(PublishError, match="not running"):
        await publisher.publish("p#/#", b"{}")


@pytest_twisted.ensureDeferred
async def test_publications_during_an_outage_fail_in_time_and_leave_nothing_waiting(
    private_redis: RedisServer,
) -> None:
    """While Redis is down, every emit's publication fails after its
    deadline and nothing stays queued (a long outage must not grow memory
    with one waiter per lost message); once Redis is back, publishing works
    without a restart."""
    name = "privydrop:t:publish"
    publisher = RedisPublisher(
        redis_settings(private_redis), reactor, name=name, timeout=0.3,
        reconnect_initial_delay=0.05, reconnect_max_delay=0.1,
    )
    publisher.mode = PubSubMode.CLASSIC
    publisher.start()
    try:
        assert await within(publisher.publish("p#/#", b"{}")) == 0
        private_redis.kill()
        started = reactor.seconds()
        publications = [publisher.publish("p#/#", b"%d" % i) for i in range(20)]
        outcomes = await within(DeferredList(publications, consumeErrors=True))
        assert all(not ok and failure.check(PublishError) for ok, failure in outcomes)
        assert reactor.seconds() - started < 0.3 + 0.75
        connection = publisher.connection
        assert connection is not None and connection.waiting == 0
        private_redis.start()
        for _ in range(40):  # each try is bounded by the publisher's timeout
            up, stop_up = pool_event(name, "reachable")
            try:
                assert await within(publisher.publish("p#/#", b"{}")) == 0
                break
            except PublishError:
                if connection.unreachable is not None:
                    # Failed at once: Redis was known to be away; it is
                    # back once the next attempt connects.
                    await within(up)
            finally:
                stop_up()
        else:
            raise AssertionError("publishing did not recover after Redis came back")
        assert connection.waiting == 0
    finally:
        await publisher.close()


def pool_event(name: str, state: str) -> tuple[Deferred[None], Callable[[], None]]:
    """A Deferred fired when the Redis connection C{name} reports C{state}
    (C{"unreachable"}, C{"reachable"}), and the function that stops watching."""
    from twisted.logger import globalLogPublisher

    seen: Deferred[None] = Deferred()

    def observe(event: dict[str, Any]) -> None:
        if event.get("name") == name and event.get("state") == state and not seen.called:
            seen.callback(None)

    globalLogPublisher.addObserver(observe)
    return seen, lambda: globalLogPublisher.removeObserver(observe)


@pytest_twisted.ensureDeferred
async def test_publications_while_redis_is_known_down_fail_at_once_and_leave_nothing_waiting(
    private_redis: RedisServer,
) -> None:
    """Once the publisher knows Redis is down (a reconnection attempt was
    refused), each publication fails at once, not after
    REDIS_COMMAND_TIMEOUT, and leaves no waiter behind: a long outage with
    busy rooms neither grows memory with one waiter per lost message nor
    fires them all in one reactor turn when Redis returns. Once Redis is
    back, publishing works again without a restart."""
    publisher = RedisPublisher(
        redis_settings(private_redis), reactor, name="privydrop:t:publish", timeout=5.0,
        reconnect_initial_delay=0.05, reconnect_max_delay=0.1,
    )
    publisher.mode = PubSubMode.CLASSIC
    down, stop_down = pool_event("privydrop:t:publish", "unreachable")
    up, stop_up = pool_event("privydrop:t:publish", "reachable")
    publisher.start()
    try:
        assert await within(publisher.publish("p#/#", b"{}")) == 0
        private_redis.kill()
        await within(down)
        publications = [publisher.publish("p#/#", b"%d" % i) for i in range(50)]
        connection = publisher.connection
        assert connection is not None and connection.waiting == 0
        assert all(d.called for d in publications)  # failed already: nothing waits
        outcomes = await DeferredList(publications, consumeErrors=True)
        assert all(not ok and failure.check(PublishError) for ok, failure in outcomes)
        assert "unreachable" in str(outcomes[0][1].value)
        private_redis.start()
        await within(up)
        assert await within(publisher.publish("p#/#", b"{}")) == 0
        assert connection.waiting == 0
    finally:
        stop_down()
        stop_up()
        await publisher.close()


@pytest_twisted.ensureDeferred
async def test_publish_to_a_stalled_redis_times_out_and_recovers(
    private_redis: RedisServer,
) -> None:
    """A Redis that hangs (paused, swapping, partitioned) costs each
    publication at most its deadline, and publishing works again once Redis
    answers, on a fresh connection (a late reply cannot be mistaken for the
    next one's)."""
    publisher = RedisPublisher(
        redis_settings(private_redis), reactor, timeout=0.3,
        reconnect_initial_delay=0.05, reconnect_max_delay=0.1,
    )
    publisher.mode = PubSubMode.CLASSIC
    publisher.start()
    try:
        assert await within(publisher.publish("p#/#", b"{}")) == 0
        private_redis.pause()
        try:
            with pytest.raises(PublishError, match="no answer to PUBLISH within 0.3s"):
                await within(publisher.publish("p#/#", b"{}"))
        finally:
            private_redis.resume()
        assert private_redis.command("PING") == "PONG"
        assert await within(publisher.publish("p#/#", b"{}")) == 0
    finally:
        await publisher.close()


@pytest_twisted.ensureDeferred
async def test_nodes_authenticate_to_a_password_protected_redis(
    password_redis: RedisServer, start_node: StartNode, prefix: str
) -> None:
    """Production Redis requires a password; both the publishing and the
    subscribing connection must authenticate or nothing crosses processes."""
    a = await start_node(password_redis, prefix)
    b = await start_node(password_redis, prefix)
    alice, _ = await a.client()
    bob, _ = await b.client()
    assert await bob.call("join", "r") == [True]
    alice.emit("to-room", "r", "authenticated")
    assert await bob.next_event() == ['2["room-event","authenticated"]']


@pytest_twisted.ensureDeferred
async def test_cluster_connections_recover_once_redis_accepts_the_password(
    password_redis: RedisServer, prefix: str
) -> None:
    """A Redis password that is refused (mistyped, or rotated on the Redis
    side first) is reported and retried: once Redis accepts it, this process
    subscribes and publishes again by itself, without a restart, and the
    refusal never surfaces as an "Unhandled error in Deferred"."""
    import gc

    from twisted.logger import globalLogPublisher

    refused: Deferred[None] = Deferred()
    events: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        events.append(event)
        text = str(event.get("log_format", "")) + str(event.get("error", ""))
        if "auth" in text.lower() and not refused.called:
            refused.callback(None)

    service = ClusterService(
        redis_settings(password_redis, password="rotated-pw"),
        reactor,
        channel_prefix=prefix,
        reconnect_initial_delay=0.05,
        reconnect_max_delay=0.2,
    )
    globalLogPublisher.addObserver(observe)
    try:
        service.startService()
        try:
            await within(refused)
            password_redis.command("CONFIG", "SET", "requirepass", "rotated-pw")
            await within(service.wait_subscribed())
            assert await within(service.publisher.publish(prefix + "#/#", b"{}")) >= 0
        finally:
            await service.stopService()
        del service
        gc.collect()
    finally:
        globalLogPublisher.removeObserver(observe)
    assert not [e for e in events if "Unhandled error" in str(e.get("log_format", ""))]


@pytest_twisted.ensureDeferred
async def test_publications_wait_in_order_until_the_pubsub_mode_is_known(
    redis_server: RedisServer, prefix: str
) -> None:
    """A node that has not yet heard which pub/sub its Redis has (sharded or
    classic) must neither lose nor reorder what it publishes meanwhile, nor
    keep it for ever."""
    from privydrop.redis.subscriber import CHANNEL, Subscriber, Subscription

    got: list[Any] = []
    arrived: Deferred[None] = Deferred()

    def receive(channel: Any, payload: Any) -> None:
        got.append(payload)
        if len(got) == 3:
            arrived.callback(None)

    subscribed: Deferred[None] = Deferred()
    subscriber = Subscriber(
        redis_settings(redis_server), reactor, name="privydrop:test:subscribe",
        subscriptions=[Subscription(CHANNEL, prefix + "#x")], receive=receive,
        on_subscribed=lambda: subscribed.callback(None),
    )
    subscriber.start()
    publisher = RedisPublisher(redis_settings(redis_server), reactor, timeout=0.5)
    publisher.start()
    try:
        await within(subscribed)
        waiting = [publisher.publish(prefix + "#x", b"%d" % i) for i in range(3)]
        assert not any(d.called for d in waiting)
        publisher.mode = PubSubMode.CLASSIC
        assert await within(DeferredList(waiting)) == [(True, 1)] * 3
        await within(arrived)
        assert got == ["0", "1", "2"]
        late = RedisPublisher(redis_settings(redis_server), reactor, timeout=0.2)
        late.start()
        try:
            with pytest.raises(PublishError, match="not known within 0.2s"):
                await within(late.publish(prefix + "#x", b"never"))
        finally:
            await late.close()
    finally:
        await publisher.close()
        await subscriber.close()


def test_the_pubsub_mode_follows_the_redis_version() -> None:
    """Sharded channels exist from Redis 7 on; older servers get classic ones."""
    from privydrop.cluster.pubsub import mode_for_server

    assert mode_for_server("# Server\r\nredis_version:7.0.15\r\n") is PubSubMode.SHARDED
    assert mode_for_server(b"redis_version:8.2.1\r\n") is PubSubMode.SHARDED
    assert mode_for_server("redis_version:6.2.14\r\n") is PubSubMode.CLASSIC
    assert mode_for_server("no version here") is PubSubMode.CLASSIC
