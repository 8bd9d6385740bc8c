"""The scoring formula of docs/api.md, pure (no I/O). It lives in :mod:`playtotv.points`, shared with the
SDK so that the points a viewer computes from ``interaction.revealed`` are the points the workers store;
this module keeps the gameplay side's name for it."""

from __future__ import annotations

from playtotv.points import (
    FULL_POINTS_WINDOW,
    RULE,
    STREAK_CAP,
    STREAK_STEP,
    Outcome,
    Rule,
    award,
    outcome,
    speed_points,
    streak_multiplier,
)

__all__ = ["FULL_POINTS_WINDOW", "RULE", "STREAK_CAP", "STREAK_STEP", "Outcome", "Rule", "award", "outcome",
           "speed_points", "streak_multiplier"]
