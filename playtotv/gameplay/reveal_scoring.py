"""Scoring at reveal, in the worker: points, streaks, the leaderboard and its distribution, streak
achievements and ``friend_beat_you`` notifications.

A pass scores an episode's revealed quiz and prediction interactions in reveal order: streaks depend on
that order, so two passes over the same users must not interleave. Users are split into
``ids.SCORING_PARTS`` parts (each answer stores its user's part), each with its own lease: a reveal
enqueues one job per part, any worker takes any of them, and a part's pass scores, in reveal order, every
revealed interaction its part has not scored yet, so the parts are independent and the order holds
within each. Passes over the whole episode (late answers, the sweeper, the episode's end) hold every
part's lease. Each user's score document lists the interactions already scored for them (``awarded``),
so a pass that is redelivered, repeated, killed mid-chunk, or run again for answers processed after the
reveal adds each answer's points exactly once. The pass that finds every part of an interaction done
announces it (``leaderboard.updated``) and sets ``scored_at``.

Order of writes, chosen for crash safety: achievements (idempotent) before the score documents, the
score documents before the leaderboard (rebuilt from them anyway), messages last (best effort: the REST
reads are the truth a client reloads).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import msgspec
import trio

from playtotv import keys
from playtotv.broker.base import BrokerUnavailable
from playtotv.gameplay import achievements, friends, ids, leaderboard, publish, schema
from playtotv.gameplay.achievements import Grant
from playtotv.gameplay.documents import AnswerDoc, InteractionDoc, ScoreDoc, UserDoc, from_docs, to_doc
from playtotv.gameplay.score_formula import outcome
from playtotv.gameplay.service import Gameplay
from playtotv.protocol.push import LeaderboardUpdated

#: The lease outlives any pause between renewals (one chunk) many times over.
SCORING_LEASE_TTL = 60.0
#: How long a job waits for another pass of the same episode to finish before giving up (its item is
#: then redelivered later).
LEASE_WAIT = 20.0
LEASE_POLL = 0.2
#: Users scored per store round trip (bench reveal: 2,000 cost 15 % less worker CPU than 500).
CHUNK = 2000
#: Entries carried by ``leaderboard.updated``.
LEADERBOARD_TOP = 10
#: Outlives any gap between a reveal and the last of its parts being scored (the sweeper re-enqueues a
#: reveal left unscored within minutes); a lost marker only costs a pass that finds nothing new.
SCORED_PART_TTL = 24 * 3600.0


class LeaseLost(Exception):
    """The scoring lease expired under us: stop, the item is redelivered and the pass resumes."""


@dataclass
class _Scored:
    user_id: str
    points: int
    total: int
    before: int


async def _acquire(gameplay: Gameplay, lease: str, holder: str) -> bool:
    with trio.move_on_after(LEASE_WAIT):
        # A lease held by another process has no event to wait on: poll it.
        while await gameplay.broker.acquire_lease(lease, holder, SCORING_LEASE_TTL) is None:  # noqa: ASYNC110
            await trio.sleep(LEASE_POLL)
        return True
    return False


async def _release(gameplay: Gameplay, leases: Sequence[str], holder: str) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(2.0):
        for lease in leases:
            try:
                await gameplay.broker.release_lease(lease, holder)
            except BrokerUnavailable:
                pass  # it expires by itself


async def score_episode(gameplay: Gameplay, episode_id: str, holder: str, again: Sequence[str] = (),
                        part: int | None = None) -> bool:
    """Score what is unscored (plus ``again``); False if another pass held the episode too long.

    ``part``: only the answers of that scoring part (``ids.scoring_part``), under that part's lease: the
    chunk a reveal's job covers, independent of the other parts, so several workers score one reveal
    together. None: every part at once, holding every part's lease (the follow-up passes: late answers,
    the sweeper, the episode's end; it also reads answers stored without a part)."""
    parts = list(range(ids.SCORING_PARTS)) if part is None else [part]
    leases = [keys.scoring_lease(episode_id, p) for p in parts]
    taken: list[str] = []
    try:
        for lease in leases:  # always in part order: two whole-episode passes cannot deadlock
            if not await _acquire(gameplay, lease, holder):
                return False
            taken.append(lease)

        async def renew() -> None:
            for lease in leases:
                if await gameplay.broker.acquire_lease(lease, holder, SCORING_LEASE_TTL) is None:
                    raise LeaseLost(episode_id)

        revealed = [d for d in await gameplay.interactions_of(episode_id)
                    if d.status == "revealed" and d.scored and d.correct is not None]
        todo = []
        for doc in sorted(revealed, key=lambda d: d.revealed_at or 0.0):
            if doc.id in again or (doc.scored_at is None and not await _parts_done(gameplay, doc.id, parts)):
                todo.append(doc)
        for doc in todo:
            await score_interaction(gameplay, doc, renew, part)
        # Announced by whoever finds every part done, here rather than right after a part: a pass that died
        # between its part's marker and the announcement leaves it to the next pass of any part.
        for doc in sorted(revealed, key=lambda d: d.revealed_at or 0.0):
            if doc.scored_at is None and await _parts_done(gameplay, doc.id, range(ids.SCORING_PARTS)):
                await _announce(gameplay, doc)
                await gameplay.store.update(schema.INTERACTIONS, doc.id, set={"scored_at": gameplay.clock()})
                await gameplay.invalidate("interaction", [doc.id])
    finally:
        await _release(gameplay, taken, holder)
    return True


async def _parts_done(gameplay: Gameplay, interaction_id: str, parts: Sequence[int]) -> bool:
    for p in parts:
        if not await gameplay.broker.exists(keys.scored_part(interaction_id, p)):
            return False
    return True


async def score_interaction(gameplay: Gameplay, doc: InteractionDoc, renew: Callable[[], Awaitable[None]],
                            part: int | None = None) -> int:
    """Score ``part`` of the interaction's answers (None: all), then mark the part done. The pass that
    then finds every part done announces the interaction scored (two finishing together both do: a
    repeated ``leaderboard.updated`` is harmless)."""
    now = gameplay.clock()
    where: dict[str, str | int] = {"interaction_id": doc.id}
    if part is not None:
        where["part"] = part
    answers = [a for a in from_docs(await gameplay.store.find(schema.ANSWERS, where), AnswerDoc)
               if doc.closed_at is None or a.received_at < doc.closed_at]
    scored: list[_Scored] = []
    for start in range(0, len(answers), CHUNK):
        await renew()
        scored += await _score_chunk(gameplay, doc, answers[start:start + CHUNK], now)
    if scored:
        await _settle(gameplay, doc, scored, now)
    for p in range(ids.SCORING_PARTS) if part is None else [part]:
        await gameplay.broker.set(keys.scored_part(doc.id, p), b"1", ttl=SCORED_PART_TTL)
    if scored and doc.scored_at is not None:  # scored again (late answers): the board changed
        await _announce(gameplay, doc)
    return len(scored)


async def _score_chunk(gameplay: Gameplay, doc: InteractionDoc, answers: list[AnswerDoc], now: float) -> list[_Scored]:
    score_ids = [ids.score_id(doc.episode_id, a.user_id) for a in answers]
    existing = {d.id: d for d in from_docs(await gameplay.store.get_many(schema.SCORES, score_ids), ScoreDoc)}
    changed: list[ScoreDoc] = []
    scored: list[_Scored] = []
    grants: list[Grant] = []
    for answer, score_id in zip(answers, score_ids, strict=True):
        before = existing.get(score_id) or ScoreDoc(id=score_id, episode_id=doc.episode_id, user_id=answer.user_id)
        if doc.id in before.awarded:
            continue
        # The same function the SDK applies to interaction.revealed (playtotv.points).
        effect = outcome(answer.choice, answer.received_at, correct=doc.correct, points=doc.points,
                         duration=doc.duration, opens_at=doc.opens_at, closed_at=doc.closed_at,
                         streak_before=before.streak)
        if effect is None:
            continue
        streak, points = effect.streak, effect.points
        after = msgspec.structs.replace(
            before, score=before.score + points, streak=streak, best_streak=max(before.best_streak, streak),
            answered=before.answered + 1, correct=before.correct + int(effect.correct),
            awarded=[*before.awarded, doc.id], updated_at=now)
        changed.append(after)
        scored.append(_Scored(answer.user_id, points, after.score, before.score))
        rule = achievements.streak_rule(streak)
        if rule is not None:
            grants.append(Grant(answer.user_id, rule, doc.episode_id))
    await achievements.award(gameplay, grants, now)
    if changed:
        await gameplay.store.bulk_upsert(schema.SCORES, [to_doc(d) for d in changed])
        await gameplay.broker.zadd(keys.leaderboard(doc.episode_id), {d.user_id: float(d.score) for d in changed})
    return scored


async def _settle(gameplay: Gameplay, doc: InteractionDoc, scored: list[_Scored], now: float) -> None:
    """After a part is stored: its users' cached profiles, and friends it lifted past their followers."""
    await gameplay.invalidate("user", [s.user_id for s in scored])
    await _friends_overtaken(gameplay, doc, [s for s in scored if s.points > 0], now)


async def _announce(gameplay: Gameplay, doc: InteractionDoc) -> None:
    """No message per viewer: each computes its points from ``interaction.revealed`` (playtotv.points)
    and its standing from this ``leaderboard.updated``'s distribution, so a reveal costs the same few
    publishes for any audience (docs/api.md §5.5). Per-viewer messages remain only for what a viewer
    cannot compute (achievements, friends overtaking)."""
    spread = await leaderboard.distribution(gameplay, doc.episode_id)
    if spread is None:
        return  # nobody has a score yet: nothing changed on the board
    top = await leaderboard.top_entries(gameplay, doc.episode_id, LEADERBOARD_TOP)
    await publish.to_episode(gameplay.broker, doc.episode_id,
                             LeaderboardUpdated(episode_id=doc.episode_id, entries=top, distribution=spread))


async def _friends_overtaken(gameplay: Gameplay, doc: InteractionDoc, gained: list[_Scored], now: float) -> None:
    """``friend_beat_you``: tell followers whom this reveal's gain lifted a friend past."""
    if not gained:
        return
    found = await gameplay.store.get_many(schema.USERS, [s.user_id for s in gained])
    users = {u.id: u for u in from_docs(found, UserDoc)}
    audience: dict[str, list[str]] = {}
    for s in gained:
        user = users.get(s.user_id)
        if user is None or user.followers <= 0:
            continue
        fans = await friends.followers(gameplay, s.user_id)
        if not fans:
            continue
        fan_scores = {d.user_id: d.score for d in from_docs(await gameplay.store.get_many(
            schema.SCORES, [ids.score_id(doc.episode_id, f) for f in fans]), ScoreDoc)}
        overtaken = [f for f in fans if s.before <= fan_scores.get(f, 0) < s.total]
        if overtaken:
            audience[s.user_id] = overtaken
    if audience:
        names = await gameplay.names(list(audience))
        await friends.notify(gameplay, "friend_beat_you", audience, friends.NotificationFactory(
            "friend_beat_you", names, now, episode_id=doc.episode_id, interaction_id=doc.id,
            message="{name} just overtook you", points={s.user_id: s.total for s in gained}))


async def finish_episode(gameplay: Gameplay, episode_id: str, holder: str) -> bool:
    """After the end: a last scoring pass, then top-10 finishes and perfect episodes."""
    if not await score_episode(gameplay, episode_id, holder):
        return False
    now = gameplay.clock()
    await leaderboard.ensure(gameplay, episode_id)
    top = await gameplay.broker.ztop(keys.leaderboard(episode_id), 0, achievements.TOP_FINISH_PLACES - 1)
    grants = [Grant(member, achievements.TOP_10, episode_id) for member, score in top if score > 0]
    questions = [d for d in await gameplay.interactions_of(episode_id) if d.status == "revealed" and d.scored]
    if len(questions) >= achievements.PERFECT_EPISODE_MIN_QUESTIONS:
        found = await gameplay.store.find(schema.SCORES, {"episode_id": episode_id, "correct": len(questions)})
        perfect = from_docs(found, ScoreDoc)
        grants += [Grant(d.user_id, achievements.PERFECT_EPISODE, episode_id) for d in perfect]
    await achievements.award(gameplay, grants, now)
    await gameplay.store.update(schema.EPISODES, episode_id, set={"finished_at": now})
    return True
