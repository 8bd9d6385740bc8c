-- KEYS[1] stream; ARGV[1] group, ARGV[2] the ids as a msgpack array (one argument instead of one per id:
-- the client's cost per argument is what a batch of hundreds pays). Acknowledged entries then leave the
-- stream by one XTRIM up to the first unfinished entry (removing whole stream nodes costs far less than
-- XDEL of each id), so the stream holds unfinished work plus at most the acknowledged entries that
-- follow a claim still pending.
--#include lib/chunks.lua
--#include lib/first_unfinished.lua
local ids = cmsgpack.unpack(ARGV[2])
-- After a Redis restart the stream or its group is gone (NOGROUP) and there is nothing left to ack.
local probe = redis.pcall('XPENDING', KEYS[1], ARGV[1])
if type(probe) == 'table' and probe.err then
  return 0
end
chunks(ids, CHUNK, function(...) redis.call('XACK', KEYS[1], ARGV[1], ...) end)
local first = first_unfinished(KEYS[1], ARGV[1])
if first then
  redis.call('XTRIM', KEYS[1], 'MINID', first)
end
return 1
