-- Shared by the membership scripts (prepended by redis.py): join_room,
-- leave_room, check_rooms, reap_node.

-- Drop members of a room's set whose socket:<sid> binding is missing or
-- names another room (ghosts: an unbind that failed, a binding that
-- expired), with their node entries. At most `limit` members are looked at
-- (all of them in rooms that small, a random sample in larger ones).
local function prune_members(room_id, sockets_key, nodes_key, socket_prefix, limit)
  local candidates
  if redis.call('SCARD', sockets_key) <= limit then
    candidates = redis.call('SMEMBERS', sockets_key)
  else
    candidates = redis.call('SRANDMEMBER', sockets_key, limit)
  end
  for _, sid in ipairs(candidates) do
    if redis.call('GET', socket_prefix .. sid) ~= room_id then
      redis.call('SREM', sockets_key, sid)
      redis.call('HDEL', nodes_key, sid)
    end
  end
end

-- The members of a room with their nodes, flat: {sid1, node1, sid2, ...};
-- '' for a member without a recorded node.
local function members_with_nodes(sockets_key, nodes_key)
  local members = redis.call('SMEMBERS', sockets_key)
  local flat = {}
  if #members == 0 then
    return flat
  end
  local pairs_ = redis.call('HGETALL', nodes_key)
  local node_of = {}
  for i = 1, #pairs_, 2 do
    node_of[pairs_[i]] = pairs_[i + 1]
  end
  for _, sid in ipairs(members) do
    flat[#flat + 1] = sid
    flat[#flat + 1] = node_of[sid] or ''
  end
  return flat
end
