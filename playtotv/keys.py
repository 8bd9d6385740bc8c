"""Every Redis key and channel name, built in one place (like arq's constants.py).

Nothing a client sends is used as a key without validation: ids are checked against ``ID_PATTERN``
before they reach these functions (see ``validate_id``).
"""

from __future__ import annotations

import re

#: Prefix of every key this platform writes, so one Redis can be shared and inspected easily.
PREFIX = "ptv:"

ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def validate_id(value: str) -> str:
    if not ID_PATTERN.match(value):
        raise ValueError(f"invalid id {value!r}")
    return value


# -- broker internals (channels) ----------------------------------------------------------------------
def channel_pubsub(channel: str) -> str:
    return f"{PREFIX}ch:{channel}"


def channel_history(channel: str) -> str:
    return f"{PREFIX}hist:{channel}"


def channel_offset(channel: str) -> str:
    return f"{PREFIX}off:{channel}"


def channel_epoch(channel: str) -> str:
    return f"{PREFIX}epoch:{channel}"


def publish_marker(marker: str) -> str:
    return f"{PREFIX}pubonce:{marker}"


# -- broker internals (queues, leases) -----------------------------------------------------------------
def queue_stream(queue: str) -> str:
    return f"{PREFIX}q:{queue}"


def queue_dead(queue: str) -> str:
    return f"{PREFIX}qdead:{queue}"


def queue_dedupe(queue: str, key: str) -> str:
    return f"{PREFIX}qdd:{queue}:{key}"


QUEUE_GROUP = "workers"


def lease(name: str) -> str:
    return f"{PREFIX}lease:{name}"


def lease_token(name: str) -> str:
    return f"{PREFIX}leasetok:{name}"


def user_key(key: str) -> str:
    """Counters, hashes and sorted sets that callers name (stats, leaderboards) live under one prefix."""
    return f"{PREFIX}k:{key}"


# -- registry -------------------------------------------------------------------------------------------
REGISTRY_INDEX = f"{PREFIX}nodes"


def registry_node(node_id: str) -> str:
    return f"{PREFIX}node:{node_id}"


# -- channel names (what clients subscribe to) ------------------------------------------------------------
def episode_channel(episode_id: str) -> str:
    return f"episode:{episode_id}"


def user_channel(user_id: str) -> str:
    return f"user:{user_id}"


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


def answer_sets_marker(interaction_id: str) -> str:
    """Present while the answer sets of an interaction are complete; missing after Redis lost them, which
    tells readers to rebuild them from the store."""
    return f"ansok:{interaction_id}"


def stats_throttle(interaction_id: str) -> str:
    """Held for one stats interval by the worker that published ``stats.updated`` (one publisher per
    interval across all workers)."""
    return f"statsthr:{interaction_id}"


def episode_viewers(episode_id: str) -> str:
    """Sorted set of users who answered in an episode (score: last answer time)."""
    return f"viewers:{episode_id}"


def leaderboard(episode_id: str) -> str:
    """Sorted set user → episode score; rebuilt from the store's score documents when missing."""
    return f"lb:{episode_id}"


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
