"""Lifetime points and loyalty tiers: why a viewer comes back next week.

Lifetime points are the sum of a user's episode scores (computed from the store's score documents, so
they need no counter of their own that could drift). The tier is the highest whose threshold is reached.
"""

from __future__ import annotations

#: (threshold, tier), ascending. A quiz answer is worth up to ~1,500 points, so bronze comes within the
#: first episode, silver after a few, gold and platinum only for regulars.
TIERS: tuple[tuple[int, str], ...] = (
    (0, "newcomer"),
    (1_000, "bronze"),
    (10_000, "silver"),
    (50_000, "gold"),
    (200_000, "platinum"),
)


def tier_for(lifetime_points: int) -> str:
    name = TIERS[0][1]
    for threshold, tier in TIERS:
        if lifetime_points >= threshold:
            name = tier
    return name


def next_tier(lifetime_points: int) -> tuple[str, int] | None:
    """The next tier and the points still missing, or None at the top."""
    for threshold, tier in TIERS:
        if lifetime_points < threshold:
            return tier, threshold - lifetime_points
    return None
