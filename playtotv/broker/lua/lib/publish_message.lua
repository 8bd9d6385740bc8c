--#include lib/channel_epoch.lua
-- ARGV[2] history size, ARGV[3] pub/sub channel, ARGV[4] data, ARGV[5] channel TTL in ms
-- -> {epoch, offset, sent_at}. Every publish renews the TTL of the channel's three keys.
-- The stream entry id is "<offset>-0", so history reads can start at an offset without scanning.
-- The pub/sub envelope is "epoch \n offset \n sent_at \n data": split once, data never re-encoded.
local function publish_message()
  local epoch = current_epoch(ARGV[5])
  local offset = redis.call('INCR', KEYS[2])
  local now = redis.call('TIME')
  local sent_at = now[1] .. '.' .. string.format('%06d', now[2])
  local offset_text = string.format('%d', offset)
  redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[2], offset_text .. '-0', 'd', ARGV[4], 't', sent_at)
  for i = 1, 3 do
    redis.call('PEXPIRE', KEYS[i], ARGV[5])
  end
  redis.call('PUBLISH', ARGV[3], epoch .. '\n' .. offset_text .. '\n' .. sent_at .. '\n' .. ARGV[4])
  return {epoch, offset, sent_at}
end
