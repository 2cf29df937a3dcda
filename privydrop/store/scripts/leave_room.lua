-- IStore.leave_room: unbind a socket; an emptied room gets the empty TTL.
-- KEYS[1] socket:<sid>; when ARGV[2] is '1': KEYS[2] room:<id>,
-- KEYS[3] room:<id>:sockets, KEYS[4] room:<id>:nodes
-- ARGV[1] socket_id, ARGV[2] '1' when the room is given, ARGV[3] room_id,
-- ARGV[4] created_at field, ARGV[5] empty_ttl_s, ARGV[6] room key prefix,
-- ARGV[7] sockets suffix, ARGV[8] nodes suffix (to find the socket's own
-- room when none is given), ARGV[9] socket key prefix, ARGV[10] node key
-- prefix, ARGV[11] prune limit, ARGV[12] recovery key prefix,
-- ARGV[13] the recovery deadlines key
-- Returns {room_id or '', remaining, removed (1/0), incarnation or '',
-- node or '', {member, node, ...}}.
local sid = ARGV[1]
local bound = redis.call('GET', KEYS[1])
local room_id, room_key, sockets_key, nodes_key
if ARGV[2] == '1' then
  room_id, room_key, sockets_key, nodes_key = ARGV[3], KEYS[2], KEYS[3], KEYS[4]
  if redis.call('HEXISTS', room_key, ARGV[4]) == 0 then
    return {'', 0, 0, '', '', {}}
  end
else
  if not bound then
    return {'', 0, 0, '', '', {}}
  end
  room_id = bound
  room_key = ARGV[6] .. bound
  sockets_key = room_key .. ARGV[7]
  nodes_key = room_key .. ARGV[8]
end
-- Only the socket's own binding is removed: leaving room A never unbinds
-- a socket that sits in room B, nor takes its recovery (its record and
-- deadline belong to that binding). Nobody may recover a socket that left.
if bound == room_id then
  redis.call('DEL', KEYS[1])
  redis.call('DEL', ARGV[12] .. sid)
  redis.call('ZREM', ARGV[13], sid)
end
local removed = redis.call('SREM', sockets_key, sid)
local node = redis.call('HGET', nodes_key, sid)
if node then
  redis.call('HDEL', nodes_key, sid)
  redis.call('SREM', ARGV[10] .. node .. ARGV[7], sid)
end
prune_members(room_id, sockets_key, nodes_key, ARGV[9], tonumber(ARGV[11]))
local remaining = redis.call('SCARD', sockets_key)
if remaining == 0 then
  redis.call('EXPIRE', room_key, ARGV[5])
  redis.call('EXPIRE', sockets_key, ARGV[5])
  redis.call('EXPIRE', nodes_key, ARGV[5])
end
local incarnation = redis.call('HGET', room_key, ARGV[4]) or ''
return {room_id, remaining, removed, incarnation, node or '',
        members_with_nodes(sockets_key, nodes_key)}
