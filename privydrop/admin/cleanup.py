"""Find, and on request remove, what the key schema says cannot be there.

Every key PrivyDrop writes has a TTL (L{privydrop.store.keys}); a key of the
schema without one was left by something else (a hand-made key, a script, an
old bug) and would stay for ever. And a socket id in a room's member set
whose C{socket:<sid>} binding is gone belongs to a socket that no longer
exists anywhere (a process that died without its shutdown, a binding that
expired): it inflates the room and is never announced as gone.

L{find} only reads. L{apply} removes each finding in one small Lua script
that checks the condition again, so a key that got its TTL, or a socket that
was bound again, in the meantime is left alone.
"""

from __future__ import annotations

import attrs

from privydrop.admin.client import RedisClient
from privydrop.admin.monitor import BATCH, schema_keys, ttls
from privydrop.store import keys

#: Deletes KEYS[1] only if it still has no TTL.
_DELETE_IF_NO_TTL = "if redis.call('TTL', KEYS[1]) == -1 then return redis.call('DEL', KEYS[1]) end return 0"
#: Removes ARGV[1] from the set KEYS[1] (and the room's node hash KEYS[3])
#: only if its binding KEYS[2] is still gone.
_REMOVE_IF_UNBOUND = (
    "if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('HDEL', KEYS[3], ARGV[1]) "
    "return redis.call('SREM', KEYS[1], ARGV[1]) end return 0"
)


@attrs.frozen
class StaleMember:
    """A socket id in a room's member set without a C{socket:<sid>} binding."""

    set_key: str
    socket_id: str


@attrs.frozen
class Findings:
    keys_without_ttl: tuple[str, ...]
    stale_members: tuple[StaleMember, ...]

    @property
    def empty(self) -> bool:
        return not self.keys_without_ttl and not self.stale_members


def find(client: RedisClient) -> Findings:
    """What L{apply} would remove; reads only."""
    names = schema_keys(client)
    no_ttl = tuple(name for name, ttl in ttls(client, names).items() if ttl == -1)
    member_sets = [n for n in names if n.startswith(keys.ROOM_PREFIX) and n.endswith(keys.SOCKETS_SUFFIX)]
    stale: list[StaleMember] = []
    for set_key, members in zip(member_sets, client.pipeline([("SMEMBERS", n) for n in member_sets])):
        if not isinstance(members, list):
            continue
        members = sorted(members)
        for start in range(0, len(members), BATCH):
            batch = members[start:start + BATCH]
            exists = client.pipeline([("EXISTS", keys.socket(m)) for m in batch])
            stale.extend(StaleMember(set_key, m) for m, found in zip(batch, exists) if found == 0)
    return Findings(no_ttl, tuple(stale))


def apply(client: RedisClient, findings: Findings) -> tuple[int, int]:
    """Remove the findings that still hold.

    @return: (keys deleted, members removed).
    """
    deleted = client.pipeline(
        [("EVAL", _DELETE_IF_NO_TTL, 1, name) for name in findings.keys_without_ttl]
    )
    removed = client.pipeline(
        [
            (
                "EVAL",
                _REMOVE_IF_UNBOUND,
                3,
                m.set_key,
                keys.socket(m.socket_id),
                m.set_key[: -len(keys.SOCKETS_SUFFIX)] + keys.NODES_SUFFIX,
                m.socket_id,
            )
            for m in findings.stale_members
        ]
    )
    return (
        sum(n for n in deleted if isinstance(n, int)),
        sum(n for n in removed if isinstance(n, int)),
    )
