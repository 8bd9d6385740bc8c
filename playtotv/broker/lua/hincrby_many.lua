-- KEYS[1] hash; ARGV field, amount, field, amount, ... Several fields in one atomic step: a script
-- rather than a MULTI pipeline, which holds a pooled connection until its reply and is not returned to
-- the pool when cancelled (see _redis_connections.py).
for i = 1, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
