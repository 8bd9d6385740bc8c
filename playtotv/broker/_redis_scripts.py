"""Lua scripts of the Redis broker: each operation that must be atomic, or must cost one round trip, is one
script. Scripts receive every key they touch in KEYS (Redis Cluster routes by them) and return strings for
anything that is not an integer (Lua numbers are doubles; Redis truncates them to integers on return).
"""

from __future__ import annotations

# -- channels ----------------------------------------------------------------------------------------------
# KEYS[1] epoch, KEYS[2] offset, KEYS[3] history stream; ARGV[1] a fresh epoch (used only if needed).
# ``current_epoch(ttl)`` takes the channel TTL in ms: keys it creates expire then unless a publish renews
# them (``base`` "Channels": a read of any name must not leave a key behind for good).
# The epoch key holds ``<epoch> <replication id>``: the replication id of the primary that started the
# epoch. A promoted replica gets a new replication id, and it may lack the last messages its old primary
# published (replication is asynchronous), whose offsets it would hand out again; a reader who received
# one of those would take the new message for a duplicate. So after a failover the next publish or read
# starts a new epoch: readers see ``recovered: false`` and reload, never a silent gap.
_CURRENT_EPOCH = """
local function primary_run()
  local info = redis.call('INFO', 'replication')
  return string.match(info, 'master_replid:(%x+)') or '-'
end
local function current_epoch(ttl)
  local stamp = redis.call('GET', KEYS[1])
  local run = primary_run()
  if stamp and redis.call('EXISTS', KEYS[2]) == 1 then
    local epoch, origin = string.match(stamp, '^(%S+) (%S+)$')
    if epoch and origin == run then
      return epoch
    end
  end
  -- First use, a failover (see above), or part of the channel's state is gone (a restart, an eviction):
  -- start a new epoch, so a reader holding a position from the old one cannot mistake the new offsets
  -- for a continuation.
  redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. run, 'PX', ttl)
  redis.call('SET', KEYS[2], 0, 'PX', ttl)
  redis.call('DEL', KEYS[3])
  return ARGV[1]
end
"""

#: ARGV[2] history size, ARGV[3] pub/sub channel, ARGV[4] data, ARGV[5] channel TTL in ms
#: -> {epoch, offset, sent_at}. Every publish renews the TTL of the channel's three keys.
#: The stream entry id is ``<offset>-0``, so history reads can start at an offset without scanning.
#: The pub/sub envelope is ``epoch \\n offset \\n sent_at \\n data``: split once, data never re-encoded.
_PUBLISH_BODY = """
local epoch = current_epoch(ARGV[5])
local offset = redis.call('INCR', KEYS[2])
local now = redis.call('TIME')
local sent_at = now[1] .. '.' .. string.format('%06d', now[2])
local offset_text = string.format('%d', offset)
redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[2], offset_text .. '-0', 'd', ARGV[4], 't', sent_at)
for i = 1, 3 do
  redis.call('PEXPIRE', KEYS[i], ARGV[5])
end
redis.call('PUBLISH', ARGV[3], epoch .. '\\n' .. offset_text .. '\\n' .. sent_at .. '\\n' .. ARGV[4])
return {epoch, offset, sent_at}
"""
PUBLISH = _CURRENT_EPOCH + _PUBLISH_BODY

#: PUBLISH behind a marker: KEYS[4] the marker, ARGV[6] its TTL in ms -> {epoch, offset, sent_at}, or an
#: empty reply when the marker was already set (published before under it; nothing done). Marker and
#: message are one write, so whoever repeats an announcement (a successor redoing a dead leader's fire)
#: cannot send it twice, however far the first attempt got.
PUBLISH_ONCE = _CURRENT_EPOCH + """
if not redis.call('SET', KEYS[4], 1, 'NX', 'PX', ARGV[6]) then
  return {}
end
""" + _PUBLISH_BODY

#: ARGV[2] first stream id wanted (``<since + 1>-0``), ARGV[3] limit (0: position only), ARGV[4] channel
#: TTL in ms -> {epoch, offset, entries}. Reading creates the epoch if needed (expiring after the TTL), so
#: the epoch a reader sees before the first publish is the one that publish will use.
READ_HISTORY = _CURRENT_EPOCH + """
local epoch = current_epoch(ARGV[4])
local offset = tonumber(redis.call('GET', KEYS[2]))
local entries = {}
if tonumber(ARGV[3]) > 0 then
  entries = redis.call('XRANGE', KEYS[3], ARGV[2], '+', 'COUNT', ARGV[3])
end
return {epoch, offset, entries}
"""

# -- queues ------------------------------------------------------------------------------------------------
#: KEYS[1] stream; ARGV: data of each item.
ENQUEUE = """
for i = 1, #ARGV do
  redis.call('XADD', KEYS[1], '*', 'd', ARGV[i])
end
"""

#: KEYS[1] stream, KEYS[2..n] dedupe keys; ARGV[1] dedupe TTL in ms, ARGV[2..n] data (same order as the
#: keys) -> 1 (enqueued) or 0 (a duplicate) per entry. A key repeated in one batch is a duplicate too.
ENQUEUE_UNIQUE = """
local enqueued = {}
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], 1, 'NX', 'PX', ARGV[1]) then
    redis.call('XADD', KEYS[1], '*', 'd', ARGV[i])
    enqueued[i - 1] = 1
  else
    enqueued[i - 1] = 0
  end
end
return enqueued
"""

#: KEYS[1] stream, KEYS[2] dead letters; ARGV: group, consumer, count, visibility timeout in ms,
#: max deliveries, dead letter cap -> {{id, data, deliveries}, ...}: the claims whose visibility timeout
#: passed, taken over by ``consumer`` (XAUTOCLAIM counts the delivery). An item whose delivery count
#: would pass max deliveries goes to the dead letters and leaves the stream instead. Creates the consumer
#: group when it is missing. New items are read with a plain XREADGROUP, outside any script: inside one,
#: Redis would convert every entry to Lua and back, which cost more than the read itself (bench worker).
REDELIVER = """
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
"""

#: Arguments per command when a script spreads a long list over several calls (Lua's unpack has a limit
#: of a few thousand values).
_CHUNK = """
local CHUNK = 1000
local function chunks(list, step, fn)
  for i = 1, #list, step do
    fn(unpack(list, i, math.min(i + step - 1, #list)))
  end
end
"""

#: The XINFO GROUPS fields of one consumer group, as a table (nil when the stream or the group is gone).
_GROUP_INFO = """
local function group_info(stream, group)
  local groups = redis.pcall('XINFO', 'GROUPS', stream)
  if groups.err then
    return nil
  end
  for _, info in ipairs(groups) do
    local fields = {}
    for i = 1, #info, 2 do fields[info[i]] = info[i + 1] end
    if fields['name'] == group then
      return fields
    end
  end
end
"""

#: The group's first unfinished entry: its oldest pending claim, or else the entry after the last one
#: delivered. Everything before it was acknowledged (XREADGROUP delivers in id order).
_FIRST_UNFINISHED = _GROUP_INFO + """
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
"""

#: KEYS[1] stream; ARGV[1] group, ARGV[2] the ids as a msgpack array (one argument instead of one per id:
#: the client's cost per argument is what a batch of hundreds pays). Acknowledged entries then leave the
#: stream by one XTRIM up to the first unfinished entry (removing whole stream nodes costs far less than
#: XDEL of each id), so the stream holds unfinished work plus at most the acknowledged entries that
#: follow a claim still pending.
ACK = _CHUNK + _FIRST_UNFINISHED + """
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
"""

#: KEYS[1] stream, KEYS[2] dead letters; ARGV[1] group -> {pending, waiting, dead}. Waiting is the group's
#: lag (entries added but not yet delivered); Redis cannot tell it after an XDEL inside the undelivered
#: range (a dead letter), and then XLEN - pending stands in (it counts the few acknowledged entries not
#: yet trimmed, see ACK).
QUEUE_STATS = _GROUP_INFO + """
local length = redis.call('XLEN', KEYS[1])
local pending, waiting = 0, length
local fields = group_info(KEYS[1], ARGV[1])
if fields then
  pending = fields['pending']
  waiting = fields['lag'] or math.max(0, length - pending)
end
return {pending, waiting, redis.call('XLEN', KEYS[2])}
"""

#: KEYS: sorted sets; ARGV[1] a msgpack array holding, for each key in order, a flat array
#: ``[score, member, score, member, ...]``. One round trip and one argument for a whole batch of sets.
ZADD_MANY = _CHUNK + """
local sets = cmsgpack.unpack(ARGV[1])
for k = 1, #KEYS do
  chunks(sets[k], CHUNK, function(...) redis.call('ZADD', KEYS[k], ...) end)
end
"""

# -- leases ------------------------------------------------------------------------------------------------
#: KEYS[1] lease (hash: holder, token), KEYS[2] highest token issued; ARGV[1] holder, ARGV[2] TTL in ms
#: -> token, or nil when someone else holds the lease. The new token follows
#: ``_semantics.next_fencing_token``: max(last + 1, server time in ms).
ACQUIRE_LEASE = """
local holder = redis.call('HGET', KEYS[1], 'holder')
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(redis.call('HGET', KEYS[1], 'token'))
end
if holder then
  return false
end
local now = redis.call('TIME')
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local token = math.max(last + 1, now[1] * 1000 + math.floor(now[2] / 1000))
local token_text = string.format('%d', token)
redis.call('SET', KEYS[2], token_text)
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'token', token_text)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return token
"""

#: KEYS[1] lease; ARGV[1] holder. Only the holder may release (a deposed holder must not free the lease
#: its successor took).
RELEASE_LEASE = """
if redis.call('HGET', KEYS[1], 'holder') == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
"""

# -- hashes and sorted sets --------------------------------------------------------------------------------
# Several fields in one atomic step. A script rather than a MULTI pipeline: a pipeline holds a pooled
# connection until its reply, which coredis does not return to the pool when it is cancelled (see
# ``_redis_connections``).

#: KEYS[1] hash; ARGV field, amount, field, amount, ...
HINCRBY_MANY = """
for i = 1, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
"""

#: KEYS[1] sorted set; ARGV member, amount, member, amount, ...
ZINCRBY_MANY = """
for i = 1, #ARGV, 2 do
  redis.call('ZINCRBY', KEYS[1], ARGV[i + 1], ARGV[i])
end
"""

#: KEYS[1] sorted set; ARGV[1] member -> {rank, score} by descending score, or nil.
ZRANK_DESC = """
local rank = redis.call('ZREVRANK', KEYS[1], ARGV[1])
if not rank then
  return false
end
return {rank, redis.call('ZSCORE', KEYS[1], ARGV[1])}
"""
