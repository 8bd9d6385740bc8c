"""Timelines of prerecorded episodes, automatic starts at ``starts_at`` and deadlines, fired exactly once.

Exactly once, with any number of schedulers, rests on three things:

1. only the lease holder fires, and it checks its fencing token right before writing the fire record,
   so a deposed leader that wakes up late cannot record anything;
2. the fire record (``timeline_log``, natural id ``episode:interaction``) is insert-if-absent: the first
   decision (fired, or skipped as too late) is the only one, whoever takes over later reads it;
3. the effect itself is a compare-and-set (``draft`` → ``open``): a new leader that repeats the fire of a
   leader that died between record and effect opens the interaction once, and only the winner of the
   compare-and-set publishes ``interaction.opened``.

Late entries (the episode started late, or the leader died and a successor took over): within
``scheduler.late_grace`` seconds they fire late and say ``late_by``; older ones are skipped and recorded
as skipped. Ending the episode cancels what remains (an interaction of an ended episode cannot open).
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

from playtotv.gameplay import director, schema
from playtotv.gameplay.documents import EpisodeDoc, InteractionDoc, from_doc, from_docs
from playtotv.gameplay.service import Gameplay
from playtotv.logs import event
from playtotv.protocol.errors import ApiError
from playtotv.roles.scheduler.agenda import Job

log = logging.getLogger("playtotv.scheduler")

TIMELINE_LOG = "timeline_log"
#: Open interactions read per reload for their deadlines (the rest come in as earlier ones close).
DEADLINE_BATCH = 1000

Fence = Callable[[], Awaitable[bool]]


async def jobs_of_episode(g: Gameplay, episode: EpisodeDoc) -> list[Job]:
    jobs: list[Job] = []
    if episode.status == "scheduled" and episode.starts_at is not None and episode.mode == "prerecorded":
        jobs.append(Job("start", episode.id, None, episode.starts_at))
    if episode.status == "live" and episode.started_at is not None and episode.timeline:
        interactions = {d.id: d for d in await g.interactions_of(episode.id)}
        for item in episode.timeline:
            doc = interactions.get(item.interaction_id)
            if doc is not None and doc.status == "draft":
                jobs.append(Job("fire", episode.id, doc.id, episode.started_at + item.at))
    if episode.status == "live":
        for doc in await g.interactions_of(episode.id):
            if doc.status == "open" and doc.closes_at is not None:
                jobs.append(Job("close", episode.id, doc.id, doc.closes_at))
    return jobs


async def all_jobs(g: Gameplay) -> list[Job]:
    """Everything the leader must do, read from the store (on taking the lead and as a safety net)."""
    jobs: list[Job] = []
    for status in ("scheduled", "live"):
        for episode in from_docs(await g.store.find(schema.EPISODES, {"status": status}), EpisodeDoc):
            if status == "live":
                jobs.extend(j for j in await jobs_of_episode(g, episode) if j.kind == "fire")
            else:
                jobs.extend(await jobs_of_episode(g, episode))
    for doc in from_docs(await g.store.find(schema.INTERACTIONS, {"status": "open"}, order_by="closes_at",
                                            limit=DEADLINE_BATCH), InteractionDoc):
        if doc.closes_at is not None:
            jobs.append(Job("close", doc.episode_id, doc.id, doc.closes_at))
    return jobs


async def jobs_for_notice(g: Gameplay, episode_id: str) -> tuple[EpisodeDoc | None, list[Job]]:
    doc = await g.store.get(schema.EPISODES, episode_id)
    if doc is None:
        return None, []
    episode = from_doc(doc, EpisodeDoc)
    return episode, await jobs_of_episode(g, episode)


async def fire_entry(g: Gameplay, job: Job, *, now: float, grace: float, token: int, fence: Fence) -> str:
    """Fire one timeline entry; returns "fired", "skipped", "cancelled" or "deposed"."""
    assert job.interaction_id is not None
    late_by = max(0.0, now - job.due)
    record_id = f"{job.episode_id}:{job.interaction_id}"
    record = await g.store.get(TIMELINE_LOG, record_id)
    if record is None:
        if not await fence():
            return "deposed"
        outcome = "skipped" if late_by > grace else "fired"
        await g.store.insert(TIMELINE_LOG, {
            "_id": record_id, "episode_id": job.episode_id, "interaction_id": job.interaction_id,
            "due": job.due, "decided_at": now, "late_by": round(late_by, 3), "outcome": outcome,
            "token": token,
        })
        record = await g.store.get(TIMELINE_LOG, record_id)  # ours, or the one that won the race
        assert record is not None
    if record["outcome"] == "skipped":
        if record.get("token") == token and record.get("decided_at") == now:
            event(log, "timeline entry skipped: too late", interaction=job.interaction_id,
                  late_by=round(late_by, 3))
        return "skipped"
    try:
        await director.open_interaction(g, job.interaction_id, late_by=record.get("late_by", 0.0))
    except ApiError as e:
        if e.code.value in ("invalid_state", "not_found"):
            return "cancelled"  # the episode ended (or the interaction vanished): nothing left to do
        raise
    return "fired"


async def start_episode(g: Gameplay, job: Job) -> None:
    try:
        await director.start_episode(g, job.episode_id, at=job.due)
    except ApiError as e:
        if e.code.value not in ("invalid_state", "not_found"):
            raise
