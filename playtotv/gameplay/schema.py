"""Collections of the gameplay domain and the indexes their queries need.

Every query the domain runs is an equality filter (plus one order) on these fields; each gets an index so
that no request path scans a collection.
"""

from __future__ import annotations

from playtotv.store.base import Store

SHOWS = "shows"
EPISODES = "episodes"
INTERACTIONS = "interactions"
ANSWERS = "answers"
USERS = "users"
SCORES = "scores"
ACHIEVEMENTS = "achievements"
FOLLOWS = "follows"
NOTIFICATIONS = "notifications"
SERIES = "series"

INDEXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (EPISODES, ("show_id",)),
    (EPISODES, ("series_id",)),
    (INTERACTIONS, ("episode_id",)),
    # close_due_interactions: open interactions by deadline.
    (INTERACTIONS, ("status", "closes_at")),
    (ANSWERS, ("interaction_id",)),
    # Scoring reads one part of an interaction's answers (reveal_scoring).
    (ANSWERS, ("interaction_id", "part")),
    (ANSWERS, ("user_id",)),
    (SCORES, ("episode_id",)),
    (SCORES, ("user_id",)),
    (SCORES, ("episode_id", "correct")),
    (ACHIEVEMENTS, ("user_id",)),
    (FOLLOWS, ("follower",)),
    (FOLLOWS, ("followee",)),
    (NOTIFICATIONS, ("owner", "created_at")),
)


async def ensure_schema(store: Store) -> None:
    """Create the indexes (idempotent; every role that reads or writes the domain calls it at start)."""
    for collection, fields in INDEXES:
        await store.ensure_index(collection, list(fields))
