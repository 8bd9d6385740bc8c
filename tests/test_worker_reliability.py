"""The worker under faults (docs/reliability.md #12, #13) and its throttled statistics, in process.

A consumer that "dies" after processing part of a batch is simulated by claiming items and never
acknowledging them; the broker hands them to the real worker after the visibility timeout. The same
scenario with a real SIGKILLed process is in ``test_core_cluster.py``.
"""

from __future__ import annotations

import time

import httpx
import pytest
import trio
import trio.testing

from playtotv import keys
from playtotv.broker import QueueItem
from playtotv.gameplay import results, schema
from playtotv.gameplay.aggregation import aggregate
from playtotv.gameplay.answers import AnswerItem, encode_item
from playtotv.gameplay.service import Gameplay
from playtotv.protocol.push import StatsUpdated, message_data_decoder
from playtotv.roles import worker
from playtotv.roles.worker.consumer import Consumer
from tests.inprocess import start_node
from tests.playkit import DIRECTOR_KEY, Play, quiz, running, wait_until

TEST_BOUND = 30.0
FAST_REDELIVERY = {"visibility_timeout": 0.3, "max_deliveries": 3}


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.slow)])
def backend(request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("redis_url") if request.param == "redis" else None


async def answer(play: Play, interaction_id: str, user_id: str, choice: object) -> None:
    r = await play.http.post(f"/v1/interactions/{interaction_id}/answers", json={"choice": choice},
                             headers=play.viewer(user_id))
    assert r.status_code == 202, r.text


@pytest.mark.slow  # a node in process waiting out real visibility timeouts and intervals
async def test_items_of_a_dead_consumer_are_redelivered_and_totals_stay_exact(backend: str | None) -> None:
    with trio.fail_after(TEST_BOUND):
        async with running(backend, roles=("core",), broker_options=FAST_REDELIVERY) as play:
            episode_id = await play.live_episode()
            interaction_id = await play.interaction(episode_id, quiz("a"))
            for i in range(40):
                await answer(play, interaction_id, f"u{i}", "abc"[i % 3])
            gameplay = Gameplay.of(play.ctx)
            claimed = await play.ctx.broker.claim(keys.ANSWER_QUEUE, "doomed-worker", 40)
            assert len(claimed) == 40
            # It counted and stored half of its batch, then died before acknowledging anything.
            await aggregate(gameplay, claimed[:20], time.time())
            async with trio.open_nursery() as nursery:
                await nursery.start(worker.run, play.ctx)
                await play.drained()
                doc = await gameplay.interaction(interaction_id, fresh=True)
                assert await results.counts(gameplay, doc) == {"a": 14, "b": 13, "c": 13}
                assert await play.ctx.store.count(schema.ANSWERS, {"interaction_id": interaction_id}) == 40
                assert (await play.ctx.broker.queue_stats(keys.ANSWER_QUEUE))["dead"] == 0
                play.ctx.draining.set()


@pytest.mark.slow  # a node in process waiting out real visibility timeouts and intervals
async def test_poison_items_are_retried_a_bounded_number_of_times_then_recorded(backend: str | None) -> None:
    with trio.fail_after(TEST_BOUND):
        async with running(backend, broker_options=FAST_REDELIVERY) as play:
            episode_id = await play.live_episode()
            interaction_id = await play.interaction(episode_id, quiz("a"))
            garbage = b"\x93not-an-answer"
            unknown = encode_item(AnswerItem("i_gone", episode_id, "u_x", "a", time.time()))
            await play.ctx.broker.enqueue(keys.ANSWER_QUEUE, [garbage, unknown])
            for i in range(10):  # the queue keeps moving around the poison
                await answer(play, interaction_id, f"u{i}", "a")

            async def dead_lettered() -> bool:
                return (await play.ctx.broker.queue_stats(keys.ANSWER_QUEUE))["dead"] == 2

            await wait_until(dead_lettered)
            letters = await play.ctx.broker.dead_letters(keys.ANSWER_QUEUE)
            assert {letter.data for letter in letters} == {garbage, unknown}
            assert all(letter.deliveries == FAST_REDELIVERY["max_deliveries"] for letter in letters)
            results_body = (await play.http.get(f"/v1/interactions/{interaction_id}/results",
                                                headers=play.director)).json()
            assert results_body["total"] == 10


@pytest.mark.slow  # a node in process waiting out real visibility timeouts and intervals
async def test_one_failing_item_does_not_fail_its_batch() -> None:
    """A handler bug on one item: the batch is split, the others are acknowledged once, the bad one is
    redelivered until it is dead-lettered."""
    with trio.fail_after(TEST_BOUND):
        async with running(None, roles=(), broker_options=FAST_REDELIVERY, closer=False) as play:
            seen: list[bytes] = []

            async def handler(items: list[QueueItem]) -> list[str]:
                if any(item.data == b"bad" for item in items):
                    raise ValueError("cannot handle this one")
                seen.extend(item.data for item in items)
                return [item.id for item in items]

            await play.ctx.broker.enqueue("q", [b"one", b"bad", b"two", b"three"])
            consumer = Consumer(play.ctx, "q", handler, batch_size=10)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consumer.run)

                async def settled() -> bool:
                    return (await play.ctx.broker.queue_stats("q")) == {"pending": 0, "waiting": 0, "dead": 1}

                await wait_until(settled)
                play.ctx.draining.set()
            assert sorted(seen) == [b"one", b"three", b"two"]  # each exactly once


async def test_draining_worker_stops_claiming() -> None:
    with trio.fail_after(TEST_BOUND):
        async with running(None, roles=("core",), closer=False) as play:
            episode_id = await play.live_episode()
            interaction_id = await play.interaction(episode_id, quiz("a"))
            async with trio.open_nursery() as nursery:
                await nursery.start(worker.run, play.ctx)
                await answer(play, interaction_id, "u1", "a")
                await play.drained()
                play.ctx.draining.set()
            # the worker returned; what arrives now stays in the queue for another worker
            await play.ctx.broker.enqueue(keys.ANSWER_QUEUE, [b"later"])
            await trio.testing.wait_all_tasks_blocked()  # every task of this process had its chance to claim
            assert (await play.ctx.broker.queue_stats(keys.ANSWER_QUEUE))["waiting"] == 1


@pytest.mark.slow  # a node in process waiting out real visibility timeouts and intervals
async def test_stats_updates_are_throttled_and_end_with_the_final_count(backend: str | None) -> None:
    with trio.fail_after(TEST_BOUND):
        async with running(backend, worker_stats_interval="0.2") as play:
            episode_id = await play.live_episode()
            interaction_id = await play.interaction(episode_id, quiz("a"))
            updates: list[tuple[float, StatsUpdated]] = []

            async def listen(task_status=trio.TASK_STATUS_IGNORED) -> None:
                async with play.ctx.broker.subscribe([keys.episode_channel(episode_id)]) as sub:
                    task_status.started()
                    async for message in sub:
                        data = message_data_decoder.decode(message.data)
                        if isinstance(data, StatsUpdated):
                            updates.append((trio.current_time(), data))

            async with trio.open_nursery() as nursery:
                await nursery.start(listen)
                for i in range(60):
                    await answer(play, interaction_id, f"u{i}", "ab"[i % 2])
                    await trio.sleep(0.01)

                async def final_seen() -> bool:
                    return bool(updates) and updates[-1][1].total == 60

                await wait_until(final_seen)
                nursery.cancel_scope.cancel()
            assert updates[-1][1].counts == {"a": 30, "b": 30, "c": 0}
            # never two within one interval (allowing for the delivery jitter of the listener)
            gaps = [later - earlier for (earlier, _), (later, _) in zip(updates, updates[1:])]
            assert all(gap > 0.1 for gap in gaps), gaps


async def test_stored_durability_writes_through_before_the_202(backend: str | None) -> None:
    with trio.fail_after(TEST_BOUND):
        async with running(backend, roles=("core",), answers_durability="stored", closer=False) as play:
            episode_id = await play.live_episode()
            interaction_id = await play.interaction(episode_id, quiz("a"))
            await answer(play, interaction_id, "u1", "b")
            stored = await play.ctx.store.get(schema.ANSWERS, f"{interaction_id}:u1")
            assert stored is not None and stored["choice"] == "b"  # no worker ran: the core wrote it


async def test_an_interaction_closes_by_itself_at_its_deadline(nursery) -> None:
    """The real scheduler role (not a stand-in loop) closes an interaction when its duration is over."""
    node = await start_node(nursery, ["core", "worker", "scheduler"], auth_director_keys=DIRECTOR_KEY)
    with trio.fail_after(TEST_BOUND):
        async with httpx.AsyncClient(base_url=node.url("core"), timeout=10) as http:
            play = Play(node.ctx, http)
            episode_id = await play.live_episode()
            interaction_id = await play.interaction(episode_id, quiz("a", duration=0.3))
            await answer(play, interaction_id, "u1", "a")

            async def closed() -> bool:
                body = (await play.http.get(f"/v1/interactions/{interaction_id}", headers=play.director)).json()
                return body["status"] == "closed"

            await wait_until(closed)
            r = await play.http.post(f"/v1/interactions/{interaction_id}/answers", json={"choice": "a"},
                                     headers=play.viewer("u2"))
            assert r.status_code == 409 and r.json()["error"]["code"] == "interaction_closed"


def test_replicated_durability_is_refused_where_it_cannot_hold() -> None:
    """No replicas to wait for (embedded), or a broker that cannot wait: refuse to start rather than
    promise a durability the 202 would not have."""
    from types import SimpleNamespace

    from playtotv.broker import MemoryBroker
    from playtotv.roles.core import check_durability
    from playtotv.settings import ConfigError
    from tests.inprocess import make_settings

    embedded = SimpleNamespace(settings=make_settings(answers_durability="replicated"), broker=MemoryBroker())
    with pytest.raises(ConfigError, match="answers.durability"):
        check_durability(embedded)
    clustered = SimpleNamespace(settings=make_settings(answers_durability="replicated", redis_url="redis://x:1/0"),
                                broker=MemoryBroker())
    with pytest.raises(ConfigError, match="answers.durability"):
        check_durability(clustered)
