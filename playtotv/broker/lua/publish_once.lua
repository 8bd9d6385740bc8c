-- publish.lua behind a marker: KEYS[4] the marker, ARGV[6] its TTL in ms -> {epoch, offset, sent_at}, or
-- an empty reply when the marker was already set (published before under it; nothing done). Marker and
-- message are one write, so whoever repeats an announcement (a successor redoing a dead leader's fire)
-- cannot send it twice, however far the first attempt got.
--#include lib/publish_message.lua
if not redis.call('SET', KEYS[4], 1, 'NX', 'PX', ARGV[6]) then
  return {}
end
return publish_message()
