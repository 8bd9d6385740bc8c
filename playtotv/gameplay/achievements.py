"""Achievements: the rules, and awarding them exactly once.

An award is two idempotent writes keyed by natural ids: the achievement document
(``{user}:{achievement}``) and its ``achievement`` notification (pushed on the user channel only when it
is stored for the first time). A job that runs twice therefore awards and announces once; one that died
between the two writes announces on its next run.

Rules are evaluated where their facts are at hand: the first answer and episodes played by the worker's
``answered`` job, streaks by the scorer, top-10 and perfect episodes when an episode ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from playtotv.gameplay import ids, schema
from playtotv.gameplay.documents import AchievementDoc, from_docs, to_doc
from playtotv.gameplay.notifications import deliver, notification_id
from playtotv.gameplay.service import Gameplay
from playtotv.protocol.rest import Achievement, Notification


@dataclass(frozen=True)
class Rule:
    id: str
    title: str


FIRST_ANSWER = Rule("first_answer", "First answer")
STREAK_3 = Rule("streak_3", "Hat trick: 3 correct in a row")
STREAK_5 = Rule("streak_5", "On fire: 5 correct in a row")
STREAK_10 = Rule("streak_10", "Unstoppable: 10 correct in a row")
PERFECT_EPISODE = Rule("perfect_episode", "Perfect episode")
TOP_10 = Rule("top_10", "Top 10 finish")
FIVE_EPISODES = Rule("five_episodes", "Regular: five episodes played")

RULES: dict[str, Rule] = {r.id: r for r in (
    FIRST_ANSWER, STREAK_3, STREAK_5, STREAK_10, PERFECT_EPISODE, TOP_10, FIVE_EPISODES)}

#: Correct answers in a row → the achievement reached at exactly that length (a streak grows by one at a
#: time, so each threshold is crossed once per run).
STREAKS: dict[int, Rule] = {3: STREAK_3, 5: STREAK_5, 10: STREAK_10}
#: A "perfect episode" needs at least this many scored questions (one lucky guess is not perfection).
PERFECT_EPISODE_MIN_QUESTIONS = 3
#: Finishing within this many places of the top earns TOP_10.
TOP_FINISH_PLACES = 10
EPISODES_FOR_REGULAR = 5


@dataclass(frozen=True)
class Grant:
    user_id: str
    rule: Rule
    episode_id: str | None = None


def streak_rule(streak: int) -> Rule | None:
    return STREAKS.get(streak)


async def award(gameplay: Gameplay, grants: Sequence[Grant], now: float) -> int:
    """Store and announce ``grants``; returns how many were announced for the first time."""
    if not grants:
        return 0
    docs = [
        to_doc(AchievementDoc(id=ids.achievement_id(gr.user_id, gr.rule.id), user_id=gr.user_id,
                              achievement=gr.rule.id, earned_at=now, episode_id=gr.episode_id))
        for gr in grants
    ]
    await gameplay.store.bulk_insert(schema.ACHIEVEMENTS, docs)
    items = [
        (gr.user_id, Notification(
            id=notification_id("achievement", gr.user_id, gr.rule.id), kind="achievement", created_at=now,
            message=f"Achievement unlocked: {gr.rule.title}", episode_id=gr.episode_id,
            achievement=Achievement(id=gr.rule.id, title=gr.rule.title, earned_at=now)))
        for gr in grants
    ]
    new = await deliver(gameplay, items)
    if new:
        await gameplay.invalidate("user", sorted({owner for owner, _ in new}))
    return len(new)


async def earned(gameplay: Gameplay, user_id: str) -> list[Achievement]:
    docs = from_docs(await gameplay.store.find(schema.ACHIEVEMENTS, {"user_id": user_id}, order_by="earned_at"),
                     AchievementDoc)
    return [Achievement(id=d.achievement, title=RULES[d.achievement].title if d.achievement in RULES else "",
                        earned_at=d.earned_at) for d in docs]
