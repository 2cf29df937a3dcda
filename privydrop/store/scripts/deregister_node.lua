-- IStore.deregister_node: a node stopping cleanly leaves the heartbeats,
-- unless sockets it bound are still bound (then others reap them).
-- KEYS[1] cluster:heartbeats, KEYS[2] cluster:node:<node>:info,
-- KEYS[3] cluster:node:<node>:sockets
-- ARGV[1] node id
-- Returns 1 when removed, 0 when sockets are left.
if redis.call('SCARD', KEYS[3]) > 0 then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
