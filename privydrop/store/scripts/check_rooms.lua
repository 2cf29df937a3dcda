-- IStore.check_rooms: which rooms a process's sockets are in still exist
-- with the incarnation they joined, and which of those sockets are members.
-- No KEYS (room keys are built from ARGV).
-- ARGV[1] created_at field, ARGV[2] room key prefix, ARGV[3] sockets
-- suffix, ARGV[4] nodes suffix, ARGV[5] socket key prefix, ARGV[6] prune
-- limit, then per room: room_id, incarnation, n, n socket ids.
-- Returns per room {room_id, incarnation, alive (1/0), {missing sid, ...},
-- {member, node, ...}}.
local out = {}
local i = 7
while i <= #ARGV do
  local room_id, incarnation, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local room_key = ARGV[2] .. room_id
  local sockets_key, nodes_key = room_key .. ARGV[3], room_key .. ARGV[4]
  if redis.call('HGET', room_key, ARGV[1]) ~= incarnation then
    out[#out + 1] = {room_id, incarnation, 0, {}, {}}
  else
    prune_members(room_id, sockets_key, nodes_key, ARGV[5], tonumber(ARGV[6]))
    local missing = {}
    for j = 1, n do
      local sid = ARGV[i + 2 + j]
      if redis.call('SISMEMBER', sockets_key, sid) == 0 then
        missing[#missing + 1] = sid
      end
    end
    out[#out + 1] = {room_id, incarnation, 1, missing, members_with_nodes(sockets_key, nodes_key)}
  end
  i = i + 3 + n
end
return out
