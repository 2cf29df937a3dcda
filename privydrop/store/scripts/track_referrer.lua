-- IStore.track_referrer: count one referral unless the day is full.
-- KEYS[1] referrers:daily:<day>
-- ARGV[1] ref, ARGV[2] ttl_s, ARGV[3] max distinct referrers
-- Returns 1 when counted, 0 when refused (nothing written).
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
   and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
