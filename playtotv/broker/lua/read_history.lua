-- KEYS as in lib/channel_epoch.lua; ARGV[2] first stream id wanted ("<since + 1>-0"), ARGV[3] limit (0: position
-- only), ARGV[4] channel TTL in ms -> {epoch, offset, entries}. Reading creates the epoch if needed
-- (expiring after the TTL), so the epoch a reader sees before the first publish is the one that publish
-- will use.
--#include lib/channel_epoch.lua
local epoch = current_epoch(ARGV[4])
local offset = tonumber(redis.call('GET', KEYS[2]))
local entries = {}
if tonumber(ARGV[3]) > 0 then
  entries = redis.call('XRANGE', KEYS[3], ARGV[2], '+', 'COUNT', ARGV[3])
end
return {epoch, offset, entries}
