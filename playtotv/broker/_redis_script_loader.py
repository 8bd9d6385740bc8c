"""Lua scripts: read from the package's ``lua/`` folder once, and loaded into Redis before their first use.

Each script is a ``.lua`` file next to the code that runs it (``playtotv/broker/lua``,
``playtotv/registry/lua``), shipped as package data. A line ``--#include lib/name.lua`` inserts a file of
shared local functions (once per script, however often it is asked for); other whole-line ``--``
comments stay in the files and are not sent to Redis (a script run with EVAL travels with every call).

coredis runs a registered script with EVALSHA and, when Redis does not know it yet (NOSCRIPT), loads it
and tries again, logging the retry. Every process would pay that extra round trip, and log it, for each
script on start. ``ScriptSet`` loads all of a client's scripts once, before the first of them runs. After
a Redis restart, which empties its script cache, coredis's own retry still covers the first call of each
script (its log stays below the warning level we show for libraries: ``playtotv.logs``).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any

import trio

INCLUDE = "--#include "

ScriptCall = Callable[..., Awaitable[Any]]


@functools.cache
def lua_source(package: str, name: str) -> str:
    """The source of ``<package>/lua/<name>`` with its includes expanded and its comment lines dropped."""
    folder = resources.files(package).joinpath("lua")
    lines: list[str] = []
    included: set[str] = set()

    def add(file: str) -> None:
        for line in folder.joinpath(file).read_text(encoding="utf-8").splitlines():
            stripped = line.strip()
            if stripped.startswith(INCLUDE):
                library = stripped[len(INCLUDE):].strip()
                if library not in included:
                    included.add(library)
                    add(library)
            elif stripped and not stripped.startswith("--"):
                lines.append(line)

    add(name)
    return "\n".join(lines) + "\n"


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
