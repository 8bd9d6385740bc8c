"""Redis Sentinel (docs/reliability.md #17): ``redis+sentinel://`` URLs, and the broker and registry following
the primary through a failover, against a real primary, replica and three Sentinels on loopback.

What each test proves is in its docstring. The end-to-end version (a running cluster whose primary is
SIGKILLed) is ``test_kill_redis.py``.
"""

from __future__ import annotations

import pytest
import trio

from playtotv import keys, redis_client
from playtotv.broker import BrokerUnavailable, ChannelMessage, SubscriptionReset, open_broker
from playtotv.devtools.localredis import RedisTopology, query
from playtotv.redis_client import SentinelUrl, parse_sentinel_url
from playtotv.registry import open_registry
from playtotv.registry.base import NodeInfo
from playtotv.settings import ConfigError, check_deployment, load_settings

TEST_BOUND = 60.0


def test_sentinel_urls_are_parsed() -> None:
    assert parse_sentinel_url("redis+sentinel://h1:26379,h2:26380/mymaster/2") == SentinelUrl(
        (("h1", 26379), ("h2", 26380)), "mymaster", 2)
    assert parse_sentinel_url("redis+sentinel://:s%40cret@h1,[::1]:1/svc") == SentinelUrl(
        (("h1", 26379), ("::1", 1)), "svc", 0, None, "s@cret")
    for bad, problem in [
        ("redis+sentinel:///mymaster/0", "no Sentinel"),
        ("redis+sentinel://h1:26379", "SERVICE_NAME"),
        ("redis+sentinel://h1:26379/m/x", "not a number"),
        ("redis+sentinel://h1:port/m", "port is not a number"),
    ]:
        with pytest.raises(ValueError, match=problem):
            parse_sentinel_url(bad)


def test_a_bad_redis_url_is_a_configuration_error() -> None:
    env = {"PLAYTOTV_AUTH_SECRET": "a-secret-of-enough-bytes"}
    for url, problem in [("http://h:1", "expected one of"), ("redis+sentinel://h1/", "SERVICE_NAME")]:
        settings = load_settings(None, environ={**env, "PLAYTOTV_REDIS_URL": url})
        with pytest.raises(ConfigError, match=f"redis.url: .*{problem}"):
            check_deployment(settings, ["push"])
    check_deployment(load_settings(None, environ={**env, "PLAYTOTV_REDIS_URL": "redis+sentinel://h/m/0"}), ["push"])


def node(node_id: str) -> NodeInfo:
    return NodeInfo(id=node_id, roles=["core"], endpoints={}, load={}, qos={}, started_at=0.0)


async def offset_on(port: int, channel: str) -> int:
    value = await query(port, "GET", keys.channel_offset(channel))
    return int(value) if isinstance(value, bytes) else 0


@pytest.mark.slow  # a Redis primary, replica and three Sentinels
async def test_broker_and_registry_follow_a_failover_while_the_old_primary_stays_up() -> None:
    """A Sentinel failover whose old primary stays up (and, for a while, keeps accepting writes): the
    watcher moves every connection to the new primary, the subscription reconnects and says so with a
    ``SubscriptionReset``, the next message starts a new epoch (what the old primary may have published
    meanwhile can never be mistaken for a continuation), and nothing more is written to the old one."""
    topology = await RedisTopology().start()
    try:
        with trio.fail_after(TEST_BOUND):
            async with open_broker(topology.url) as broker, open_registry(topology.url) as registry:
                old = await topology.primary()
                received: list[object] = []
                async with broker.subscribe(["news"]) as subscription, trio.open_nursery() as nursery:
                    async def read() -> None:
                        async for item in subscription:
                            received.append(item)

                    nursery.start_soon(read)
                    before = await broker.publish("news", b"before")
                    await registry.heartbeat(node("n1"), ttl=30)

                    assert await query(topology.sentinels[0].port, "SENTINEL", "failover", "mymaster") == b"OK"
                    report = await topology.wait_failover(old.address)
                    with trio.fail_after(5 * redis_client.PRIMARY_CHECK_INTERVAL):
                        while broker.endpoint.failovers_seen == 0:  # the watcher has not looked yet
                            await trio.sleep(0.02)
                    after = await publish_until_accepted(broker, "news", b"after")
                    await registry.heartbeat(node("n2"), ttl=30)

                    assert after.epoch != before.epoch and after.offset == 1
                    new = topology.process_at(report.new_primary)
                    assert await offset_on(new.port, "news") == 1
                    written_to_old = await offset_on(old.port, "news")
                    for _ in range(3):
                        await broker.publish("news", b"more")
                    assert await offset_on(old.port, "news") == written_to_old, "wrote to the demoted primary"
                    assert {n.id for n in await registry.nodes()} >= {"n2"}
                    with trio.fail_after(10):
                        while not any(isinstance(i, ChannelMessage) and i.data == b"more" for i in received):
                            await trio.sleep(0.02)
                    nursery.cancel_scope.cancel()
                assert any(isinstance(item, SubscriptionReset) for item in received)
                assert broker.endpoint.failovers_seen >= 1
    finally:
        await topology.close()


@pytest.mark.slow  # a Redis primary, replica and three Sentinels
async def test_a_readonly_reply_sends_the_next_call_to_the_new_primary(monkeypatch) -> None:
    """Without the watcher's help (its interval made huge), the first write that meets the demoted
    primary's READONLY reply drops the connections and is retried once on the primary the Sentinels name
    now: the caller does not even see an error, because a refused write was not applied."""
    monkeypatch.setattr(redis_client, "PRIMARY_CHECK_INTERVAL", 3600.0)
    topology = await RedisTopology().start()
    try:
        with trio.fail_after(TEST_BOUND):
            async with open_broker(topology.url) as broker:
                old = await topology.primary()
                first = await broker.publish("news", b"1")
                assert await query(topology.sentinels[0].port, "SENTINEL", "failover", "mymaster") == b"OK"
                report = await topology.wait_failover(old.address)
                # What Sentinel does to the old primary some seconds later, done at once.
                new_host, new_port = report.new_primary.split(":")
                assert await query(old.port, "REPLICAOF", new_host, new_port) == b"OK"

                moved = await broker.publish("news", b"2")
                assert moved.epoch != first.epoch
                assert broker.endpoint.failovers_seen == 1
                assert await offset_on(topology.process_at(report.new_primary).port, "news") == 1
    finally:
        await topology.close()


async def publish_until_accepted(broker, channel: str, data: bytes) -> ChannelMessage:
    """Publishing during a failover may fail (BrokerUnavailable) until the new primary is in use."""
    while True:
        try:
            return await broker.publish(channel, data)
        except BrokerUnavailable:
            await trio.sleep(0.05)
