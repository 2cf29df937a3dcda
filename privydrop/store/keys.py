"""The key schema: every key PrivyDrop keeps in Redis (and mirrors in memory).

This is a public contract, identical to the Node backend's: operators' scripts
read these keys, and a Node process and a Python process may share one Redis.
Change nothing here without changing both.

C{room:<id>} (hash)
    Field C{created_at}: milliseconds since the epoch when the room was
    created. A room exists exactly when this field exists. TTL: the room TTL
    (24 h), refreshed on every successful join; 900 s once the last socket
    left.

C{room:<id>:sockets} (set)
    Socket.IO socket ids currently bound to the room. Same TTL as
    C{room:<id>}. Redis deletes the set when its last member leaves.

C{socket:<sid>} (string)
    The room id the socket is bound to. TTL: room TTL + 1 h, set on binding.

C{ratelimit:join:<client>} (sorted set)
    One member per join attempt (C{<now_ms>-<random>}), scored by the
    attempt's time in milliseconds. Members older than the window are pruned
    on each attempt. TTL: the window's length. C{<client>} is the client's
    rate-limit key (L{privydrop.web.clientip.rate_limit_key}): an IPv4
    address, or an IPv6 network in CIDR text (C{ratelimit:join:2001:db8:1:2::/64}).

C{ratelimit:<budget>:<window_s>:<index>:<client>} (string)
    Not in the Node backend. How many calls of an API budget (C{api},
    C{logs_debug}) one client made, by every process together, in the fixed
    window number C{<index>} (seconds since the epoch divided by
    C{<window_s>}). TTL: two windows and a second, so it can still be read
    as the previous window.

C{referrers:daily:<YYYY-MM-DD>} (hash)
    Referrer name -> count of C{/api/set_track} calls that UTC day. TTL:
    30 days, refreshed on each call.

The keys above are the Node backend's (but the API budgets). The ones below are this server's own
(a Node process neither reads nor writes them; its sockets simply have no
node recorded):

C{room:<id>:nodes} (hash)
    Socket id -> the id of the server process (node) holding that socket,
    for every member of C{room:<id>:sockets} bound by this server. Written
    and removed with the set by the join, leave and reap scripts, same TTLs.

C{cluster:node:<node>:sockets} (set)
    The socket ids a node bound to rooms, so that a node that died can be
    cleaned up. TTL: the socket TTL, refreshed on every join.

C{cluster:heartbeats} (hash)
    Node id -> a value the node changes at each heartbeat. Other nodes judge
    a node dead when its value has not changed for C{CLUSTER_NODE_TIMEOUT_MS}
    of their own successful heartbeats. TTL: the socket TTL, refreshed by
    every heartbeat.

C{cluster:node:<node>:info} (hash)
    For operators (C{privydrop-admin monitor}) and start-up clean-up: C{name}
    (stable across restarts), C{pid}, C{host}, C{listen}, C{started_ms},
    C{beat_ms} (the node's own clock at its last heartbeat), and counters as
    of that heartbeat: C{connections}, C{published} (cluster messages),
    C{deliveries} (receivers Redis reported for them), C{received},
    C{unroutable}. Same TTL as the heartbeats; deleted when the node stops
    cleanly or is reaped.

C{cluster:node:<node>:reaped} (string)
    The node that reaped this one. A node that finds it at its heartbeat
    (it was stalled past the timeout) closes its sessions and registers
    again under a new id. TTL: the socket TTL.

C{cluster:reap:<node>} (string)
    The node cleaning up a dead one (the claim that makes it exactly one).
    TTL: C{CLUSTER_NODE_TIMEOUT_MS}, refreshed at each batch.

C{cluster:reap:<node>:pending} (list)
    The batch of reaped sockets whose peers are being told, so that another
    node finishes the announcement if the reaper dies. TTL: the socket TTL.

C{recovery:<sid>} (hash)
    A socket that connection state recovery may bring back on any process:
    C{pid} (its private session id, C{<sid>.<random>}), C{room} (the room it
    is bound to) and C{node} (the process holding it now, or keeping it as
    custodian after its process died). Written by the join script, moved by
    a recovery's claim and by the clean-up of a dead node, deleted by the
    leave script. TTL: the socket TTL.

C{recovery:deadlines} (sorted set)
    Socket id -> the time (ms since the epoch) its recovery window ends, for
    the sockets whose connection was lost. Whoever removes an entry (ZREM)
    ends that socket: exactly one process announces it, whether its holder
    is alive or not. No TTL (entries are removed when due, claimed or left).

Room ids never contain C{:} (see L{privydrop.rooms.ids.validate_room_id}),
so C{room:<a>:sockets} and C{room:<a>:nodes} can never be another room's
hash. Node ids are hexadecimal.
"""

from __future__ import annotations

import unicodedata

ROOM_PREFIX = "room:"
SOCKETS_SUFFIX = ":sockets"
NODES_SUFFIX = ":nodes"
SOCKET_PREFIX = "socket:"
RATE_LIMIT_PREFIX = "ratelimit:"
JOIN_RATE_PREFIX = RATE_LIMIT_PREFIX + "join:"
REFERRERS_PREFIX = "referrers:daily:"
CLUSTER_PREFIX = "cluster:"
NODE_PREFIX = "cluster:node:"
INFO_SUFFIX = ":info"
REAPED_SUFFIX = ":reaped"
REAP_PREFIX = "cluster:reap:"
PENDING_SUFFIX = ":pending"
RECOVERY_PREFIX = "recovery:"
#: Socket id -> the end of its recovery window (ms since the epoch).
RECOVERY_DEADLINES = "recovery:deadlines"
#: Node id -> heartbeat value.
HEARTBEATS = "cluster:heartbeats"

#: The hash field that marks a room as existing.
CREATED_AT_FIELD = "created_at"


def room(room_id: str) -> str:
    """The room's hash key, C{room:<id>}."""
    return ROOM_PREFIX + room_id


def room_sockets(room_id: str) -> str:
    """The room's member set key, C{room:<id>:sockets}."""
    return ROOM_PREFIX + room_id + SOCKETS_SUFFIX


def room_nodes(room_id: str) -> str:
    """The room's socket -> node hash, C{room:<id>:nodes}."""
    return ROOM_PREFIX + room_id + NODES_SUFFIX


def node_sockets(node_id: str) -> str:
    """The sockets a node bound, C{cluster:node:<node>:sockets}."""
    return NODE_PREFIX + node_id + SOCKETS_SUFFIX


def node_info(node_id: str) -> str:
    """What operators see of a node, C{cluster:node:<node>:info}."""
    return NODE_PREFIX + node_id + INFO_SUFFIX


def node_reaped(node_id: str) -> str:
    """Set when a node was reaped, C{cluster:node:<node>:reaped}."""
    return NODE_PREFIX + node_id + REAPED_SUFFIX


def reap_claim(node_id: str) -> str:
    """Who cleans up a dead node, C{cluster:reap:<node>}."""
    return REAP_PREFIX + node_id


def reap_pending(node_id: str) -> str:
    """The batch being announced, C{cluster:reap:<node>:pending}."""
    return REAP_PREFIX + node_id + PENDING_SUFFIX


def socket(socket_id: str) -> str:
    """The socket's binding key, C{socket:<sid>}."""
    return SOCKET_PREFIX + socket_id


def recovery(socket_id: str) -> str:
    """Where any process finds a recoverable socket, C{recovery:<sid>}."""
    return RECOVERY_PREFIX + socket_id


def join_rate(key_suffix: str) -> str:
    """The join rate window of one client, C{ratelimit:join:<ip>}."""
    return JOIN_RATE_PREFIX + key_suffix


def call_count(budget: str, window_s: int, window_index: int, client_key: str) -> str:
    """One client's calls of a budget in one window,
    C{ratelimit:<budget>:<window_s>:<index>:<client>}."""
    return "%s%s:%d:%d:%s" % (RATE_LIMIT_PREFIX, budget, window_s, window_index, client_key)


def referrers(day: str) -> str:
    """One UTC day's referrer counts, C{referrers:daily:<YYYY-MM-DD>}."""
    return REFERRERS_PREFIX + day


#: Unicode categories refused in ids and referrers: controls (C0, C1, DEL),
#: format characters (bidi overrides, zero-width), lone surrogates (not
#: encodable as UTF-8), line and paragraph separators. They break log lines,
#: render misleadingly, or cannot be sent to Redis at all.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def contains_control_characters(text: str) -> bool:
    """Whether client-chosen text (a room id, a referrer) has characters we refuse in keys."""
    if text.isascii() and text.isprintable():
        # The common case, without a category lookup per character: printable
        # ASCII (space to "~") holds none of the refused categories.
        return False
    return any(unicodedata.category(char) in _REFUSED_CATEGORIES for char in text)
