-- Settles one instance's counts of client limits with the shared ones: each
-- limit's generic cell rate algorithm state is one number, the theoretical
-- arrival time (µs, on Redis's clock so every instance agrees), and the
-- requests an instance admitted since it last settled push it forward. It
-- may end up past the burst: the client then owes what the instances
-- admitted together beyond it, and every instance refuses until it is paid.
-- One call settles many clients (the keys of one bucket, or of every bucket
-- on standalone Redis).
--
-- KEYS the limits' keys   ARGV[1] emission interval (µs)
-- ARGV[1 + i] requests admitted since the last settle for KEYS[i]
--
-- Returns, per key, how far its theoretical arrival time lies ahead of now
-- (µs; 0 or less: nothing is owed).

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local ahead = {}
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then
    tat = now
  end
  local admitted = tonumber(ARGV[i + 1])
  if admitted > 0 then
    tat = tat + interval * admitted
    -- Forgotten once nothing is owed any more.
    redis.call('SET', key, string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
  end
  ahead[i] = tat - now
end
return ahead
