"""Differential test: random operation sequences give the same answers on both stores.

The contract suite checks chosen cases; this one runs seeded random sequences
over a small universe of ids (so operations collide) and fails on the first
answer where the Lua scripts and the memory store disagree (TTLs compared
with Redis' real-time drift allowed). The failure names the seed and the
operations so far.
"""

from __future__ import annotations

import random
from typing import Any

import pytest_twisted
from twisted.internet.task import Clock

from privydrop.store import keys
from privydrop.store.interface import IStore, RateWindow, RoomProbe
from privydrop.store.memory import MemoryStore
from privydrop.store.redis import RedisStore
from tests.redis_server import RedisServer

ROOMS = ["0427", "AB", "é x"]
SOCKETS = ["s1", "s2", "s3"]
IPS = ["10.0.0.1", "::1"]
DAYS = ["2024-03-15", "2024-03-16"]
REFS = ["a", "b", "c"]
NODES = ["na", "nb"]
KEYS = (
    [keys.room(r) for r in ROOMS]
    + [keys.room_sockets(r) for r in ROOMS]
    + [keys.room_nodes(r) for r in ROOMS]
    + [keys.socket(s) for s in SOCKETS]
    + [keys.node_sockets(n) for n in NODES]
    + [keys.join_rate(ip) for ip in IPS]
    + [keys.referrers(d) for d in DAYS]
)
#: Incarnations a caller may claim to know (rooms are created at these times).
START_MS = 1_700_000_000_000

def random_operation(rng: random.Random) -> tuple[Any, ...]:
    """One operation on a small universe of ids, so they collide often."""
    kind = rng.choice(
        ["create", "first_free", "join", "join", "leave", "record", "track",
         "room_of", "members", "exists", "ttl", "check", "ghost", "end"]
    )
    ttl = rng.choice([1, 5, 900, 86_400])
    if kind == "create":
        return (kind, rng.choice(ROOMS), ttl)
    if kind == "first_free":
        return (kind, rng.sample(ROOMS, rng.randint(0, len(ROOMS))), ttl)
    if kind == "join":
        known = None
        if rng.random() < 0.5:
            known = (rng.choice(ROOMS), START_MS + rng.choice([0, 1_000, 2_500]))
        return (
            kind, rng.choice(SOCKETS), rng.choice(ROOMS), rng.choice([None, *IPS]), ttl,
            rng.choice(NODES), known,
        )
    if kind == "check":
        return (kind, rng.choice(ROOMS), START_MS + rng.choice([0, 1_000, 2_500]),
                tuple(rng.sample(SOCKETS, rng.randint(0, 2))))
    if kind == "ghost":
        # A binding lost behind the store's back (an unbind that failed).
        return (kind, keys.socket(rng.choice(SOCKETS)))
    if kind == "end":
        # A room ends (its TTL, a FLUSHALL): its keys vanish, bindings stay.
        return (kind, rng.choice(ROOMS))
    if kind == "leave":
        return (kind, rng.choice(SOCKETS), rng.choice([None, *ROOMS]), ttl)
    if kind == "record":
        return (kind, rng.choice(IPS))
    if kind == "track":
        return (kind, rng.choice(DAYS), rng.choice(REFS), rng.randint(0, 3))
    if kind in ("room_of",):
        return (kind, rng.choice(SOCKETS))
    if kind in ("members", "exists"):
        return (kind, rng.choice(ROOMS))
    return (kind, rng.choice(KEYS))


async def apply(
    store: IStore, op: tuple[Any, ...], now_ms: int, serial: int,
    store_server: RedisServer | None = None, store_db: int = 0,
) -> Any:
    kind = op[0]
    if kind == "create":
        return await store.create_room(op[1], now_ms, op[2])
    if kind == "first_free":
        return await store.create_first_free_room(op[1], now_ms, op[2])
    if kind == "join":
        _, sid, room, ip, ttl, node, known = op
        rate = None
        if ip is not None:
            rate = RateWindow(ip, f"{now_ms}-{serial}", 5_000, 2, 5)
        return await store.join_room(
            sid, room, now_ms, ttl, ttl + 3_600, rate, node_id=node,
            known_room=None if known is None else known[0],
            known_incarnation=None if known is None else known[1],
        )
    if kind == "check":
        return await store.check_rooms([RoomProbe(op[1], op[2], op[3])])
    if kind in ("ghost", "end"):
        drop = [op[1]] if kind == "ghost" else [
            keys.room(op[1]), keys.room_sockets(op[1]), keys.room_nodes(op[1])
        ]
        for key in drop:
            if isinstance(store, MemoryStore):
                store._drop(key)
            else:
                store_server.command("DEL", key, db=store_db)
        return None
    if kind == "leave":
        return await store.leave_room(op[1], op[2], op[3])
    if kind == "record":
        return await store.record_attempt(RateWindow(op[1], f"{now_ms}-{serial}", 5_000, 2, 5), now_ms)
    if kind == "track":
        return await store.track_referrer(op[1], op[2], 3_600, op[3])
    if kind == "room_of":
        return await store.room_of_socket(op[1])
    if kind == "members":
        return await store.room_sockets(op[1])
    if kind == "exists":
        return await store.room_exists(op[1])
    assert kind == "ttl"
    return await store.ttl(op[1])


def same(op: tuple[Any, ...], memory: Any, redis: Any) -> bool:
    if op[0] == "ttl" and isinstance(memory, int) and isinstance(redis, int) and memory > 0:
        return memory - 2 <= redis <= memory
    return bool(memory == redis)


SEQUENCES = 150
STEPS = 30


@pytest_twisted.ensureDeferred
async def test_memory_and_redis_agree_on_random_sequences(
    redis_store: RedisStore, redis_server: RedisServer, redis_db: int
) -> None:
    """Development (memory) and production (Redis) must behave the same for users."""
    for seed in range(SEQUENCES):
        rng = random.Random(seed)
        redis_server.command("FLUSHDB", db=redis_db)
        memory = MemoryStore(Clock())
        now_ms = START_MS
        history: list[tuple[Any, ...]] = []
        for serial in range(STEPS):
            now_ms += rng.choice([0, 1, 1_000, 2_500, 5_000])
            op = random_operation(rng)
            history.append(op)
            expected = await apply(memory, op, now_ms, serial)
            actual = await apply(redis_store, op, now_ms, serial, redis_server, redis_db)
            assert same(op, expected, actual), (seed, history, expected, actual)
