-- Acknowledges audit events the drain has committed to PostgreSQL and
-- removes them from their outbox streams, atomically: an entry acknowledged
-- but left in a stream would never be read again, nor freed. One call covers
-- every stream on standalone Redis; on a Cluster, one stream (slot) per call.
--
-- KEYS[1..n] audit streams   ARGV[1] consumer group
-- ARGV[2..n+1] how many ids each stream has   ARGV[n+2..] the ids, stream by stream
--
-- Returns the number of entries removed.

local pos = #KEYS + 2
local removed = 0
for k = 1, #KEYS do
  local count = tonumber(ARGV[k + 1])
  local ids = {}
  for i = pos, pos + count - 1 do
    ids[#ids + 1] = ARGV[i]
  end
  pos = pos + count
  redis.call('XACK', KEYS[k], ARGV[1], unpack(ids))
  removed = removed + redis.call('XDEL', KEYS[k], unpack(ids))
end
return removed
