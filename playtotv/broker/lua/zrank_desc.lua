-- KEYS[1] sorted set; ARGV[1] member -> {rank, score} by descending score, or nil.
local rank = redis.call('ZREVRANK', KEYS[1], ARGV[1])
if not rank then
  return false
end
return {rank, redis.call('ZSCORE', KEYS[1], ARGV[1])}
