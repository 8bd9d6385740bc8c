"""``RedisRegistry``: the registry shared by every node of a cluster.

Layout (names from ``playtotv.keys``):

- ``registry_node(id)``: the node's ``NodeInfo`` as msgspec JSON, with a PX expiry of its TTL. Redis
  deletes it when the node stops heartbeating: that expiry is the truth about liveness.
- ``REGISTRY_INDEX``: a sorted set id → expiry (ms, Redis server clock), so readers can list nodes
  without SCAN and skip the dead ones before fetching them.

Every time comes from the Redis server's clock (``TIME`` inside one-key Lua scripts), never from the
nodes' clocks, so a node whose clock is off can neither hide live peers nor keep dead ones listed. The
index entry is written just before the node key, so the index never outlives the key: once ``nodes()``
stops showing a node, ``prune()`` removes its entry. Each script touches one key, and the node keys are
read with MGET, so the layout also works on Redis Cluster.

Connection-level failures raise ``playtotv.broker.base.BrokerUnavailable``, like the broker's. A reply
that only a demoted primary gives (READONLY, ...) also tells the client's owner (``on_primary_lost``), so
the next call reconnects to the primary the Sentinels name now; the next heartbeat repairs the rest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import coredis.exceptions as redis_errors
import msgspec

from playtotv import keys
from playtotv.broker._redis_script_loader import ScriptSet, lua_source
from playtotv.broker.base import BrokerUnavailable
from playtotv.redis_client import is_failover_error
from playtotv.registry.base import DEFAULT_TTL, NodeInfo
from playtotv.registry.memory import check_ttl

log = logging.getLogger(__name__)

#: Failures that mean "Redis cannot be used right now" (down, restarting, failing over): the caller
#: backs off and heartbeats again; nothing here is lost that the next heartbeat does not restore.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,  # includes BusyLoadingError (restarting) and ProtocolError
    redis_errors.ReadOnlyError,  # talking to a replica that was just demoted
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
    redis_errors.PrimaryNotFoundError,
    redis_errors.StalePrimaryError,  # connected to a node the Sentinels no longer call the primary
    redis_errors.UnblockedError,
    TimeoutError,
    OSError,
)

# The index scripts (``lua/index_*.lua``) read the server's clock.
_INDEX_HEARTBEAT = lua_source("playtotv.registry", "index_heartbeat.lua")
_INDEX_LIVE = lua_source("playtotv.registry", "index_live.lua")
_INDEX_PRUNE = lua_source("playtotv.registry", "index_prune.lua")

#: What ``translate_errors`` looks at: unavailability, and replies that may be a failover's.
_TRANSLATED: tuple[type[BaseException], ...] = (*UNAVAILABLE, redis_errors.ResponseError)
_encode = msgspec.json.Encoder().encode
_decode_node = msgspec.json.Decoder(NodeInfo).decode


@contextmanager
def translate_errors(on_primary_lost: Callable[[str], None] | None = None) -> Iterator[None]:
    try:
        yield
    except _TRANSLATED as exc:
        failover = is_failover_error(exc)
        if not failover and not isinstance(exc, UNAVAILABLE):
            raise  # a bug in a call, not an outage
        if failover and on_primary_lost is not None:
            on_primary_lost(f"registry: {type(exc).__name__}")
        raise BrokerUnavailable(f"registry: Redis unavailable: {exc}") from exc


def ttl_ms(ttl: float) -> int:
    return max(1, round(check_ttl(ttl) * 1000))


class RedisRegistry:
    """Over a coredis client the caller owns (and has entered: ``async with client:``)."""

    def __init__(
        self, client: Any, *, clock: Callable[[], float] = time.time,
        on_primary_lost: Callable[[str], None] | None = None,
    ) -> None:
        self._redis = client
        self._on_primary_lost = on_primary_lost
        self._clock = clock  # only for NodeInfo.updated_at, which is informational
        # The heartbeat runs in a pipeline, which loads its scripts itself; the others run alone.
        self._heartbeat_script = client.register_script(_INDEX_HEARTBEAT)
        scripts = ScriptSet(client)
        self._live_script = scripts.register(_INDEX_LIVE)
        self._prune_script = scripts.register(_INDEX_PRUNE)

    async def heartbeat(self, node: NodeInfo, ttl: float = DEFAULT_TTL) -> None:
        keys.validate_id(node.id)
        px = ttl_ms(ttl)
        data = _encode(msgspec.structs.replace(node, updated_at=self._clock()))
        with translate_errors(self._on_primary_lost):
            # One round trip. Index first, so its expiry is never later than the key's (module docstring).
            async with self._redis.pipeline(transaction=False) as pipe:
                self._heartbeat_script(keys=[keys.REGISTRY_INDEX], args=[node.id, px], client=pipe)
                pipe.set(keys.registry_node(node.id), data, px=px)

    async def deregister(self, node_id: str) -> None:
        keys.validate_id(node_id)
        with translate_errors(self._on_primary_lost):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.delete([keys.registry_node(node_id)])
                pipe.zrem(keys.REGISTRY_INDEX, [node_id])

    async def nodes(self) -> list[NodeInfo]:
        with translate_errors(self._on_primary_lost):
            raw_ids = await self._live_script(keys=[keys.REGISTRY_INDEX])
            ids = [i.decode() if isinstance(i, bytes) else i for i in raw_ids]
            if not ids:
                return []
            blobs = await self._redis.mget([keys.registry_node(i) for i in ids])
        live: list[NodeInfo] = []
        for node_id, blob in zip(ids, blobs, strict=True):
            if blob is None:
                continue  # expired (or deregistered) between the two reads
            try:
                live.append(_decode_node(blob))
            except msgspec.DecodeError as exc:
                # Written by something else (or an incompatible version): one bad entry must not hide
                # every other node from the gatekeeper.
                log.warning("registry: ignoring undecodable entry for node %r: %s", node_id, exc)
        live.sort(key=lambda n: n.id)
        return live

    async def prune(self) -> int:
        with translate_errors(self._on_primary_lost):
            return int(await self._prune_script(keys=[keys.REGISTRY_INDEX]))
