-- IStore.claim_recovery: move a recoverable socket to the node its client
-- came back to, atomically, so that one pid moves it once per claim.
-- KEYS[1] recovery:<sid>, KEYS[2] recovery:deadlines, KEYS[3] socket:<sid>
-- ARGV[1] socket id, ARGV[2] pid, ARGV[3] claiming node, ARGV[4] socket ttl s,
-- ARGV[5] room key prefix, ARGV[6] sockets suffix, ARGV[7] nodes suffix,
-- ARGV[8] node key prefix, ARGV[9] created_at field
-- Returns {'unknown'} or {'ok', room_id, incarnation, old node,
-- {member, node, ...}, 1 when a window was running else 0}.
local sid = ARGV[1]
local record = redis.call('HMGET', KEYS[1], 'pid', 'room', 'node')
if (not record[1]) or record[1] ~= ARGV[2] then
  return {'unknown'}
end
local room_id, old = record[2], record[3] or ''
local room_key = ARGV[5] .. room_id
local sockets_key, nodes_key = room_key .. ARGV[6], room_key .. ARGV[7]
local incarnation = redis.call('HGET', room_key, ARGV[9])
if (not incarnation) or redis.call('GET', KEYS[3]) ~= room_id
    or redis.call('SISMEMBER', sockets_key, sid) == 0 then
  -- Its room ended or it was unbound: nothing to recover.
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], sid)
  return {'unknown'}
end
local waiting = redis.call('ZREM', KEYS[2], sid)
if old ~= '' and old ~= ARGV[3] then
  redis.call('SREM', ARGV[8] .. old .. ARGV[6], sid)
end
local mine = ARGV[8] .. ARGV[3] .. ARGV[6]
redis.call('SADD', mine, sid)
redis.call('EXPIRE', mine, ARGV[4])
redis.call('HSET', nodes_key, sid, ARGV[3])
redis.call('HSET', KEYS[1], 'node', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {'ok', room_id, incarnation, old, members_with_nodes(sockets_key, nodes_key), waiting}
