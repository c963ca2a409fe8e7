-- Leases the due entries of one bucket: every session whose deadline is at or
-- before `now` moves to `lease_end`, so exactly one claimer works on it, and it
-- comes back by itself if that claimer dies. The claimer's write then replaces
-- the lease with the session's real next deadline (or removes it).
--
-- KEYS[1] due zset   ARGV[1] now (epoch ms)   ARGV[2] lease end   ARGV[3] limit
-- Returns {earliest score left in the set or '', claimed session ids...}: the
-- claimer sleeps until that score (it is at or before `now` when the limit
-- left due entries behind).

local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[2], id)
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
table.insert(due, 1, first[2] or '')
return due
