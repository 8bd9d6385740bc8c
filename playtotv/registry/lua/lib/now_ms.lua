-- The Redis server's time in whole milliseconds, as `now` (every time of the registry comes from it).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
