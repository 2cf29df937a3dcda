"""Autobahn internals the WebSocket transport relies on, in one place.

Three uses, each with the names it needs, a check and a fallback:

  - L{install_lazy_debug_text} replaces Autobahn's debug-text helpers in the
    two modules the server runs (L{DEBUG_TEXT_INTERNALS}). Fallback: left
    alone (Autobahn builds its debug text eagerly, as it always did).
  - The frame fast paths of L{privydrop.engineio.websocket} read an open
    connection's parser state and options, hand bytes to its parser, write
    frames, and fail or close the connection (L{PROTOCOL_INTERNALS},
    L{MESSAGE_INTERNALS}); L{SharedOptions} builds protocols whose class
    carries the factory's options (C{CONFIG_ATTRS}). All of it is checked
    once per process by L{protocol_internals_missing}, which runs one
    Autobahn server connection in memory. Fallback, when any name is
    missing: the transport uses only Autobahn's public API (its own
    C{dataReceived}, C{onMessage} and C{sendMessage}, C{sendClose}, the
    transport's C{abortConnection}) and protocols built the stock way.
  - L{compact_open_connection} lets an open connection keep less: the
    opening handshake's leftovers (L{HANDSHAKE_LEFTOVERS}), attributes
    still at the initial value L{COLD_DEFAULTS} gives them (read from the
    class instead), the UTF-8 validator until a frame needs it, and a
    smaller send queue. Only for classes L{SharedOptions} built (they carry
    the defaults); the names are checked with the others. Fallback: none
    needed, the connection keeps what Autobahn gave it.
  - L{request_uri} reads the request-target Autobahn kept from the opening
    handshake. Fallback: rebuilt from the path and query C{onConnect} gets.
  - L{ThrottledAutobahnLog} takes the place of a protocol's C{log} (the
    txaio logger Autobahn writes its own events to, L{AUTOBAHN_LOG_METHODS}):
    Autobahn logs a line per refused handshake or failed connection, which
    a client causes at will. Fallback: none needed; a method Autobahn calls
    that it lacks is taken from the original logger.
  - L{PROTOCOL_HOOKS}: the methods Autobahn calls that the transport
    overrides outside Autobahn's interfaces (C{onCloseFrame}, where a
    client's close frame is answered). There is no fallback for a renamed
    hook; L{hooks_missing} names it, and the transport logs it as an error.

Every function that touches an internal is used by the transport only when
its check passed. C{tests/unit/test_compat_autobahn.py} fails, naming the
attribute, on an Autobahn version where one of them changed.
"""

from __future__ import annotations

import functools
import pprint
from collections import deque
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlencode

from autobahn.twisted import websocket as _twisted_websocket
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket import protocol as _protocol_module
from autobahn.websocket.types import ConnectionRequest
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from privydrop.compat.twisted import write_now
from privydrop.logs.client_text import clip
from privydrop.logs.levels import Logger
from privydrop.logs.throttle import WarningThrottle

_log = Logger()


def missing(target: object, names: Iterable[str]) -> tuple[str, ...]:
    """The names in C{names} that C{target} has no attribute for, in order.

    A dotted name is followed attribute by attribute (C{"A.b"}: C{target.A.b}).
    """
    absent = []
    for name in names:
        value: object = target
        for part in name.split("."):
            if not hasattr(value, part):
                absent.append(name)
                break
            value = getattr(value, part)
    return tuple(absent)


# -- debug text ----------------------------------------------------------------

#: The module-level names L{install_lazy_debug_text} replaces or relies on, by module.
DEBUG_TEXT_INTERNALS: dict[str, tuple[str, ...]] = {
    "autobahn.websocket.protocol": (
        "hltype",
        "hlval",
        "pformat",
        "WebSocketProtocol._connectionMade.__code__",
    ),
    "autobahn.twisted.websocket": ("hltype", "hlval"),
}

_DEBUG_TEXT_MODULES: dict[str, object] = {
    "autobahn.websocket.protocol": _protocol_module,
    "autobahn.twisted.websocket": _twisted_websocket,
}


def debug_text_missing(modules: Mapping[str, object] = _DEBUG_TEXT_MODULES) -> tuple[str, ...]:
    """The L{DEBUG_TEXT_INTERNALS} absent from C{modules}, as C{module.name}."""
    return tuple(
        "%s.%s" % (module_name, name)
        for module_name, names in DEBUG_TEXT_INTERNALS.items()
        for name in missing(modules.get(module_name), names)
    )


class DeferredText:
    """C{function(value)}, computed only when formatted as text."""

    __slots__ = ("_function", "_value")

    def __init__(self, function: Callable[[Any], str], value: object) -> None:
        self._function = function
        self._value = value

    def __str__(self) -> str:
        return str(self._function(self._value))

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def install_lazy_debug_text() -> tuple[str, ...]:
    """Stop Autobahn building debug text on every connection that nobody logs.

    Autobahn evaluates the fields of its debug events even when its logger
    drops debug: C{WebSocketProtocol._connectionMade} passes C{pformat(<every
    config attribute>)}, and about a dozen calls per connection pass
    C{hltype(...)}/C{hlval(...)}, which colour text through click (see
    docs/performance.md, "Joins 2/4").

    In the two Autobahn modules the server runs, those helpers now return a
    L{DeferredText} that renders the same text when an event is formatted.
    Every use of C{hltype}/C{hlval} there is a field of a C{log.debug} call
    (the one C{log.error} among them is in the client protocol, which this
    server never runs). C{pformat} is deferred only for C{_connectionMade}
    (found by its caller's code object); its other callers
    (C{Timings.__str__} must return a C{str}) get text at once.

    Installing twice changes nothing.

    @return: the L{DEBUG_TEXT_INTERNALS} this Autobahn lacks; when there
        are any nothing was replaced.
    """
    absent = debug_text_missing() + tuple("sys." + n for n in missing(sys, ("_getframe",)))
    if absent:
        _log.warn(
            "Autobahn no longer has {names}: its debug text is built eagerly (slower)",
            names=", ".join(absent),
        )
        return absent
    getframe = sys._getframe
    protocol_module: Any = _protocol_module
    if getattr(protocol_module.pformat, "_privydrop", False):
        return ()
    target = protocol_module.WebSocketProtocol._connectionMade.__code__
    pformat = pprint.pformat

    def _pformat(value: object, *args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs and getframe(1).f_code is target:
            return DeferredText(pformat, value)
        return pformat(value, *args, **kwargs)

    def _lazy(function: Callable[[Any], str]) -> Callable[[Any], Any]:
        def lazy(value: object) -> Any:
            return DeferredText(function, value)

        return lazy

    for module in (protocol_module, _twisted_websocket):
        for name in ("hltype", "hlval"):
            setattr(module, name, _lazy(getattr(module, name)))
    _pformat._privydrop = True  # type: ignore[attr-defined]
    protocol_module.pformat = _pformat
    return ()


# -- the protocol's internals ----------------------------------------------------

#: What the transport reads, calls or sets on an open C{WebSocketServerProtocol}:
#: the state and its values; the parser's position (a frame or message under
#: way, bytes kept back) and how to feed it; the options and extensions that
#: decide whether the fast paths may run; the send queue and raw write; how
#: to fail, close or drop the connection with any RFC 6455 code; whether it
#: was failed, and for an oversized frame; the handshake's request-target;
#: the peer's name in Autobahn's own log events; and the option names that
#: L{SharedOptions} sets on the class.
PROTOCOL_INTERNALS = (
    "state",
    "STATE_OPEN",
    "STATE_CLOSING",
    "STATE_CLOSED",
    "current_frame",
    "inside_message",
    "data",
    "consumeData",
    "_dataReceived",
    "_perMessageCompress",
    "logOctets",
    "logFrames",
    "trackedTimings",
    "autoPingTimeoutCall",
    "autoPingInterval",
    "maxFramePayloadSize",
    "send_queue",
    "sendData",
    "_fail_connection",
    "sendCloseFrame",
    "dropConnection",
    "failedByMe",
    "wasMaxFramePayloadSizeExceeded",
    "http_request_uri",
    "peer",
    "CONFIG_ATTRS",
    "_connectionMade",
    "utf8validator",
)

#: What the transport reads in C{onMessageEnd}: the message Autobahn collected.
MESSAGE_INTERNALS = ("message_data", "message_is_binary")

#: Methods Autobahn calls that the transport overrides, though they are in
#: none of Autobahn's interfaces: renamed, the override would never run.
PROTOCOL_HOOKS = ("onCloseFrame",)


def hooks_missing(
    protocol_class: type[WebSocketServerProtocol] = WebSocketServerProtocol,
) -> tuple[str, ...]:
    """The L{PROTOCOL_HOOKS} C{protocol_class} lacks (or has as something
    other than a method)."""
    return tuple(
        name for name in PROTOCOL_HOOKS if not callable(getattr(protocol_class, name, None))
    )


@functools.cache
def check_hooks() -> tuple[str, ...]:
    """L{hooks_missing} for Autobahn's protocol, logged as an error once per
    process when there are any."""
    absent = hooks_missing()
    if absent:
        _log.error(
            "Autobahn no longer has {names}: invalid close frames are answered "
            "by Autobahn alone (its close frame may be lost to a reset)",
            names=", ".join(absent),
        )
    return absent

_STATE_OPEN = getattr(WebSocketServerProtocol, "STATE_OPEN", None)
_STATE_CLOSING = getattr(WebSocketServerProtocol, "STATE_CLOSING", None)
_STATE_CLOSED = getattr(WebSocketServerProtocol, "STATE_CLOSED", None)
#: RFC 6455, 5.5.1: a close frame's reason fits a control frame with its code.
_REASON_BYTES = 123

_PROBE_HANDSHAKE = (
    b"GET /probe?check=1 HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
#: One final text frame, "probe", masked with a zero key.
_PROBE_FRAME = b"\x81\x85\x00\x00\x00\x00probe"


class _ProbeTransport(StringTransport):
    """Autobahn unregisters a producer it never registered when it closes."""

    def unregisterProducer(self) -> None:
        self.producer = None


def protocol_internals_missing(
    protocol_class: type[WebSocketServerProtocol] = WebSocketServerProtocol,
) -> tuple[str, ...]:
    """The L{PROTOCOL_INTERNALS} and L{MESSAGE_INTERNALS} a connection of
    C{protocol_class} lacks.

    Most of them are set on the instance as the connection goes (when it
    opens, when a message begins), so a connection is run in memory: the
    opening handshake, one masked text message, the close. The first is
    checked when it opens, the second when the message ends. A connection
    that fails on the way, or a hook that is never called, is reported too.
    The answer for Autobahn's own class is computed once per process.
    """
    if protocol_class is WebSocketServerProtocol:
        return _stock_protocol_internals_missing()
    return _probe(protocol_class)


@functools.cache
def _stock_protocol_internals_missing() -> tuple[str, ...]:
    absent = _probe(WebSocketServerProtocol)
    if absent:
        _log.warn(
            "Autobahn no longer has {names}: the WebSocket transport uses Autobahn's "
            "public API only (slower)",
            names=", ".join(absent),
        )
    return absent


def protocol_internals_usable() -> bool:
    """Whether every name the fast paths use is there (see L{protocol_internals_missing})."""
    return not protocol_internals_missing()


def _probe(protocol_class: type[WebSocketServerProtocol]) -> tuple[str, ...]:
    found: list[str] = []
    reached: list[str] = []

    class Probe(protocol_class):  # type: ignore[valid-type, misc]
        def onOpen(self) -> None:
            reached.append("onOpen")
            found.extend(missing(self, PROTOCOL_INTERNALS))

        def onMessageEnd(self) -> None:
            # Not delivered: the probe only looks.
            reached.append("onMessageEnd")
            found.extend(missing(self, MESSAGE_INTERNALS))

    factory = WebSocketServerFactory(server=None)
    # No timers: nothing may be left scheduled on a reactor.
    factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0, autoPingInterval=0)
    factory.protocol = Probe
    try:
        protocol: Any = factory.buildProtocol(None)
        protocol.makeConnection(_ProbeTransport())
        protocol.dataReceived(_PROBE_HANDSHAKE + _PROBE_FRAME)
        protocol.connectionLost(Failure(ConnectionDone()))
    except Exception as e:  # noqa: BLE001 - whatever broke is the answer
        found.append("(an in-memory connection failed: %r)" % (e,))
    found.extend(
        hook + " (never called)" for hook in ("onOpen", "onMessageEnd") if hook not in reached
    )
    return tuple(dict.fromkeys(found))


# The functions below touch the names above; the transport calls them only
# when protocol_internals_usable().


def hide_peer_address(protocol: Any) -> None:
    """Name the peer C{"-"} in Autobahn's own log events (client addresses are
    logged only when a setting allows it)."""
    protocol.peer = "-"


#: What Autobahn calls on a protocol's C{log} (a txaio logger).
AUTOBAHN_LOG_METHODS = ("debug", "info", "warn", "error", "critical", "failure", "trace")

#: The namespace of Autobahn's events once they go through L{ThrottledAutobahnLog}.
AUTOBAHN_LOG_NAMESPACE = "autobahn.websocket.protocol"


class ThrottledAutobahnLog:
    """A protocol's C{log}: Autobahn's own events, throttled and clipped.

    Autobahn writes an C{info} or C{warn} line for every refused opening
    handshake ("failing WebSocket opening handshake"), failed connection
    ("failing WebSocket connection", "dropping connection to peer") and
    some client faults, with the client's close reason in it. Through this
    logger each of its formats (a fixed text, so a fixed cause) is logged at
    most once per interval, with text fields clipped. Debug and trace events
    are dropped, as txaio's default level does; C{failure} (a bug of ours in
    a callback) passes unchanged.
    """

    def __init__(self, throttle: WarningThrottle, original: Any) -> None:
        """
        @param throttle: the component's throttle (the Engine.IO server's).
        @param original: the protocol's own C{log}, for anything else it is
            asked.
        """
        self._throttle = throttle
        self._original = original
        self._logger = Logger(namespace=AUTOBAHN_LOG_NAMESPACE)

    def _emit(self, level: LogLevel, format: str | None, **fields: Any) -> None:
        # Autobahn's formats are fixed texts (one builds its own from sizes),
        # so the format names the cause; clipped in case one holds more.
        text = clip(format) if isinstance(format, str) else ""
        clipped: dict[str, Any] = {
            key: clip(value) if isinstance(value, (str, bytes)) else value
            for key, value in fields.items()
        }
        self._throttle.emit(level, self._logger, "autobahn:" + text, text, **clipped)

    def debug(self, *args: Any, **fields: Any) -> None:
        pass

    trace = debug

    def info(self, format: str | None = None, *args: Any, **fields: Any) -> None:
        self._emit(LogLevel.info, format, **fields)

    def warn(self, format: str | None = None, *args: Any, **fields: Any) -> None:
        self._emit(LogLevel.warn, format, **fields)

    def error(self, format: str | None = None, *args: Any, **fields: Any) -> None:
        self._emit(LogLevel.error, format, **fields)

    def critical(self, format: str | None = None, *args: Any, **fields: Any) -> None:
        self._emit(LogLevel.critical, format, **fields)

    def failure(self, *args: Any, **fields: Any) -> None:
        self._logger.failure(*args, **fields)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


def receive_limit(protocol: Any, max_payload: int) -> int:
    """The largest frame payload the receive fast path may take on an open
    connection, or 0 when every frame must go through Autobahn's parser:
    with compression, Autobahn's octet or frame logging, timing or
    automatic pings on.

    @param max_payload: the Engine.IO message cap, with Autobahn's frame cap
        the limit (0 is no limit, as in Autobahn).
    """
    if (
        protocol._perMessageCompress is not None
        or protocol.logOctets
        or protocol.logFrames
        or protocol.trackedTimings
        or protocol.autoPingTimeoutCall is not None
        or protocol.autoPingInterval != 0
    ):
        return 0
    limits = [max_payload, protocol.maxFramePayloadSize]
    return min(n for n in limits if n > 0) if any(limits) else 1 << 62


def writes_plain_frames(protocol: Any) -> bool:
    """Whether every data frame of an open connection is a plain frame (no
    compression negotiated), so frames can be built and written as bytes."""
    return protocol._perMessageCompress is None


def is_open(protocol: Any) -> bool:
    """Whether the connection is open (not yet closing)."""
    return protocol.state == _STATE_OPEN


def parser_idle(protocol: Any) -> bool:
    """Whether Autobahn's parser is between messages with nothing kept back:
    open, no frame or fragmented message under way, no bytes buffered."""
    return (
        protocol.state == _STATE_OPEN
        and protocol.current_frame is None
        and not protocol.data
        and not protocol.inside_message
    )


def parse(protocol: Any, data: bytes) -> None:
    """Hand a read to Autobahn's parser, without the debug event (and its
    fields) of Autobahn's Twisted C{dataReceived}."""
    protocol._dataReceived(data)


def parse_rest(protocol: Any, data: bytes) -> None:
    """Hand the rest of a read to an idle parser (L{parser_idle}), as the
    bytes it already has."""
    protocol.data = data
    protocol.consumeData()


def write_frames(protocol: Any, data: bytes) -> bool:
    """Write ready-made frames: at once on the socket when Autobahn has
    nothing queued and does not log octets, else through Autobahn.

    @return: whether all of C{data} left on the socket at once (nothing of
        it waits in Autobahn's queue or the transport's buffer).
    """
    if protocol.send_queue or protocol.logOctets:
        protocol.sendData(data)
        return False
    # sendData's debug event formats its fields on every call.
    return write_now(protocol.transport, data)


def failed(protocol: Any) -> bool:
    """Whether the connection was failed (by Autobahn or L{fail}): what is
    left of the message being received is ignored."""
    return bool(protocol.failedByMe)


def take_message(protocol: Any) -> tuple[bytes, bool] | None:
    """The message Autobahn has collected, as C{(payload, is_binary)}, or None
    when the connection was failed meanwhile (nothing is delivered then);
    Autobahn's buffer is let go, as its own C{onMessageEnd} does."""
    parts = protocol.message_data
    protocol.message_data = None
    if protocol.failedByMe:
        return None
    return b"".join(parts), bool(protocol.message_is_binary)


def fail(protocol: Any, code: int, reason: str) -> None:
    """Fail the connection as Autobahn does for its own limits: a close
    frame with C{code}, and every further frame of the message ignored."""
    protocol._fail_connection(code, reason)


def close(protocol: Any, code: int, reason: str) -> None:
    """Start the closing handshake with any RFC 6455 C{code} (the public
    C{sendClose} takes only 1000 and 3000-4999), or drop a connection that
    is not open yet; nothing once closing."""
    state = protocol.state
    if state == _STATE_OPEN:
        protocol.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8")[:_REASON_BYTES])
    elif state != _STATE_CLOSING and state != _STATE_CLOSED:
        protocol.dropConnection(abort=True)


def abort(protocol: Any) -> None:
    """Drop the connection at once, unsent bytes included."""
    protocol.dropConnection(abort=True)


def close_after_close_frame(protocol: Any) -> None:
    """End a connection whose closing handshake is over: stop reading it,
    send what is queued (the close frame) and close the TCP connection in
    order. Autobahn would abort it, which throws its own close frame away
    when that frame answers the very close frame just read."""
    protocol.dropConnection(abort=False)


def frame_too_big(protocol: Any) -> bool:
    """Whether Autobahn failed the connection over a frame past its frame cap."""
    return bool(protocol.wasMaxFramePayloadSizeExceeded)


def request_uri(protocol: Any, request: ConnectionRequest) -> str:
    """The request-target of the opening handshake, as the client sent it.

    Autobahn keeps it (C{http_request_uri}); where it does not, it is
    rebuilt from the path and query arguments of C{request}.
    """
    uri = getattr(protocol, "http_request_uri", None)
    if isinstance(uri, str):
        return uri
    query = urlencode([(key, value) for key, values in request.params.items() for value in values])
    return request.path + "?" + query if query else request.path


# -- protocol classes carrying the options ----------------------------------------


class SharedOptions:
    """Protocol classes whose class attributes are a factory's Autobahn options.

    Autobahn's C{_connectionMade} copies each of its protocol options
    (C{CONFIG_ATTRS}) from the factory into the new instance's C{__dict__}
    unless the instance already has the attribute (see docs/performance.md,
    "Memory per idle connection"). A protocol built from L{protocol_class}
    is an instance of a subclass of C{factory.protocol} whose class
    attributes are the factory's current option values, so the copy is
    skipped and every connection reads the same objects as before (Autobahn
    copied references, not copies). The subclass is rebuilt when
    C{factory.protocol} or an option value changes.
    """

    __slots__ = ("_built",)

    def __init__(self) -> None:
        self._built: tuple[type, tuple[Any, ...], type] | None = None

    def protocol_class(self, factory: WebSocketServerFactory) -> type | None:
        """The class to build C{factory}'s next protocol from, or None when
        C{factory.protocol} has no C{CONFIG_ATTRS} (build it the stock way)."""
        base = factory.protocol
        names = getattr(base, "CONFIG_ATTRS", None)
        if names is None:
            return None
        values = tuple([getattr(factory, name) for name in names])
        built = self._built
        if built is not None and built[0] is base and built[1] == values:
            return built[2]
        # A value that is a descriptor (a function such as
        # perMessageCompressionAccept) would bind to the instance as a
        # class attribute; staticmethod hands back the value itself.
        namespace: dict[str, Any] = {
            name: staticmethod(value) if hasattr(type(value), "__get__") else value
            for name, value in zip(names, values)
        }
        namespace.update(_class_defaults())
        namespace["__module__"] = base.__module__
        namespace["__qualname__"] = base.__qualname__
        cls = type(base.__name__, (base,), namespace)
        self._built = (base, values, cls)
        return cls


# -- less per open connection ---------------------------------------------------

#: Attributes Autobahn sets on every connection, with the value it starts
#: them at, that an open server connection reads or changes only on rare
#: paths: closing, timeouts, limits, automatic pings, compression, timing.
#: While one still holds its initial value it is read from the class
#: (L{SharedOptions} puts these on it); a later assignment puts it back on
#: the instance, as before.
COLD_DEFAULTS: Mapping[str, object] = {
    "wasMaxFramePayloadSizeExceeded": False,
    "wasMaxMessagePayloadSizeExceeded": False,
    "closedByMe": False,
    "failedByMe": False,
    "droppedByMe": False,
    "wasClean": False,
    "wasNotCleanReason": None,
    "wasServerConnectionDropTimeout": False,
    "wasOpenHandshakeTimeout": False,
    "wasCloseHandshakeTimeout": False,
    "wasServingFlashSocketPolicyFile": False,
    "localCloseCode": None,
    "localCloseReason": None,
    "remoteCloseCode": None,
    "remoteCloseReason": None,
    "openHandshakeTimeoutCall": None,
    "closeHandshakeTimeoutCall": None,
    "autoPingTimeoutCall": None,
    "autoPingPending": None,
    "autoPingPendingCall": None,
    "autoPingPendingSeq": 0,
    "autoPingPendingSent": None,
    "trackedTimings": None,
    "_perMessageCompress": None,
    "websocket_protocol_in_use": None,
    "triggered": False,
    "send_state": 0,
    # Autobahn's event observers (ObservableMixin.set_valid_events): the
    # same list on every connection, read only when an observer is added
    # or an event fired. Never changed in place.
    "_valid_events": ["message"],
}

#: What a server connection keeps from its opening handshake that Autobahn
#: reads only while processing it (the request, its parsed parts, the
#: answer). Let go once the connection is open: read from the class, they
#: are None. The request's headers stay in the transport's own
#: C{Handshake}, as a copy that shares the common names and values.
HANDSHAKE_LEFTOVERS = (
    "http_request_data",
    "http_status_line",
    "http_headers",
    "http_request_uri",
    "http_request_path",
    "http_request_params",
    "http_request_host",
    "http_response_data",
    "websocket_origin",
    "websocket_protocols",
    "websocket_extensions",
    "websocket_extensions_in_use",
    "_wskey",
)


class _SendQueue(list[Any]):
    """Autobahn's send queue as a list: empty but for chopped or synchronous
    sends, which the transport does not make; a C{deque} costs ten times
    the memory of an empty list."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


class _LazyUtf8Validator:
    """A protocol's C{utf8validator}, created the first time Autobahn's
    parser reads it (a text frame past the transport's fast path), then kept
    on the instance. A fresh validator is what Autobahn reads after
    C{reset()} at the start of every text message, so one made later
    validates the same way."""

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        validator = instance.__dict__["utf8validator"] = _protocol_module.Utf8Validator()
        return validator


class _LazyEventResults:
    """A protocol's C{_results} (the last result of each observed event, all
    None until an observer is added and the event fired), made the first
    time Autobahn reads it, then kept on the instance: unlike the observers'
    list of valid events, Autobahn changes this dict in place."""

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        results = instance.__dict__["_results"] = dict.fromkeys(instance._valid_events)
        return results


def _unobserved(attributes: Mapping[str, Any]) -> bool:
    """Whether no observer was ever added and no event result kept."""
    if attributes.get("_listeners") is not None:
        return False
    results = attributes.get("_results")
    return type(results) is dict and not any(value is not None for value in results.values())


def _class_defaults() -> dict[str, Any]:
    """What L{SharedOptions} adds to a protocol class for L{compact_open_connection}."""
    defaults: dict[str, Any] = dict(COLD_DEFAULTS)
    defaults.update(dict.fromkeys(HANDSHAKE_LEFTOVERS))
    defaults["utf8validator"] = _LazyUtf8Validator()
    defaults["_results"] = _LazyEventResults()
    defaults["_privydrop_compact"] = True
    return defaults


def compact_open_connection(protocol: Any) -> None:
    """Let an open server connection (of a L{SharedOptions} class) keep less.

    Drops L{HANDSHAKE_LEFTOVERS}; drops each L{COLD_DEFAULTS} attribute
    that still holds its initial value (the class has it); drops the UTF-8
    validator, made again on first use (L{_LazyUtf8Validator}), and the
    table of event results while nobody observes an event
    (L{_LazyEventResults}); swaps an
    empty send queue for a L{_SendQueue}; then rebuilds the instance dict
    at the size of what is left. Autobahn's instance dict grows past 60
    names, which takes a table twice the size of the one it needs after.
    Nothing for a class without the defaults.
    """
    if not getattr(type(protocol), "_privydrop_compact", False):
        return
    attributes = protocol.__dict__
    for name in HANDSHAKE_LEFTOVERS:
        attributes.pop(name, None)
    for name, initial in COLD_DEFAULTS.items():
        if name in attributes:
            value = attributes[name]
            if value is initial or (type(value) is type(initial) and value == initial):
                del attributes[name]
    attributes.pop("utf8validator", None)
    if _unobserved(attributes):
        # Made again, all None, if an observer is ever added.
        attributes.pop("_results", None)
    queue = attributes.get("send_queue")
    if type(queue) is deque and not queue:
        attributes["send_queue"] = _SendQueue()
    # Built from the items, not the dict: CPython sizes a copy of a dict by
    # the slots the original used, deleted ones included.
    protocol.__dict__ = dict(attributes.items())
