-- KEYS[1] stream, KEYS[2] dead letters; ARGV: group, consumer, count, visibility timeout in ms,
-- max deliveries, dead letter cap -> {{id, data, deliveries}, ...}: the claims whose visibility timeout
-- passed, taken over by the consumer (XAUTOCLAIM counts the delivery). An item whose delivery count
-- would pass max deliveries goes to the dead letters and leaves the stream instead. Creates the consumer
-- group when it is missing. New items are read with a plain XREADGROUP, outside any script: inside one,
-- Redis would convert every entry to Lua and back, which cost more than the read itself (bench worker).
local group, consumer = ARGV[1], ARGV[2]
local count, max_deliveries = tonumber(ARGV[3]), tonumber(ARGV[5])

local function data_of(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'd' then return fields[i + 1] end
  end
end

local claimed = redis.pcall('XAUTOCLAIM', KEYS[1], group, consumer, ARGV[4], '0-0', 'COUNT', count)
if claimed.err then
  if not string.find(claimed.err, 'NOGROUP', 1, true) then
    return redis.error_reply(claimed.err)
  end
  -- The first claim of this queue (or Redis lost the group): start at 0 so that items enqueued before
  -- the group existed are delivered too.
  redis.call('XGROUP', 'CREATE', KEYS[1], group, '0', 'MKSTREAM')
  return {}
end

local items = {}
for _, entry in ipairs(claimed[2]) do
  local id, data = entry[1], data_of(entry[2])
  local deliveries = redis.call('XPENDING', KEYS[1], group, id, id, 1)[1][4]
  if deliveries > max_deliveries then
    local now = redis.call('TIME')
    redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[6], '*', 'id', id, 'd', data, 'n', deliveries - 1,
               't', now[1] .. '.' .. string.format('%06d', now[2]))
    redis.call('XACK', KEYS[1], group, id)
    redis.call('XDEL', KEYS[1], id)
  else
    items[#items + 1] = {id, data, deliveries}
  end
end
return items
