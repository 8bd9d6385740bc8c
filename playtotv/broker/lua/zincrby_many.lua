-- KEYS[1] sorted set; ARGV member, amount, member, amount, ... (one atomic step, see hincrby_many.lua).
for i = 1, #ARGV, 2 do
  redis.call('ZINCRBY', KEYS[1], ARGV[i + 1], ARGV[i])
end
