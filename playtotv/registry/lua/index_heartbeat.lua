-- KEYS[1] index; ARGV[1] node id, ARGV[2] ttl in ms -> now.
--#include lib/now_ms.lua
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return now
