-- KEYS[1] stream; ARGV: data of each item.
for i = 1, #ARGV do
  redis.call('XADD', KEYS[1], '*', 'd', ARGV[i])
end
