"""The Autobahn internals the WebSocket transport uses: present, checked, and
with a working fallback when one is gone.

If a test here fails after an Autobahn upgrade, the assertion names the
attribute that changed; privydrop/compat/autobahn.py says what uses it.
"""

from __future__ import annotations

import types
from typing import Any, NoReturn

import pytest
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionRequest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent

from privydrop.compat import autobahn as autobahn_compat
from privydrop.engineio.server import EngineServer
from privydrop.engineio.websocket import EngineWebSocketFactory, EngineWebSocketProtocol
from privydrop.settings import EngineSettings


_UPGRADE = (
    b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
    b"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class _Transport(StringTransport):
    """Autobahn unregisters a producer it never registered when it closes."""

    def unregisterProducer(self) -> None:
        self.producer = None


def _gone(self: object) -> NoReturn:
    raise AttributeError("renamed by an upgrade")


def _renamed(name: str) -> type[WebSocketServerProtocol]:
    """Autobahn's protocol as if C{name} had been renamed: Autobahn may still
    set it, but reading it fails."""
    return type("Renamed", (WebSocketServerProtocol,), {name: property(_gone, lambda s, v: None)})


# -- the check -------------------------------------------------------------------


def test_installed_autobahn_has_every_internal_the_transport_uses() -> None:
    """On the installed Autobahn nothing is missing, so the fast paths, the
    shared option classes and the lazy debug text are in use."""
    assert autobahn_compat.protocol_internals_missing(WebSocketServerProtocol) == ()
    assert autobahn_compat.protocol_internals_missing() == ()
    assert autobahn_compat.debug_text_missing() == ()
    assert autobahn_compat.install_lazy_debug_text() == ()
    assert autobahn_compat.hooks_missing() == ()
    assert autobahn_compat.check_hooks() == ()


def test_hook_check_names_a_renamed_hook() -> None:
    """An overridden method Autobahn stopped calling (renamed) is named."""
    assert autobahn_compat.hooks_missing(_renamed("onCloseFrame")) == ("onCloseFrame",)


class _Without:
    """C{target} as seen on a version without its attribute C{name}."""

    def __init__(self, target: object, name: str) -> None:
        self._target = target
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        if attribute == self._name:
            raise AttributeError(attribute)
        return getattr(self._target, attribute)


def _open_protocol() -> Any:
    factory = WebSocketServerFactory()
    factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)
    factory.protocol = WebSocketServerProtocol
    protocol = factory.buildProtocol(None)
    protocol.makeConnection(_Transport())
    protocol.dataReceived(_UPGRADE)
    assert protocol.state == protocol.STATE_OPEN
    return protocol


@pytest.mark.parametrize("name", autobahn_compat.PROTOCOL_INTERNALS)
def test_check_names_each_attribute_an_upgrade_could_remove(name: str) -> None:
    """Any one of the names gone from an open connection is reported, by name."""
    protocol = _open_protocol()
    assert autobahn_compat.missing(protocol, autobahn_compat.PROTOCOL_INTERNALS) == ()
    without = _Without(protocol, name)
    assert autobahn_compat.missing(without, autobahn_compat.PROTOCOL_INTERNALS) == (name,)


@pytest.mark.parametrize("name", ["wasMaxFramePayloadSizeExceeded", "message_is_binary"])
def test_check_runs_a_connection_to_find_what_is_gone(name: str) -> None:
    """The check looks at a real connection when it is open and when a
    message ends, so a name Autobahn sets along the way and no longer has is
    named."""
    assert autobahn_compat.protocol_internals_missing(_renamed(name)) == (name,)


def test_check_names_a_removed_method_and_a_connection_that_never_opens() -> None:
    """A missing method is named, and so is a connection that cannot open
    (the fast paths would never get an open connection to work on)."""
    absent = autobahn_compat.missing(
        types.SimpleNamespace(state=1, data=b""), ("state", "consumeData", "data")
    )
    assert absent == ("consumeData",)
    assert autobahn_compat.missing(WebSocketServerProtocol, ("_connectionMade.__code__",)) == ()
    assert autobahn_compat.missing(WebSocketServerProtocol, ("_connectionMade.gone",)) == (
        "_connectionMade.gone",
    )

    class NeverOpens(WebSocketServerProtocol):
        def processHandshake(self) -> None:
            pass

    absent = autobahn_compat.protocol_internals_missing(NeverOpens)
    assert "onOpen (never called)" in absent


def test_check_names_a_removed_debug_helper() -> None:
    """The lazy debug text relies on module-level helpers; one gone is named
    with its module."""
    def helper(value: object) -> str:
        return str(value)

    protocol_module = types.SimpleNamespace(
        hltype=helper,
        pformat=helper,
        WebSocketProtocol=WebSocketServerProtocol,
    )
    twisted_module = types.SimpleNamespace(hltype=helper, hlval=helper)
    absent = autobahn_compat.debug_text_missing(
        {
            "autobahn.websocket.protocol": protocol_module,
            "autobahn.twisted.websocket": twisted_module,
        }
    )
    assert absent == ("autobahn.websocket.protocol.hlval",)


# -- lazy debug text ---------------------------------------------------------------


class _RecordingLog:
    def __init__(self, events: list[dict[str, object]]) -> None:
        self._events = events

    def debug(self, format: str, **fields: object) -> None:
        self._events.append(dict(fields, format=format))

    def __getattr__(self, name: str) -> object:
        return lambda *args, **kwargs: None


def test_autobahn_debug_text_is_built_only_when_logged() -> None:
    """Autobahn's per-connection debug events still render as before, but their
    text (pretty-printed settings, coloured names) is built only if an event is
    formatted; other callers of the module's pformat get text at once."""
    from autobahn import util
    from autobahn.twisted import websocket as autobahn_websocket
    from autobahn.websocket import protocol as autobahn_protocol

    import privydrop.engineio.websocket  # noqa: F401 - installs the lazy pformat

    events: list[dict[str, object]] = []
    factory = WebSocketServerFactory()
    factory.protocol = WebSocketServerProtocol
    protocol = factory.buildProtocol(None)
    protocol.log = _RecordingLog(events)
    protocol.makeConnection(_Transport())
    settings = [e for e in events if e["format"] == "\n{attrs}"]
    assert len(settings) == 1
    attrs = settings[0]["attrs"]
    assert not isinstance(attrs, str)
    text = formatEvent({"log_format": "\n{attrs}", "attrs": attrs})
    assert text.startswith("\n[(") and "'openHandshakeTimeout'" in text
    assert text == "\n" + str(attrs) == "\n" + repr(attrs)
    assert autobahn_protocol.pformat({"a": 1}) == "{'a': 1}"
    assert autobahn_protocol.pformat([1, 2], width=1) == "[1,\n 2]"
    established = [e for e in events if "connection accepted" in str(e["format"])]
    assert len(established) == 1 and not isinstance(established[0]["func"], str)

    for module in (autobahn_protocol, autobahn_websocket):
        for name, original in (("hltype", util.hltype), ("hlval", util.hlval)):
            lazy = getattr(module, name)(WebSocketServerProtocol.onConnect)
            assert not isinstance(lazy, str)
            expected = original(WebSocketServerProtocol.onConnect)
            assert str(lazy) == repr(lazy) == f"{lazy}" == expected


def test_lazy_debug_text_is_left_out_when_a_helper_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On an Autobahn without one of the helpers nothing is replaced (its
    debug text is then built as Autobahn builds it), and a warning names it."""
    from autobahn.twisted import websocket as autobahn_websocket

    def original(value: object) -> str:
        return "text"

    monkeypatch.setattr(autobahn_websocket, "hltype", original)
    monkeypatch.setitem(
        autobahn_compat.DEBUG_TEXT_INTERNALS,
        "autobahn.twisted.websocket",
        ("hltype", "hlval", "hl_gone"),
    )
    with capturedLogs() as events:
        absent = autobahn_compat.install_lazy_debug_text()
    assert absent == ("autobahn.twisted.websocket.hl_gone",)
    assert autobahn_websocket.hltype is original
    assert [e["names"] for e in events if e["log_level"].name == "warn"] == [
        "autobahn.twisted.websocket.hl_gone"
    ]


# -- the fallback ------------------------------------------------------------------


class _Echo:
    def __init__(self) -> None:
        self.closed: list[str] = []

    def on_open(self, connection: object) -> None:
        pass

    def on_message(self, connection: Any, message: object) -> None:
        connection.send(message)

    def on_close(self, connection: object, reason: str) -> None:
        self.closed.append(reason)


def test_without_the_internals_the_transport_runs_on_the_public_api(
    without_autobahn_internals: str,
) -> None:
    """After an Autobahn upgrade that removed an internal, WebSocket clients
    are served as before (more slowly): protocols are built the stock way,
    messages go through Autobahn's onMessage and sendMessage, and the
    missing name is logged once."""
    with capturedLogs() as events:
        assert autobahn_compat.protocol_internals_missing() == (without_autobahn_internals,)
        app = _Echo()
        server = EngineServer(Clock(), EngineSettings(), app)  # type: ignore[arg-type]
        factory = EngineWebSocketFactory(server)
        EngineWebSocketFactory(server)
    assert factory.autobahn_internals is False
    warnings = [e for e in events if e["log_level"].name == "warn"]
    assert [e["names"] for e in warnings] == [without_autobahn_internals]

    protocol = factory.buildProtocol(None)
    assert type(protocol) is EngineWebSocketProtocol
    transport = _Transport()
    protocol.makeConnection(transport)
    protocol.dataReceived(_UPGRADE)
    assert transport.value().startswith(b"HTTP/1.1 101 ")
    assert b'"sid"' in transport.value()  # the open packet, sent with sendMessage
    transport.clear()
    # "4hi", masked with a zero key.
    protocol.dataReceived(b"\x81\x83\x00\x00\x00\x004hi")
    assert transport.value() == b"\x81\x034hi"
    assert "openHandshakeTimeout" in protocol.__dict__  # Autobahn copied its options


def test_shared_option_classes_follow_the_factory() -> None:
    """The class a protocol is built from carries the factory's current
    option values, is reused while they stay the same, and is not made for a
    protocol class without Autobahn's option list."""
    factory = WebSocketServerFactory()
    factory.protocol = WebSocketServerProtocol
    shared = autobahn_compat.SharedOptions()
    cls = shared.protocol_class(factory)
    assert cls is not None and issubclass(cls, WebSocketServerProtocol)
    assert shared.protocol_class(factory) is cls
    assert cls.openHandshakeTimeout == factory.openHandshakeTimeout  # type: ignore[attr-defined]
    factory.setProtocolOptions(openHandshakeTimeout=77.0)
    changed = shared.protocol_class(factory)
    assert changed is not cls
    assert changed.openHandshakeTimeout == 77.0  # type: ignore[union-attr]

    class NoOptions:
        pass

    factory.protocol = NoOptions
    assert shared.protocol_class(factory) is None


def test_request_uri_is_rebuilt_when_autobahn_does_not_keep_it() -> None:
    """The handshake's URL reaches the application with its query, whether
    Autobahn kept the request line or not."""
    request = ConnectionRequest(
        peer="tcp:127.0.0.1:1",
        headers={},
        host="x",
        path="/socket.io/",
        params={"EIO": ["4"], "transport": ["websocket"]},
        version=13,
        origin=None,
        protocols=[],
        extensions=[],
    )
    kept = types.SimpleNamespace(http_request_uri="/socket.io/?EIO=4&transport=websocket")
    assert autobahn_compat.request_uri(kept, request) == "/socket.io/?EIO=4&transport=websocket"
    assert (
        autobahn_compat.request_uri(object(), request) == "/socket.io/?EIO=4&transport=websocket"
    )


# -- Autobahn's own log lines --------------------------------------------------------


def test_autobahn_logs_through_the_methods_the_wrapper_has() -> None:
    """If Autobahn's protocol logger lost one of these, its events would go
    around the throttle (the wrapper takes any other name from the original)."""
    stock = WebSocketServerProtocol.log
    assert autobahn_compat.missing(stock, autobahn_compat.AUTOBAHN_LOG_METHODS) == ()


def test_autobahn_lines_a_client_causes_are_throttled_and_clipped() -> None:
    from privydrop.logs.throttle import WarningThrottle

    clock = Clock()
    log = autobahn_compat.ThrottledAutobahnLog(
        WarningThrottle(clock), WebSocketServerProtocol.log
    )
    with capturedLogs() as events:
        for _ in range(100):
            log.warn('failing WebSocket connection (code={code}): "{reason}"',
                     code=1002, reason="r" * 10_000)
            log.info("failing WebSocket opening handshake ('{reason}')", reason="x")
            log.debug("Connection to/from {peer} was closed cleanly", peer="-")
    assert len(events) == 2
    assert all(len(formatEvent(e)) < 400 for e in events)
    assert {e["log_namespace"] for e in events} == {autobahn_compat.AUTOBAHN_LOG_NAMESPACE}


def test_a_refused_handshake_is_logged_once_per_interval() -> None:
    """Through a real protocol of the server's factory."""
    clock = Clock()
    engine = EngineServer(clock, EngineSettings(), application=_NoApplication())
    factory = EngineWebSocketFactory(engine)
    with capturedLogs() as events:
        for _ in range(20):
            protocol = factory.buildProtocol(None)
            transport = _Transport()
            protocol.makeConnection(transport)
            protocol.dataReceived(_UPGRADE.replace(b"EIO=4", b"EIO=3"))
    handshake_lines = [e for e in events if "opening handshake" in str(e.get("log_format"))]
    assert len(handshake_lines) == 1


class _NoApplication:
    def on_open(self, connection: Any) -> None:  # pragma: no cover - never opened
        pass

    def on_message(self, connection: Any, message: Any) -> None:  # pragma: no cover
        pass

    def on_close(self, connection: Any, reason: str) -> None:  # pragma: no cover
        pass


# -- less per open connection -------------------------------------------------------


def _open_engine_connection() -> tuple[Any, _Transport]:
    server = EngineServer(Clock(), EngineSettings(), _Recorded())  # type: ignore[arg-type]
    factory = EngineWebSocketFactory(server)
    protocol = factory.buildProtocol(None)
    transport = _Transport()
    protocol.makeConnection(transport)
    protocol.dataReceived(_UPGRADE)
    assert transport.value().startswith(b"HTTP/1.1 101 ")
    transport.clear()
    return protocol, transport


class _Recorded:
    def __init__(self) -> None:
        self.messages: list[object] = []

    def on_open(self, connection: object) -> None:
        pass

    def on_message(self, connection: object, message: object) -> None:
        self.messages.append(message)

    def on_close(self, connection: object, reason: str) -> None:
        pass


def test_autobahn_starts_the_cold_attributes_at_the_recorded_values() -> None:
    """An open connection keeps a cold attribute only when it left the
    initial value recorded in COLD_DEFAULTS; each is read from the class
    otherwise. Fails naming an attribute Autobahn no longer sets, or sets
    to another initial value (harmless, but the list is then out of date)."""
    seen: dict[str, object] = {}

    class Look(WebSocketServerProtocol):
        def onOpen(self) -> None:
            for name in (*autobahn_compat.COLD_DEFAULTS, *autobahn_compat.HANDSHAKE_LEFTOVERS):
                seen[name] = self.__dict__.get(name, "<not set>")

    factory = WebSocketServerFactory(server=None)
    factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0, autoPingInterval=0)
    factory.protocol = Look
    protocol: Any = factory.buildProtocol(None)
    protocol.makeConnection(_Transport())
    protocol.dataReceived(_UPGRADE)
    changed = [
        name for name, initial in autobahn_compat.COLD_DEFAULTS.items() if seen[name] != initial
    ]
    assert changed == []
    unset = [name for name in autobahn_compat.HANDSHAKE_LEFTOVERS if seen[name] == "<not set>"]
    assert unset == []


def test_an_open_connection_lets_go_of_the_handshake_and_the_cold_defaults() -> None:
    """Once open, the connection's own dict holds neither the handshake's
    leftovers nor cold attributes at their initial value, yet reading any of
    them gives what Autobahn would have read."""
    protocol, _ = _open_engine_connection()
    kept = protocol.__dict__
    assert [n for n in autobahn_compat.HANDSHAKE_LEFTOVERS if n in kept] == []
    assert [n for n in autobahn_compat.COLD_DEFAULTS if n in kept] == []
    assert "utf8validator" not in kept and "_handshake" not in kept
    for name, initial in autobahn_compat.COLD_DEFAULTS.items():
        assert getattr(protocol, name) == initial, name
    assert protocol.http_request_params is None
    assert "_results" not in kept
    assert protocol._results == {"message": None}
    assert protocol._session.handshake.headers["host"] == "127.0.0.1"
    assert type(protocol.send_queue).__name__ == "_SendQueue" and not protocol.send_queue


def test_the_utf8_validator_is_made_when_autobahn_parses_a_text_frame() -> None:
    """A text message cut into fragments goes through Autobahn's parser,
    which validates it with a validator made on first use; invalid UTF-8 is
    still refused with close code 1007."""
    protocol, transport = _open_engine_connection()
    app = protocol.factory.engine._application

    def frame(payload: bytes, opcode: int, fin: bool) -> bytes:
        return bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)]) + b"\0\0\0\0" + payload

    protocol.dataReceived(frame(b"4h\xc3", 1, False) + frame(b"\xa9llo", 0, True))
    assert "utf8validator" in protocol.__dict__
    assert app.messages == ["h\u00e9llo"]
    protocol.dataReceived(frame(b"4\xff", 1, True))
    sent = transport.value()
    assert sent[0] == 0x88 and sent[2:4] == (1007).to_bytes(2, "big")


def test_an_event_observer_added_once_open_is_called() -> None:
    """Autobahn's event observers still work on a compacted connection: the
    table of results is made again for this connection alone, and the
    shared list of valid events is not changed."""
    protocol, _ = _open_engine_connection()
    other, _ = _open_engine_connection()
    seen: list[object] = []
    protocol.on("message", seen.append)
    protocol.fire("message", "hello")
    assert seen == ["hello"]
    assert protocol._results["message"] is not None
    assert other._results == {"message": None}
    assert other._valid_events == ["message"]
    with pytest.raises(RuntimeError):
        protocol.on("no such event", seen.append)


def test_the_smaller_send_queue_keeps_autobahns_order() -> None:
    queue = autobahn_compat._SendQueue()
    queue.append((b"a", True))
    queue.append((b"b", False))
    assert len(queue) == 2
    assert queue.popleft() == (b"a", True)
    assert queue.popleft() == (b"b", False)
    assert not queue
