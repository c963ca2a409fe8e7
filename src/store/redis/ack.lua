-- Acknowledges audit events the drain has committed to PostgreSQL and
-- removes them from the outbox stream, atomically: an entry acknowledged but
-- left in the stream would never be read again, nor freed.
--
-- KEYS[1] audit stream   ARGV[1] consumer group   ARGV[2..] entry ids
--
-- Returns the number of entries removed.

redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
return redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
