-- IStore.count_calls: one client's calls of an API budget, all processes together.
-- KEYS[1] ratelimit:<budget>:<window_s>:<index>:<client>, KEYS[2] the same for index - 1
-- ARGV[1] calls to add, ARGV[2] ttl_s (set when the count is created)
-- Returns {this window's total, the previous window's total}.
local current = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('TTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
return {current, previous}
