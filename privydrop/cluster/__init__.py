"""Several processes on one Redis: the cluster adapter.

It implements the Socket.IO layer's adapter (L{privydrop.socketio.adapter})
and routes broadcasts and sends to the other processes over Redis pub/sub.
The Socket.IO layer never imports this package; the service tree plugs it in.

  - L{privydrop.cluster.routing}: the adapter (L{ClusterAdapter}), which
    publishes and receives through plain callables and knows no Redis.
  - L{privydrop.cluster.messages}: channel names and the message codec.
  - L{privydrop.cluster.pubsub}: the Redis I/O (publisher, subscriber) and
    the Twisted service owning it (L{ClusterService}), on the Redis client
    (L{privydrop.redis}).
  - L{privydrop.cluster.bus}: an in-memory bus with Redis's pub/sub
    semantics, for unit tests.
"""
