-- The group's first unfinished entry: its oldest pending claim, or else the entry after the last one
-- delivered. Everything before it was acknowledged (XREADGROUP delivers in id order).
--#include lib/group_info.lua
local function first_unfinished(stream, group)
  local pending = redis.call('XPENDING', stream, group)
  if pending[1] > 0 then
    return pending[2]
  end
  local fields = group_info(stream, group)
  if fields then
    local ms, seq = string.match(fields['last-delivered-id'], '^(%d+)-(%d+)$')
    return ms .. '-' .. string.format('%d', tonumber(seq) + 1)
  end
end
