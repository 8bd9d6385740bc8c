-- A channel's three keys: KEYS[1] epoch, KEYS[2] offset, KEYS[3] history stream; ARGV[1] a fresh epoch
-- (used only if needed).
--
-- current_epoch(ttl) takes the channel TTL in ms: keys it creates expire then unless a publish renews
-- them (base.py "Channels": a read of any name must not leave a key behind for good).
-- The epoch key holds "<epoch> <replication id>": the replication id of the primary that started the
-- epoch. A promoted replica gets a new replication id, and it may lack the last messages its old primary
-- published (replication is asynchronous), whose offsets it would hand out again; a reader who received
-- one of those would take the new message for a duplicate. So after a failover the next publish or read
-- starts a new epoch: readers see "recovered: false" and reload, never a silent gap.
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
