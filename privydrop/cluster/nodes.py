"""Which processes of a cluster are alive, and the clean-up of those that died.

Every process (node) sharing one Redis runs a L{NodeMonitor}: every
C{heartbeat_interval_ms} it runs one script (L{IStore.heartbeat}) that
writes its own heartbeat (a value that changes at every beat) and its info
for operators, and reads every node's heartbeat.

Judging death. A node is judged dead by another only from what that judge
saw itself: the node's heartbeat value did not change during
C{node_timeout_ms} of the judge's own I{consecutive successful} heartbeats.
A failed heartbeat, or a gap between two successful ones longer than twice
the interval (the judge itself was stalled), throws every observation away.
So a Redis outage, restart (data loss) or failover never makes nodes judge
each other dead: while Redis is unusable nobody observes, and afterwards
live nodes beat again. The value only has to I{change}: a lost counter that
reappears lower still counts as alive.

Exactly one reaper. A judge claims the dead node (L{IStore.claim_reap}: an
atomic claim, refused when the node beat since, or when another live node
holds the claim; a claim held by a node the judge also judges dead is taken
over). The claim marks the dead node reaped. The reaper then takes the dead
node's sockets in batches (L{IStore.reap_node}): each batch is unbound in
the store (binding, member sets, node hash; rooms left empty get the empty
TTL) and recorded as pending before it is returned; the reaper hands each
socket to C{on_socket_reaped} (signaling tells its room's remaining
members, wherever they are connected) and acknowledges the batch with the
next call. A reaper that dies mid-way leaves its pending batch to the next
reaper, which announces it again: those peers are told twice.

Recoverable sockets (connection state recovery on, a C{recovery:<sid>}
record) are not announced: the reaper becomes their custodian
(C{on_socket_kept}): they are recorded on it, keep their room, and wait,
detached, for their client until their window ends (from detection, or
the deadline already running); only then are their peers told.

Restart alone. A node has a stable name (host name and listen endpoint, or
C{CLUSTER_NODE_NAME}). At its first successful heartbeat it claims at once
every other node of its own name that is not a live process: on the same
host, one whose pid is this process's own or names no running process
(socket-activated workers of one host share their endpoint string, so the
name alone does not tell them apart); on another host (a configured name),
any. So a process restarted with nobody else alive cleans up after its
predecessor without waiting for the timeout.

Reaped while alive. A node stalled (SIGSTOP, a long pause) past the timeout
is reaped by the others; its next heartbeat answers "reaped" and writes
nothing. It then calls C{on_self_reaped} (the service closes every session,
whose clients reconnect, and takes a fresh node id) and registers again
under the new id at its next beat. Until that heartbeat, which is the
first timer due when the process resumes, it may still relay what its
clients send.

What this module must not know: Socket.IO, PrivyDrop's events, Redis
commands (the store runs the scripts).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from privydrop.logs.levels import Logger
from privydrop.settings import ClusterSettings
from privydrop.store.interface import (
    IStore,
    NodeBeat,
    ReapedSocket,
    ReapStatus,
    StoreUnavailable,
)

_log = Logger()

#: The monitors running in this process: several service trees in one
#: process (tests) share its pid, and none is another's predecessor.
_RUNNING: weakref.WeakSet[NodeMonitor] = weakref.WeakSet()

#: A gap between two successful heartbeats longer than this many intervals
#: means the judge itself was not observing (stalled): observations restart.
MAX_GAP_INTERVALS = 2.0


class NodeMonitor:
    """Heartbeats of one node, death of the others, and their clean-up.

    @ivar beats: successful heartbeats so far.
    @ivar failed_beats: heartbeats that failed (Redis unusable).
    @ivar reaped_nodes: nodes this one finished cleaning up.
    @ivar reaped_sockets: sockets it announced as gone.
    @ivar times_reaped: how often this node found it was reaped itself.
    """

    def __init__(
        self,
        store: IStore,
        clock: IReactorTime,
        settings: ClusterSettings,
        *,
        node_id: Callable[[], str],
        name: str,
        info: Mapping[str, str],
        socket_ttl_s: int,
        empty_ttl_s: int,
        prune_limit: int,
        on_socket_reaped: Callable[[ReapedSocket], None],
        on_self_reaped: Callable[[], None],
        figures: Callable[[], Mapping[str, int]] | None = None,
        process_alive: Callable[[int], bool] | None = None,
        recovery_window_ms: int = 0,
        on_socket_kept: Callable[[ReapedSocket], None] | None = None,
        on_beat: Callable[[], None] | None = None,
    ) -> None:
        """
        @param node_id: this node's current id (it changes when the node
            registers again after it was reaped).
        @param name: this node's stable name.
        @param info: shown to operators (C{privydrop-admin monitor}) with
            C{name} and the time of each heartbeat.
        @param socket_ttl_s: TTL of the heartbeats and markers (a node gone
            for that long is forgotten even if nobody cleaned it up).
        @param empty_ttl_s: TTL of rooms a clean-up leaves empty.
        @param prune_limit: members a clean-up looks at for ghosts.
        @param on_socket_reaped: called with each socket of a dead node once
            it is unbound; tells its peers.
        @param on_self_reaped: called when this node learns it was reaped.
        @param figures: counters written with the info at every heartbeat
            (operators and the C{cluster} benchmark read them).
        @param process_alive: whether a pid names a running process on this
            host (C{info} gives this node's C{host} and C{pid}); without it
            every other node of this name is taken for a predecessor.
        @param recovery_window_ms: connection state recovery's window (0:
            off): a dead node's sockets that may still be recovered are
            kept by the reaper (C{on_socket_kept}), detached, until their
            window ends, instead of being announced at once.
        @param on_socket_kept: called with each such socket.
        @param on_beat: called after each successful heartbeat (the sweep
            of recovery windows that ended).
        """
        self._store = store
        self._clock = clock
        self._interval_s = settings.heartbeat_interval_ms / 1000
        self._timeout_s = settings.node_timeout_ms / 1000
        self._timeout_ms = settings.node_timeout_ms
        self._batch = settings.reap_batch
        self._node_id = node_id
        self.name = name
        self._info = dict(info)
        self._info["name"] = name
        self._socket_ttl_s = socket_ttl_s
        self._empty_ttl_s = empty_ttl_s
        self._prune_limit = prune_limit
        self._on_socket_reaped = on_socket_reaped
        self._on_self_reaped = on_self_reaped
        self._figures = figures
        self._process_alive = process_alive
        self._recovery_window_ms = recovery_window_ms
        self._on_socket_kept = on_socket_kept
        self._on_beat = on_beat
        self._loop: LoopingCall | None = None
        self._beating: Deferred[None] | None = None
        self._counter = 0
        # Per other node: the beat value last seen, and when (the judge's
        # clock) it was first seen with that value.
        self._observed: dict[str, tuple[str, float]] = {}
        self._last_success: float | None = None
        self._registered = False
        self._reaping: dict[str, Deferred[None]] = {}
        self._running = False
        self.beats = 0
        self.failed_beats = 0
        self.reaped_nodes = 0
        self.reaped_sockets = 0
        self.times_reaped = 0
        self._beat_waiters: list[tuple[int, Deferred[int]]] = []

    @property
    def node_id(self) -> str:
        return self._node_id()

    @property
    def judged_dead(self) -> frozenset[str]:
        """Nodes whose heartbeat stayed unchanged for the timeout, as of now."""
        now = self._clock.seconds()
        return frozenset(
            node
            for node, (_, since) in self._observed.items()
            if now - since >= self._timeout_s
        )

    @property
    def live_peers(self) -> frozenset[str]:
        """Other nodes seen at the last heartbeats and not judged dead."""
        return frozenset(self._observed) - self.judged_dead

    async def peers_alive(self) -> bool:
        """Whether other nodes are alive, as of a heartbeat run now (a
        stopping process asks: can anyone recover its sockets?)."""
        if self._beating is not None:
            await self._beating
        self.beat_soon()
        if self._beating is not None:
            await self._beating
        return bool(self.live_peers)

    def start(self) -> None:
        """Beat now and every interval (idempotent)."""
        if self._loop is not None:
            return
        self._running = True
        _RUNNING.add(self)
        loop = self._loop = LoopingCall(self.beat_soon)
        loop.clock = self._clock
        loop.start(self._interval_s, now=True).addErrback(
            lambda failure: _log.failure("cluster heartbeats stopped", failure=failure)
        )

    def stop(self) -> Deferred[Any]:
        """Stop beating; once the current beat and clean-ups have ended,
        leave the heartbeats (unless sockets are still bound to this node,
        which the others then clean up)."""
        self._running = False
        _RUNNING.discard(self)
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()
        pending = [d for d in (self._beating, *self._reaping.values()) if d is not None]
        return DeferredList(pending, consumeErrors=True).addCallback(
            lambda _: Deferred.fromCoroutine(self._deregister())
        )

    async def _deregister(self) -> None:
        if not self._registered:
            return
        try:
            await self._store.deregister_node(self.node_id)
        except StoreUnavailable as e:
            _log.warn(
                "cluster node {node_id} could not leave the heartbeats: {error}",
                node_id=self.node_id,
                error=str(e),
            )

    def beat_soon(self) -> None:
        """Start a heartbeat unless one is in progress."""
        if self._beating is not None:
            return
        d = self._beating = Deferred.fromCoroutine(self.beat())

        def done(result: Any) -> Any:
            self._beating = None
            return result

        d.addBoth(done).addErrback(
            lambda failure: _log.failure("cluster heartbeat failed", failure=failure)
        )

    def wait_beats(self, after: int) -> Deferred[int]:
        """Fires with L{beats} once it exceeds C{after} (for tests)."""
        if self.beats > after:
            return succeed(self.beats)
        d: Deferred[int] = Deferred()
        self._beat_waiters.append((after, d))
        return d

    async def beat(self) -> None:
        """One heartbeat: write ours, read everyone's, judge, claim the dead."""
        self._counter += 1
        node_id = self.node_id
        info = dict(self._info)
        info["beat_ms"] = str(int(self._clock.seconds() * 1000))
        if self._figures is not None:
            info.update((field, str(value)) for field, value in self._figures().items())
        try:
            heartbeat = await self._store.heartbeat(
                node_id, str(self._counter), info, self._socket_ttl_s
            )
        except StoreUnavailable as e:
            self.failed_beats += 1
            self._forget_observations()
            _log.debug("cluster heartbeat failed: {error}", error=str(e))
            return
        if not self._running:
            return
        if heartbeat.reaped:
            self._reaped(node_id)
            return
        now = self._clock.seconds()
        if self._last_success is None or now - self._last_success > MAX_GAP_INTERVALS * self._interval_s:
            # The judge was not observing all along (it just started, was
            # stalled, or Redis failed it): start over.
            self._observed = {}
        self._last_success = now
        first = not self._registered
        self._registered = True
        present = set()
        predecessors = []
        for node, seen in heartbeat.nodes.items():
            if node == node_id:
                continue
            present.add(node)
            if first and self._is_predecessor(node, seen):
                predecessors.append((node, seen.beat))
                continue
            before = self._observed.get(node)
            if before is None or before[0] != seen.beat:
                self._observed[node] = (seen.beat, now)
        for node in list(self._observed):
            if node not in present:
                del self._observed[node]
        dead = self.judged_dead
        for node, beat in predecessors:
            _log.info(
                "cluster node {node_id} cleans up {dead}, an earlier process named {name}",
                node_id=node_id,
                dead=node,
                name=self.name,
            )
            self._start_reap(node, beat, dead)
        for node in sorted(dead):
            self._start_reap(node, self._observed[node][0], dead)
        self.beats += 1
        if self._on_beat is not None:
            try:
                self._on_beat()
            except Exception:  # noqa: BLE001 - error boundary: the beat itself succeeded
                _log.failure("after-heartbeat hook failed")
        ready = [(a, d) for a, d in self._beat_waiters if self.beats > a]
        self._beat_waiters = [(a, d) for a, d in self._beat_waiters if self.beats <= a]
        for _, waiter in ready:
            waiter.callback(self.beats)

    def _is_predecessor(self, node: str, seen: NodeBeat) -> bool:
        """Whether another node of this name is an earlier process that died."""
        if seen.name != self.name:
            return False
        if any(monitor.node_id == node for monitor in list(_RUNNING)):
            return False
        here = self._info.get("host", "")
        if self._process_alive is None or not here or seen.host != here:
            return True
        if not seen.pid.isdigit():
            return True
        pid = int(seen.pid)
        return seen.pid == self._info.get("pid") or not self._process_alive(pid)

    def _forget_observations(self) -> None:
        self._observed = {}
        self._last_success = None

    def _reaped(self, node_id: str) -> None:
        self.times_reaped += 1
        self._forget_observations()
        self._registered = False
        _log.warn(
            "cluster node {node_id} was judged dead by the others (stalled past "
            "the timeout) and its sockets were cleaned up: closing its sessions "
            "and registering again",
            node_id=node_id,
        )
        try:
            self._on_self_reaped()
        except Exception:  # noqa: BLE001 - error boundary: the next beat registers anyway
            _log.failure("handling this node's reaping failed")

    def _start_reap(self, node: str, beat: str, dead: frozenset[str]) -> None:
        if node in self._reaping:
            return
        d = self._reaping[node] = Deferred.fromCoroutine(self._reap(node, beat, dead))

        def done(result: Any) -> Any:
            self._reaping.pop(node, None)
            return result

        d.addBoth(done).addErrback(
            lambda failure: _log.failure("cleaning up node {dead} failed", failure=failure, dead=node)
        )

    async def _reap(self, node: str, beat: str, dead: frozenset[str]) -> None:
        me = self.node_id
        try:
            won = await self._store.claim_reap(
                node, me, beat, self._timeout_ms, self._socket_ttl_s, takeover_from=dead
            )
        except StoreUnavailable as e:
            _log.warn("could not claim the clean-up of node {dead}: {error}", dead=node, error=str(e))
            return
        if not won:
            return
        _log.warn(
            "cluster node {dead} judged dead by {node_id} (no heartbeat for {timeout_ms} ms); "
            "cleaning up its sockets",
            dead=node,
            node_id=me,
            timeout_ms=self._timeout_ms,
        )
        ack = False
        announced = 0
        while self._running:
            try:
                batch = await self._store.reap_node(
                    node,
                    me,
                    batch=self._batch,
                    ack=ack,
                    empty_ttl_s=self._empty_ttl_s,
                    claim_ttl_ms=self._timeout_ms,
                    pending_ttl_s=self._socket_ttl_s,
                    prune_limit=self._prune_limit,
                    now_ms=int(self._clock.seconds() * 1000),
                    recovery_window_ms=self._recovery_window_ms if self._on_socket_kept else 0,
                )
            except StoreUnavailable as e:
                # The claim expires; whoever judges the node dead next goes on.
                _log.warn("cleaning up node {dead} paused: {error}", dead=node, error=str(e))
                return
            if batch.status is ReapStatus.LOST:
                _log.warn("the clean-up of node {dead} was taken over", dead=node)
                return
            if batch.status is ReapStatus.DONE:
                self.reaped_nodes += 1
                self._observed.pop(node, None)
                _log.info(
                    "cluster node {dead} cleaned up: {count} sockets announced as gone",
                    dead=node,
                    count=announced,
                )
                return
            for kept in batch.kept:
                assert self._on_socket_kept is not None
                try:
                    self._on_socket_kept(kept)
                except Exception:  # noqa: BLE001 - error boundary: its window still ends
                    _log.failure("keeping socket {sid} of a dead node failed", sid=kept.socket_id)
            for reaped in batch.sockets:
                try:
                    self._on_socket_reaped(reaped)
                except Exception:  # noqa: BLE001 - error boundary: the others are still told
                    _log.failure("announcing reaped socket {sid} failed", sid=reaped.socket_id)
            announced += len(batch.sockets)
            self.reaped_sockets += len(batch.sockets)
            ack = True


class NodeService(Service):
    """Runs a L{NodeMonitor} while the service runs.

    Put it in the tree after the store and before the real-time layer, so
    that it stops after the sessions ended and their sockets were unbound,
    and can leave the heartbeats cleanly.
    """

    name = "nodes"

    def __init__(self, monitor: NodeMonitor) -> None:
        self.monitor = monitor

    def startService(self) -> None:
        super().startService()
        _log.info(
            "cluster node {node_id} named {name} (pid {pid}) beats every {interval} ms",
            node_id=self.monitor.node_id,
            name=self.monitor.name,
            pid=os.getpid(),
            interval=int(self.monitor._interval_s * 1000),
        )
        self.monitor.start()

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        return self.monitor.stop()
