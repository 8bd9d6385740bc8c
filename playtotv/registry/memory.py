"""``MemoryRegistry``: the registry of a single process (embedded mode, tests).

A dict of node id → (node, expiry). Expiry is measured with an injectable wall clock (``time.time`` by
default) so tests can move time deterministically; readers never see a node whose expiry has passed,
whether or not ``prune`` has run.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec
import trio

from playtotv.keys import validate_id
from playtotv.registry.base import DEFAULT_TTL, NodeInfo


def check_ttl(ttl: float) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
    return float(ttl)


class MemoryRegistry:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._nodes: dict[str, tuple[NodeInfo, float]] = {}

    async def heartbeat(self, node: NodeInfo, ttl: float = DEFAULT_TTL) -> None:
        validate_id(node.id)
        check_ttl(ttl)
        await trio.lowlevel.checkpoint()
        now = self._clock()
        # A copy: the caller keeps mutating its own NodeInfo (load, qos) between heartbeats, and readers
        # must see what was heartbeated, as they would through Redis.
        stored = msgspec.structs.replace(node, updated_at=now)
        stored = msgspec.json.decode(msgspec.json.encode(stored), type=NodeInfo)
        self._nodes[node.id] = (stored, now + ttl)

    async def deregister(self, node_id: str) -> None:
        validate_id(node_id)
        await trio.lowlevel.checkpoint()
        self._nodes.pop(node_id, None)

    async def nodes(self) -> list[NodeInfo]:
        await trio.lowlevel.checkpoint()
        now = self._clock()
        live = [node for node, expiry in self._nodes.values() if expiry > now]
        # Copies again, so a reader that edits what it got cannot change the registry.
        return msgspec.json.decode(msgspec.json.encode(sorted(live, key=lambda n: n.id)), type=list[NodeInfo])

    async def prune(self) -> int:
        await trio.lowlevel.checkpoint()
        now = self._clock()
        expired = [node_id for node_id, (_, expiry) in self._nodes.items() if expiry <= now]
        for node_id in expired:
            del self._nodes[node_id]
        return len(expired)
