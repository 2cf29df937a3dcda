-- IStore.take_recovery_deadline / take_due_recoveries: whoever removes a
-- deadline ends that socket (exactly one process does).
-- KEYS[1] recovery:deadlines
-- ARGV[1] a socket id ('' for every due one), ARGV[2] now ms, ARGV[3] limit
-- Returns the socket ids removed by this call.
if ARGV[1] ~= '' then
  if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
    return {ARGV[1]}
  end
  return {}
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
if #due > 0 then
  redis.call('ZREM', KEYS[1], unpack(due))
end
return due
