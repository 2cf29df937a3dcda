-- IStore.heartbeat: write this node's heartbeat and info, read every node's.
-- KEYS[1] cluster:heartbeats, KEYS[2] cluster:node:<node>:info,
-- KEYS[3] cluster:node:<node>:reaped
-- ARGV[1] node id, ARGV[2] beat, ARGV[3] ttl_s, ARGV[4] node key prefix,
-- ARGV[5] info suffix, then info field, value pairs.
-- Returns {1, {}} when this node was reaped (nothing written), else
-- {0, {node, beat, name, host, pid, ...}}.
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {1, {}}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
for i = 6, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[2], ARGV[3])
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  out[#out + 1] = all[i]
  out[#out + 1] = all[i + 1]
  local info = redis.call('HMGET', ARGV[4] .. all[i] .. ARGV[5], 'name', 'host', 'pid')
  out[#out + 1] = info[1] or ''
  out[#out + 1] = info[2] or ''
  out[#out + 1] = info[3] or ''
end
return {0, out}
