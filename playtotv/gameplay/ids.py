"""Server-chosen ids: short, URL-safe, unguessable enough that clients cannot enumerate them."""

from __future__ import annotations

import secrets
import zlib

#: 48 random bits: collisions are negligible for any number of shows, episodes and interactions we will
#: ever hold, and the ids stay short in URLs and channel names.
RANDOM_BYTES = 6


def new_id(prefix: str) -> str:
    """``new_id("i")`` → ``"i_3fa2b1c9d0e1"``; the prefix says what kind of object an id names."""
    return f"{prefix}_{secrets.token_hex(RANDOM_BYTES)}"


def answer_id(interaction_id: str, user_id: str) -> str:
    """Natural id of an answer: one per (interaction, user), so every retried write is idempotent."""
    return f"{interaction_id}:{user_id}"


def score_id(episode_id: str, user_id: str) -> str:
    return f"{episode_id}:{user_id}"


def follow_id(follower_id: str, followee_id: str) -> str:
    return f"{follower_id}:{followee_id}"


def achievement_id(user_id: str, achievement: str) -> str:
    return f"{user_id}:{achievement}"


#: Scoring parts: an interaction's answers are scored in this many independent chunks, any worker taking
#: any chunk. A user's answers always fall in the same part (streaks need them in order), so the part is a
#: function of the user id, stored with each answer (changing it would strand answers stored before).
SCORING_PARTS = 8


def scoring_part(user_id: str) -> int:
    return zlib.crc32(user_id.encode()) % SCORING_PARTS
