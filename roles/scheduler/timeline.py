"""Timelines of prerecorded episodes, automatic starts at ``starts_at`` and deadlines, fired exactly once.

Exactly once, with any number of schedulers, rests on three things:

1. only the lease holder fires, and it checks its fencing token right before writing the fire record,
   so a deposed leader that wakes up late cannot record anything;
2. the fire record (``timeline_log``, natural id ``episode:interaction``) is insert-if-absent: the first
   decision (fired, or skipped as too late) is the only one, whoever takes over later reads it;
3. the effect itself is a compare-and-set (``draft`` → ``open``): a new leader that repeats the fire of a
   leader that died between record and effect opens the interaction once, and only the winner of the
   compare-and-set publishes ``interaction.opened``.

Late entries: those already past when the episode went live (a late start of a recording) fire late within
``scheduler.late_grace`` seconds and say ``late_by``; older ones are skipped and recorded as skipped.
Entries that fell due while the episode was live but found no leader (it died; the successor took over
within the lease TTL) always fire, late rather than never, and say ``late_by``. Ending the episode
cancels what remains (an interaction of an ended episode cannot open).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from playtotv.gameplay import director, results, schema
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


async def jobs_of_episode(gameplay: Gameplay, episode: EpisodeDoc) -> list[Job]:
    jobs: list[Job] = []
    if episode.status == "scheduled" and episode.starts_at is not None and episode.mode == "prerecorded":
        jobs.append(Job("start", episode.id, None, episode.starts_at))
    if episode.status == "live" and episode.started_at is not None and episode.timeline:
        interactions = {d.id: d for d in await gameplay.interactions_of(episode.id)}
        for item in episode.timeline:
            doc = interactions.get(item.interaction_id)
            # draft: not fired yet. open but never announced: the leader that fired it died between the
            # state change and the message; firing again re-announces it (the open itself is not redone).
            unannounced = doc is not None and doc.status == "open" and doc.announced_at is None
            if doc is not None and (doc.status == "draft" or unannounced):
                due = episode.started_at + item.at
                already_past = episode.went_live_at is not None and due < episode.went_live_at
                jobs.append(Job("fire", episode.id, doc.id, due, skip_if_late=already_past))
    if episode.status == "live":
        for doc in await gameplay.interactions_of(episode.id):
            if doc.status == "open" and doc.closes_at is not None:
                jobs.append(Job("close", episode.id, doc.id, doc.closes_at))
    return jobs


async def all_jobs(gameplay: Gameplay) -> list[Job]:
    """Everything the leader must do, read from the store (on taking the lead and as a safety net)."""
    jobs: list[Job] = []
    for status in ("scheduled", "live"):
        for episode in from_docs(await gameplay.store.find(schema.EPISODES, {"status": status}), EpisodeDoc):
            if status == "live":
                jobs.extend(j for j in await jobs_of_episode(gameplay, episode) if j.kind == "fire")
            else:
                jobs.extend(await jobs_of_episode(gameplay, episode))
    for doc in from_docs(await gameplay.store.find(schema.INTERACTIONS, {"status": "open"}, order_by="closes_at",
                                                   limit=DEADLINE_BATCH), InteractionDoc):
        if doc.closes_at is not None:
            jobs.append(Job("close", doc.episode_id, doc.id, doc.closes_at))
    return jobs


async def jobs_for_notice(gameplay: Gameplay, episode_id: str) -> tuple[EpisodeDoc | None, list[Job]]:
    doc = await gameplay.store.get(schema.EPISODES, episode_id)
    if doc is None:
        return None, []
    episode = from_doc(doc, EpisodeDoc)
    return episode, await jobs_of_episode(gameplay, episode)


async def deadline_of(gameplay: Gameplay, interaction_id: str) -> list[Job]:
    doc = await gameplay.store.get(schema.INTERACTIONS, interaction_id)
    if doc is None:
        return []
    interaction = from_doc(doc, InteractionDoc)
    if interaction.status != "open" or interaction.closes_at is None:
        return []
    return [Job("close", interaction.episode_id, interaction.id, interaction.closes_at)]


async def prepare_fire(gameplay: Gameplay, job: Job) -> InteractionDoc | None:
    """What a fire can do ahead of its timecode (the agenda hands fire jobs out ``fire_lead`` early): read
    the interaction and, while it is a draft, set its answer-set marker (harmless on a draft, see
    ``director.open_draft``). Writes nothing the fire's exactly-once rests on. Returns the document read,
    or None when it is gone."""
    assert job.interaction_id is not None
    doc = await gameplay.interaction(job.interaction_id, fresh=True)
    if doc is not None and doc.status == "draft":
        await results.mark_complete(gameplay, doc.id)
    return doc


async def fire_entry(gameplay: Gameplay, job: Job, *, now: float, grace: float, token: int, fence: Fence,
                     prepared: InteractionDoc | None = None,
                     finish: Callable[[InteractionDoc], None] | None = None) -> tuple[str, list[Job]]:
    """Fire one timeline entry; returns the outcome ("fired", "skipped", "cancelled" or "deposed") and the
    jobs it creates (the deadline of the interaction it opened).

    ``prepared``: the draft read by ``prepare_fire``. Then the fire is the shortest path to the message: the
    fencing check, the fire record, a cheap is-the-episode-live check, the compare-and-set, the message
    (``director.open_draft``; ``finish`` takes the writes that follow the message). Anything else (no
    preparation, a repeat after a dead leader, a status that changed since) takes the director's full
    path."""
    assert job.interaction_id is not None
    late_by = max(0.0, now - job.due)
    record_id = f"{job.episode_id}:{job.interaction_id}"
    if not await fence():
        return "deposed", []
    outcome = "skipped" if job.skip_if_late and late_by > grace else "fired"
    decided_here = await gameplay.store.insert(TIMELINE_LOG, {
        "_id": record_id, "episode_id": job.episode_id, "interaction_id": job.interaction_id,
        "due": job.due, "decided_at": now, "late_by": round(late_by, 3), "outcome": outcome, "token": token,
    })
    if not decided_here:
        record = await gameplay.store.get(TIMELINE_LOG, record_id)  # an earlier decision stands
        assert record is not None
        if record.get("token") == token:
            return record["outcome"], []  # decided (and acted on) by us already: nothing to redo
        outcome, late_by = record["outcome"], record.get("late_by", late_by)
        current = await gameplay.interaction(job.interaction_id, fresh=True)
        if current is not None and current.status != "draft" and current.announced_at is not None:
            return outcome, []  # a predecessor fired and announced it: repeating would only duplicate
    if outcome == "skipped":
        if decided_here:
            event(log, "timeline entry skipped: too late", interaction=job.interaction_id,
                  late_by=round(late_by, 3))
        return "skipped", []
    if decided_here and prepared is not None and prepared.status == "draft":
        # The episode check counts in the store instead of reading the episode: its document carries the
        # whole timeline (500 entries, ~24 KB of JSON to decode), and all we need is its status.
        if not await gameplay.store.count(schema.EPISODES, {"_id": job.episode_id, "status": "live"}):
            return "cancelled", []  # the episode ended: an interaction of an ended episode cannot open
        opened = await director.open_draft(gameplay, prepared, late_by=late_by, finish=finish)
        if opened is not None:
            # The director's path tells the leader through a notice; we are the leader: add it directly.
            return "fired", [Job("close", opened.episode_id, opened.id, opened.closes_at or now)]
        # someone else changed it since prepare_fire read it: the full path sorts out what is left to do
    try:
        # a successor repeating a dead leader's fire: the open is a compare-and-set (done once), and an
        # interaction it left open but unannounced is announced now
        await director.open_interaction(gameplay, job.interaction_id, late_by=late_by)
    except ApiError as e:
        if e.code.value in ("invalid_state", "not_found"):
            return "cancelled", []  # the episode ended (or the interaction vanished): nothing left to do
        raise
    return "fired", []


async def start_episode(gameplay: Gameplay, job: Job) -> None:
    try:
        await director.start_episode(gameplay, job.episode_id, at=job.due)
    except ApiError as e:
        if e.code.value not in ("invalid_state", "not_found"):
            raise
