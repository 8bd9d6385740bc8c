"""The scheduler's agenda (sans-io) and its leadership lease under trio's MockClock."""

from __future__ import annotations

import trio
import trio.testing

from playtotv.broker.memory import MemoryBroker
from playtotv.roles.scheduler.agenda import Agenda, Job


def test_jobs_come_out_in_due_order_once():
    a = Agenda()
    a.add(Job("fire", "e1", "i2", 20.0))
    a.add(Job("fire", "e1", "i1", 10.0))
    a.add(Job("close", "e1", "i1", 30.0))
    assert a.next_due() == 10.0
    assert a.pop_due(5.0) == []
    assert [j.interaction_id for j in a.pop_due(20.0)] == ["i1", "i2"]
    assert a.pop_due(20.0) == []
    assert len(a) == 1 and a.next_due() == 30.0


def test_re_adding_a_job_moves_it_instead_of_duplicating():
    a = Agenda()
    a.add(Job("start", "e1", None, 50.0))
    a.add(Job("start", "e1", None, 10.0))  # the episode got an earlier start
    a.add(Job("start", "e1", None, 10.0))  # the same notice twice
    assert [j.due for j in a.pop_due(100.0)] == [10.0]


def test_an_ended_episode_cancels_what_remains():
    a = Agenda()
    a.add(Job("fire", "e1", "i1", 10.0))
    a.add(Job("fire", "e2", "i9", 11.0))
    a.discard_episode("e1")
    assert [j.episode_id for j in a.pop_due(100.0)] == ["e2"]


async def test_lease_fencing_token_changes_hands_on_expiry(mock_clock: trio.testing.MockClock):
    mock_clock.autojump_threshold = 0
    broker = MemoryBroker()
    first = await broker.acquire_lease("scheduler-leader", "a", ttl=5)
    assert first is not None
    assert await broker.acquire_lease("scheduler-leader", "b", ttl=5) is None  # two claim: one wins
    assert await broker.acquire_lease("scheduler-leader", "a", ttl=5) == first  # renewal keeps the token
    await trio.sleep(6)  # "a" died: no renewal
    second = await broker.acquire_lease("scheduler-leader", "b", ttl=5)
    assert second is not None and second > first
    assert await broker.lease_token("scheduler-leader") == second  # "a" can tell it was deposed
