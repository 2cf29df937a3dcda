"""Connection state recovery across the processes of a cluster.

L{ClusterRecovery} is the L{privydrop.socketio.recovery.RecoveryBackend} of
a process with Redis. The Socket.IO layer recovers a socket within its own
process; this adds what the store and the cluster channel make possible:

  - Finding a socket from its pid anywhere. The pid is C{<socket id>.<random>};
    the join script records C{recovery:<sid>} (pid, room, node) in the join's
    one round trip, the leave script deletes it. Nothing is written on the
    relay path.
  - Claiming it (L{IStore.claim_recovery}, one script): the socket is
    recorded on this process (room's node hash, node sets, record) and its
    deadline removed, atomically; signaling's state for it (room,
    incarnation) is set here.
  - Its log: the process that held it is asked over its node channel, with
    a bounded wait (C{CLUSTER_HANDOVER_TIMEOUT_MS}), for the events after the
    client's offset, and lets the socket go (closing its old connection if
    still open). The log travels once, on request.
  - Windows that end without a timer of a process that may be gone: a lost
    connection writes C{ZADD recovery:deadlines <deadline> <sid>}; the
    holder's own timer, and every process's sweep after each heartbeat
    (for deadlines past by one heartbeat interval), remove due entries,
    and whoever removed one ends that socket: its own, through its normal
    disconnect (store unbind, one C{peer-disconnected}); another's, with the
    store's leave and the same notice as C{POST /api/leave_room} (the holder,
    if alive, is told to let it go).
  - Custody: the reaper of a dead process keeps its recoverable sockets,
    detached, in their rooms, and collects what is sent to them until their
    window ends (L{ClusterRecovery.keep}).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime

from privydrop.cluster.routing import ClusterAdapter
from privydrop.logs.levels import Logger
from privydrop.rooms import Rooms
from privydrop.signaling.handlers import NotifyPeerLeft, Signaling, room_name
from privydrop.socketio.recovery import (
    LogStatus,
    RemoteClaim,
    RemoteLog,
    pid_socket_id,
)
from privydrop.socketio.server import SocketIOServer
from privydrop.socketio.sockets import Socket
from privydrop.store.interface import IStore, ReapedSocket, StoreUnavailable

_log = Logger()

#: Due deadlines one sweep takes at most.
SWEEP_BATCH = 100

#: Disconnect reason of a socket whose window ended.
WINDOW_ENDED = "transport close"


class ClusterRecovery:
    """The recovery backend of one process of a cluster (module docstring).

    @ivar swept: sockets of other processes this one ended at their deadline.
    """

    def __init__(
        self,
        *,
        store: IStore,
        rooms: Rooms,
        adapter: ClusterAdapter,
        sio: SocketIOServer,
        signaling: Signaling,
        notify_peer_left: NotifyPeerLeft,
        clock: IReactorTime,
        window_ms: int,
        socket_ttl_s: int,
        handover_timeout_ms: int,
        sweep_grace_ms: int,
        namespace: str = "/",
    ) -> None:
        self._store = store
        self._rooms = rooms
        self._adapter = adapter
        self._sio = sio
        self._signaling = signaling
        self._notify_peer_left = notify_peer_left
        self._clock = clock
        self._window_ms = window_ms
        self._socket_ttl_s = socket_ttl_s
        self._handover_timeout_s = handover_timeout_ms / 1000
        self._sweep_grace_ms = sweep_grace_ms
        self._namespace = namespace
        self._writes: set[Deferred[Any]] = set()
        self._sweeping = False
        self.swept = 0

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    def _track(self, d: Deferred[Any], what: str) -> None:
        """Keep a store write until it ends (the shutdown waits for them)."""
        self._writes.add(d)

        def done(result: Any) -> None:
            self._writes.discard(d)

        d.addErrback(lambda failure: _log.warn("{what} failed: {error}", what=what,
                                               error=failure.getErrorMessage()))
        d.addBoth(done)

    def flush(self) -> Deferred[Any]:
        """Fires once every deadline write started so far has ended."""
        return DeferredList(list(self._writes), consumeErrors=True)

    # RecoveryBackend

    def claim(self, namespace: str, pid: str) -> Deferred[RemoteClaim | None]:
        return Deferred.fromCoroutine(self._claim(namespace, pid))

    async def _claim(self, namespace: str, pid: str) -> RemoteClaim | None:
        socket_id = pid_socket_id(pid)
        if socket_id is None or namespace != self._namespace:
            return None
        try:
            claim = await self._store.claim_recovery(
                socket_id, pid, self._adapter.node_id, self._socket_ttl_s
            )
        except StoreUnavailable as e:
            _log.warn("could not claim socket {sid} for recovery: {error}", sid=socket_id,
                      error=str(e))
            return None
        if not claim.claimed:
            return None
        self._signaling.adopt(socket_id, claim.room_id, claim.incarnation)
        return RemoteClaim(
            socket_id,
            {room_name(claim.room_id, claim.incarnation): claim.members},
            claim.old_node,
        )

    def fetch_log(
        self, namespace: str, claim: RemoteClaim, pid: str, offset: str
    ) -> Deferred[RemoteLog]:
        if not claim.old_node or claim.old_node == self._adapter.node_id:
            return succeed(RemoteLog(LogStatus.MISSING))
        answer = self._adapter.request_log(
            claim.old_node, namespace, pid, offset, self._handover_timeout_s
        )

        def read(reply: Any) -> RemoteLog:
            if reply is None:
                return RemoteLog(LogStatus.MISSING)
            try:
                status = LogStatus(reply.status)
            except ValueError:
                status = LogStatus.MISSING
            return RemoteLog(status, reply.events)

        return answer.addCallback(read)

    def detached(self, socket: Socket) -> None:
        if self._signaling.room_of(socket.id) is None:
            # In no room: no record, nothing another process could recover.
            return
        self._track(
            Deferred.fromCoroutine(
                self._store.set_recovery_deadline(socket.id, self._now_ms() + self._window_ms)
            ),
            "writing the recovery deadline of socket " + socket.id,
        )

    def resumed(self, socket: Socket) -> None:
        if self._signaling.room_of(socket.id) is None:
            return
        self._track(
            Deferred.fromCoroutine(self._store.take_recovery_deadline(socket.id)),
            "removing the recovery deadline of socket " + socket.id,
        )

    def window_ended(self, socket: Socket) -> Deferred[bool]:
        if self._signaling.room_of(socket.id) is None:
            return succeed(True)
        return Deferred.fromCoroutine(self._take(socket.id))

    async def _take(self, socket_id: str) -> bool:
        try:
            return await self._store.take_recovery_deadline(socket_id)
        except StoreUnavailable:
            # Nobody else can take it either; its disconnect clean-up says
            # what it can.
            return True

    # The sweep (after every heartbeat) and custody

    def sweep_soon(self) -> None:
        """End the sockets whose window ended, wherever they were held."""
        if self._sweeping:
            return
        self._sweeping = True
        d = Deferred.fromCoroutine(self.sweep())

        def done(result: Any) -> Any:
            self._sweeping = False
            return result

        d.addBoth(done).addErrback(
            lambda failure: _log.failure("sweeping recovery windows failed", failure=failure)
        )

    async def sweep(self) -> int:
        """One sweep. @return: how many sockets this process ended."""
        try:
            due = await self._store.take_due_recoveries(
                self._now_ms() - self._sweep_grace_ms, SWEEP_BATCH
            )
        except StoreUnavailable:
            return 0
        ended = 0
        namespace = self._sio.of(self._namespace)
        for socket_id in due:
            if namespace.end_detached(socket_id, WINDOW_ENDED):
                ended += 1
                continue
            # Held by another process (alive or not): unbind it and tell its
            # peers, as a REST leave does; its holder lets it go.
            try:
                result = await self._rooms.leave(socket_id)
            except StoreUnavailable:
                _log.warn("could not end socket {sid} whose window ended", sid=socket_id)
                continue
            self._notify_peer_left(socket_id, result)
            ended += 1
            self.swept += 1
        return ended

    def keep(self, kept: ReapedSocket) -> None:
        """Become the custodian of a dead process's recoverable socket."""
        if kept.pid is None:
            return
        self._signaling.adopt(kept.socket_id, kept.room_id, kept.incarnation)
        window_s = (kept.deadline_ms - self._now_ms()) / 1000
        adopted = self._sio.adopt(
            self._namespace,
            kept.socket_id,
            kept.pid,
            {room_name(kept.room_id, kept.incarnation): kept.members},
            window_s,
        )
        if adopted:
            _log.info(
                "keeping socket {sid} of a dead process for its client ({window_s:.0f} s left)",
                sid=kept.socket_id,
                window_s=window_s,
            )
