-- Acknowledges outbox events one consumer group is done with, and removes
-- each from its stream once no other group of the stream still needs it
-- (has not been given it yet, or holds it pending): the audit drain and the
-- webhook deliveries each read every event, and whichever finishes last
-- frees it. An entry acknowledged but left in a stream is freed by the
-- other group's acknowledgement. One call covers every stream on standalone
-- Redis; on a Cluster, one stream (slot) per call.
--
-- KEYS[1..n] outbox streams   ARGV[1] the acknowledging group
-- ARGV[2..n+1] how many ids each stream has   ARGV[n+2..] the ids, stream by stream
--
-- Returns the number of entries removed.

-- Stream ids "<ms>-<seq>", compared as numbers.
local function at_most(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  ams, bms = tonumber(ams), tonumber(bms)
  return ams < bms or (ams == bms and tonumber(aseq) <= tonumber(bseq))
end

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
  -- The other groups of this stream, with how far each has read.
  local others = {}
  for _, info in ipairs(redis.call('XINFO', 'GROUPS', KEYS[k])) do
    local name, last
    for i = 1, #info, 2 do
      if info[i] == 'name' then name = info[i + 1] end
      if info[i] == 'last-delivered-id' then last = info[i + 1] end
    end
    if name ~= ARGV[1] then
      others[#others + 1] = {name, last}
    end
  end
  local done = {}
  for _, id in ipairs(ids) do
    local free = true
    for _, g in ipairs(others) do
      if not at_most(id, g[2]) or #redis.call('XPENDING', KEYS[k], g[1], id, id, 1) > 0 then
        free = false
        break
      end
    end
    if free then
      done[#done + 1] = id
    end
  end
  if #done > 0 then
    removed = removed + redis.call('XDEL', KEYS[k], unpack(done))
  end
end
return removed
