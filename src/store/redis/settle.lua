-- Settles one instance's count of a client limit with the shared one: the
-- generic cell rate algorithm's state is one number, the theoretical
-- arrival time (µs, on Redis's clock so every instance agrees), and the
-- requests an instance admitted since it last settled push it forward.
-- It may end up past the burst: the client then owes what the instances
-- admitted together beyond it, and every instance refuses until it is paid.
--
-- KEYS[1] the limit's key   ARGV[1] emission interval (µs)
-- ARGV[2] requests admitted since the last settle (0 = only read)
--
-- Returns how far the theoretical arrival time lies ahead of now (µs).

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then
  tat = now
end
local admitted = tonumber(ARGV[2])
if admitted > 0 then
  tat = tat + tonumber(ARGV[1]) * admitted
  -- Forgotten once nothing is owed any more.
  redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
end
return tat - now
