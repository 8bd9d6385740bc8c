"""Every Redis key and channel name, built in one place (like arq's constants.py).

Nothing a client sends is used as a key without validation: ids are checked against ``ID_PATTERN``
before they reach these functions (see ``validate_id``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

#: Prefix of every key this platform writes, so one Redis can be shared and inspected easily.
PREFIX = "ptv:"

ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def validate_id(value: str) -> str:
    if not ID_PATTERN.match(value):
        raise ValueError(f"invalid id {value!r}")
    return value


def _named(prefix: str) -> Callable[[str], str]:
    """The builder of the names ``prefix`` + one id: most keys are a fixed tag and one id."""

    def name(id: str) -> str:
        return f"{prefix}{id}"

    return name


# -- broker internals (channels) ----------------------------------------------------------------------
channel_pubsub = _named(f"{PREFIX}ch:")
channel_history = _named(f"{PREFIX}hist:")
channel_offset = _named(f"{PREFIX}off:")
channel_epoch = _named(f"{PREFIX}epoch:")
publish_marker = _named(f"{PREFIX}pubonce:")

# -- broker internals (queues, leases) -----------------------------------------------------------------
queue_stream = _named(f"{PREFIX}q:")
queue_dead = _named(f"{PREFIX}qdead:")


def queue_dedupe(queue: str, key: str) -> str:
    return f"{PREFIX}qdd:{queue}:{key}"


QUEUE_GROUP = "workers"

lease = _named(f"{PREFIX}lease:")
lease_token = _named(f"{PREFIX}leasetok:")
#: Counters, hashes and sorted sets that callers name (stats, leaderboards) live under one prefix.
user_key = _named(f"{PREFIX}k:")


# -- registry -------------------------------------------------------------------------------------------
REGISTRY_INDEX = f"{PREFIX}nodes"


registry_node = _named(f"{PREFIX}node:")


# -- channel names (what clients subscribe to) ------------------------------------------------------------
episode_channel = _named("episode:")
user_channel = _named("user:")


# -- gameplay (core, worker, scheduler) -----------------------------------------------------------------
# Names passed to the broker's counters, hashes and sorted sets; the broker puts them under ``user_key``.
# Everything here is rebuildable from the store (answers, scores) or best effort (throttles, stats).

#: Work queue of accepted answers (core → worker): the hot path, consumed in large batches.
ANSWER_QUEUE = "answers"
#: Work queue of follow-up jobs (scoring at reveal, achievements, friend notifications, episode end):
#: kept apart so slow social work never delays the aggregation behind live statistics.
JOB_QUEUE = "jobs"
#: Channel on which nodes tell each other to drop instance-local cache entries. Clients never see it:
#: push lets them follow only ``episode:*`` and their own ``user:*`` channel.
CACHE_INVALIDATION_CHANNEL = "internal:cache"


def answer_dedupe(interaction_id: str, user_id: str) -> str:
    """Dedupe key of one viewer's answer (enqueue_unique puts it under ``queue_dedupe``)."""
    return f"{interaction_id}:{user_id}"


def answer_set(interaction_id: str, choice: str) -> str:
    """Sorted set of the users who chose ``choice`` (member user id, score received_at).

    A set rather than a counter so that a redelivered answer adds nothing: the count is ``zcard``."""
    return f"ans:{interaction_id}:{choice}"


#: Present while the answer sets of an interaction are complete; missing after Redis lost them, which
#: tells readers to rebuild them from the store.
answer_sets_marker = _named("ansok:")
#: Held for one stats interval by the worker that published ``stats.updated`` (one publisher per
#: interval across all workers).
stats_throttle = _named("statsthr:")
#: Sorted set of users who answered in an episode (score: last answer time).
episode_viewers = _named("viewers:")
#: Sorted set user → episode score; rebuilt from the store's score documents when missing.
leaderboard = _named("lb:")


def scoring_lease(episode_id: str, part: int | None = None) -> str:
    """Lease name serialising the scoring of one episode's part (streaks depend on reveal order; a
    user's answers are all in one part, so parts are independent)."""
    return f"scoring:{episode_id}" if part is None else f"scoring:{episode_id}:{part}"


def scored_part(interaction_id: str, part: int) -> str:
    """Set once a part of an interaction's answers is scored; the last part finishing announces it."""
    return f"scoredpart:{interaction_id}:{part}"


def friend_notify_throttle(kind: str, follower_id: str) -> str:
    """Held after a friend notification of ``kind`` went to ``follower_id`` (rate limit per follower)."""
    return f"fnthr:{kind}:{follower_id}"


#: Channel on which core tells the scheduler that an episode's agenda changed (started, ended, an
#: interaction opened). Internal: push never lets a client follow it.
SCHEDULER_NOTICES = "internal:scheduler"
