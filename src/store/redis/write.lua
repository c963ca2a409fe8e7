-- The one write of a session: compare-and-set on the version, then state,
-- TTL, deadline index, audit outbox and update, atomically in one round trip.
--
-- KEYS[1] state hash   KEYS[2] due zset   KEYS[3] audit stream   KEYS[4] shard channel
-- KEYS[5] the bucket's hint channel
-- ARGV[1] expected version (0 = the session must not exist)
-- ARGV[2] new version          ARGV[3] state JSON      ARGV[4] TTL in seconds, '' = keep
-- ARGV[5] session id           ARGV[6] deadline in epoch ms, '' for none
-- ARGV[7] message to publish
-- ARGV[8] this write's token (unique per call, kept as field `w`)
-- ARGV[9] the write limit's emission interval in µs ('' = no limit)
-- ARGV[10] the write limit's burst; its state is the hash's field `r`, the
--   GCRA theoretical arrival time (µs, on Redis's clock, like `store::gcra`)
-- ARGV[11..] audit events, two arguments each: the event (JSON) and '1' if its
--   snapshot is the state ARGV[3] (sent once, stored as the entry's `s` field)
--   or '' if it has none of its own; one stream entry per event
--
-- Returns {1} on success, {0, stored version or -1 if absent} on a conflict,
-- {2, retry after µs, reset µs} when the write limit is spent.
-- Every check happens before the first write, so a refusal changes nothing.
-- Idempotent: the same call again (a retry after a lost reply, a dropped
-- connection or a Cluster redirect) finds its own token stored at the new
-- version and succeeds without writing anything twice. Another writer's
-- call, even one producing the same state, is a conflict.

local stored = redis.call('HGET', KEYS[1], 'v')
local expected = tonumber(ARGV[1])
local current
if expected == 0 then
  current = not stored
else
  current = stored and tonumber(stored) == expected
end
if not current then
  if stored == ARGV[2] and redis.call('HGET', KEYS[1], 'w') == ARGV[8] then
    return {1}
  end
  return {0, stored and tonumber(stored) or -1}
end

local limited_tat
if ARGV[9] ~= '' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local interval = tonumber(ARGV[9])
  local tat = tonumber(redis.call('HGET', KEYS[1], 'r') or now)
  if tat < now then
    tat = now
  end
  limited_tat = tat + interval
  local allow_at = limited_tat - interval * tonumber(ARGV[10])
  if now < allow_at then
    return {2, allow_at - now, tat - now}
  end
end

if limited_tat then
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 'd', ARGV[3], 'w', ARGV[8], 'r', string.format('%d', limited_tat))
else
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 'd', ARGV[3], 'w', ARGV[8])
end
if ARGV[4] ~= '' then
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
if ARGV[6] == '' then
  redis.call('ZREM', KEYS[2], ARGV[5])
else
  -- Earlier than anything in the bucket: tell the schedulers, which sleep
  -- until the earliest deadline they know of.
  local earlier = redis.call('ZCOUNT', KEYS[2], '-inf', '(' .. ARGV[6])
  redis.call('ZADD', KEYS[2], ARGV[6], ARGV[5])
  if earlier == 0 then
    redis.call('SPUBLISH', KEYS[5], ARGV[6])
  end
end
for i = 11, #ARGV, 2 do
  if ARGV[i + 1] == '1' then
    redis.call('XADD', KEYS[3], '*', 'e', ARGV[i], 's', ARGV[3])
  else
    redis.call('XADD', KEYS[3], '*', 'e', ARGV[i])
  end
end
redis.call('SPUBLISH', KEYS[4], ARGV[7])
return {1}
