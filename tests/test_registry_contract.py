"""One contract for every registry (docs/architecture.md §4): in memory and on a real Redis.

Expiry is real time here (TTLs of a fraction of a second, waits bounded by ``fail_after``); the exact
boundary is checked deterministically on the memory registry with a fake clock.
"""

from __future__ import annotations

from typing import AsyncIterator

import coredis
import pytest
import trio

from playtotv import keys
from playtotv.broker.base import BrokerUnavailable
from playtotv.registry import open_registry
from playtotv.registry.base import NodeInfo, Registry
from playtotv.registry.memory import MemoryRegistry
from playtotv.registry.redis import RedisRegistry
from tests.bounded import bound_every_test

#: Every test is bounded (docs/architecture.md §8); generous, because the machine is shared.
TEST_TIMEOUT = 20
#: Long enough that a node heartbeated with it cannot expire during a test.
LONG_TTL = 60.0
#: Short enough that waiting for an expiry keeps the suite fast.
SHORT_TTL = 0.3
#: Poll period while waiting for an expiry to become visible (bounded by the test's fail_after).
POLL = 0.02


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.slow)])
async def registry(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Registry]:
    async with open_registry(None if request.param == "memory" else redis_url) as reg:
        yield reg


def node(node_id: str, **load: float) -> NodeInfo:
    return NodeInfo(
        id=node_id,
        roles=["core", "push"],
        endpoints={"core": f"http://{node_id}:8001"},
        load=dict(load),
        qos={"loop_lag_ms": 1.5},
        started_at=1000.0,
    )


async def ids(reg: Registry) -> list[str]:
    return [n.id for n in await reg.nodes()]


async def wait_until_gone(reg: Registry, node_id: str) -> None:
    while node_id in await ids(reg):
        await trio.sleep(POLL)


async def test_heartbeat_is_visible(registry: Registry) -> None:
    assert await registry.nodes() == []
    sent = node("core-1", connections=12)
    await registry.heartbeat(sent, ttl=LONG_TTL)
    (seen,) = await registry.nodes()
    assert seen.id == "core-1"
    assert seen.roles == sent.roles and seen.endpoints == sent.endpoints
    assert seen.load == {"connections": 12} and seen.qos == {"loop_lag_ms": 1.5}
    assert seen.started_at == 1000.0
    assert seen.updated_at > 0  # stamped by the registry
    assert sent.updated_at == 0.0  # ...on its own copy


async def test_nodes_are_ordered_by_id(registry: Registry) -> None:
    for node_id in ["push-2", "core-1", "push-10", "gate-1"]:
        await registry.heartbeat(node(node_id), ttl=LONG_TTL)
    assert await ids(registry) == ["core-1", "gate-1", "push-10", "push-2"]


async def test_heartbeat_updates_load(registry: Registry) -> None:
    await registry.heartbeat(node("core-1", connections=1), ttl=LONG_TTL)
    await registry.heartbeat(node("core-1", connections=5), ttl=LONG_TTL)
    (seen,) = await registry.nodes()
    assert seen.load == {"connections": 5}


async def test_ttl_expiry_hides_the_node(registry: Registry) -> None:
    await registry.heartbeat(node("alive"), ttl=LONG_TTL)
    await registry.heartbeat(node("dying"), ttl=SHORT_TTL)
    await wait_until_gone(registry, "dying")
    assert await ids(registry) == ["alive"]


async def test_heartbeat_refreshes_the_ttl(registry: Registry) -> None:
    await registry.heartbeat(node("n"), ttl=SHORT_TTL)
    await registry.heartbeat(node("n"), ttl=LONG_TTL)
    await trio.sleep(SHORT_TTL * 2)  # not waiting for a condition: letting the first TTL pass
    assert await ids(registry) == ["n"]


async def test_deregister(registry: Registry) -> None:
    await registry.heartbeat(node("a"), ttl=LONG_TTL)
    await registry.heartbeat(node("b"), ttl=LONG_TTL)
    await registry.deregister("a")
    assert await ids(registry) == ["b"]
    await registry.deregister("a")  # already gone: fine
    await registry.deregister("never-seen")
    assert await registry.prune() == 0  # deregistering left nothing behind


async def test_prune_removes_expired_entries(registry: Registry) -> None:
    await registry.heartbeat(node("alive"), ttl=LONG_TTL)
    await registry.heartbeat(node("dead-1"), ttl=SHORT_TTL)
    await registry.heartbeat(node("dead-2"), ttl=SHORT_TTL)
    await wait_until_gone(registry, "dead-1")
    await wait_until_gone(registry, "dead-2")
    # Once a read no longer shows a node, prune finds its entry (nothing lingers in an index).
    assert await registry.prune() == 2
    assert await registry.prune() == 0
    assert await ids(registry) == ["alive"]
    # A pruned node comes back with its next heartbeat.
    await registry.heartbeat(node("dead-1"), ttl=LONG_TTL)
    assert await ids(registry) == ["alive", "dead-1"]


async def test_invalid_input_is_rejected(registry: Registry) -> None:
    with pytest.raises(ValueError):
        await registry.heartbeat(node("bad id with spaces"), ttl=LONG_TTL)
    with pytest.raises(ValueError):
        await registry.heartbeat(node("ok"), ttl=0)
    with pytest.raises(ValueError):
        await registry.heartbeat(node("ok"), ttl=-1)
    with pytest.raises(ValueError):
        await registry.deregister("a/b c")
    assert await registry.nodes() == []


# -- memory only: the exact boundary, with a fake clock ---------------------------------------------------
async def test_memory_expiry_boundary() -> None:
    now = [1000.0]
    reg = MemoryRegistry(clock=lambda: now[0])
    await reg.heartbeat(node("n"), ttl=3.0)
    assert (await reg.nodes())[0].updated_at == 1000.0
    now[0] = 1002.999
    assert await ids(reg) == ["n"]
    assert await reg.prune() == 0
    now[0] = 1003.0
    assert await ids(reg) == []
    assert await reg.prune() == 1


async def test_memory_readers_get_copies() -> None:
    reg = MemoryRegistry()
    sent = node("n", connections=1)
    await reg.heartbeat(sent, ttl=LONG_TTL)
    sent.load["connections"] = 99  # the node mutates its own struct between heartbeats
    (seen,) = await reg.nodes()
    seen.load["connections"] = 42
    assert (await reg.nodes())[0].load == {"connections": 1}


# -- Redis only ---------------------------------------------------------------------------------------------
async def test_redis_registry_survives_a_restart(redis_server) -> None:
    async with coredis.Redis.from_url(redis_server.url) as client:
        reg = RedisRegistry(client)
        await reg.heartbeat(node("core-1"), ttl=LONG_TTL)

        redis_server.kill()
        with pytest.raises(BrokerUnavailable):
            await reg.heartbeat(node("core-1"), ttl=LONG_TTL)
        with pytest.raises(BrokerUnavailable):
            await reg.nodes()
        with pytest.raises(BrokerUnavailable):
            await reg.prune()
        with pytest.raises(BrokerUnavailable):
            await reg.deregister("core-1")

        redis_server.start()  # same port, memory lost (docs/reliability.md #16)
        # The first command may still find a connection from before the restart; the caller's next
        # heartbeat is the retry, so allow exactly that.
        for attempt in range(2):
            try:
                await reg.heartbeat(node("core-1", connections=3), ttl=LONG_TTL)
                break
            except BrokerUnavailable:
                assert attempt == 0
        (seen,) = await reg.nodes()
        assert seen.id == "core-1" and seen.load == {"connections": 3}


async def test_open_registry_with_a_client_leaves_it_open(redis_url: str) -> None:
    async with coredis.Redis.from_url(redis_url) as client:
        async with open_registry(client) as reg:
            await reg.heartbeat(node("n"), ttl=LONG_TTL)
        assert await client.exists([keys.registry_node("n")]) == 1  # the client still works after the context


async def test_open_registry_redis_down_at_start() -> None:
    from tests.redis_server import free_port

    # Opening succeeds (a node must be able to start and back off); calls report the outage.
    async with open_registry(f"redis://127.0.0.1:{free_port()}/0") as reg:
        with pytest.raises(BrokerUnavailable):
            await reg.nodes()


bound_every_test(globals(), TEST_TIMEOUT)
