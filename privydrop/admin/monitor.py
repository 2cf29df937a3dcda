"""A snapshot of the deployment as Redis holds it, for a terminal or as JSON.

Rooms, joined sockets, socket bindings and rate-limit windows are counted
from the key schema (L{privydrop.store.keys}) with C{SCAN}, so watching a
busy Redis never blocks it; keys of the schema without a TTL are listed
because every key PrivyDrop writes has one (see L{privydrop.admin.cleanup}).

The live processes of the cluster are read from their heartbeats
(C{cluster:heartbeats} and each C{cluster:node:<id>:info}, see
L{privydrop.store.keys}): one line per process with its stable name, pid,
endpoint, the age of its last heartbeat (by the process's clock against
Redis's) and its counters as of that heartbeat. A process being cleaned up
after it died is marked so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from privydrop.admin.client import RedisClient, RedisError
from privydrop.store import keys

#: Lists the live processes of the cluster, or None when that is unknown.
ProcessLister = Callable[[RedisClient], "list[dict[str, Any]] | None"]

#: Patterns of every key family of the schema.
SCHEMA_PATTERNS = (
    keys.ROOM_PREFIX + "*",
    keys.SOCKET_PREFIX + "*",
    keys.JOIN_RATE_PREFIX + "*",
    keys.REFERRERS_PREFIX + "*",
)
#: Keys asked about per pipeline round trip.
BATCH = 500


def no_process_list(client: RedisClient) -> None:
    """Processes unknown (the view of a deployment without heartbeats)."""
    return None


#: Counters a process writes with each heartbeat, shown as numbers.
_COUNTERS = ("connections", "published", "deliveries", "received", "unroutable")


def live_processes(client: RedisClient) -> list[dict[str, Any]]:
    """The processes with a heartbeat in Redis, oldest start first.

    @raise RedisError: when Redis fails.
    """
    beats = client.command("HGETALL", keys.HEARTBEATS) or []
    nodes = [str(node) for node in beats[::2]]
    replies = client.pipeline(
        [("TIME",)]
        + [("HGETALL", keys.node_info(node)) for node in nodes]
        + [("GET", keys.reap_claim(node)) for node in nodes]
    )
    seconds, micros = replies[0]
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    infos, claims = replies[1 : 1 + len(nodes)], replies[1 + len(nodes) :]
    found = []
    for node, info_flat, claim in zip(nodes, infos, claims):
        info = dict(zip(info_flat[::2], info_flat[1::2])) if isinstance(info_flat, list) else {}
        entry: dict[str, Any] = {
            "node": node,
            "name": info.get("name", ""),
            "pid": int(info["pid"]) if info.get("pid", "").isdigit() else None,
            "listen": info.get("listen", ""),
            "startedMs": int(info["started_ms"]) if info.get("started_ms", "").isdigit() else None,
            "beatAgeMs": now_ms - int(info["beat_ms"]) if info.get("beat_ms", "").isdigit() else None,
            "reapedBy": claim if isinstance(claim, str) else None,
        }
        for counter in _COUNTERS:
            value = info.get(counter, "")
            entry[counter] = int(value) if value.isdigit() else None
        found.append(entry)
    found.sort(key=lambda e: (e["startedMs"] or 0, e["node"]))
    return found


@attrs.frozen
class Snapshot:
    """What the deployment holds at one moment.

    @ivar processes: the cluster's live processes; None while unknown.
    """

    rooms: int
    joined_sockets: int
    socket_bindings: int
    rate_limit_windows: int
    referrer_days: int
    keys_without_ttl: tuple[str, ...]
    memory: dict[str, str]
    processes: list[dict[str, Any]] | None

    def as_json(self) -> dict[str, Any]:
        return {
            "rooms": self.rooms,
            "joinedSockets": self.joined_sockets,
            "socketBindings": self.socket_bindings,
            "rateLimitWindows": self.rate_limit_windows,
            "referrerDays": self.referrer_days,
            "keysWithoutTtl": list(self.keys_without_ttl),
            "memory": self.memory,
            "processes": self.processes,
        }


def schema_keys(client: RedisClient) -> list[str]:
    """Every key of the schema (several families, one SCAN each)."""
    found: list[str] = []
    for pattern in SCHEMA_PATTERNS:
        found.extend(client.scan(pattern))
    return sorted(set(found))


def ttls(client: RedisClient, names: list[str]) -> dict[str, int]:
    """C{TTL} of each key (-1: none, -2: gone), pipelined in batches."""
    result: dict[str, int] = {}
    for start in range(0, len(names), BATCH):
        batch = names[start:start + BATCH]
        for name, ttl in zip(batch, client.pipeline([("TTL", name) for name in batch])):
            if isinstance(ttl, int):
                result[name] = ttl
    return result


def _memory(client: RedisClient) -> dict[str, str]:
    info = client.command("INFO", "memory")
    wanted = ("used_memory_human", "used_memory_peak_human", "maxmemory_human", "maxmemory_policy")
    fields = dict(
        line.split(":", 1) for line in str(info).splitlines() if ":" in line and not line.startswith("#")
    )
    return {name: fields[name].strip() for name in wanted if name in fields}


def take_snapshot(client: RedisClient, processes: ProcessLister = live_processes) -> Snapshot:
    """Count what Redis holds now.

    @raise RedisError: when Redis fails.
    """
    names = schema_keys(client)
    member_sets = [n for n in names if n.startswith(keys.ROOM_PREFIX) and n.endswith(keys.SOCKETS_SUFFIX)]
    cards = client.pipeline([("SCARD", n) for n in member_sets])
    joined = sum(card for card in cards if isinstance(card, int))
    return Snapshot(
        rooms=sum(
            1
            for n in names
            if n.startswith(keys.ROOM_PREFIX)
            and not n.endswith((keys.SOCKETS_SUFFIX, keys.NODES_SUFFIX))
        ),
        joined_sockets=joined,
        socket_bindings=sum(1 for n in names if n.startswith(keys.SOCKET_PREFIX)),
        rate_limit_windows=sum(1 for n in names if n.startswith(keys.JOIN_RATE_PREFIX)),
        referrer_days=sum(1 for n in names if n.startswith(keys.REFERRERS_PREFIX)),
        keys_without_ttl=tuple(n for n, ttl in ttls(client, names).items() if ttl == -1),
        memory=_memory(client),
        processes=processes(client),
    )


def render(snapshot: Snapshot, address: str) -> str:
    """The terminal view of one snapshot."""
    memory = snapshot.memory
    lines = [
        "PrivyDrop on Redis %s" % (address,),
        "  rooms               %d" % (snapshot.rooms,),
        "  joined sockets      %d" % (snapshot.joined_sockets,),
        "  socket bindings     %d" % (snapshot.socket_bindings,),
        "  rate-limit windows  %d" % (snapshot.rate_limit_windows,),
        "  referrer days       %d" % (snapshot.referrer_days,),
        "  keys without TTL    %d%s" % (
            len(snapshot.keys_without_ttl),
            " (privydrop-admin cleanup)" if snapshot.keys_without_ttl else "",
        ),
        "  memory              %s used, %s peak, max %s, policy %s" % (
            memory.get("used_memory_human", "?"),
            memory.get("used_memory_peak_human", "?"),
            memory.get("maxmemory_human", "?"),
            memory.get("maxmemory_policy", "?"),
        ),
        "  processes           %s" % (
            "unknown" if snapshot.processes is None else len(snapshot.processes),
        ),
    ]
    for process in snapshot.processes or ():
        age = process["beatAgeMs"]
        lines.append(
            "    %s  %s  pid %s  beat %s ago  %s connections  %s msgs out (%s deliveries), %s in%s"
            % (
                process["node"],
                process["name"] or "?",
                process["pid"] if process["pid"] is not None else "?",
                "?" if age is None else "%.1fs" % (max(age, 0) / 1000,),
                _count(process["connections"]),
                _count(process["published"]),
                _count(process["deliveries"]),
                _count(process["received"]),
                "  DEAD, being cleaned up by %s" % process["reapedBy"] if process["reapedBy"] else "",
            )
        )
    return "\n".join(lines) + "\n"


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


__all__ = [
    "ProcessLister",
    "RedisError",
    "Snapshot",
    "live_processes",
    "no_process_list",
    "render",
    "take_snapshot",
]
