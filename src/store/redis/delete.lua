-- Deletes a session if it is still at the version the caller read: removes
-- the state and its deadline, appends session_deleted, publishes the deletion.
--
-- KEYS[1] state hash   KEYS[2] due zset   KEYS[3] audit stream   KEYS[4] shard channel
-- (KEYS[5], the hint channel, is unused: a removal never makes a deadline earlier)
-- ARGV[1] expected version   ARGV[2] session id   ARGV[3] message   ARGV[4] audit event ('' = none)
--
-- Returns {1} on success, {0, stored version or -1 if absent} on a conflict.

local stored = redis.call('HGET', KEYS[1], 'v')
if not stored then
  return {0, -1}
end
if tonumber(stored) ~= tonumber(ARGV[1]) then
  return {0, tonumber(stored)}
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
if ARGV[4] ~= '' then
  redis.call('XADD', KEYS[3], '*', 'e', ARGV[4])
end
redis.call('SPUBLISH', KEYS[4], ARGV[3])
return {1}
