"""Twisted internals the server relies on, in one place.

Each function here reads or uses a private attribute of a Twisted class
because no public API gives the same answer at the same cost. The
attributes are listed in L{TCP_SERVER_INTERNALS}; C{tests/unit/test_compat.py}
fails, naming the attribute, on a Twisted version where one of them is gone.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp

_TCP_SERVER = tcp.Server


def outbound_buffer_size(transport: Any) -> int:
    """Bytes written to C{transport} that the peer has not taken yet.

    Reads the buffer bookkeeping of Twisted's file-descriptor transports
    (TCP and UNIX); a TLS transport is measured on the connection below it.
    Unknown transports count as empty.
    """
    if type(transport) is _TCP_SERVER:
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    inner = getattr(transport, "transport", None)
    if inner is not None and not hasattr(transport, "dataBuffer"):
        transport = inner
    data = getattr(transport, "dataBuffer", None)
    if data is None:
        return 0
    return (
        len(data)
        - getattr(transport, "offset", 0)
        + getattr(transport, "_tempDataLen", 0)
    )



def write_now(transport: Any, data: bytes) -> None:
    """Write C{data}, sending it on the socket at once when nothing is buffered.

    Twisted's TCP transport only buffers a write and registers for
    writability; the bytes leave on the next reactor iteration, which costs
    two C{epoll_ctl} calls, a wake-up and a turn of latency per write. When
    the transport's buffer is empty that send is what would happen next
    anyway, so it is done here; whatever the kernel does not take (or any
    other transport: TLS, tests' fakes) goes through C{transport.write}.
    """
    if (
        type(transport) is _TCP_SERVER
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
            return
        if sent:
            data = data[sent:]
    transport.write(data)
