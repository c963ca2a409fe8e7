-- Leases the webhook deliveries that are due, in one or more buckets: each
-- is pushed to the lease's end, so no other instance takes it while this
-- one delivers, and any instance takes it once the lease has run out (its
-- deliverer died).
--
-- KEYS pairs, per bucket: [schedule zset, deliveries hash]
-- ARGV[1] now (epoch ms)   ARGV[2] lease end (epoch ms)   ARGV[3] most per bucket
--
-- Returns the deliveries' JSON.

local out = {}
for k = 1, #KEYS, 2 do
  local due = redis.call('ZRANGE', KEYS[k], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, ARGV[3])
  for _, id in ipairs(due) do
    local json = redis.call('HGET', KEYS[k + 1], id)
    if json then
      redis.call('ZADD', KEYS[k], ARGV[2], id)
      out[#out + 1] = json
    else
      redis.call('ZREM', KEYS[k], id)
    end
  end
end
return out
