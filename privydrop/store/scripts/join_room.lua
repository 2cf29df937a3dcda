-- IStore.join_room: executes the join rule stated in privydrop/rooms/rooms.py,
-- atomically (the memory store does the same in Python).
-- KEYS[1] socket:<sid>, KEYS[2] room:<id>, KEYS[3] room:<id>:sockets,
-- KEYS[4] room:<id>:nodes, KEYS[5] cluster:node:<node>:sockets,
-- KEYS[6] ratelimit:join:<ip> (only when ARGV[7] is '1')
-- ARGV[1] room_id, ARGV[2] socket_id, ARGV[3] created_at field,
-- ARGV[4] now_ms, ARGV[5] room_ttl_s, ARGV[6] socket_ttl_s,
-- ARGV[7] '1' to check the rate window, ARGV[8] member, ARGV[9] window_ms,
-- ARGV[10] limit, ARGV[11] window ttl_s, ARGV[12] node id,
-- ARGV[13] the room the caller knows the socket in ('' none),
-- ARGV[14] that room's incarnation as the caller knows it ('' none),
-- ARGV[15] room key prefix, ARGV[16] sockets suffix, ARGV[17] nodes suffix,
-- ARGV[18] socket key prefix, ARGV[19] prune limit,
-- ARGV[20] the socket's private session id ('' when recovery is off),
-- ARGV[21] recovery key prefix
-- Returns {outcome, bound_room or '', count (-1: no rate check), oldest_ms,
-- incarnation or '', {member, node, ...}}.
local room_id, sid = ARGV[1], ARGV[2]
local bound = redis.call('GET', KEYS[1])
if bound then
  -- A binding is live only while its room exists (with the incarnation the
  -- caller knows, when it knows one) and lists the socket; a stale one is
  -- no binding at all.
  local bound_key = ARGV[15] .. bound
  local created = redis.call('HGET', bound_key, ARGV[3])
  local live
  if not created then
    live = false
  elseif bound == ARGV[13] and ARGV[14] ~= '' then
    live = created == ARGV[14]
  else
    live = redis.call('SISMEMBER', bound_key .. ARGV[16], sid) == 1
  end
  if not live then
    redis.call('DEL', KEYS[1])
    redis.call('SREM', bound_key .. ARGV[16], sid)
    redis.call('HDEL', bound_key .. ARGV[17], sid)
    bound = false
  end
end
if bound and bound ~= room_id then
  return {'other_room', bound, -1, 0, '', {}}
end
local rejoin = bound == room_id
local count, oldest = -1, 0
if ARGV[7] == '1' and not rejoin then
  count, oldest = record_attempt(KEYS[6], ARGV[8], tonumber(ARGV[4]),
                                 tonumber(ARGV[9]), tonumber(ARGV[11]))
  if count > tonumber(ARGV[10]) then
    return {'rate_limited', '', count, oldest, '', {}}
  end
end
local incarnation = redis.call('HGET', KEYS[2], ARGV[3])
if not incarnation then
  return {'no_room', '', count, oldest, '', {}}
end
prune_members(room_id, KEYS[3], KEYS[4], ARGV[18], tonumber(ARGV[19]))
if rejoin then
  redis.call('EXPIRE', KEYS[1], ARGV[6])
else
  redis.call('SET', KEYS[1], room_id, 'EX', ARGV[6])
end
-- Also on a rejoin: a member missing from the set is added again.
redis.call('SADD', KEYS[3], sid)
redis.call('HSET', KEYS[4], sid, ARGV[12])
redis.call('SADD', KEYS[5], sid)
redis.call('EXPIRE', KEYS[5], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[5])
redis.call('EXPIRE', KEYS[4], ARGV[5])
if ARGV[20] ~= '' then
  -- Any process can find the socket from its pid: recovery:<sid>.
  local record = ARGV[21] .. sid
  redis.call('HSET', record, 'pid', ARGV[20], 'room', room_id, 'node', ARGV[12])
  redis.call('EXPIRE', record, ARGV[6])
end
local outcome = 'joined'
if rejoin then
  outcome = 'rejoined'
end
return {outcome, room_id, count, oldest, incarnation, members_with_nodes(KEYS[3], KEYS[4])}
