-- IStore.record_attempt.
-- KEYS[1] ratelimit:join:<ip>
-- ARGV[1] member, ARGV[2] now_ms, ARGV[3] window_ms, ARGV[4] ttl_s
-- Returns {count, oldest_ms}.
local count, oldest = record_attempt(
  KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
return {count, oldest}
