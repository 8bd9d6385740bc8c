-- KEYS[1] stream, KEYS[2..n] dedupe keys; ARGV[1] dedupe TTL in ms, ARGV[2..n] data (same order as the
-- keys) -> 1 (enqueued) or 0 (a duplicate) per entry. A key repeated in one batch is a duplicate too.
local enqueued = {}
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], 1, 'NX', 'PX', ARGV[1]) then
    redis.call('XADD', KEYS[1], '*', 'd', ARGV[i])
    enqueued[i - 1] = 1
  else
    enqueued[i - 1] = 0
  end
end
return enqueued
