"""The broker contract: one suite, run against the memory broker and against a real Redis, one class per
capability protocol of ``playtotv.broker.base``.

A behaviour one implementation has and the other lacks is a bug (docs/architecture.md §4). Times are small:
virtual on the memory broker (the ``clock`` fixture), real on Redis (it runs on its own clock); every test is
bounded by ``fail_after``, and waits for a condition poll it under that bound instead of sleeping a guessed
duration.
"""

from __future__ import annotations

from typing import AsyncIterator, Awaitable, Callable

import pytest
import trio
import trio.testing

from playtotv.broker import (
    Broker,
    BrokerUnavailable,
    ChannelMessage,
    Channels,
    Counters,
    Leases,
    ReplicatedQueues,
    SortedSets,
    SubscriptionReset,
    WorkQueues,
    open_broker,
)

#: Small enough that redelivery tests take a fraction of a second, large enough for a loaded machine to
#: claim and ack well inside it.
VISIBILITY_TIMEOUT = 0.3
MAX_DELIVERIES = 3
#: Bound of every test: generous for a loaded 2-core machine, small enough to catch a hang quickly.
TEST_BOUND = 10.0
#: Period of polling loops that wait for a TTL to pass.
POLL_INTERVAL = 0.02

BROKER_OPTIONS = {"visibility_timeout": VISIBILITY_TIMEOUT, "max_deliveries": MAX_DELIVERIES}


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.slow)])
def broker_url(request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("redis_url") if request.param == "redis" else None


@pytest.fixture
def clock(broker_url: str | None) -> trio.testing.MockClock | None:
    """A test that waits for a TTL or a timeout takes this: the memory broker reads trio's clock, which then
    jumps whenever every task waits (no real I/O there); Redis keeps its own clock, so real time there."""
    return trio.testing.MockClock(autojump_threshold=0) if broker_url is None else None


@pytest.fixture
def make_broker(broker_url: str | None) -> Callable[..., object]:
    """``async with make_broker(history_size=...) as broker``: a broker with options for one test."""

    def make(**overrides: object):
        return open_broker(broker_url, **{**BROKER_OPTIONS, **overrides})

    return make


@pytest.fixture
async def broker(make_broker) -> AsyncIterator[Broker]:
    async with make_broker() as opened:
        yield opened


async def wait_until(condition: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``condition`` until it holds (the caller's fail_after bounds the wait)."""
    while not await condition():
        await trio.sleep(POLL_INTERVAL)

async def _append(results: list[object], call: Awaitable[object]) -> None:
    results.append(await call)


async def _epoch_changed(broker: Channels, channel: str, epoch: str) -> bool:
    return (await broker.position(channel))[0] != epoch


#: Channel TTL of the expiry tests: long enough that publishing every POLL_INTERVAL keeps a channel alive
#: on a loaded machine, short enough that waiting for an idle channel to expire takes a moment.
CHANNEL_TTL = 1.0


@pytest.mark.parametrize("capability", [Channels, WorkQueues, Counters, SortedSets, Leases],
                         ids=lambda capability: capability.__name__)
async def test_every_broker_declares_the_capabilities_of_this_suite(broker: Broker, capability: type) -> None:
    assert isinstance(broker, capability)


class TestChannels:
    """``base.Channels``: offsets, history, subscriptions, expiry."""

    async def test_offsets_are_gap_free_and_epoch_stable(self, broker: Channels) -> None:
        with trio.fail_after(TEST_BOUND):
            epoch_before, offset_before = await broker.position("news")
            published = [await broker.publish("news", f"m{i}".encode()) for i in range(5)]

            assert offset_before == 0
            assert [m.offset for m in published] == [1, 2, 3, 4, 5]
            assert {m.epoch for m in published} == {epoch_before}  # the epoch seen before publishing holds
            assert [m.data for m in published] == [b"m0", b"m1", b"m2", b"m3", b"m4"]
            assert await broker.position("news") == (epoch_before, 5)
            other = await broker.publish("other", b"x")
            assert other.offset == 1  # offsets are per channel


    async def test_publish_once_publishes_one_message_per_marker(self, broker: Channels) -> None:
        with trio.fail_after(TEST_BOUND):
            async with broker.subscribe(["once"]) as subscription:
                first = await broker.publish_once("once", b"opened", "interaction-1:opened", ttl=60)
                # Concurrent repeats (a dead leader's successor, a retried click) send nothing.
                repeats: list[object] = []
                async with trio.open_nursery() as nursery:
                    for _ in range(5):
                        nursery.start_soon(lambda: _append(repeats, broker.publish_once(
                            "once", b"opened again", "interaction-1:opened", ttl=60)))
                other = await broker.publish_once("once", b"other", "interaction-2:opened", ttl=60)
                received = [await subscription.__anext__() for _ in range(2)]

            assert first is not None and first.offset == 1 and first.data == b"opened"
            assert repeats == [None] * 5
            assert other is not None and other.offset == 2
            assert [m.data for m in received] == [b"opened", b"other"]
            history = await broker.history("once")
            assert [m.data for m in history.messages] == [b"opened", b"other"]  # nothing else was appended


    async def test_publish_once_marker_expires_and_bad_ttl_is_refused(self, broker: Channels, clock) -> None:
        with trio.fail_after(TEST_BOUND):
            assert await broker.publish_once("once", b"a", "m", ttl=0.05) is not None
            with pytest.raises(ValueError):
                await broker.publish_once("once", b"b", "m2", ttl=0)
            assert await broker.position("once") == ((await broker.position("once"))[0], 1)  # refused: nothing sent
            await trio.sleep(0.1)
            again = await broker.publish_once("once", b"c", "m", ttl=60)
            assert again is not None and again.offset == 2


    async def test_concurrent_publishers_stay_gap_free(self, broker: Channels) -> None:
        publishers, per_publisher = 5, 20
        offsets: list[int] = []
        epochs: set[str] = set()

        async def publish_many(publisher: int) -> None:
            for i in range(per_publisher):
                message = await broker.publish("busy", f"{publisher}:{i}".encode())
                offsets.append(message.offset)
                epochs.add(message.epoch)

        with trio.fail_after(TEST_BOUND):
            async with trio.open_nursery() as nursery:
                for publisher in range(publishers):
                    nursery.start_soon(publish_many, publisher)
            history = await broker.history("busy", since=0)

        total = publishers * per_publisher
        assert sorted(offsets) == list(range(1, total + 1))
        assert len(epochs) == 1
        assert [m.offset for m in history.messages] == list(range(1, total + 1))
        assert history.complete


    async def test_history_since_limit_and_complete(self, make_broker) -> None:
        with trio.fail_after(TEST_BOUND):
            async with make_broker(history_size=10) as broker:
                empty = await broker.history("h", since=0)
                assert (empty.offset, empty.messages, empty.complete) == (0, [], True)

                for i in range(1, 16):
                    await broker.publish("h", str(i).encode())

                kept = await broker.history("h", since=5)
                assert [m.offset for m in kept.messages] == list(range(6, 16))
                assert [m.data for m in kept.messages] == [str(i).encode() for i in range(6, 16)]
                assert kept.complete and kept.offset == 15

                trimmed = await broker.history("h", since=2)
                assert [m.offset for m in trimmed.messages] == list(range(6, 16))
                assert not trimmed.complete  # 3..5 are gone: the reader must reload, not skip them

                from_start = await broker.history("h", since=0)
                assert not from_start.complete and from_start.messages[0].offset == 6

                page = await broker.history("h", since=7, limit=3)
                assert [m.offset for m in page.messages] == [8, 9, 10]  # the oldest ones, to page forward
                assert page.complete

                up_to_date = await broker.history("h", since=15)
                assert (up_to_date.messages, up_to_date.complete) == ([], True)

                ahead = await broker.history("h", since=20)
                assert (ahead.messages, ahead.complete) == ([], False)

                assert {m.epoch for m in kept.messages} == {kept.epoch, ahead.epoch}

                with pytest.raises(ValueError):
                    await broker.history("h", since=-1)


    async def test_trim_history_keeps_the_newest(self, broker: Channels) -> None:
        with trio.fail_after(TEST_BOUND):
            for i in range(6):
                await broker.publish("t", str(i).encode())
            await broker.trim_history("t", keep=2)
            history = await broker.history("t", since=0)
            assert [m.offset for m in history.messages] == [5, 6]
            assert not history.complete
            assert await broker.position("t") == (history.epoch, 6)  # trimming never rewinds offsets


    async def test_subscription_receives_in_order_and_follows_add_remove(self, broker: Channels) -> None:
        with trio.fail_after(TEST_BOUND):
            async with broker.subscribe(["a"]) as subscription:
                published = [await broker.publish("a", f"a{i}".encode()) for i in range(10)]
                received = [await subscription.__anext__() for _ in range(10)]
                assert received == published  # same epoch, offset, sent_at and bytes as publish returned

                history = await broker.history("a", since=0)
                assert history.messages == received  # and as history reports

                await subscription.add(["b"])
                b1 = await broker.publish("b", b"b1")
                assert await subscription.__anext__() == b1

                await subscription.remove(["a"])
                await broker.publish("a", b"not for us")
                b2 = await broker.publish("b", b"b2")
                assert await subscription.__anext__() == b2


    async def test_subscription_may_start_empty(self, broker: Channels) -> None:
        with trio.fail_after(TEST_BOUND):
            async with broker.subscribe() as subscription:
                await broker.publish("late", b"before")
                await subscription.add(["late"])
                after = await broker.publish("late", b"after")
                assert await subscription.__anext__() == after


    async def test_subscriber_that_falls_behind_gets_a_reset(self, make_broker) -> None:
        """A subscriber that stops reading must not stall publishers: its backlog is dropped and it is told
        to recover from history."""
        buffer, flood = 4, 40
        with trio.fail_after(TEST_BOUND):
            async with make_broker(subscriber_buffer=buffer) as broker:
                async with broker.subscribe(["fast"]) as subscription:
                    for i in range(flood):  # completes although nobody reads
                        await broker.publish("fast", str(i).encode())
                    first = await subscription.__anext__()
                    assert first == SubscriptionReset(channels=["fast"])

                    resume = await broker.publish("fast", b"resume")
                    seen: list[ChannelMessage] = []
                    while not seen or seen[-1] != resume:
                        item = await subscription.__anext__()
                        assert isinstance(item, ChannelMessage)  # one reset, then messages again
                        seen.append(item)
                    offsets = [m.offset for m in seen]
                    assert offsets == sorted(offsets) and len(seen) < flood


    async def test_idle_channel_expires_and_starts_a_new_epoch(self, make_broker, clock) -> None:
        """Channel state nobody publishes to is forgotten: the next reader or publisher starts a new epoch,
        which a reader at the old position sees as a gap it cannot fill (never as a continuation)."""
        with trio.fail_after(TEST_BOUND):
            async with make_broker(channel_ttl=CHANNEL_TTL) as broker:
                async with broker.subscribe(["idle"]) as subscription:
                    published = [await broker.publish("idle", f"m{i}".encode()) for i in range(3)]
                    old_epoch = published[-1].epoch
                    await wait_until(lambda: _epoch_changed(broker, "idle", old_epoch))

                    epoch, offset = await broker.position("idle")
                    assert offset == 0
                    history = await broker.history("idle", since=3)
                    assert (history.epoch, history.messages, history.complete) == (epoch, [], False)
                    # The subscription outlives the channel's state: it receives what is published next.
                    for _ in range(3):
                        await subscription.__anext__()
                    fresh = await broker.publish("idle", b"again")
                    assert (fresh.epoch, fresh.offset) == (epoch, 1)
                    assert await subscription.__anext__() == fresh


    async def test_a_read_alone_leaves_nothing_for_good(self, make_broker, clock) -> None:
        """Reading a channel nobody publishes to (a made-up name) creates an epoch that expires too."""
        with trio.fail_after(TEST_BOUND):
            async with make_broker(channel_ttl=CHANNEL_TTL) as broker:
                first, _ = await broker.position("made-up")
                assert (await broker.position("made-up"))[0] == first  # stable while it lives
                await wait_until(lambda: _epoch_changed(broker, "made-up", first))


    async def test_publishing_keeps_a_channel_alive(self, make_broker, clock) -> None:
        with trio.fail_after(TEST_BOUND):
            async with make_broker(channel_ttl=CHANNEL_TTL) as broker:
                published = []
                until = trio.current_time() + 2.5 * CHANNEL_TTL
                while trio.current_time() < until:
                    published.append(await broker.publish("busy", b"x"))
                    await trio.sleep(POLL_INTERVAL)
                assert {m.epoch for m in published} == {published[0].epoch}
                assert [m.offset for m in published] == list(range(1, len(published) + 1))


    async def test_channel_ttl_must_be_positive(self, broker_url: str | None) -> None:
        refused = False
        try:
            async with open_broker(broker_url, channel_ttl=0):
                pass
        except* ValueError:  # the Redis broker raises it from inside its nursery
            refused = True
        assert refused


class TestWorkQueues:
    """``base.WorkQueues``: claims, acks, redelivery, dead letters, deduplication."""

    async def test_claim_and_ack(self, broker: WorkQueues) -> None:
        with trio.fail_after(TEST_BOUND):
            await broker.enqueue("jobs", [b"j1", b"j2", b"j3"])
            assert await broker.queue_stats("jobs") == {"pending": 0, "waiting": 3, "dead": 0}

            first = await broker.claim("jobs", "worker-1", count=2)
            assert [(i.data, i.deliveries) for i in first] == [(b"j1", 1), (b"j2", 1)]
            second = await broker.claim("jobs", "worker-2", count=2)
            assert [i.data for i in second] == [b"j3"]
            assert await broker.queue_stats("jobs") == {"pending": 3, "waiting": 0, "dead": 0}

            await broker.ack("jobs", [item.id for item in first + second])
            assert await broker.queue_stats("jobs") == {"pending": 0, "waiting": 0, "dead": 0}
            assert await broker.claim("jobs", "worker-1", count=5) == []


    async def test_large_batches_and_acks_out_of_order(self, broker: WorkQueues) -> None:
        with trio.fail_after(TEST_BOUND):
            await broker.enqueue("bulk", [b"%d" % i for i in range(2500)])
            first = await broker.claim("bulk", "worker-1", count=1200)
            second = await broker.claim("bulk", "worker-2", count=1200)
            assert [int(i.data) for i in first + second] == list(range(2400))
            # The later batch finishes first: the earlier one is still pending and counted as such.
            await broker.ack("bulk", [i.id for i in second])
            assert await broker.queue_stats("bulk") == {"pending": 1200, "waiting": 100, "dead": 0}
            await broker.ack("bulk", [i.id for i in first])
            assert await broker.queue_stats("bulk") == {"pending": 0, "waiting": 100, "dead": 0}
            rest = await broker.claim("bulk", "worker-1", count=1200)
            assert [int(i.data) for i in rest] == list(range(2400, 2500))
            await broker.ack("bulk", [i.id for i in rest] + [first[0].id])  # acking twice is harmless
            assert await broker.queue_stats("bulk") == {"pending": 0, "waiting": 0, "dead": 0}


    async def test_claim_waits_for_an_arrival(self, broker: WorkQueues) -> None:
        claimed = []

        async def claimer() -> None:
            claimed.extend(await broker.claim("slow", "worker", count=1, wait=5.0))

        with trio.fail_after(TEST_BOUND):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(claimer)
                await trio.testing.wait_all_tasks_blocked()  # the claim is (most likely) waiting now
                await broker.enqueue("slow", [b"late"])
            assert [i.data for i in claimed] == [b"late"]


    async def test_unacked_item_is_redelivered_after_visibility_timeout(self, broker: WorkQueues, clock) -> None:
        with trio.fail_after(TEST_BOUND):
            await broker.enqueue("jobs", [b"job"])
            [first] = await broker.claim("jobs", "doomed-worker", count=1)
            assert await broker.claim("jobs", "other-worker", count=1) == []  # hidden while claimed

            [again] = await broker.claim("jobs", "other-worker", count=1, wait=5.0)
            assert (again.id, again.data, again.deliveries) == (first.id, b"job", 2)

            await broker.ack("jobs", [again.id])
            assert await broker.queue_stats("jobs") == {"pending": 0, "waiting": 0, "dead": 0}


    async def test_poison_item_is_dead_lettered_after_max_deliveries(self, broker: WorkQueues, clock) -> None:
        with trio.fail_after(TEST_BOUND):
            await broker.enqueue("jobs", [b"poison", b"fine"])
            [poison, fine] = await broker.claim("jobs", "worker", count=2)
            await broker.ack("jobs", [fine.id])
            deliveries = [poison.deliveries]
            while len(deliveries) < MAX_DELIVERIES:
                [item] = await broker.claim("jobs", "worker", count=1, wait=5.0)
                deliveries.append(item.deliveries)
            assert deliveries == [1, 2, 3]

            # The next time it becomes visible it goes to the dead letters instead of to a consumer.
            async def dead_lettered() -> bool:
                assert await broker.claim("jobs", "worker", count=1) == []
                return (await broker.queue_stats("jobs"))["dead"] == 1

            await wait_until(dead_lettered)
            [letter] = await broker.dead_letters("jobs")
            assert (letter.id, letter.data, letter.deliveries) == (poison.id, b"poison", MAX_DELIVERIES)
            assert letter.failed_at > 0
            assert await broker.queue_stats("jobs") == {"pending": 0, "waiting": 0, "dead": 1}


    async def test_enqueue_unique_dedupes_within_and_across_batches(self, broker: WorkQueues) -> None:
        with trio.fail_after(TEST_BOUND):
            first = await broker.enqueue_unique("answers", [("u1", b"a"), ("u1", b"b"), ("u2", b"c")], 60)
            second = await broker.enqueue_unique("answers", [("u1", b"d"), ("u3", b"e")], 60)
            assert (first, second) == ([True, False, True], [False, True])

            items = await broker.claim("answers", "worker", count=10)
            assert [i.data for i in items] == [b"a", b"c", b"e"]
            other_queue = await broker.enqueue_unique("other", [("u1", b"x")], 60)
            assert other_queue == [True]  # dedupe keys are per queue


    async def test_enqueue_unique_accepts_a_key_again_after_its_ttl(self, broker: WorkQueues, clock) -> None:
        with trio.fail_after(TEST_BOUND):
            assert await broker.enqueue_unique("answers", [("k", b"1")], 0.2) == [True]
            assert await broker.enqueue_unique("answers", [("k", b"2")], 0.2) == [False]

            async def accepted() -> bool:
                return (await broker.enqueue_unique("answers", [("k", b"3")], 0.2)) == [True]

            await wait_until(accepted)
            assert [i.data for i in await broker.claim("answers", "w", count=10)] == [b"1", b"3"]


    async def test_seen_unique_tells_whether_a_key_was_accepted_within_its_ttl(self, broker: WorkQueues, clock) -> None:
        with trio.fail_after(TEST_BOUND):
            assert not await broker.seen_unique("answers", "i1:u1")
            await broker.enqueue_unique("answers", [("i1:u1", b"a")], 0.3)
            assert await broker.seen_unique("answers", "i1:u1")
            assert not await broker.seen_unique("answers", "i1:u2")  # per key
            assert not await broker.seen_unique("other", "i1:u1")  # per queue
            await broker.claim("answers", "w", count=1)  # claimed or not, the key stays until its TTL

            async def forgotten() -> bool:
                return not await broker.seen_unique("answers", "i1:u1")

            await wait_until(forgotten)


class TestCounters:
    """``base.Counters``: strings, counters, hashes, expiry."""

    async def test_counters_and_strings(self, broker: Counters) -> None:
        with trio.fail_after(TEST_BOUND):
            assert await broker.incr("views") == 1
            assert await broker.incr("views", 5) == 6
            assert await broker.get("views") == b"6"
            assert await broker.get("missing") is None

            assert await broker.set("flag", b"on", only_new=True)
            assert not await broker.set("flag", b"off", only_new=True)
            assert await broker.get("flag") == b"on"
            assert await broker.exists("flag")
            await broker.delete(["flag", "views", "never-there"])
            assert not await broker.exists("flag") and await broker.get("views") is None


    async def test_ttl_and_expire(self, broker: Counters, clock) -> None:
        with trio.fail_after(TEST_BOUND):
            await broker.set("short", b"x", ttl=0.1)
            await broker.set("kept", b"y")
            await broker.expire("kept", 0.1)
            assert await broker.exists("short")

            async def both_gone() -> bool:
                return not await broker.exists("short") and await broker.get("kept") is None

            await wait_until(both_gone)


    async def test_hashes(self, broker: Counters) -> None:
        with trio.fail_after(TEST_BOUND):
            assert await broker.hgetall("votes") == {}
            await broker.hincrby("votes", {"yes": 2, "no": 1})
            await broker.hincrby("votes", {"yes": 3, "maybe": 1})
            assert await broker.hgetall("votes") == {"yes": 5, "no": 1, "maybe": 1}


class TestSortedSets:
    """``base.SortedSets``: scores, ranks and their order."""

    async def test_sorted_sets(self, broker: SortedSets) -> None:
        with trio.fail_after(TEST_BOUND):
            await broker.zadd("board", {"alice": 10, "bob": 10, "carol": 30, "dave": 5})
            await broker.zincrby("board", {"dave": 10, "erin": 1})

            # Ties are broken by member name descending in every implementation (Redis ZREVRANGE order).
            assert await broker.ztop("board", 0, -1) == [
                ("carol", 30.0), ("dave", 15.0), ("bob", 10.0), ("alice", 10.0), ("erin", 1.0)
            ]
            assert await broker.ztop("board", 1, 2) == [("dave", 15.0), ("bob", 10.0)]
            assert await broker.ztop("board", -2, -1) == [("alice", 10.0), ("erin", 1.0)]
            assert await broker.ztop("board", 10, 20) == []
            assert await broker.zrank_desc("board", "alice") == (3, 10.0)
            assert await broker.zrank_desc("board", "carol") == (0, 30.0)
            assert await broker.zrank_desc("board", "nobody") is None
            assert await broker.zscores("board", ["bob", "nobody", "erin"]) == [10.0, None, 1.0]
            assert await broker.zcard("board") == 5
            assert await broker.zcard("empty") == 0


    async def test_zadd_many_updates_several_sets_in_one_call(self, broker: Broker) -> None:
        # Scores keep full precision (answer timestamps), members any text, and sets longer than one of the
        # Redis script's chunks (1000 arguments) arrive whole.
        stamp = 1764187000.123456
        many = {f"user-{i}": stamp + i / 1000 for i in range(1500)}
        with trio.fail_after(TEST_BOUND):
            await broker.zadd("choice-a", {"zoë": 1.0})
            await broker.zadd_many({"choice-a": {"ünïcode ✓": stamp, "zoë": 2.5}, "choice-b": many, "untouched": {}})
            assert await broker.zscores("choice-a", ["ünïcode ✓", "zoë"]) == [stamp, 2.5]
            assert await broker.zcard("choice-b") == 1500
            assert await broker.zscores("choice-b", ["user-0", "user-1499"]) == [stamp, stamp + 1.499]
            assert not await broker.exists("untouched")
            await broker.zadd_many({})


class TestLeases:
    """``base.Leases``: fencing tokens across changes of holder."""

    async def test_lease_tokens_fence_changes_of_holder(self, broker: Leases, clock) -> None:
        with trio.fail_after(TEST_BOUND):
            assert await broker.lease_token("leader") == 0
            first = await broker.acquire_lease("leader", "node-a", ttl=5)
            assert first is not None and first > 0
            assert await broker.acquire_lease("leader", "node-a", ttl=5) == first  # renewal keeps the token
            assert await broker.acquire_lease("leader", "node-b", ttl=5) is None

            await broker.release_lease("leader", "node-b")  # not the holder: no effect
            assert await broker.acquire_lease("leader", "node-b", ttl=5) is None

            await broker.release_lease("leader", "node-a")
            second = await broker.acquire_lease("leader", "node-b", ttl=0.2)
            assert second is not None and second > first
            assert await broker.lease_token("leader") == second

            async def taken_over() -> bool:
                return await broker.acquire_lease("leader", "node-c", ttl=5) is not None

            await wait_until(taken_over)  # node-b stopped renewing: its lease expires
            third = await broker.lease_token("leader")
            assert third > second
            assert await broker.acquire_lease("leader", "node-b", ttl=5) is None


class TestReplicatedQueues:
    """``base.ReplicatedQueues``, an optional capability: only a broker with replicas declares it. Waiting
    for a replica that exists is covered with a real replica in ``test_broker_redis_faults``."""

    async def test_only_a_broker_with_replicas_declares_it(self, broker: Broker, broker_url: str | None) -> None:
        assert isinstance(broker, ReplicatedQueues) == (broker_url is not None)

    async def test_a_batch_no_replica_confirmed_fails_but_is_enqueued(self, broker: Broker) -> None:
        if not isinstance(broker, ReplicatedQueues):
            pytest.skip("this broker has no replicas")
        with trio.fail_after(TEST_BOUND):
            with pytest.raises(BrokerUnavailable):  # a lone server: nothing confirms within the timeout
                await broker.enqueue_unique_replicated("answers", [("u1", b"a")], 60, 1, 0.1)
            # Enqueued anyway: its retry is a duplicate, as for any retried answer.
            assert await broker.enqueue_unique("answers", [("u1", b"a")], 60) == [False]
            with pytest.raises(ValueError):
                await broker.enqueue_unique_replicated("answers", [("u2", b"b")], 60, 0, 0.1)
            assert [item.data for item in await broker.claim("answers", "w", count=10)] == [b"a"]


# Other roles test their timed logic with MockClock on the memory broker; that only works because its
# visibility timeouts, TTLs and leases follow trio.current_time(). (Redis keeps its own time.)
class TestMemoryBrokerClock:
    """The memory broker alone: its times follow trio's clock."""

    async def test_memory_broker_times_follow_the_trio_clock(self, autojump_clock: trio.testing.MockClock) -> None:
        broker = open_broker(None, visibility_timeout=30.0)
        with trio.fail_after(120):  # virtual seconds: the clock jumps whenever every task waits
            async with broker as memory:
                await memory.enqueue("jobs", [b"job"])
                [first] = await memory.claim("jobs", "w", count=1)
                claimed_at = trio.current_time()
                [again] = await memory.claim("jobs", "w", count=1, wait=60)
                assert again.id == first.id and again.deliveries == 2
                assert trio.current_time() - claimed_at == pytest.approx(30.0)

                assert await memory.acquire_lease("leader", "a", ttl=10) is not None
                await memory.set("session", b"s", ttl=5)
                await trio.sleep(10.5)
                assert await memory.get("session") is None
                assert await memory.acquire_lease("leader", "b", ttl=10) is not None


    async def test_memory_broker_forgets_idle_channels(self, autojump_clock: trio.testing.MockClock) -> None:
        """Made-up channels read once cost memory only until their TTL: the next channel operation after it
        forgets them, while a channel someone publishes to stays, history and all."""
        with trio.fail_after(10 * 3600):  # virtual seconds
            async with open_broker(None, channel_ttl=3600) as memory:
                for i in range(2000):
                    await memory.position(f"episode:made-up-{i}")
                kept = await memory.publish("episode:real", b"x")
                for _ in range(4):
                    await trio.sleep(1200)
                    kept = await memory.publish("episode:real", b"x")
                assert len(memory._channels) == 1  # white box: the memory it holds
                assert await memory.position("episode:real") == (kept.epoch, 5)
