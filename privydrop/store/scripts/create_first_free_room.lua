-- IStore.create_first_free_room: create the first candidate that is free.
-- KEYS[2i-1] room:<candidate i>, KEYS[2i] room:<candidate i>:sockets
-- ARGV[1] created_at field, ARGV[2] now_ms, ARGV[3] ttl_s,
-- ARGV[3+i] candidate i
-- Returns the id created, or false (nil reply) when all were taken.
for i = 1, #KEYS / 2 do
  local room_key = KEYS[2 * i - 1]
  if redis.call('HEXISTS', room_key, ARGV[1]) == 0 then
    redis.call('HSET', room_key, ARGV[1], ARGV[2])
    redis.call('EXPIRE', room_key, ARGV[3])
    redis.call('EXPIRE', KEYS[2 * i], ARGV[3])
    return ARGV[3 + i]
  end
end
return false
