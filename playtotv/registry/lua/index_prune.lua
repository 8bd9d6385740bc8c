-- KEYS[1] index -> how many expired ids were removed.
--#include lib/now_ms.lua
return redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now))
