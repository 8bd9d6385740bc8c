"""Follow-up jobs on ``keys.JOB_QUEUE`` (core and worker enqueue them, the worker runs them).

Every job is idempotent (jobs may run more than once: at-least-once delivery), so enqueuing a job again
after a failure that left its effect unknown is always safe.
"""

from __future__ import annotations

import msgspec

from playtotv import keys
from playtotv.broker.base import WorkQueues


class _Job(msgspec.Struct, tag_field="type", kw_only=True):
    pass


class ScoreJob(_Job, tag="score"):
    """Score the episode's revealed interactions, in reveal order: those never scored, plus
    ``interaction_ids`` again (answers processed after the reveal). ``part``: only the answers of that
    scoring part (``ids.scoring_part``); None: every part, one after the other."""

    episode_id: str
    interaction_ids: list[str] = []
    part: int | None = None


class AnsweredJob(_Job, tag="answered"):
    """Viewers answered: first-answer and episodes-played achievements, friend notifications."""

    episode_id: str
    interaction_id: str
    #: (user_id, received_at)
    answers: list[tuple[str, float]]


class EpisodeEndedJob(_Job, tag="episode_ended"):
    """Final scoring, then the end-of-episode achievements (top 10, perfect episode)."""

    episode_id: str


Job = ScoreJob | AnsweredJob | EpisodeEndedJob

_encode = msgspec.json.Encoder().encode
job_decoder = msgspec.json.Decoder(Job)


async def enqueue(broker: WorkQueues, *jobs: _Job) -> None:
    await broker.enqueue(keys.JOB_QUEUE, [_encode(job) for job in jobs])
