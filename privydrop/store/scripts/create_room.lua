-- IStore.create_room: create the room unless it exists.
-- KEYS[1] room:<id>, KEYS[2] room:<id>:sockets
-- ARGV[1] created_at field, ARGV[2] now_ms, ARGV[3] ttl_s
-- Returns 1 when created, 0 when it existed (its TTL untouched).
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
