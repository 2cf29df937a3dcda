-- IStore.join_room: executes the join rule stated in privydrop/rooms/rooms.py,
-- atomically (the memory store does the same in Python).
-- KEYS[1] socket:<sid>, KEYS[2] room:<id>, KEYS[3] room:<id>:sockets,
-- KEYS[4] ratelimit:join:<ip> (only when ARGV[7] is '1')
-- ARGV[1] room_id, ARGV[2] socket_id, ARGV[3] created_at field,
-- ARGV[4] now_ms, ARGV[5] room_ttl_s, ARGV[6] socket_ttl_s,
-- ARGV[7] '1' to check the rate window, ARGV[8] member, ARGV[9] window_ms,
-- ARGV[10] limit, ARGV[11] window ttl_s
-- Returns {outcome, bound_room or '', count (-1: no rate check), oldest_ms}.
local bound = redis.call('GET', KEYS[1])
if bound and bound ~= ARGV[1] then
  return {'other_room', bound, -1, 0}
end
local rejoin = bound == ARGV[1]
local count, oldest = -1, 0
if ARGV[7] == '1' and not rejoin then
  count, oldest = record_attempt(KEYS[4], ARGV[8], tonumber(ARGV[4]),
                                 tonumber(ARGV[9]), tonumber(ARGV[11]))
  if count > tonumber(ARGV[10]) then
    return {'rate_limited', '', count, oldest}
  end
end
if redis.call('HEXISTS', KEYS[2], ARGV[3]) == 0 then
  return {'no_room', '', count, oldest}
end
if rejoin then
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  redis.call('EXPIRE', KEYS[3], ARGV[5])
  return {'rejoined', ARGV[1], count, oldest}
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[6])
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[5])
return {'joined', ARGV[1], count, oldest}
