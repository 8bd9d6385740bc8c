"""The registry: which nodes are alive, what they serve and how loaded they are.

Each node heartbeats its ``NodeInfo`` with a TTL; readers see only nodes whose last heartbeat is younger
than its TTL. Implementations: ``memory.MemoryRegistry`` (one process) and ``redis.RedisRegistry``.
One contract suite (``tests/test_registry_contract.py``) runs against both.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

#: A node that missed heartbeats for this long is considered dead (gatekeeper stops listing it).
DEFAULT_TTL = 3.0
#: Heartbeat period: a third of the TTL, so one lost heartbeat does not drop a live node.
HEARTBEAT_INTERVAL = 1.0


class NodeInfo(msgspec.Struct):
    id: str
    roles: list[str]
    #: e.g. {"core": "http://h:8001", "push_ws": "ws://h:8002/v1/ws", "push_poll": "http://h:8003/v1/poll",
    #: "gatekeeper": "http://h:8000", "ops": "http://h:9000"}
    endpoints: dict[str, str] = {}
    #: e.g. {"connections": 1234, "inflight": 3}
    load: dict[str, float] = {}
    #: QoS signals, e.g. {"loop_lag_ms": 2.0, "core_p95_ms": 12.0, "fanout_p99_ms": 80.0}
    qos: dict[str, float] = {}
    #: Ids of nodes this node found unreachable (the scheduler's probes): registered, but failing.
    unreachable: list[str] = []
    started_at: float = 0.0
    updated_at: float = 0.0  # set by the registry on heartbeat (wall clock)


class Registry(Protocol):
    async def heartbeat(self, node: NodeInfo, ttl: float = DEFAULT_TTL) -> None:
        """Register or refresh ``node`` for ``ttl`` seconds."""

    async def deregister(self, node_id: str) -> None: ...

    async def nodes(self) -> list[NodeInfo]:
        """Every live node, ordered by id."""

    async def prune(self) -> int:
        """Remove expired entries from indexes; returns how many. Reads never show them anyway."""
