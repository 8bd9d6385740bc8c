"""The scoring formula of docs/api.md and the client's copy of its own score: one implementation, used by
the workers (the authoritative score) and by the SDK (the points a viewer sees the moment the reveal
arrives). ``roles/core/web/playtotv-points.js`` is its port for the browser, checked against this module.

A correct answer earns ``round(points * (1 - elapsed / (2 * duration)))``, ``elapsed`` being the time from
``opens_at`` to when the answer was received, with full points within the first half second. Within an
episode the n-th consecutive correct answer (n ≥ 2) earns a further 10 % × (n − 1) of that, at most
+50 %. Predictions score the same way when revealed; polls, votes and ratings earn nothing.

Rounding happens once, on the final amount (speed part times streak multiplier), so the bonus is not
computed on an already rounded figure. ``round`` is Python's (half to even); the browser port does the same.

"Consecutive" counts the user's answers to scored interactions in reveal order: a wrong answer resets the
streak, an interaction the user skipped neither breaks nor extends it (docs/api.md §4.5 leaves skips open;
punishing a viewer who looked away for ten seconds seemed wrong for a play-along game). An answer received
at or after the interaction's ``closed_at`` does not count.

The ``interaction.revealed`` message carries everything :class:`PointsTracker` needs (docs/api.md §5.5):
the correct choice, ``points``, ``duration``, ``opens_at``, ``closed_at`` and the rule's parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: docs/api.md: "full points within the first 0.5 s" (network jitter should not cost the fastest viewers).
FULL_POINTS_WINDOW = 0.5
#: Each further consecutive correct answer adds this fraction of the answer's points...
STREAK_STEP = 0.10
#: ...up to this much in total.
STREAK_CAP = 0.50


@dataclass(frozen=True)
class Rule:
    """The formula's parameters, as ``interaction.revealed`` carries them (``scoring``)."""

    full_points_window: float = FULL_POINTS_WINDOW
    streak_step: float = STREAK_STEP
    streak_cap: float = STREAK_CAP

    @classmethod
    def of(cls, data: Mapping[str, Any] | None) -> Rule:
        """From the message's ``scoring`` object; a missing field keeps today's value."""
        if not data:
            return RULE
        return cls(float(data.get("full_points_window", FULL_POINTS_WINDOW)),
                   float(data.get("streak_step", STREAK_STEP)), float(data.get("streak_cap", STREAK_CAP)))


RULE = Rule()


def speed_points(points: int, duration: float, elapsed: float, rule: Rule = RULE) -> float:
    """Points before the streak bonus; ``elapsed`` is clamped to [0, duration] (an answer received a hair
    after ``closes_at`` by a slow clock still earns the minimum, half the points)."""
    if duration <= 0:
        return float(points)
    elapsed = min(max(elapsed, 0.0), duration)
    if elapsed <= rule.full_points_window:
        return float(points)
    return points * (1.0 - elapsed / (2.0 * duration))


def streak_multiplier(streak: int, rule: Rule = RULE) -> float:
    """``streak`` is n, the position of this correct answer in the run (1 for the first)."""
    if streak < 2:
        return 1.0
    return 1.0 + min(rule.streak_step * (streak - 1), rule.streak_cap)


def award(points: int, duration: float, elapsed: float, streak: int, rule: Rule = RULE) -> int:
    """Points for a correct answer that is the ``streak``-th consecutive one."""
    return round(speed_points(points, duration, elapsed, rule) * streak_multiplier(streak, rule))


def top_percent(distribution: Mapping[str, Any], total: int) -> float:
    """"Top N %" for ``total``, from a ``leaderboard.updated``'s ``distribution``: the smallest share of
    players whose lowest total is at most ``total`` (100 below everyone)."""
    for share, floor in zip(distribution["top"], distribution["at_least"], strict=True):
        if total >= floor:
            return float(share)
    return 100.0


@dataclass(frozen=True)
class Outcome:
    """One answer's effect on an episode score: the points it earns and the streak after it."""

    correct: bool
    points: int
    streak: int


def outcome(choice: str | int, received_at: float, *, correct: str | int | None, points: int, duration: float,
            opens_at: float | None, closed_at: float | None, streak_before: int, rule: Rule = RULE) -> Outcome | None:
    """What one answer does at reveal, or None when it does not count (received at or after ``closed_at``:
    the same as not answering)."""
    if closed_at is not None and received_at >= closed_at:
        return None
    right = choice == correct
    streak = streak_before + 1 if right else 0
    earned = award(points, duration, received_at - (opens_at or 0.0), streak, rule) if right else 0
    return Outcome(right, earned, streak)


@dataclass
class Scored:
    """What the SDK reports for one reveal: the same fields as ``score.updated`` (``rank`` aside)."""

    episode_id: str
    interaction_id: str
    points: int
    total: int
    streak: int
    correct: bool


@dataclass
class _EpisodeScore:
    total: int = 0
    streak: int = 0
    seen: set[str] = field(default_factory=set)


class PointsTracker:
    """The viewer's own score, kept by the SDK from its answers' 202s and the ``interaction.revealed``
    messages, in the order they arrive on the episode channel (reveal order, as the workers score).

    A client that joins an episode after its first reveals seeds it with :meth:`start` (total and streak
    from ``GET /v1/episodes/{id}/leaderboard``'s ``me``); from then on it needs no per-viewer message.
    """

    def __init__(self) -> None:
        self._answers: dict[str, tuple[str | int, float]] = {}
        self._episodes: dict[str, _EpisodeScore] = {}

    def answered(self, interaction_id: str, choice: str | int, received_at: float) -> None:
        """Record an accepted answer (``received_at`` from its 202)."""
        self._answers[interaction_id] = (choice, received_at)

    def start(self, episode_id: str, total: int = 0, streak: int = 0) -> None:
        self._episodes[episode_id] = _EpisodeScore(total, streak)

    def total(self, episode_id: str) -> int:
        return self._episodes.get(episode_id, _EpisodeScore()).total

    def streak(self, episode_id: str) -> int:
        return self._episodes.get(episode_id, _EpisodeScore()).streak

    def revealed(self, episode_id: str, data: Mapping[str, Any]) -> Scored | None:
        """Apply an ``interaction.revealed`` (its decoded ``data``). None when it does not concern this
        viewer's score: not answered (or answered too late), not scored, or already applied (a director's
        repeated reveal re-sends the message). ``episode_id`` may be given as the channel name."""
        episode_id = episode_id.removeprefix("episode:")
        interaction_id = data["interaction_id"]
        mine = self._answers.get(interaction_id)
        state = self._episodes.setdefault(episode_id, _EpisodeScore())
        if mine is None or data.get("points") is None or data.get("correct") is None or interaction_id in state.seen:
            return None
        effect = outcome(mine[0], mine[1], correct=data["correct"], points=int(data["points"]),
                         duration=float(data.get("duration") or 0.0), opens_at=data.get("opens_at"),
                         closed_at=data.get("closed_at"), streak_before=state.streak, rule=Rule.of(data.get("scoring")))
        state.seen.add(interaction_id)
        if effect is None:
            return None
        state.streak = effect.streak
        state.total += effect.points
        return Scored(episode_id, interaction_id, effect.points, state.total, effect.streak, effect.correct)
