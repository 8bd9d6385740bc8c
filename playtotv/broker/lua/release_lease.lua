-- KEYS[1] lease; ARGV[1] holder. Only the holder may release (a deposed holder must not free the lease
-- its successor took).
if redis.call('HGET', KEYS[1], 'holder') == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
