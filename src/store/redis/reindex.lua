-- Sets a session's deadline entry if the session is still at the version the
-- caller read (a claimer that found nothing due gives its lease back this way);
-- removes the entry if the session no longer exists.
--
-- KEYS[1] state hash   KEYS[2] due zset
-- ARGV[1] version read   ARGV[2] session id   ARGV[3] deadline in epoch ms, '' for none

local stored = redis.call('HGET', KEYS[1], 'v')
if not stored or (tonumber(stored) == tonumber(ARGV[1]) and ARGV[3] == '') then
  redis.call('ZREM', KEYS[2], ARGV[2])
elseif tonumber(stored) == tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
end
return 1
