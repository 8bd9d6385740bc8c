"""The registry: ``open_registry(...)`` picks the implementation (interface in ``base``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from playtotv.registry.base import DEFAULT_TTL, HEARTBEAT_INTERVAL, NodeInfo, Registry

__all__ = ["DEFAULT_TTL", "HEARTBEAT_INTERVAL", "NodeInfo", "Registry", "open_registry"]

#: Connecting to Redis must not hang a node's startup on an unreachable host (a refused connection
#: fails at once anyway); a node retries with back-off (docs/reliability.md #19).
REDIS_CONNECT_TIMEOUT = 2.0
#: A registry command answers in well under a millisecond; one that has not answered in this long is
#: stuck (a paused or partitioned server) and is reported as BrokerUnavailable rather than hanging the
#: heartbeat loop. Same bound as the broker's.
REDIS_COMMAND_TIMEOUT = 5.0


@asynccontextmanager
async def open_registry(redis: str | Any | None = None) -> AsyncIterator[Registry]:
    """``None`` → a ``MemoryRegistry`` (one process). A Redis URL (``redis://``, ``redis+sentinel://``,
    see ``playtotv.redis_client``) → a ``RedisRegistry`` over a client of its own, closed on exit. A coredis
    client (already entered) → a ``RedisRegistry`` over it; the caller keeps owning the client.

    Opening does not require Redis to be up: the first call that cannot reach it raises
    ``BrokerUnavailable``.
    """
    if redis is None:
        from playtotv.registry.memory import MemoryRegistry

        yield MemoryRegistry()
        return

    from playtotv.registry.redis import RedisRegistry

    if not isinstance(redis, str):
        yield RedisRegistry(redis)
        return

    from playtotv.redis_client import open_redis

    # Entering the client does not connect: a Redis that is down now is reported by the first call.
    async with open_redis(
        redis, connect_timeout=REDIS_CONNECT_TIMEOUT, stream_timeout=REDIS_COMMAND_TIMEOUT
    ) as endpoint:
        yield RedisRegistry(endpoint.client, on_primary_lost=endpoint.primary_lost)
