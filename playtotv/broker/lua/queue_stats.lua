-- KEYS[1] stream, KEYS[2] dead letters; ARGV[1] group -> {pending, waiting, dead}. Waiting is the group's
-- lag (entries added but not yet delivered); Redis cannot tell it after an XDEL inside the undelivered
-- range (a dead letter), and then XLEN - pending stands in (it counts the few acknowledged entries not
-- yet trimmed, see ack.lua).
--#include lib/group_info.lua
local length = redis.call('XLEN', KEYS[1])
local pending, waiting = 0, length
local fields = group_info(KEYS[1], ARGV[1])
if fields then
  pending = fields['pending']
  waiting = fields['lag'] or math.max(0, length - pending)
end
return {pending, waiting, redis.call('XLEN', KEYS[2])}
