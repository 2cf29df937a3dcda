"""A TCP proxy in the test that can fail like a mobile network.

Clients connect to the proxy, which forwards each connection to the server.
Faults, applied to the connections open at the time (new connections are
forwarded normally, so a reconnecting client gets through):

  - L{TcpProxy.blackhole}: bytes in both directions are dropped silently;
    both ends still think the connection is alive.
  - L{TcpProxy.sever}: both sides are aborted (a TCP reset, no WebSocket
    close frame): client and server notice at once.
  - L{TcpProxy.sever_client_side}: only the client's side is aborted; the
    server's side stays open and silent, as when a phone changed networks
    and the server has not noticed yet.
  - L{TcpProxy.hold_new} / L{TcpProxy.release}: new connections wait (their
    bytes are kept) until released, so a test decides when a reconnecting
    client gets through.
  - L{TcpProxy.refuse_new} / L{TcpProxy.release}: new connections are reset
    at once, as during a network outage, until released.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort


class _ToServer(protocol.Protocol):
    """The proxy's connection to the server, for one client connection."""

    def __init__(self, client_side: _FromClient) -> None:
        self.client_side = client_side

    def connectionMade(self) -> None:
        self.client_side.server_connected(self)

    def dataReceived(self, data: bytes) -> None:
        if not self.client_side.dropping:
            self.client_side.transport.write(data)  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        if not self.client_side.severed:
            self.client_side.transport.loseConnection()  # type: ignore[union-attr]


class _FromClient(protocol.Protocol):
    factory: _ProxyFactory

    def __init__(self) -> None:
        self.to_server: _ToServer | None = None
        self.pending: list[bytes] = []
        self.dropping = False
        self.severed = False

    def connectionMade(self) -> None:
        if self.factory.refusing:
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        if self.factory.holding is not None:
            self.factory.holding.append(self)
            return
        self.forward()

    def forward(self) -> None:
        self.factory.open.add(self)
        endpoint = TCP4ClientEndpoint(self.factory.reactor, "127.0.0.1", self.factory.target_port)
        d = endpoint.connect(protocol.Factory.forProtocol(lambda: _ToServer(self)))  # type: ignore[no-untyped-call]
        d.addErrback(lambda failure: self.transport.abortConnection())  # type: ignore[union-attr]

    def server_connected(self, to_server: _ToServer) -> None:
        self.to_server = to_server
        pending, self.pending = self.pending, []
        for data in pending:
            to_server.transport.write(data)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self.dropping:
            return
        if self.to_server is None:
            self.pending.append(data)
        else:
            self.to_server.transport.write(data)  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.open.discard(self)
        if self.to_server is not None and not self.severed:
            self.to_server.transport.loseConnection()  # type: ignore[union-attr]


class _ProxyFactory(protocol.Factory):
    protocol = _FromClient

    def __init__(self, reactor: Any, target_port: int) -> None:
        self.reactor = reactor
        self.target_port = target_port
        self.open: set[_FromClient] = set()
        self.holding: list[_FromClient] | None = None
        self.refusing = False


class TcpProxy:
    """Forwards 127.0.0.1:<port> to the server's port; see the module docstring."""

    def __init__(self, reactor: Any, target_port: int) -> None:
        self._factory = _ProxyFactory(reactor, target_port)
        self._reactor = reactor
        self._port: IListeningPort | None = None

    async def start(self) -> int:
        endpoint = TCP4ServerEndpoint(self._reactor, 0, interface="127.0.0.1")
        self._port = await endpoint.listen(self._factory)
        return int(self._port.getHost().port)  # type: ignore[attr-defined]

    @property
    def url(self) -> str:
        assert self._port is not None
        return "http://127.0.0.1:{}".format(self._port.getHost().port)  # type: ignore[attr-defined]

    @property
    def connection_count(self) -> int:
        return len(self._factory.open)

    def retarget(self, port: int) -> None:
        """New connections go to C{port} (another process, as a load
        balancer would send them); open ones stay where they are."""
        self._factory.target_port = port

    def hold_new(self) -> None:
        if self._factory.holding is None:
            self._factory.holding = []

    def refuse_new(self) -> None:
        self._factory.refusing = True

    def release(self) -> None:
        self._factory.refusing = False
        held, self._factory.holding = self._factory.holding or [], None
        for connection in held:
            if connection.transport is not None and connection.transport.connected:  # type: ignore[attr-defined]
                connection.forward()

    def blackhole(self) -> None:
        for connection in self._factory.open:
            connection.dropping = True

    def sever(self) -> None:
        for connection in list(self._factory.open):
            connection.severed = True
            connection.transport.abortConnection()  # type: ignore[union-attr]
            if connection.to_server is not None:
                connection.to_server.transport.abortConnection()  # type: ignore[union-attr]

    def sever_client_side(self) -> list[Any]:
        """Abort the client sides; return the server sides, still open."""
        kept = []
        for connection in list(self._factory.open):
            connection.severed = True
            connection.dropping = True
            connection.transport.abortConnection()  # type: ignore[union-attr]
            if connection.to_server is not None:
                kept.append(connection.to_server.transport)
        return kept

    async def stop(self) -> None:
        if self._port is not None:
            await self._port.stopListening()
        self.release()
        self.sever()
