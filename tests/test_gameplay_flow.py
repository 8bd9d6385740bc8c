"""The domain without HTTP: state machines under races, deadlines, rebuilding from the store, cursors.

Runs on the memory broker and on Redis, with the store in memory, through ``Gameplay`` directly and an
injected clock where time matters.
"""

from __future__ import annotations

import time
from typing import AsyncIterator

import msgspec
import pytest
import trio

from playtotv import keys
from playtotv.broker import open_broker
from playtotv.gameplay import director, leaderboard, notifications, results, schema
from playtotv.gameplay.documents import ScoreDoc, to_doc
from playtotv.gameplay.jobs import EpisodeEndedJob, ScoreJob, job_decoder
from playtotv.gameplay.sweeper import LOST_AFTER, requeue_lost_jobs
from playtotv.gameplay.service import Gameplay
from playtotv.protocol.errors import ApiError
from playtotv.protocol.push import message_data_decoder
from playtotv.protocol.rest import CreateEpisode, CreateShow, InteractionBody, Notification
from playtotv.roles import worker
from playtotv.store import open_store
from tests.playkit import quiz, running

TEST_BOUND = 20.0


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.slow)])
def backend(request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("redis_url") if request.param == "redis" else None


@pytest.fixture
async def game(backend: str | None) -> AsyncIterator[tuple[Gameplay, Clock]]:
    clock = Clock()
    async with open_broker(backend) as broker, open_store("sqlite:///:memory:") as store:
        gameplay = Gameplay(broker, store, clock=clock)
        await gameplay.ensure_schema()
        yield gameplay, clock


async def live_episode(gameplay: Gameplay) -> str:
    show = await director.create_show(gameplay, CreateShow(title="S"))
    episode = await director.create_episode(gameplay, show.id, CreateEpisode(title="E"))
    await director.start_episode(gameplay, episode.id)
    return episode.id


async def test_deadline_closes_once_and_publishes_once(game) -> None:
    gameplay, clock = game
    with trio.fail_after(TEST_BOUND):
        episode_id = await live_episode(gameplay)
        created = await director.create_interaction(gameplay, episode_id, msgspec.convert(quiz(duration=10), InteractionBody))
        opened = await director.open_interaction(gameplay, created.id)
        assert opened.closes_at == clock.now + 10
        async with gameplay.broker.subscribe([keys.episode_channel(episode_id)]) as sub:
            assert await director.close_due_interactions(gameplay, clock.now + 9.99) == 0
            clock.now += 10
            # the scheduler on two nodes and the director, all at the deadline: one close, one message
            async with trio.open_nursery() as nursery:
                nursery.start_soon(director.close_due_interactions, gameplay, clock.now)
                nursery.start_soon(director.close_due_interactions, gameplay, clock.now)
            await director.close_interaction(gameplay, created.id)  # a no-op now, which re-sends the message
            types = []
            with trio.move_on_after(0.3):
                async for message in sub:
                    types.append(type(message_data_decoder.decode(message.data)).__name__)
        assert types == ["InteractionClosed", "InteractionClosed"]
        doc = await gameplay.interaction(created.id, fresh=True)
        assert doc.status == "closed" and doc.closed_at == opened.closes_at


async def test_transitions_refused_in_the_wrong_state(game) -> None:
    gameplay, clock = game
    with trio.fail_after(TEST_BOUND):
        episode_id = await live_episode(gameplay)
        created = await director.create_interaction(gameplay, episode_id, msgspec.convert(quiz(), InteractionBody))
        for action in (lambda: director.reveal_interaction(gameplay, created.id),
                       lambda: director.close_interaction(gameplay, created.id)):
            with pytest.raises(ApiError) as info:
                await action()
            assert info.value.code == "invalid_state"
        await director.open_interaction(gameplay, created.id)
        assert (await director.open_interaction(gameplay, created.id)).status == "open"  # no-op
        with pytest.raises(ApiError):
            await director.reveal_interaction(gameplay, created.id)  # before close
        clock.now += 3600  # past its deadline, not yet closed by a scheduler: reveal closes it first
        revealed = await director.reveal_interaction(gameplay, created.id)
        assert revealed.status == "revealed" and revealed.correct == "a"
        assert (await director.reveal_interaction(gameplay, created.id)).status == "revealed"  # no-op
        with pytest.raises(ApiError):
            await director.open_interaction(gameplay, created.id)
        await director.end_episode(gameplay, episode_id)
        with pytest.raises(ApiError) as info:
            await director.start_episode(gameplay, episode_id)
        assert info.value.code == "invalid_state"


async def test_counts_are_rebuilt_from_the_store_when_redis_lost_them(backend: str | None) -> None:
    with trio.fail_after(TEST_BOUND):
        async with running(backend) as play:
            episode_id = await play.live_episode()
            interaction_id = await play.interaction(episode_id, quiz("a"))
            for i in range(12):
                r = await play.http.post(f"/v1/interactions/{interaction_id}/answers",
                                         json={"choice": "ab"[i % 2]}, headers=play.viewer(f"u{i}"))
                assert r.status_code == 202
            await play.drained()
            gameplay = Gameplay.of(play.ctx)
            doc = await gameplay.interaction(interaction_id, fresh=True)
            before = await results.counts(gameplay, doc)
            assert before == {"a": 6, "b": 6, "c": 0}
            # Redis loses its memory of this interaction (a restart, a flush)
            await gameplay.broker.delete([keys.answer_sets_marker(interaction_id),
                                   *(keys.answer_set(interaction_id, c) for c in "abc")])
            assert await results.counts(gameplay, doc) == before
            assert await gameplay.broker.exists(keys.answer_sets_marker(interaction_id))


async def test_leaderboard_is_rebuilt_from_scores(game) -> None:
    gameplay, _ = game
    with trio.fail_after(TEST_BOUND):
        docs = [ScoreDoc(id=f"e_1:u{i}", episode_id="e_1", user_id=f"u{i}", score=i * 100) for i in range(5)]
        await gameplay.store.bulk_upsert(schema.SCORES, [to_doc(d) for d in docs])
        board = await leaderboard.board(gameplay, "e_1", scope="global", limit=3, me="u1")
        assert [(e.user_id, e.score, e.rank) for e in board.entries] == [("u4", 400, 1), ("u3", 300, 2), ("u2", 200, 3)]
        assert board.me is not None and (board.me.rank, board.me.score) == (4, 100)
        friends = await leaderboard.board(gameplay, "e_1", scope="friends", limit=10, me="u1", following=["u3", "u9"])
        assert [(e.user_id, e.rank) for e in friends.entries] == [("u3", 1), ("u1", 2)]


async def test_notification_cursor_never_skips_or_repeats(game) -> None:
    gameplay, clock = game
    with trio.fail_after(TEST_BOUND):
        def note(i: int, created_at: float) -> tuple[str, Notification]:
            return "u1", Notification(id=notifications.notification_id("t", str(i)), kind="test", created_at=created_at)

        await notifications.deliver(gameplay, [note(1, 100.0), note(2, 101.0)])
        page = await notifications.list_for(gameplay, "u1", None, now=102.0)
        assert [n.created_at for n in page.notifications] == [100.0, 101.0]
        # a notification stamped earlier (another worker's clock) becomes visible only now
        await notifications.deliver(gameplay, [note(3, 100.5), note(4, 102.5)])
        page2 = await notifications.list_for(gameplay, "u1", page.cursor, now=103.0)
        assert [n.created_at for n in page2.notifications] == [100.5, 102.5]
        page3 = await notifications.list_for(gameplay, "u1", page2.cursor, now=200.0)
        assert page3.notifications == []
        # delivering again (a job run twice) stores and pushes nothing new
        assert await notifications.deliver(gameplay, [note(4, 102.5)]) == []


async def test_lost_scoring_and_end_jobs_are_requeued() -> None:
    """Redis lost the job queue after a reveal and an end: the sweep finds the work the store says is
    undone and enqueues it again; the worker then scores."""
    with trio.fail_after(TEST_BOUND):
        async with running(None, roles=("core",), closer=False) as play:
            episode_id = await play.live_episode()
            quiz_id = await play.interaction(episode_id, quiz("a"))
            poll_id = await play.interaction(episode_id, {"kind": "poll", "prompt": "?", "options": [
                {"id": "x", "label": "X"}, {"id": "y", "label": "Y"}]})
            r = await play.http.post(f"/v1/interactions/{quiz_id}/answers", json={"choice": "a"},
                                     headers=play.viewer("u1"))
            assert r.status_code == 202
            for interaction_id in (quiz_id, poll_id):
                await play.post(f"/v1/interactions/{interaction_id}/close")
                await play.post(f"/v1/interactions/{interaction_id}/reveal")
            await play.post(f"/v1/episodes/{episode_id}/end")
            broker = play.ctx.broker
            lost = await broker.claim(keys.JOB_QUEUE, "gone", 100)  # the jobs vanish
            await broker.ack(keys.JOB_QUEUE, [item.id for item in lost])
            assert {type(job_decoder.decode(i.data)) for i in lost} == {ScoreJob, EpisodeEndedJob}
            assert await requeue_lost_jobs(play.ctx, time.time()) == 0  # too recent to call lost
            assert await requeue_lost_jobs(play.ctx, time.time() + LOST_AFTER + 1) == 2  # not the poll

            async with trio.open_nursery() as nursery:
                await nursery.start(worker.run, play.ctx)
                await play.drained()
                board = (await play.http.get(f"/v1/episodes/{episode_id}/leaderboard",
                                             headers=play.viewer("u1"))).json()
                assert board["me"]["score"] > 0
                me = (await play.http.get("/v1/me", headers=play.viewer("u1"))).json()
                assert "top_10" in {a["id"] for a in me["achievements"]}
                assert await requeue_lost_jobs(play.ctx, time.time() + LOST_AFTER + 1) == 0  # all done
                play.ctx.draining.set()
