"""The Twisted internals the server uses: present, checked, and with a
working fallback when one is gone.

If a test here fails after a Twisted upgrade, the assertion names the
attribute that changed; privydrop/compat/twisted.py says what uses it.
"""

from __future__ import annotations

from typing import Any, NoReturn

import pytest
from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.web import http, server
from twisted.web.resource import Resource

from privydrop.compat import twisted as twisted_compat


class _Socket:
    """What C{tcp.Server} needs of a socket; sends take at most C{accepts} bytes."""

    def __init__(self, accepts: int | None = None) -> None:
        self.accepts = accepts
        self.sent: list[bytes] = []

    def setblocking(self, flag: bool) -> None:
        pass

    def fileno(self) -> int:
        return 99

    def send(self, data: bytes) -> int:
        taken = len(data) if self.accepts is None else min(self.accepts, len(data))
        self.sent.append(bytes(data[:taken]))
        return taken


def _tcp_server(
    sock: _Socket | None = None, server_class: type[tcp.Server] = tcp.Server
) -> Any:
    """A real, connected C{tcp.Server} on a fake socket and a memory reactor."""
    transport = server_class(
        sock or _Socket(), Protocol(), ("127.0.0.1", 40000), None, 0, MemoryReactor()
    )
    transport.connected = 1
    return transport


def _gone(self: object) -> NoReturn:
    raise AttributeError("renamed by an upgrade")


# -- the checks ------------------------------------------------------------------


def test_installed_twisted_has_every_internal_used() -> None:
    """On the installed Twisted nothing is missing: the write-buffer reads,
    the request-head reads, the site's option and the overridden hooks."""
    assert twisted_compat.missing(_tcp_server(), twisted_compat.TCP_SERVER_INTERNALS) == ()
    assert twisted_compat.missing(http.HTTPChannel(), twisted_compat.HTTP_CHANNEL_INTERNALS) == ()
    assert twisted_compat.hooks_missing() == ()
    assert twisted_compat.site_options() == {"parsePOSTFormSubmission": False}

    heads: list[tuple[Any, bytes | None, int | None]] = []
    present: list[tuple[str, ...]] = []
    methods: list[bytes | None] = []

    class Channel(http.HTTPChannel):
        def allHeadersReceived(self) -> None:
            present.append(twisted_compat.missing(self, twisted_compat.HTTP_HEAD_INTERNALS))
            heads.append(twisted_compat.request_head(self))
            methods.append(twisted_compat.request_method(self))
            super().allHeadersReceived()

    channel = Channel()
    channel.makeConnection(StringTransport())
    channel.dataReceived(b"POST /api/x?y=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\n")
    assert present == [()]
    request, target, length = heads[0]
    assert isinstance(request, http.Request)
    assert (target, length) == (b"/api/x?y=1", 7)
    assert methods == [b"POST"]


def test_check_names_each_attribute_an_upgrade_could_remove() -> None:
    """A name gone from a transport, a channel or a class is reported by name."""

    class Renamed(tcp.Server):
        _tempDataLen = property(_gone, lambda self, value: None)

    transport = _tcp_server(server_class=Renamed)
    assert twisted_compat.missing(transport, ("dataBuffer", "_tempDataLen")) == ("_tempDataLen",)

    class OldChannel(http.HTTPChannel):
        _requestProducer = property(_gone)

    assert twisted_compat.missing(OldChannel(), twisted_compat.HTTP_CHANNEL_INTERNALS) == (
        "_requestProducer",
    )


def test_check_names_a_hook_an_upgrade_renamed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A method the site overrides that Twisted no longer has is named, with
    its class, and the site logs it when it is built."""
    from twisted.internet.task import Clock
    from twisted.logger import capturedLogs

    from privydrop.settings import Settings
    from privydrop.web.site import build_site

    hooks = twisted_compat.HTTP_HOOKS[http.HTTPChannel] + ("headersAllReceived",)
    monkeypatch.setitem(twisted_compat.HTTP_HOOKS, http.HTTPChannel, hooks)
    assert twisted_compat.hooks_missing() == ("HTTPChannel.headersAllReceived",)
    with capturedLogs() as events:
        build_site(Settings(), Clock(), Resource())
    errors = [e for e in events if e["log_level"].name == "error"]
    assert [e["names"] for e in errors] == ["HTTPChannel.headersAllReceived"]


def test_site_without_the_form_option_is_built_the_stock_way() -> None:
    """On a Twisted whose Site has no parsePOSTFormSubmission, none is passed."""

    class OldSite(server.Site):
        def __init__(self, resource: Any, requestFactory: Any = None, **kwargs: Any) -> None:
            super().__init__(resource, requestFactory, **kwargs)

    assert twisted_compat.site_options(OldSite) == {}
    assert twisted_compat.site_options(server.Site) == {"parsePOSTFormSubmission": False}


# -- write buffer --------------------------------------------------------------------


def test_outbound_buffer_counts_unsent_bytes() -> None:
    """The slow-reader caps must see bytes the peer has not taken, written
    or still waiting to be joined to the buffer, including through TLS."""
    transport = _tcp_server()
    transport.write(b"x" * 100)
    assert twisted_compat.outbound_buffer_size(transport) == 100
    transport.dataBuffer, transport.offset, transport._tempDataBuffer = b"y" * 50, 20, []
    transport._tempDataLen = 0
    transport.write(b"z" * 5)
    assert twisted_compat.outbound_buffer_size(transport) == 35

    class TLSWrapper:
        def __init__(self, inner: object) -> None:
            self.transport = inner

    assert twisted_compat.outbound_buffer_size(TLSWrapper(transport)) == 35
    assert twisted_compat.outbound_buffer_size(StringTransport()) == 0


def test_write_now_sends_at_once_only_with_nothing_buffered() -> None:
    """A write leaves on the socket at once when nothing is queued before it;
    what the kernel does not take, and anything written behind a queue, is
    buffered in order."""
    sock = _Socket(accepts=3)
    transport = _tcp_server(sock)
    assert twisted_compat.write_now(transport, b"abcdef") is False
    assert sock.sent == [b"abc"]
    assert twisted_compat.outbound_buffer_size(transport) == 3
    assert twisted_compat.write_now(transport, b"gh") is False
    assert sock.sent == [b"abc"]
    assert twisted_compat.outbound_buffer_size(transport) == 5

    other = StringTransport()
    assert twisted_compat.write_now(other, b"plain") is False
    assert other.value() == b"plain"


def test_write_now_says_when_everything_left_at_once() -> None:
    """True only when the socket took all of it: callers then skip the
    outbound-buffer check, so a True with bytes buffered would let a client
    that stopped reading past the cap."""
    sock = _Socket()
    transport = _tcp_server(sock)
    assert twisted_compat.write_now(transport, b"abcdef") is True
    assert sock.sent == [b"abcdef"]
    assert twisted_compat.outbound_buffer_size(transport) == 0


def test_transport_with_changed_internals_counts_as_unknown() -> None:
    """On a Twisted whose TCP transport lost one of the buffer fields, writes
    go through transport.write and the buffer counts as empty (the caps then
    never trigger, as with a stock Twisted), instead of failing."""

    written: list[bytes] = []

    class Renamed(tcp.Server):
        # A version that keeps its pending writes under other names.
        _tempDataLen = property(_gone, lambda self, value: None)

        def write(self, data: bytes) -> None:
            written.append(data)

    sock = _Socket()
    transport = _tcp_server(sock, Renamed)
    twisted_compat.write_now(transport, b"data")
    assert sock.sent == []
    assert written == [b"data"]
    assert twisted_compat.outbound_buffer_size(transport) == 0


# -- channels handed to a WebSocket ----------------------------------------------------


class _Channel:
    transport: object = None
    _requestProducer = None


def test_upgraded_channel_is_no_longer_the_transports_producer() -> None:
    """After Autobahn takes a transport from its HTTP channel, the channel stops
    being the transport's producer (which kept it and its request alive); a
    channel that still owns its transport, or a transport with another
    producer, is left alone."""
    channel = _Channel()
    transport = StringTransport()
    transport.registerProducer(channel, True)
    twisted_compat.release_upgraded_channel(channel, transport)
    assert transport.producer is None

    owner = _Channel()
    owned = StringTransport()
    owner.transport = owned
    owned.registerProducer(owner, True)
    twisted_compat.release_upgraded_channel(owner, owned)
    assert owned.producer is owner

    other = StringTransport()
    producer = object()
    other.registerProducer(producer, True)
    twisted_compat.release_upgraded_channel(channel, other)
    assert other.producer is producer
    twisted_compat.release_upgraded_channel(channel, None)


def test_channel_is_kept_when_its_producer_bookkeeping_changed() -> None:
    """Where the channel's request-producer field is gone, whether a request
    producer is registered cannot be told: the channel stays registered."""

    class Renamed(_Channel):
        _requestProducer = property(_gone)  # type: ignore[assignment]

    channel = Renamed()
    transport = StringTransport()
    transport.registerProducer(channel, True)
    twisted_compat.release_upgraded_channel(channel, transport)
    assert transport.producer is channel


def test_real_http_channel_is_released_after_its_transport_is_taken() -> None:
    """With twisted.web's own channel: once its transport is taken (as
    Autobahn does), the channel no longer is the transport's producer."""
    channel = http.HTTPChannel()
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    channel.makeConnection(transport)
    assert transport.producer is channel
    channel.transport = None
    twisted_compat.release_upgraded_channel(channel, transport)
    assert transport.producer is None


# -- the reactor's dispatch --------------------------------------------------------


def _epoll_reactor() -> Any:
    from twisted.internet.epollreactor import EPollReactor

    return EPollReactor()


def test_epoll_reactor_has_what_lean_dispatch_uses() -> None:
    """Names the attribute an upgrade removed from the epoll reactor."""
    reactor = _epoll_reactor()
    try:
        assert twisted_compat.missing(reactor, twisted_compat.EPOLL_REACTOR_INTERNALS) == ()
        assert (
            twisted_compat.method_digest(type(reactor), "doPoll") == twisted_compat.DO_POLL_DIGEST
        ), "EPollReactor.doPoll changed: check what lean_dispatch stands in for"
        assert twisted_compat.lean_dispatch(reactor) is True
    finally:
        reactor._poller.close()


def test_lean_dispatch_leaves_other_reactors_alone() -> None:
    """A reactor that is not epoll (or lost an internal) keeps its own dispatch."""
    other = MemoryReactor()
    assert twisted_compat.lean_dispatch(other) is False
    assert "doIteration" not in vars(other)

    reactor = _epoll_reactor()
    try:
        del reactor._selectables
        assert twisted_compat.lean_dispatch(reactor) is False
        assert "doIteration" not in vars(reactor)
    finally:
        reactor._poller.close()


def test_lean_dispatch_leaves_a_changed_do_poll_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Twisted whose C{doPoll} differs from the one the lean loop stands
    in for keeps its own dispatch."""
    monkeypatch.setattr(twisted_compat, "DO_POLL_DIGEST", "0" * 64)
    reactor = _epoll_reactor()
    try:
        assert twisted_compat.lean_dispatch(reactor) is False
        assert "doIteration" not in vars(reactor)
    finally:
        reactor._poller.close()


def test_lean_dispatch_runs_reads_and_survives_a_failing_one() -> None:
    """Ready descriptors are read as before; an exception escaping one event
    (here from connectionLost after a failed read) is logged under the
    connection's prefix and the other descriptors of the turn still run."""
    import socket

    from twisted.internet.abstract import FileDescriptor
    from twisted.logger import capturedLogs

    class Reader(FileDescriptor):
        def __init__(self, sock: socket.socket, reactor: Any, fail: bool) -> None:
            super().__init__(reactor)
            self.sock, self.fail, self.read = sock, fail, b""

        def fileno(self) -> int:
            return self.sock.fileno()

        def logPrefix(self) -> str:
            return "Reader-%s" % ("failing" if self.fail else "fine",)

        def doRead(self) -> None:
            self.read += self.sock.recv(100)
            if self.fail:
                raise RuntimeError("read failed")

        def connectionLost(self, reason: object) -> None:
            self.reactor.removeReader(self)
            raise RuntimeError("connectionLost failed too")

    reactor = _epoll_reactor()
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        assert twisted_compat.lean_dispatch(reactor)
        readers = [Reader(pairs[0][0], reactor, True), Reader(pairs[1][0], reactor, False)]
        for reader in readers:
            reactor.addReader(reader)
        pairs[0][1].send(b"one")
        pairs[1][1].send(b"two")
        with capturedLogs() as events:
            reactor.doIteration(1.0)
        assert [r.read for r in readers] == [b"one", b"two"]
        escaped = [e for e in events if e.get("system") == "Reader-failing"]
        assert [e["failure"].value.args for e in escaped] == [("connectionLost failed too",)]
        reactor.doIteration(0)  # nothing ready: returns without blocking
    finally:
        for a, b in pairs:
            a.close()
            b.close()
        reactor._poller.close()


def test_installed_twisted_has_the_stock_methods_the_site_repeats() -> None:
    """The site's shorter way for Engine.IO requests repeats parts of these
    stock methods; a Twisted that changed one fails here, naming it (and
    the site then falls back to the stock way)."""
    assert twisted_compat.replicas_changed() == ()


def test_a_changed_stock_method_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    pinned = dict(twisted_compat.REPLICATED_METHODS)
    pinned[(server.Request, "process")] = "0" * 64
    monkeypatch.setattr(twisted_compat, "REPLICATED_METHODS", pinned)
    assert twisted_compat.replicas_changed() == ("Request.process",)


def test_a_method_without_source_counts_as_changed() -> None:
    assert twisted_compat.method_digest(dict, "get") is None
