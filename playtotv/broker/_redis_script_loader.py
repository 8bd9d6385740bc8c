"""Lua scripts loaded into Redis before their first use.

coredis runs a registered script with EVALSHA and, when Redis does not know it yet (NOSCRIPT), loads it
and tries again, logging the retry. Every process would pay that extra round trip, and log it, for each
script on start. ``ScriptSet`` loads all of a client's scripts once, before the first of them runs. After
a Redis restart, which empties its script cache, coredis's own retry still covers the first call of each
script (its log stays below the warning level we show for libraries: ``playtotv.logs``).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Sequence

import trio

ScriptCall = Callable[..., Awaitable[Any]]


class ScriptSet:
    def __init__(self, client: Any) -> None:
        self._client = client
        self._sources: list[str] = []
        self._loaded = False
        self._loading = trio.Lock()

    def register(self, source: str) -> ScriptCall:
        """An awaitable ``call(keys=..., args=...)`` running ``source`` (loaded with the others first)."""
        script = self._client.register_script(source)
        self._sources.append(source)

        async def call(keys: Sequence[Any] | None = None, args: Sequence[Any] | None = None) -> Any:
            if not self._loaded:
                await self.load()
            return await script(keys=keys, args=args)

        return call

    async def load(self) -> None:
        """SCRIPT LOAD every registered script (once; concurrent first callers wait for the first)."""
        async with self._loading:
            if self._loaded:
                return
            for source in self._sources:
                await self._client.script_load(source)
            self._loaded = True
