-- Sets a session's deadline entry if the session is still at the version the
-- caller read (a claimer that found nothing due gives its lease back this way,
-- the sweep repairs the index this way); removes the entry if the session no
-- longer exists. With a lease length, an entry pushed forward by a lease in
-- progress (after the deadline, at most `now + lease` away) is left alone:
-- the rule of `index_needs_repair` (src/store/mod.rs), checked here again
-- atomically because the sweep's own read may be stale.
--
-- KEYS[1] state hash   KEYS[2] due zset   KEYS[3] hint channel
-- ARGV[1] version read   ARGV[2] session id   ARGV[3] deadline in epoch ms, '' for none
-- ARGV[4] now (epoch ms) and ARGV[5] lease length, both '' to set unconditionally
--
-- Returns 1 if the entry changed, 0 if not.

local stored = redis.call('HGET', KEYS[1], 'v')
if stored and tonumber(stored) ~= tonumber(ARGV[1]) then
  return 0 -- a newer write already set the index
end
if not stored or ARGV[3] == '' then
  return redis.call('ZREM', KEYS[2], ARGV[2])
end
local score = redis.call('ZSCORE', KEYS[2], ARGV[2])
local deadline = tonumber(ARGV[3])
if score then
  score = tonumber(score)
  if score == deadline then
    return 0
  end
  if ARGV[5] ~= '' and score > deadline and score <= tonumber(ARGV[4]) + tonumber(ARGV[5]) then
    return 0
  end
end
-- Earlier than anything in the bucket: tell the schedulers, which sleep
-- until the earliest deadline they know of.
local earlier = redis.call('ZCOUNT', KEYS[2], '-inf', '(' .. ARGV[3])
redis.call('ZADD', KEYS[2], deadline, ARGV[2])
if earlier == 0 then
  redis.call('SPUBLISH', KEYS[3], ARGV[3])
end
return 1
