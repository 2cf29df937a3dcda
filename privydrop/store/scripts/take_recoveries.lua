-- IStore.take_due_recoveries: whoever removes a deadline ends that socket
-- (exactly one process does; a single deadline is taken with a plain ZREM).
-- KEYS[1] recovery:deadlines
-- ARGV[1] now ms, ARGV[2] limit
-- Returns the socket ids removed by this call.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #due > 0 then
  redis.call('ZREM', KEYS[1], unpack(due))
end
return due
