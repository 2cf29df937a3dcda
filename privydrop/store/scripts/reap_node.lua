-- IStore.reap_node: one batch of the clean-up of a dead node.
-- KEYS[1] cluster:reap:<dead>, KEYS[2] cluster:reap:<dead>:pending,
-- KEYS[3] cluster:node:<dead>:sockets, KEYS[4] cluster:heartbeats,
-- KEYS[5] cluster:node:<dead>:info
-- ARGV[1] dead node, ARGV[2] judge, ARGV[3] claim ttl ms, ARGV[4] batch,
-- ARGV[5] '1' when the previous batch was announced, ARGV[6] empty_ttl_s,
-- ARGV[7] room key prefix, ARGV[8] sockets suffix, ARGV[9] nodes suffix,
-- ARGV[10] socket key prefix, ARGV[11] created_at field, ARGV[12] prune
-- limit, ARGV[13] pending ttl s, ARGV[14] now ms, ARGV[15] recovery window
-- ms ('0': recovery off), ARGV[16] recovery key prefix, ARGV[17] node key
-- prefix, KEYS[6] recovery:deadlines
-- Returns {'lost', {}, {}}, {'done', {}, {}} or {'batch', {json entry, ...},
-- {json kept entry, ...}} with each entry [sid, room_id, incarnation,
-- [member, node, ...]]; a kept entry (a socket its client may still
-- recover: the judge keeps it, detached, until its deadline) adds its pid
-- and deadline ms.
if redis.call('GET', KEYS[1]) ~= ARGV[2] then
  return {'lost', {}, {}}
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if ARGV[5] == '1' then
  redis.call('DEL', KEYS[2])
end
-- A batch a reaper recorded and did not announce to the end comes first.
local pending = redis.call('LRANGE', KEYS[2], 0, -1)
if #pending > 0 then
  return {'batch', pending, {}}
end
local sids = redis.call('SPOP', KEYS[3], tonumber(ARGV[4]))
if #sids == 0 then
  redis.call('HDEL', KEYS[4], ARGV[1])
  redis.call('DEL', KEYS[5], KEYS[3], KEYS[1])
  return {'done', {}, {}}
end
local entries, kept = {}, {}
local window = tonumber(ARGV[15])
local judge_sockets = ARGV[17] .. ARGV[2] .. ARGV[8]
for _, sid in ipairs(sids) do
  local socket_key = ARGV[10] .. sid
  local room_id = redis.call('GET', socket_key)
  if room_id then
    local room_key = ARGV[7] .. room_id
    local sockets_key, nodes_key = room_key .. ARGV[8], room_key .. ARGV[9]
    local owner = redis.call('HGET', nodes_key, sid)
    -- Only what the dead node still holds.
    local record = ARGV[16] .. sid
    local pid = false
    if window > 0 and ((not owner) or owner == ARGV[1]) then
      pid = redis.call('HGET', record, 'pid')
    end
    local incarnation = redis.call('HGET', room_key, ARGV[11])
    if pid and incarnation and redis.call('SISMEMBER', sockets_key, sid) == 1 then
      -- Recoverable: the judge becomes its custodian until its window ends
      -- (a window already running keeps its deadline).
      redis.call('HSET', nodes_key, sid, ARGV[2])
      redis.call('HSET', record, 'node', ARGV[2])
      redis.call('SADD', judge_sockets, sid)
      redis.call('EXPIRE', judge_sockets, ARGV[13])
      redis.call('ZADD', KEYS[6], 'NX', tonumber(ARGV[14]) + window, sid)
      local deadline = redis.call('ZSCORE', KEYS[6], sid)
      kept[#kept + 1] = cjson.encode(
        {sid, room_id, incarnation, members_with_nodes(sockets_key, nodes_key), pid,
         tonumber(deadline)})
    elseif (not owner) or owner == ARGV[1] then
      redis.call('DEL', socket_key, record)
      redis.call('ZREM', KEYS[6], sid)
      local removed = redis.call('SREM', sockets_key, sid)
      redis.call('HDEL', nodes_key, sid)
      prune_members(room_id, sockets_key, nodes_key, ARGV[10], tonumber(ARGV[12]))
      if redis.call('SCARD', sockets_key) == 0 then
        redis.call('EXPIRE', room_key, ARGV[6])
        redis.call('EXPIRE', sockets_key, ARGV[6])
        redis.call('EXPIRE', nodes_key, ARGV[6])
      end
      local incarnation = redis.call('HGET', room_key, ARGV[11])
      if removed == 1 and incarnation then
        entries[#entries + 1] = cjson.encode(
          {sid, room_id, incarnation, members_with_nodes(sockets_key, nodes_key)})
      end
    end
  end
end
if #entries > 0 then
  redis.call('RPUSH', KEYS[2], unpack(entries))
  redis.call('EXPIRE', KEYS[2], ARGV[13])
end
return {'batch', entries, kept}
