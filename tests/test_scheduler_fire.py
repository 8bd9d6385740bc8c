"""One timeline fire through ``timeline.prepare_fire`` and ``timeline.fire_entry`` (no processes): the
message, the effects a director's click has, exactly once, and the cases that must not open."""

from __future__ import annotations

import msgspec
import trio

from playtotv import keys
from playtotv.broker import open_broker
from playtotv.gameplay import director
from playtotv.gameplay.documents import InteractionDoc
from playtotv.gameplay.service import Gameplay
from playtotv.protocol.rest import CreateEpisode, CreateShow
from playtotv.roles.scheduler import timeline
from playtotv.roles.scheduler.agenda import Agenda, Job
from playtotv.store import open_store


async def _live_episode(gameplay: Gameplay) -> tuple[str, list[str]]:
    show = await director.create_show(gameplay, CreateShow(title="Recorded"))
    body = msgspec.convert({"title": "Ep", "mode": "prerecorded", "timeline": [
        {"at": at, "interaction": {"kind": "poll", "prompt": f"p{at}", "duration": 30,
                                   "options": [{"id": "a", "label": "A"}, {"id": "b", "label": "B"}]}}
        for at in (1, 2)]}, CreateEpisode)
    episode = await director.create_episode(gameplay, show.id, body)
    await director.start_episode(gameplay, episode.id)
    return episode.id, [item.interaction_id for item in episode.timeline]


async def _yes() -> bool:
    return True


def test_fire_jobs_come_out_of_the_agenda_ahead_other_jobs_on_time():
    a = Agenda(fire_lead=1.0)
    a.add(Job("close", "e1", "i1", 10.0))
    a.add(Job("fire", "e1", "i2", 10.5))
    assert a.next_due() == 9.5
    assert [j.kind for j in a.pop_due(9.6)] == ["fire"]
    assert a.pop_due(9.9) == [] and a.next_due() == 10.0


async def test_a_prepared_fire_opens_once_with_a_clicks_effects_and_says_late_by():
    with trio.fail_after(10):
        async with open_broker(None) as broker, open_store("sqlite:///:memory:") as store:
            gameplay = Gameplay(broker, store)
            await gameplay.ensure_schema()
            episode_id, (first, second) = await _live_episode(gameplay)
            async with broker.subscribe([keys.episode_channel(episode_id)]) as sub:
                job = Job("fire", episode_id, first, gameplay.clock() - 0.25)
                prepared = await timeline.prepare_fire(gameplay, job)
                assert prepared is not None and prepared.status == "draft"
                finished: list[InteractionDoc] = []
                outcome, follow_ups = await timeline.fire_entry(
                    gameplay, job, now=gameplay.clock(), grace=5, token=7, fence=_yes, prepared=prepared, finish=finished.append)
                assert outcome == "fired"
                assert [(j.kind, j.interaction_id) for j in follow_ups] == [("close", first)]
                with trio.fail_after(2):
                    async for item in sub:
                        message = msgspec.json.decode(item.data)
                        if message["type"] == "interaction.opened":
                            break
                assert message["interaction"]["id"] == first and message["late_by"] >= 0.25
                # the writes after the message were handed over; doing them completes the click's effects
                assert [d.id for d in finished] == [first]
                await director.finish_opened(gameplay, finished)
                assert (await gameplay.episode(episode_id, fresh=True)).current == first
                opened = await gameplay.interaction(first, fresh=True)
                assert opened.status == "open" and opened.announced_at is not None
                assert await broker.exists(keys.answer_sets_marker(first))
                # the same job again (a reload re-added it): decided by us already, nothing redone
                assert (await timeline.fire_entry(gameplay, job, now=gameplay.clock(), grace=5, token=7, fence=_yes,
                                                  prepared=prepared))[0] == "fired"
                assert (await gameplay.interaction(first, fresh=True)).opens_at == opened.opens_at

                # a deposed leader records nothing; an ended episode's entry does not open
                async def deposed() -> bool:
                    return False

                job2 = Job("fire", episode_id, second, gameplay.clock())
                prepared2 = await timeline.prepare_fire(gameplay, job2)
                assert (await timeline.fire_entry(gameplay, job2, now=gameplay.clock(), grace=5, token=8, fence=deposed,
                                                  prepared=prepared2))[0] == "deposed"
                assert await store.get(timeline.TIMELINE_LOG, f"{episode_id}:{second}") is None
                await director.end_episode(gameplay, episode_id)
                assert (await timeline.fire_entry(gameplay, job2, now=gameplay.clock(), grace=5, token=8, fence=_yes,
                                                  prepared=prepared2))[0] == "cancelled"
                assert (await gameplay.interaction(second, fresh=True)).status == "draft"
