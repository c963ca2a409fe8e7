-- One request against a rate limit: the generic cell rate algorithm (GCRA),
-- the same arithmetic as `store::gcra`. The whole state is one number, the
-- theoretical arrival time (µs), on Redis's clock so every instance agrees.
--
-- KEYS[1] the limit's key   ARGV[1] emission interval (µs)   ARGV[2] limit (burst)
--
-- Returns {allowed 1|0, remaining, retry after µs, reset µs}.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then
  tat = now
end
local new_tat = tat + interval
local allow_at = new_tat - burst
if now < allow_at then
  return {0, 0, allow_at - now, tat - now}
end
-- Forgotten once the bucket would be full again.
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, math.floor((burst - (new_tat - now)) / interval), 0, new_tat - now}
