-- KEYS[1] index -> ids whose expiry is still ahead (exclusive: expiry == now is expired, as in memory).
--#include lib/now_ms.lua
return redis.call('ZRANGEBYSCORE', KEYS[1], string.format('(%d', now), '+inf')
