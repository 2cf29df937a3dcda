"""Twisted internals the server relies on, in one place.

Each function here reads or uses a part of Twisted that is not public API
(or an option that not every supported Twisted has), because no public API
gives the same answer at the same cost. The names each one relies on are
listed in a tuple below; L{missing} finds the ones a Twisted object lacks,
and every function falls back to public behaviour when its names are not
there. C{tests/unit/test_compat_twisted.py} fails, naming the attribute, on
a Twisted version where one of them changed.

  - L{outbound_buffer_size}, L{write_now}: the write buffer of a TCP (or
    UNIX) server connection, L{TCP_SERVER_INTERNALS} (WebSocket frames and
    HTTP answers are sent with L{write_now}). Fallback: any other
    transport counts as empty and is written with C{transport.write}.
  - L{site_options}: C{Site(parsePOSTFormSubmission=False)}, a public option
    of recent Twisted. Fallback: form bodies are parsed, as Twisted always did.
  - L{request_head}: the request whose head C{HTTPChannel} has just parsed,
    and its request-target (C{_path}). Fallback: no target (the caller
    checks the body cap again once the request is complete).
  - L{request_method}: that request's method (C{_command}), for a resource
    that watches bodies while they arrive. Fallback: none (such a resource
    is not told of the head).
  - L{release_upgraded_channel}: the producer bookkeeping of an HTTP channel
    whose connection went to a WebSocket (C{_requestProducer}, the
    transport's C{producer}). Fallback: the channel is left registered.
  - L{HTTP_HOOKS}: the methods of C{HTTPChannel} and C{Request} that the
    site overrides. There is no fallback for a renamed hook; L{hooks_missing}
    names it, and the site logs it as an error.
  - L{REPLICATED_METHODS}: stock methods whose work the site's shorter path
    for Engine.IO requests repeats (less what those requests do not use),
    pinned by a digest of their source. L{replicas_changed} names those
    that changed; the site then sends every request the stock way.
  - L{lean_dispatch}: the epoll reactor's poller, its descriptors and its
    per-event handler, L{EPOLL_REACTOR_INTERNALS}; it stands in for
    C{EPollReactor.doPoll}, pinned by a digest of its source
    (L{DO_POLL_DIGEST}, as L{REPLICATED_METHODS}). Fallback: the reactor
    dispatches as it always did.
"""

from __future__ import annotations

import errno
import hashlib
import inspect
from collections.abc import Iterable
from typing import Any

from twisted.internet import tcp
from twisted.python import log as legacy_log
from twisted.web import http, server

_TCP_SERVER = tcp.Server

#: What L{outbound_buffer_size} and L{write_now} read on a connected
#: C{tcp.Server} (the write buffer, its offset, the list of writes not yet
#: joined to it and their size, the states that forbid a direct send), and
#: what L{release_upgraded_channel} reads on it (C{producer}).
TCP_SERVER_INTERNALS = (
    "dataBuffer",
    "offset",
    "_tempDataBuffer",
    "_tempDataLen",
    "_writeDisconnected",
    "TLS",
    "socket",
    "connected",
    "disconnecting",
    "producer",
)

#: What L{request_head} and L{release_upgraded_channel} read on an
#: C{HTTPChannel}. C{_path} exists only between a request line and the end
#: of that request's body, so it is checked on a channel in that state.
HTTP_CHANNEL_INTERNALS = ("requests", "length", "_requestProducer")
HTTP_HEAD_INTERNALS = ("_path", "_command")

#: The methods the site's channel and request override, by class: a hook
#: renamed in Twisted would leave an override that is never called.
HTTP_HOOKS: dict[type, tuple[str, ...]] = {
    http.HTTPChannel: (
        "allHeadersReceived",
        "allContentReceived",
        "rawDataReceived",
        "requestDone",
        "timeoutConnection",
        "writeHeaders",
        "getHost",
        "setTimeout",
        "resetTimeout",
    ),
    server.Request: (
        "gotLength",
        "handleContentChunk",
        "requestReceived",
        "startedWriting",
        "render",
    ),
}

#: Stock methods the site's shorter path for Engine.IO requests repeats in
#: part (C{LimitedRequest.requestReceived} and C{.process},
#: C{HardenedChannel.writeHeaders}), with the SHA-256 of their source in
#: the Twisted this was written against. A new Twisted that changes one of
#: them may do something there that the shorter path would skip.
REPLICATED_METHODS: dict[tuple[type, str], str] = {
    (http.Request, "requestReceived"): (
        "99ca6c5e24305de4a0cf1270a1cf624046cded1ceb23fb1c62bd743074f61d3f"
    ),
    (server.Request, "process"): (
        "f75c1431d226a2298ad3aaa14130a9ad7c9b4e4a5f435cf63b46586e5a35563d"
    ),
    (http.HTTPChannel, "writeHeaders"): (
        "3521e56c0fe24bc25143c5b06e06174682a3ada2a5a0f8caaf1d396b2719c6a1"
    ),
}


def method_digest(cls: type, name: str) -> str | None:
    """SHA-256 of the source of C{cls.name}, or None when it has none."""
    try:
        source = inspect.getsource(getattr(cls, name))
    except (AttributeError, OSError, TypeError):
        return None
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def replicas_changed() -> tuple[str, ...]:
    """The L{REPLICATED_METHODS} whose source is not the pinned one."""
    return tuple(
        "%s.%s" % (cls.__name__, name)
        for (cls, name), digest in REPLICATED_METHODS.items()
        if method_digest(cls, name) != digest
    )



#: The keyword of C{server.Site} that turns form parsing off.
SITE_FORM_OPTION = "parsePOSTFormSubmission"


def missing(target: object, names: Iterable[str]) -> tuple[str, ...]:
    """The names in C{names} that C{target} has no attribute for, in order."""
    return tuple(name for name in names if not hasattr(target, name))


def hooks_missing() -> tuple[str, ...]:
    """The L{HTTP_HOOKS} this Twisted lacks, as C{Class.method}."""
    return tuple(
        "%s.%s" % (cls.__name__, name)
        for cls, names in HTTP_HOOKS.items()
        for name in missing(cls, names)
    )


# -- the TCP write buffer ------------------------------------------------------

#: Transport classes seen, and whether their write buffer can be read.
_buffer_readable: dict[type, bool] = {}


def _has_readable_buffer(transport: Any) -> bool:
    """Whether C{transport} is a C{tcp.Server} (or subclass) with every
    L{TCP_SERVER_INTERNALS} present; decided once per class, on the first
    instance (most of the names are set by the instance's constructor)."""
    kind = type(transport)
    readable = _buffer_readable.get(kind)
    if readable is None:
        readable = isinstance(transport, _TCP_SERVER) and not missing(
            transport, TCP_SERVER_INTERNALS
        )
        _buffer_readable[kind] = readable
    return readable


def outbound_buffer_size(transport: Any) -> int:
    """Bytes written to C{transport} that the peer has not taken yet.

    Reads the buffer bookkeeping of Twisted's TCP and UNIX server
    transports; a TLS transport is measured on the connection below it (the
    bytes still inside the TLS layer are not counted). Any other transport,
    or one whose internals changed, counts as empty: the caps built on this
    then never trigger, which is the stock behaviour.
    """
    if not _has_readable_buffer(transport):
        inner = getattr(transport, "transport", None)
        if inner is None or not _has_readable_buffer(inner):
            return 0
        transport = inner
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


def write_now(transport: Any, data: bytes) -> bool:
    """Write C{data}, sending it on the socket at once when nothing is buffered.

    Twisted's TCP transport only buffers a write and registers for
    writability; the bytes leave on the next reactor iteration, which costs
    two C{epoll_ctl} calls, a wake-up and a turn of latency per write. When
    the transport's buffer is empty that send is what would happen next
    anyway, so it is done here; whatever the kernel does not take (or any
    other transport: TLS, tests' fakes, a TCP transport whose internals
    changed) goes through C{transport.write}.

    @return: whether all of C{data} left on the socket here, so nothing is
        buffered on C{transport} now (L{outbound_buffer_size} is 0).
    """
    if (
        _has_readable_buffer(transport)
        and not transport.dataBuffer
        and not transport._tempDataBuffer
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnected
        and not transport.TLS
    ):
        try:
            sent = transport.socket.send(data)
        except OSError:
            # EAGAIN, or an error that the buffered write reports the
            # Twisted way (the connection is lost on the next iteration).
            sent = 0
        if sent == len(data):
            return True
        if sent:
            data = data[sent:]
    transport.write(data)
    return False


# -- twisted.web ---------------------------------------------------------------


def _site_takes_form_option(site_class: type = server.Site) -> bool:
    try:
        parameters = inspect.signature(site_class).parameters
    except (TypeError, ValueError):  # pragma: no cover - not introspectable
        return False
    return SITE_FORM_OPTION in parameters


def site_options(site_class: type = server.Site) -> dict[str, Any]:
    """Keyword arguments for C{site_class} that turn off form parsing.

    Neither the API (JSON) nor Engine.IO (text or binary packets) takes
    form submissions; parsing one costs CPU, and would let a form body
    override query arguments such as Engine.IO's C{sid}. Empty where this
    Twisted's C{Site} has no such option (forms are then parsed as before).
    """
    return {SITE_FORM_OPTION: False} if _site_takes_form_option(site_class) else {}


def request_head(channel: Any) -> tuple[Any, bytes | None, int | None]:
    """The request whose head C{channel} has just parsed, for C{allHeadersReceived}.

    @return: the request object (its body not read yet), its
        request-target as sent (path and query; None when this Twisted
        keeps it elsewhere) and the declared C{Content-Length} (None for a
        chunked body).
    """
    return channel.requests[-1], getattr(channel, "_path", None), channel.length


def request_method(channel: Any) -> bytes | None:
    """The method of the request whose head C{channel} has just parsed (as
    L{request_head}); None when this Twisted keeps it elsewhere."""
    method = getattr(channel, "_command", None)
    return method if isinstance(method, bytes) else None


def release_upgraded_channel(channel: Any, transport: Any) -> None:
    """Let the HTTP channel of a connection taken over by a WebSocket be collected.

    Autobahn's C{WebSocketResource} takes the TCP transport from the channel
    (C{channel.transport} becomes C{None}) but the channel stays the
    transport's registered push producer, which keeps the channel, its
    unfinished request (headers, body buffer, C{notifyFinish} Deferreds) and
    its line buffer alive for the life of the WebSocket (see
    docs/performance.md, "Memory per idle connection"). For such a channel
    the producer calls are no-ops (its request is being handled, so it
    never pauses the transport, and no request producer is registered), so
    unregistering it changes nothing else. Done only when all of that can be
    seen; otherwise the channel stays registered, as Twisted leaves it.
    """
    if (
        transport is not None
        and getattr(channel, "transport", True) is None
        and hasattr(channel, "_requestProducer")
        and channel._requestProducer is None
        and getattr(transport, "producer", None) is channel
    ):
        transport.unregisterProducer()


# -- the reactor's dispatch ------------------------------------------------------

#: What L{lean_dispatch} uses on an C{EPollReactor}: the C{epoll} object, the
#: descriptors by file number, and the method that runs one event (a read,
#: a write or a disconnection, with Twisted's own error handling).
EPOLL_REACTOR_INTERNALS = ("_poller", "_selectables", "_doReadOrWrite")

#: The SHA-256 of C{EPollReactor.doPoll}'s source that L{lean_dispatch} was
#: written against (L{method_digest}): a changed C{doPoll} may do something
#: per event that the lean loop would skip.
DO_POLL_DIGEST = "09b62ae68ef01b4bc5eaa170827e2baf0a2a5098e7e7ce7b5e1c80cda187c827"


def lean_dispatch(reactor: Any) -> bool:
    """Run the epoll reactor's events without a log context per event.

    Twisted's C{EPollReactor.doPoll} runs each ready descriptor's event
    inside C{log.callWithLogger}: it asks the connection for its log prefix
    and copies the context stack's dictionary, so that a legacy
    C{twisted.python.log} message written during the event carries the
    connection's name as its C{system}. That is a fixed cost per ready
    connection and reactor turn, paid even when nothing is logged, and it
    weighs most when many connections carry one message each. Here the
    events run directly; an exception escaping one (Twisted's handler
    already logs and closes on a failed read or write) is still logged with
    the connection's prefix, as C{callWithLogger} does, and the next event
    runs. What changes: legacy log messages written during an event have no
    connection-named C{system} (the package logs through
    C{twisted.logger} with named fields, and the prefix would name the
    client's address, which the logs keep out unless configured).

    @param reactor: the reactor about to run.
    @return: whether the lean dispatch was installed (False: not an epoll
        reactor, or one whose internals or C{doPoll} changed; it dispatches as
        before).
    """
    from twisted.internet.epollreactor import EPollReactor

    if (
        not isinstance(reactor, EPollReactor)
        or missing(reactor, EPOLL_REACTOR_INTERNALS)
        or method_digest(EPollReactor, "doPoll") != DO_POLL_DIGEST
    ):
        return False
    poller = reactor._poller
    selectables = reactor._selectables
    run_event = reactor._doReadOrWrite

    def do_poll(timeout: float | None) -> None:
        try:
            events = poller.poll(-1 if timeout is None else timeout, len(selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            try:
                run_event(selectable, fd, event)
            except KeyboardInterrupt:
                raise
            except BaseException:
                try:
                    prefix = selectable.logPrefix()
                except BaseException:
                    prefix = "(buggy logPrefix method)"
                legacy_log.err(system=prefix)

    # On this instance only: mainLoop calls self.doIteration every turn.
    reactor.doIteration = do_poll  # type: ignore[method-assign]
    return True
