"""Ordering of the endpoint lists a client receives.

Core: rendezvous (highest-random-weight) hashing of the user over the healthy core nodes, so a returning
user lands on the node that has its cache, and losing one node moves only that node's users.
Push: power of two choices weighted by free capacity, randomised, so a burst of arrivals does not all land
on the node that looked emptiest at the last snapshot.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

from playtotv.registry.base import NodeInfo


def _weight(user_id: str, node_id: str) -> int:
    digest = hashlib.blake2b(f"{user_id}\x00{node_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def order_core(user_id: str, nodes: Sequence[NodeInfo]) -> list[NodeInfo]:
    return sorted(nodes, key=lambda n: _weight(user_id, n.id), reverse=True)


def free_capacity(node: NodeInfo) -> float:
    capacity = node.load.get("max_connections", 0.0)
    used = node.load.get("connections", 0.0) + node.load.get("polling_sessions", 0.0)
    return max(0.0, capacity - used) if capacity else 1.0


def order_push(nodes: Sequence[NodeInfo], rng: random.Random) -> list[NodeInfo]:
    remaining = list(nodes)
    ordered: list[NodeInfo] = []
    while remaining:
        if len(remaining) == 1:
            ordered.append(remaining.pop())
            break
        a, b = rng.sample(range(len(remaining)), 2)
        pick = a if free_capacity(remaining[a]) >= free_capacity(remaining[b]) else b
        ordered.append(remaining.pop(pick))
    return ordered
