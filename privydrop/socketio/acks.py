"""Acknowledgements the server awaits from one socket's client.

Ids come from a per-socket counter; at most C{limit} may be outstanding, so
a client that never answers cannot make the server remember callbacks
without bound.
"""

from __future__ import annotations

import inspect
from typing import Any, Awaitable, Callable, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from privydrop.logs.levels import Logger
from privydrop.socketio.errors import AckLimitError

_log = Logger()


class _Pending:
    __slots__ = ("callback", "on_drop", "timer")

    def __init__(
        self,
        callback: Callable[..., Any],
        on_drop: Callable[[], None] | None,
        timer: IDelayedCall | None,
    ) -> None:
        self.callback = callback
        self.on_drop = on_drop
        self.timer = timer


class PendingAcks:
    """Outstanding acknowledgement callbacks of one socket, by ack id.

    Every socket has one, and most never await an acknowledgement: the
    table is made on first use.
    """

    __slots__ = ("_clock", "_limit", "_next_id", "_pending")

    def __init__(self, clock: IReactorTime, limit: int) -> None:
        self._clock = clock
        self._limit = limit
        self._next_id = 0
        self._pending: dict[int, _Pending] | None = None

    def __len__(self) -> int:
        return 0 if self._pending is None else len(self._pending)

    def register(
        self,
        callback: Callable[..., Any],
        on_drop: Callable[[], None] | None = None,
        timeout_s: float | None = None,
        on_timeout: Callable[[], None] | None = None,
    ) -> int:
        """Remember a callback and return the ack id to send with the event.

        @param callback: called with the acknowledgement's arguments.
        @param on_drop: called instead if the socket disconnects first.
        @param timeout_s: forget the callback after this long and call
            C{on_timeout}.
        @raise AckLimitError: C{limit} acknowledgements are already awaited.
        """
        pending = self._pending
        if pending is None:
            pending = self._pending = {}
        if len(pending) >= self._limit:
            raise AckLimitError("max_pending_acks reached")
        ack_id = self._next_id
        self._next_id += 1
        timer = None
        if timeout_s is not None:
            timer = self._clock.callLater(timeout_s, self._expire, ack_id, on_timeout)
        pending[ack_id] = _Pending(callback, on_drop, timer)
        return ack_id

    def _expire(self, ack_id: int, on_timeout: Callable[[], None] | None) -> None:
        pending = None if self._pending is None else self._pending.pop(ack_id, None)
        if pending is not None and on_timeout is not None:
            _call_logged(on_timeout)

    def resolve(self, ack_id: int, args: Sequence[Any]) -> bool:
        """Run the callback for an acknowledgement that arrived.

        @return: False when no acknowledgement with that id was awaited.
        """
        pending = None if self._pending is None else self._pending.pop(ack_id, None)
        if pending is None:
            return False
        if pending.timer is not None and pending.timer.active():
            pending.timer.cancel()
        _call_logged(pending.callback, *args)
        return True

    def drop_all(self) -> None:
        """The socket is gone: cancel timers and tell every waiter."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        for item in pending.values():
            if item.timer is not None and item.timer.active():
                item.timer.cancel()
            if item.on_drop is not None:
                _call_logged(item.on_drop)


async def _await_any(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def as_deferred_if_awaitable(result: Any) -> Any:
    """A handler's result: coroutines and other awaitables become Deferreds
    (started at once), Deferreds and plain values are returned unchanged."""
    if isinstance(result, Deferred):
        return result
    if inspect.iscoroutine(result):
        return Deferred.fromCoroutine(result)
    if inspect.isawaitable(result):
        return Deferred.fromCoroutine(_await_any(result))
    return result


def _call_logged(fn: Callable[..., Any], *args: Any) -> None:
    """Run a callback (a coroutine function too); log what it raises."""
    try:
        result = fn(*args)
    except Exception:
        _log.failure("acknowledgement callback {callback!r} failed", callback=fn)
        return
    d = as_deferred_if_awaitable(result)
    if isinstance(d, Deferred):
        d.addErrback(
            lambda failure: _log.failure(
                "acknowledgement callback {callback!r} failed", failure=failure, callback=fn
            )
        )
