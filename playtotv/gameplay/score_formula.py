"""The scoring formula of docs/api.md, pure (no I/O), so it can be checked number by number.

A correct answer earns ``round(points * (1 - elapsed / (2 * duration)))``, ``elapsed`` being the time from
``opens_at`` to when the answer was received, with full points within the first half second. Within an
episode the n-th consecutive correct answer (n ≥ 2) earns a further 10 % × (n − 1) of that, at most
+50 %. Predictions score the same way when revealed; polls, votes and ratings earn nothing.

Rounding happens once, on the final amount (speed part times streak multiplier), so the bonus is not
computed on an already rounded figure.

"Consecutive" counts the user's answers to scored interactions in reveal order: a wrong answer resets the
streak, an interaction the user skipped neither breaks nor extends it (docs/api.md §4.5 leaves skips open; punishing
a viewer who looked away for ten seconds seemed wrong for a play-along game).
"""

from __future__ import annotations

#: docs/api.md: "full points within the first 0.5 s" (network jitter should not cost the fastest viewers).
FULL_POINTS_WINDOW = 0.5
#: Each further consecutive correct answer adds this fraction of the answer's points...
STREAK_STEP = 0.10
#: ...up to this much in total.
STREAK_CAP = 0.50


def speed_points(points: int, duration: float, elapsed: float) -> float:
    """Points before the streak bonus; ``elapsed`` is clamped to [0, duration] (an answer received a hair
    after ``closes_at`` by a slow clock still earns the minimum, half the points)."""
    if duration <= 0:
        return float(points)
    elapsed = min(max(elapsed, 0.0), duration)
    if elapsed <= FULL_POINTS_WINDOW:
        return float(points)
    return points * (1.0 - elapsed / (2.0 * duration))


def streak_multiplier(streak: int) -> float:
    """``streak`` is n, the position of this correct answer in the run (1 for the first)."""
    if streak < 2:
        return 1.0
    return 1.0 + min(STREAK_STEP * (streak - 1), STREAK_CAP)


def award(points: int, duration: float, elapsed: float, streak: int) -> int:
    """Points for a correct answer that is the ``streak``-th consecutive one."""
    return round(speed_points(points, duration, elapsed) * streak_multiplier(streak))
