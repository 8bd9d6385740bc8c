-- Arguments per command when a script spreads a long list over several calls (Lua's unpack has a limit
-- of a few thousand values).
local CHUNK = 1000
local function chunks(list, step, fn)
  for i = 1, #list, step do
    fn(unpack(list, i, math.min(i + step - 1, #list)))
  end
end
