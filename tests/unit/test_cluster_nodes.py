"""Heartbeats, judging death and the clean-up of dead nodes (L{privydrop.cluster.nodes}).

Several L{NodeMonitor}s share one L{MemoryStore} (which runs the same
rules as the Redis scripts; both pass the store contract suite) on one
L{Clock}: "a node dies" is its monitor no longer beating, "a node is
stalled" is its monitor skipping beats while the clock runs. The real
processes on a real Redis are in tests/integration/test_cluster_crash.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import pytest
from twisted.internet.task import Clock

from privydrop.cluster.nodes import NodeMonitor
from privydrop.settings import ClusterSettings
from privydrop.store import keys
from privydrop.store.interface import Heartbeat, ReapedSocket, StoreUnavailable
from privydrop.store.memory import MemoryStore

SETTINGS = ClusterSettings(heartbeat_interval_ms=1000, node_timeout_ms=5000, reap_batch=2)
SOCKET_TTL = 90_000


class FlakyStore(MemoryStore):
    """The memory store whose heartbeats fail while C{down} (a Redis outage)."""

    down = False

    async def heartbeat(
        self, node_id: str, beat: str, info: Mapping[str, str], ttl_s: int
    ) -> Heartbeat:
        if self.down:
            raise StoreUnavailable("redis is down")
        return await super().heartbeat(node_id, beat, info, ttl_s)


@attrs.define
class Node:
    monitor: NodeMonitor
    ids: list[str]
    reaped: list[ReapedSocket] = attrs.field(factory=list)
    self_reaped: int = 0

    @property
    def id(self) -> str:
        return self.ids[-1]


@attrs.define
class World:
    clock: Clock
    store: FlakyStore
    nodes: dict[str, Node] = attrs.field(factory=dict)
    #: pids of the processes running on "this host".
    running: set[int] = attrs.field(factory=set)

    def node(self, label: str, name: str | None = None, **overrides: Any) -> Node:
        """A node; C{info} in C{overrides} replaces its info, the rest its settings."""
        ids = [label + "0"]
        info = overrides.pop("info", {"pid": "1"})
        holder: list[Node] = []

        def self_reaped() -> None:
            holder[0].self_reaped += 1
            ids.append(label + str(len(ids)))

        monitor = NodeMonitor(
            self.store,
            self.clock,
            attrs.evolve(SETTINGS, **overrides),
            node_id=lambda: ids[-1],
            name=name if name is not None else "host|" + label,
            info=info,
            socket_ttl_s=SOCKET_TTL,
            empty_ttl_s=900,
            prune_limit=64,
            on_socket_reaped=lambda reaped: holder[0].reaped.append(reaped),
            on_self_reaped=self_reaped,
            process_alive=self.running.__contains__,
        )
        node = Node(monitor, ids)
        holder.append(node)
        self.nodes[label] = node
        return node

    def join(self, node: Node, socket_id: str, room: str) -> None:
        now_ms = int(self.clock.seconds() * 1000)
        _run(self.store.create_room(room, now_ms, 3600))
        result = _run(
            self.store.join_room(socket_id, room, now_ms, 3600, SOCKET_TTL, None, node_id=node.id)
        )
        assert result.outcome.value in ("joined", "rejoined")

    def tick(self, seconds: float, beating: tuple[Node, ...]) -> None:
        """Let C{seconds} pass in steps of one interval; the C{beating}
        nodes beat at each (the others are dead or stalled)."""
        steps = int(round(seconds / (SETTINGS.heartbeat_interval_ms / 1000)))
        for _ in range(steps):
            self.clock.advance(SETTINGS.heartbeat_interval_ms / 1000)
            for node in beating:
                _run(node.monitor.beat())


def _run(coroutine: Any) -> Any:
    """Run a memory-store coroutine (it never waits) to its end."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the memory store waited for something")


@pytest.fixture
def world() -> World:
    clock = Clock()
    clock.advance(1_000_000)
    return World(clock, FlakyStore(clock))


def _start(*nodes: Node) -> None:
    for node in nodes:
        node.monitor._running = True
        _run(node.monitor.beat())


def test_a_node_that_stops_beating_is_reaped_after_the_timeout_and_not_before(
    world: World,
) -> None:
    a, b = world.node("a"), world.node("b")
    _start(a, b)
    world.join(a, "sa", "r1")
    world.join(b, "sb", "r1")
    world.join(b, "sb2", "r2")
    world.tick(1, (b, a))  # b's last heartbeat, which a then reads
    world.tick(4, (a,))
    assert a.reaped == [] and world.store._hget(keys.HEARTBEATS, b.id) is not None
    world.tick(1, (a,))
    assert sorted(r.socket_id for r in a.reaped) == ["sb", "sb2"]
    told = {r.socket_id: dict(r.members) for r in a.reaped}
    assert told["sb"] == {"sa": a.id} and told["sb2"] == {}
    assert _run(world.store.room_sockets("r1")) == {"sa"}
    assert _run(world.store.room_of_socket("sb")) is None
    assert world.store._hget(keys.HEARTBEATS, b.id) is None
    # An emptied room gets the empty-room TTL.
    assert _run(world.store.ttl("room:r2")) == 900
    assert a.monitor.reaped_nodes == 1


def test_exactly_one_of_several_judges_reaps(world: World) -> None:
    a, b, c = world.node("a"), world.node("b"), world.node("c")
    _start(a, b, c)
    world.join(c, "sc", "r1")
    world.join(a, "sa", "r1")
    world.tick(6, (a, b))
    assert [r.socket_id for r in a.reaped + b.reaped] == ["sc"]


def test_a_redis_outage_never_makes_nodes_reap_each_other(world: World) -> None:
    """During an outage no one observes; afterwards the others' values have
    changed (or not, if they were also down): every observation restarts."""
    a, b = world.node("a"), world.node("b")
    _start(a, b)
    world.join(b, "sb", "r1")
    world.tick(3, (a, b))
    world.store.down = True
    world.tick(8, (a, b))
    assert a.monitor.failed_beats == 8
    world.store.down = False
    # b is slow to come back: a's observation starts afresh after the outage.
    world.tick(4, (a,))
    assert a.reaped == []
    world.tick(1, (a, b))
    world.tick(10, (a, b))
    assert a.reaped == [] and b.reaped == []


def test_a_judge_that_was_stalled_itself_does_not_count_its_stall(world: World) -> None:
    a, b = world.node("a"), world.node("b")
    _start(a, b)
    world.join(b, "sb", "r1")
    world.tick(2, (a, b))
    # Both stalled 20 s (a VM paused); a resumes first.
    world.tick(20, ())
    world.tick(1, (a,))
    world.tick(3, (a,))
    assert a.reaped == []
    world.tick(1, (a, b))
    world.tick(10, (a, b))
    assert a.reaped == []


def test_a_lost_counter_that_comes_back_lower_is_alive(world: World) -> None:
    a, b = world.node("a"), world.node("b")
    _start(a, b)
    world.tick(3, (a, b))
    b.monitor._counter = 0  # as if Redis lost the value and b restarted counting
    world.tick(10, (a, b))
    assert a.reaped == []


def test_a_stalled_node_learns_it_was_reaped_and_registers_again(world: World) -> None:
    a, b = world.node("a"), world.node("b")
    _start(a, b)
    world.join(b, "sb", "r1")
    world.join(a, "sa", "r1")
    world.tick(6, (a,))  # b stalled past the timeout
    assert [r.socket_id for r in a.reaped] == ["sb"]
    old = b.id
    world.tick(1, (a, b))  # b resumes
    assert b.self_reaped == 1 and b.id != old
    assert world.store._hget(keys.HEARTBEATS, old) is None
    world.tick(1, (a, b))
    assert world.store._hget(keys.HEARTBEATS, b.id) is not None
    # b's new id is alive for a: nothing more is reaped.
    world.tick(10, (a, b))
    assert [r.socket_id for r in a.reaped] == ["sb"] and b.self_reaped == 1


def test_a_restarted_node_reaps_its_predecessor_at_once(world: World) -> None:
    old = world.node("old", name="host|tcp:3001")
    _start(old)
    world.join(old, "s1", "r1")
    world.tick(1, ())  # killed
    new = world.node("new", name="host|tcp:3001")
    _start(new)
    assert [r.socket_id for r in new.reaped] == ["s1"]
    assert _run(world.store.room_sockets("r1")) == set()
    assert world.store._hget(keys.HEARTBEATS, old.id) is None


def test_other_names_are_not_predecessors(world: World) -> None:
    other = world.node("other", name="host|tcp:3002")
    _start(other)
    world.join(other, "s1", "r1")
    new = world.node("new", name="host|tcp:3001")
    _start(new)
    assert new.reaped == []


def test_a_reaper_that_dies_mid_clean_up_leaves_the_rest_to_another(world: World) -> None:
    """The pending batch is announced again (peers may be told twice), the
    rest once, and nothing of the dead node is left."""
    a, b, c = world.node("a"), world.node("b"), world.node("c")
    _start(a, b, c)
    for i in range(5):
        world.join(c, f"sc{i}", f"r{i}")
        world.join(b, f"sb{i}", f"r{i}")
    # c dies; a reaps it but dies after the first batch of two (announced,
    # not acknowledged).
    world.tick(4, (a, b))
    b.monitor._running = False
    a.monitor._batch = 2

    died: list[str] = []

    def die_after_first(reaped: ReapedSocket) -> None:
        died.append(reaped.socket_id)
        if len(died) == 2:
            a.monitor._running = False

    a.monitor._on_socket_reaped = die_after_first
    for _ in range(5):
        if died:
            break
        world.clock.advance(1)
        _run(a.monitor.beat())
    assert len(died) == 2
    assert world.store._get_string(keys.reap_claim(c.id)) == a.id
    # b goes on beating; it judges a (and still c) dead and takes over.
    b.monitor._running = True
    world.tick(6, (b,))
    told = [r.socket_id for r in b.reaped]
    # The pending batch again (its peers are told twice), then the rest once.
    assert told[:2] == died
    assert sorted(told) == [f"sc{i}" for i in range(5)]
    assert world.store._hget(keys.HEARTBEATS, c.id) is None
    for i in range(5):
        assert _run(world.store.room_sockets(f"r{i}")) == {f"sb{i}"}


def test_a_stopping_node_leaves_the_heartbeats_when_it_holds_no_socket(world: World) -> None:
    a = world.node("a")
    _start(a)
    assert world.store._hget(keys.HEARTBEATS, a.id) is not None
    _run(a.monitor._deregister())
    assert world.store._hget(keys.HEARTBEATS, a.id) is None


def test_a_live_worker_of_the_same_name_on_this_host_is_no_predecessor(world: World) -> None:
    """Socket-activated workers of one host share their endpoint string
    (C{systemd:domain=INET:index=0}) and so their default name: a worker
    starting must not take a running sibling for its predecessor. One whose
    pid no longer runs is one."""
    name = "host|systemd:domain=INET:index=0"
    world.running.update({101, 102})
    sibling = world.node("sib", name=name, info={"pid": "101", "host": "host"})
    _start(sibling)
    world.join(sibling, "s1", "r1")
    crashed = world.node("old", name=name, info={"pid": "99", "host": "host"})
    _start(crashed)
    world.join(crashed, "s2", "r2")
    world.tick(1, (sibling,))  # "old" was killed: pid 99 runs no more
    new = world.node("new", name=name, info={"pid": "102", "host": "host"})
    _start(new)
    assert [r.socket_id for r in new.reaped] == ["s2"]
    assert _run(world.store.room_sockets("r1")) == {"s1"}
    world.tick(10, (sibling, new))
    assert sibling.self_reaped == 0 and [r.socket_id for r in new.reaped + sibling.reaped] == ["s2"]


def test_a_predecessor_with_this_very_pid_is_dead(world: World) -> None:
    """A container restarted with the same host name gets the same pid (1)."""
    world.running.add(1)
    old = world.node("old", name="c1|tcp:3001", info={"pid": "1", "host": "c1"})
    _start(old)
    world.join(old, "s1", "r1")
    world.tick(1, ())
    new = world.node("new", name="c1|tcp:3001", info={"pid": "1", "host": "c1"})
    _start(new)
    assert [r.socket_id for r in new.reaped] == ["s1"]


def test_service_trees_of_one_process_are_not_each_others_predecessors(world: World) -> None:
    """Several trees in one process (as tests run them) share pid, host and
    (with the same endpoint string) name; a running one is never taken for
    a dead predecessor."""
    world.running.add(7)
    first = world.node("one", name="h|tcp:0", info={"pid": "7", "host": "h"})
    second = world.node("two", name="h|tcp:0", info={"pid": "7", "host": "h"})
    first.monitor.start()
    world.join(first, "s1", "r1")
    second.monitor.start()
    try:
        world.tick(2, ())
        assert second.reaped == [] and first.self_reaped == 0
        assert _run(world.store.room_sockets("r1")) == {"s1"}
    finally:
        first.monitor.stop()
        second.monitor.stop()
