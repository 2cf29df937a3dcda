"""The one Redis client, used by the store and by the cluster adapter.

  - L{privydrop.redis.resp}: the RESP codec (pure).
  - L{privydrop.redis.probe}: the blocking start-up check.
"""
