"""The Redis broker under Redis failures (docs/reliability.md #7, #16, #19), against a private redis-server
that each test kills and restarts (persistence off: a restart loses everything)."""

from __future__ import annotations

import coredis
import pytest
import trio

from playtotv.broker import BrokerUnavailable, ChannelMessage, RedisBroker, SubscriptionReset
from tests.redis_server import RedisServer

#: Every test starts (and stops) a redis-server of its own.
pytestmark = pytest.mark.slow

#: Generous for a loaded machine: a reconnect takes the back-off (<= 2 s) plus a restart.
TEST_BOUND = 20.0


async def test_publish_and_ping_fail_while_redis_is_down_and_recover_with_a_new_epoch(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(TEST_BOUND):
        async with RedisBroker.open(redis_server.url) as broker:
            await broker.publish("news", b"1")
            before = await broker.publish("news", b"2")

            redis_server.kill()
            with pytest.raises(BrokerUnavailable):
                await broker.ping()
            with pytest.raises(BrokerUnavailable):
                await broker.publish("news", b"lost")
            with pytest.raises(BrokerUnavailable):
                await broker.history("news", since=0)

            redis_server.start()
            await broker.ping()  # the same broker object recovers: no restart of the process
            after = await broker.publish("news", b"3")
            assert after.offset == 1 and after.epoch != before.epoch
            history = await broker.history("news", since=before.offset)
            # A reader at the old position sees it is ahead of the new epoch's stream: cannot recover.
            assert history.epoch == after.epoch and not history.complete


async def test_subscription_yields_a_reset_after_a_restart_then_receives_again(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(TEST_BOUND):
        async with RedisBroker.open(redis_server.url) as broker:
            async with broker.subscribe(["news"]) as subscription:
                old = await broker.publish("news", b"old")
                assert await subscription.__anext__() == old

                redis_server.restart()
                assert await subscription.__anext__() == SubscriptionReset(channels=["news"])

                new = await broker.publish("news", b"new")
                assert await subscription.__anext__() == new
                assert new.epoch != old.epoch and new.offset == 1


async def test_channels_added_during_an_outage_are_subscribed_when_redis_is_back(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(TEST_BOUND):
        async with RedisBroker.open(redis_server.url) as broker:
            async with broker.subscribe(["a"]) as subscription:
                redis_server.kill()
                with pytest.raises(BrokerUnavailable):
                    await subscription.add(["b"])

                redis_server.start()
                assert await subscription.__anext__() == SubscriptionReset(channels=["a", "b"])
                message = await broker.publish("b", b"hello")
                assert await subscription.__anext__() == message


async def test_broker_opens_while_redis_is_down_and_works_once_it_is_up() -> None:
    server = RedisServer()  # not started yet: a node started before its Redis (docs/reliability.md #19)
    try:
        with trio.fail_after(TEST_BOUND):
            async with RedisBroker.open(server.url) as broker:
                with pytest.raises(BrokerUnavailable):
                    await broker.ping()
                with pytest.raises(BrokerUnavailable):
                    async with broker.subscribe(["x"]):
                        pass
                server.start()
                await broker.ping()
                message = await broker.publish("x", b"up")
                assert isinstance(message, ChannelMessage) and message.offset == 1
    finally:
        server.close()


async def test_queues_work_again_after_a_restart(redis_server: RedisServer) -> None:
    with trio.fail_after(TEST_BOUND):
        async with RedisBroker.open(redis_server.url, visibility_timeout=0.3) as broker:
            await broker.enqueue("jobs", [b"before"])
            [claimed] = await broker.claim("jobs", "worker", count=1)

            redis_server.restart()  # the stream, its consumer group and the claim are gone
            await broker.ack("jobs", [claimed.id])  # acking what no longer exists is harmless
            await broker.enqueue("jobs", [b"after"])
            [item] = await broker.claim("jobs", "worker", count=1, wait=2.0)
            assert (item.data, item.deliveries) == (b"after", 1)
            assert await broker.queue_stats("jobs") == {"pending": 1, "waiting": 0, "dead": 0}


async def test_cancelled_waiting_claims_do_not_exhaust_connections(redis_server: RedisServer) -> None:
    """A waiting claim blocks in Redis; cancelling it must not cost a connection for good. (Through
    coredis's pool it did: every cancelled blocking command lost a pool slot, and once the 64 were gone
    every call waited forever.)"""
    cancelled_claims = 80  # more than coredis's default pool size
    with trio.fail_after(TEST_BOUND):
        async with RedisBroker.open(redis_server.url) as broker:
            for _ in range(cancelled_claims):
                with trio.move_on_after(0.01):
                    await broker.claim("idle", "worker", count=1, wait=5.0)
            await broker.ping()
            await broker.enqueue("idle", [b"still works"])
            [item] = await broker.claim("idle", "worker", count=1, wait=1.0)
            assert item.data == b"still works"


async def test_replicated_enqueue_waits_for_a_replica(redis_server: RedisServer) -> None:
    """``enqueue_unique_replicated`` backs ``answers.durability = "replicated"``: the answer is acknowledged
    only once a replica holds it (it survives a failover). Without one it fails: the contract suite
    (``TestReplicatedQueues``)."""
    with trio.fail_after(TEST_BOUND):
        async with coredis.Redis.from_url(redis_server.url) as admin:
            # Redis delays a replica's first sync by 5 s by default, to batch replicas that come together.
            await admin.config_set({"repl-diskless-sync-delay": 0})
        async with RedisBroker.open(redis_server.url) as broker:
            await broker.enqueue_unique("answers", [("u1", b"a")], 60)
            replica = RedisServer(extra_args=["--replicaof", "127.0.0.1", str(redis_server.port)]).start()
            try:
                async with RedisBroker.open(replica.url) as on_replica:
                    while (await on_replica.queue_stats("answers"))["waiting"] < 1:  # the initial sync
                        await trio.sleep(0.02)
                    accepted = await broker.enqueue_unique_replicated(
                        "answers", [("u2", b"b"), ("u2", b"c")], 60, replicas=1, replica_timeout=5.0
                    )
                    assert accepted == [True, False]
                    # Confirmed means on the replica already, without waiting any further.
                    assert (await on_replica.queue_stats("answers"))["waiting"] == 2
            finally:
                replica.close()


async def noscript_replies(url: str) -> int:
    client = coredis.Redis.from_url(url)
    async with client:
        stats = await client.info("errorstats")
    return int(stats.get("errorstat_NOSCRIPT", {}).get("count", 0))


async def test_scripts_are_loaded_before_their_first_use(redis_server: RedisServer) -> None:
    """No EVALSHA of a script Redis does not know (NOSCRIPT, then a retry that coredis logs) in normal
    operation; after a restart, which forgets every script, calls still succeed."""
    from playtotv.registry import open_registry

    with trio.fail_after(TEST_BOUND):
        async with RedisBroker.open(redis_server.url) as broker, open_registry(redis_server.url) as registry:
            await broker.publish("news", b"1")
            await broker.publish_once("news", b"2", "marker", ttl=10)
            await broker.history("news", since=0)
            await broker.enqueue("jobs", [b"a"])
            await broker.enqueue_unique("jobs", [("k", b"b")], dedupe_ttl=10)
            claimed = await broker.claim("jobs", "worker", count=2)
            await broker.ack("jobs", [item.id for item in claimed])
            await broker.queue_stats("jobs")
            await broker.hincrby("h", {"x": 1})
            await broker.zincrby("z", {"m": 1.0})
            await broker.zadd_many({"z2": {"m": 1.0}})
            await broker.zrank_desc("z", "m")
            assert await broker.acquire_lease("lead", "me", ttl=5) is not None
            await broker.release_lease("lead", "me")
            await registry.nodes()
            await registry.prune()
            assert await noscript_replies(redis_server.url) == 0

            redis_server.restart()
            await broker.ping()
            assert (await broker.publish("news", b"3")).offset == 1
            await registry.nodes()


async def test_every_channel_key_expires(redis_url: str) -> None:
    """Reads of made-up channels and publishes alike leave only keys with a TTL (at most the channel TTL),
    and a publish renews it: Redis never accumulates state of channels nobody uses."""
    channel_ttl = 3600.0
    with trio.fail_after(TEST_BOUND):
        async with RedisBroker.open(redis_url, channel_ttl=channel_ttl) as broker:
            for i in range(50):
                await broker.position(f"user:made-up-{i}")
                await broker.history(f"episode:made-up-{i}", since=3)
            await broker.publish("episode:real", b"x")
            await broker.publish_once("episode:real", b"y", "marker", ttl=60)
        async with coredis.Redis.from_url(redis_url) as admin:
            channel_keys = [key async for key in admin.scan_iter(match="ptv:*")
                            if not key.startswith((b"ptv:pubonce:",))]
            assert len(channel_keys) >= 2 * 100 + 3  # epoch and offset per channel read, + the history
            ttls = {key: await admin.pttl(key) for key in channel_keys}
            assert all(0 < ttl <= channel_ttl * 1000 for ttl in ttls.values()), {
                k: v for k, v in ttls.items() if not 0 < v <= channel_ttl * 1000}
