-- IStore.claim_reap: exactly one node cleans up a dead one.
-- KEYS[1] cluster:reap:<dead>, KEYS[2] cluster:heartbeats,
-- KEYS[3] cluster:node:<dead>:reaped
-- ARGV[1] dead node, ARGV[2] judge, ARGV[3] the beat the judge observed,
-- ARGV[4] claim ttl ms, ARGV[5] marker ttl s, then the nodes whose claim
-- may be taken over (the judge believes them dead).
-- Returns 1 when the judge holds the claim now, else 0.
local beat = redis.call('HGET', KEYS[2], ARGV[1])
if (not beat) or beat ~= ARGV[3] then
  -- Gone (cleaned up already, or lost with Redis's data), or it beat since.
  return 0
end
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[2] then
  local takeover = false
  for i = 6, #ARGV do
    if ARGV[i] == owner then
      takeover = true
    end
  end
  if not takeover then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[4])
redis.call('SET', KEYS[3], ARGV[2], 'EX', ARGV[5])
return 1
