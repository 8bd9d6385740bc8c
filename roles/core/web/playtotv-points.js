/**
 * playtotv-points.js — the scoring formula of docs/api.md §4.5 and the viewer's own score, a port of
 * `playtotv/points.py` (the workers score with that module; tests check the two agree number by number).
 * No dependencies, no DOM: it runs in a browser and in node.
 *
 * A correct answer earns round(points * (1 - elapsed / (2 * duration))) (full points within the first
 * `full_points_window` seconds), times 1 + min(streak_step * (n - 1), streak_cap) for the n-th consecutive
 * correct answer of the episode, rounded once, half to even as Python rounds. A wrong answer resets the
 * streak; an interaction not answered leaves it as it was; an answer received at or after `closed_at`
 * does not count.
 */

export const RULE = Object.freeze({ full_points_window: 0.5, streak_step: 0.1, streak_cap: 0.5 });

/** Python's round(): to the nearest integer, ties to even. */
export function roundHalfEven(x) {
  const floor = Math.floor(x);
  const diff = x - floor;
  if (diff < 0.5) return floor;
  if (diff > 0.5) return floor + 1;
  return floor % 2 === 0 ? floor : floor + 1;
}

function ruleOf(scoring) {
  return { ...RULE, ...(scoring || {}) };
}

export function speedPoints(points, duration, elapsed, rule = RULE) {
  if (duration <= 0) return points;
  const clamped = Math.min(Math.max(elapsed, 0), duration);
  if (clamped <= rule.full_points_window) return points;
  return points * (1 - clamped / (2 * duration));
}

export function streakMultiplier(streak, rule = RULE) {
  if (streak < 2) return 1;
  return 1 + Math.min(rule.streak_step * (streak - 1), rule.streak_cap);
}

export function award(points, duration, elapsed, streak, rule = RULE) {
  return roundHalfEven(speedPoints(points, duration, elapsed, rule) * streakMultiplier(streak, rule));
}

/**
 * "Top N %" for `total`, from a `leaderboard.updated`'s `distribution` ({players, top, at_least}): the
 * smallest share of players whose lowest total is at most `total` (100 below everyone).
 */
export function topPercent(distribution, total) {
  for (let i = 0; i < distribution.top.length; i++) {
    if (total >= distribution.at_least[i]) return distribution.top[i];
  }
  return 100;
}

/**
 * What one answer does at reveal: {correct, points, streak}, or null when it does not count.
 * @param {object} revealed  the `interaction.revealed` data (correct, points, duration, opens_at, closed_at, scoring)
 */
export function outcome(choice, receivedAt, revealed, streakBefore) {
  if (revealed.closed_at !== undefined && revealed.closed_at !== null && receivedAt >= revealed.closed_at) return null;
  const correct = choice === revealed.correct;
  const streak = correct ? streakBefore + 1 : 0;
  const points = correct
    ? award(revealed.points, revealed.duration || 0, receivedAt - (revealed.opens_at || 0), streak,
      ruleOf(revealed.scoring))
    : 0;
  return { correct, points, streak };
}

/**
 * The viewer's score per episode, from its answers' 202s and the `interaction.revealed` messages in the
 * order they arrive (reveal order, as the workers score). Seed a late join with `start()`.
 */
export class PointsTracker {
  constructor() {
    this._answers = new Map(); // interaction id → [choice, received_at]
    this._episodes = new Map(); // episode id → {total, streak, seen}
  }

  answered(interactionId, choice, receivedAt) {
    this._answers.set(interactionId, [choice, receivedAt]);
  }

  start(episodeId, total = 0, streak = 0) {
    this._episodes.set(episodeId, { total, streak, seen: new Set() });
  }

  _episode(episodeId) {
    if (!this._episodes.has(episodeId)) this.start(episodeId);
    return this._episodes.get(episodeId);
  }

  total(episodeId) {
    return this._episode(episodeId).total;
  }

  /**
   * Apply an `interaction.revealed`; returns {episode_id, interaction_id, points, total, streak, correct},
   * or null when it does not concern this viewer's score (not answered, not scored, already applied).
   * `episodeId` may be the channel name (`episode:<id>`).
   */
  revealed(episodeId, data) {
    const id = episodeId.replace(/^episode:/, "");
    const mine = this._answers.get(data.interaction_id);
    const state = this._episode(id);
    if (!mine || data.points === undefined || data.points === null || data.correct === null
        || data.correct === undefined || state.seen.has(data.interaction_id)) return null;
    state.seen.add(data.interaction_id);
    const effect = outcome(mine[0], mine[1], data, state.streak);
    if (!effect) return null;
    state.streak = effect.streak;
    state.total += effect.points;
    return { episode_id: id, interaction_id: data.interaction_id, points: effect.points, total: state.total,
             streak: effect.streak, correct: effect.correct };
  }
}
