-- KEYS[1] lease (hash: holder, token), KEYS[2] highest token issued; ARGV[1] holder, ARGV[2] TTL in ms
-- -> token, or nil when someone else holds the lease. The new token follows
-- _semantics.next_fencing_token: max(last + 1, server time in ms).
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
