-- KEYS: sorted sets; ARGV[1] a msgpack array holding, for each key in order, a flat array
-- [score, member, score, member, ...]. One round trip and one argument for a whole batch of sets.
--#include lib/chunks.lua
local sets = cmsgpack.unpack(ARGV[1])
for k = 1, #KEYS do
  chunks(sets[k], CHUNK, function(...) redis.call('ZADD', KEYS[k], ...) end)
end
