"""Re-enqueue follow-up jobs that were lost (a Redis restart empties the queues, docs/reliability.md #16).

Scoring a reveal and finishing an ended episode are triggered by jobs; their outcome is recorded in the
store (``scored_at``, ``finished_at``). Anything the store says is still to do long after it should have
been done gets its job again; jobs are idempotent, so one that was merely slow runs twice harmlessly.
The scheduler's housekeeping calls ``requeue_lost_jobs`` periodically.
"""

from __future__ import annotations

from typing import Any

from playtotv.gameplay import jobs, schema
from playtotv.gameplay.documents import EpisodeDoc, InteractionDoc, from_docs
from playtotv.gameplay.service import Gameplay

#: A job not done this long after its trigger is presumed lost (a scoring pass takes seconds).
LOST_AFTER = 60.0
#: Documents examined per sweep (bounded work per call; the next sweep takes the rest).
SWEEP_LIMIT = 200


async def requeue_lost_jobs(deps: Any, now: float) -> int:
    """Enqueue the score and episode-end jobs that look lost; returns how many were enqueued."""
    gameplay = Gameplay.of(deps)
    due: list[jobs.Job] = []
    revealed = from_docs(await gameplay.store.find(schema.INTERACTIONS, {"status": "revealed", "scored_at": None},
                                                   limit=SWEEP_LIMIT), InteractionDoc)
    for doc in revealed:
        if doc.scored and (doc.revealed_at or 0.0) < now - LOST_AFTER:
            due.append(jobs.ScoreJob(episode_id=doc.episode_id, interaction_ids=[doc.id]))
    ended = from_docs(await gameplay.store.find(schema.EPISODES, {"status": "ended", "finished_at": None},
                                                limit=SWEEP_LIMIT), EpisodeDoc)
    for episode in ended:
        if (episode.ended_at or 0.0) < now - LOST_AFTER:
            due.append(jobs.EpisodeEndedJob(episode_id=episode.id))
    if due:
        await jobs.enqueue(gameplay.broker, *due)
    return len(due)
