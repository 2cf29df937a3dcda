"""The one Redis client, used by the store and by the cluster adapter.

  - L{privydrop.redis.resp}: the RESP codec (pure).
  - L{privydrop.redis.handshake}: what a new connection says first (AUTH,
    SELECT, CLIENT SETNAME) and how refusals are judged (pure).
  - L{privydrop.redis.endpoint}: where connections are made.
  - L{privydrop.redis.sentinel}: the master named by Sentinel, asked at every
    connection attempt; the announcements of a new master.
  - L{privydrop.redis.protocol}: one connection: pipelined commands, the FIFO
    of owed replies, the handshake.
  - L{privydrop.redis.pool}: the connection pool that pipelines on a ready
    connection, with a deadline per command; the single ordered connection.
  - L{privydrop.redis.subscriber}: a pub/sub connection that renews its
    subscriptions after every reconnection.
  - L{privydrop.redis.errors}: how a command fails.
  - L{privydrop.redis.probe}: the blocking start-up check.

The connections sit on txredisapi's reconnecting pool; what the client relies
on beyond its public API is fenced in L{privydrop.compat.txredisapi}.

This package knows Redis and nothing of what is stored or published: no key
schema, no channel names, no Socket.IO.
"""
