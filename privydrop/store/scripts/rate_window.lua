-- Shared by join_room.lua and record_attempt.lua (prepended by redis.py).
-- One attempt in a sliding window, in the Node backend's order: ZADD, prune
-- everything at or before (now - window), count, oldest score, EXPIRE.
-- Returns count, oldest_ms (oldest is now when the window is empty).
local function record_attempt(key, member, now_ms, window_ms, ttl_s)
  redis.call('ZADD', key, now_ms, member)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms - window_ms)
  local count = redis.call('ZCARD', key)
  local oldest = now_ms
  if count > 0 then
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    oldest = tonumber(first[2])
  end
  redis.call('EXPIRE', key, ttl_s)
  return count, oldest
end
