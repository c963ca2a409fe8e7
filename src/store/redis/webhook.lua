-- The webhook schedule of one bucket: every delivery from its acceptance to
-- a 2xx or the dead letters, so none lives only in an instance's memory.
--
-- KEYS[1] schedule zset (event id, due or lease end in epoch ms)
-- KEYS[2] deliveries hash (event id -> delivery JSON)
-- KEYS[3] dead letters hash (event id -> delivery JSON)
-- ARGV[1] operation, ARGV[2] event id, then per operation:
--   'schedule' ARGV[3] JSON, ARGV[4] due: put on (or back on) the schedule
--   'done'                              : forget it (a 2xx)
--   'dead'     ARGV[3] JSON             : move it to the dead letters
--   'revive'   ARGV[3] JSON, ARGV[4] due: a dead letter back on the schedule
--                                         (its JSON with the attempts reset)
--
-- Returns 1, or 0 for a 'revive' of no such dead letter.

local op, id = ARGV[1], ARGV[2]
if op == 'schedule' then
  redis.call('HSET', KEYS[2], id, ARGV[3])
  redis.call('ZADD', KEYS[1], ARGV[4], id)
elseif op == 'done' then
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
elseif op == 'dead' then
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('HSET', KEYS[3], id, ARGV[3])
elseif op == 'revive' then
  if redis.call('HDEL', KEYS[3], id) == 0 then
    return 0
  end
  redis.call('HSET', KEYS[2], id, ARGV[3])
  redis.call('ZADD', KEYS[1], ARGV[4], id)
end
return 1
