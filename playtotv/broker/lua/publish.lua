-- Append to a channel's history and publish, atomically (keys and arguments: lib/publish_message.lua).
--#include lib/publish_message.lua
return publish_message()
