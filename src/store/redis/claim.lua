-- Leases the due entries of one bucket: every session whose deadline is at or
-- before `now` moves to `lease_end`, so exactly one claimer works on it, and it
-- comes back by itself if that claimer dies. The claimer's write then replaces
-- the lease with the session's real next deadline (or removes it).
--
-- KEYS[1] due zset   ARGV[1] now (epoch ms)   ARGV[2] lease end   ARGV[3] limit
-- Returns the claimed session ids.

local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[2], id)
end
return due
