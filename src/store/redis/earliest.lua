-- The earliest deadline of each of several buckets' due sets, in one call
-- (standalone Redis only: on a Cluster each bucket is its own slot).
--
-- KEYS due zsets
-- Returns one score (epoch ms) or '' per key, in order.

local firsts = {}
for i, key in ipairs(KEYS) do
  firsts[i] = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2] or ''
end
return firsts
