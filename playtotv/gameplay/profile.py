"""``/v1/me``: the profile with lifetime points, loyalty tier and achievements.

Lifetime points are summed from the user's score documents (one per episode played) rather than kept in
a counter, so no failure can make them drift. The profile is cached per process and invalidated whenever
the scorer, an award, a rename or a follow changes it.
"""

from __future__ import annotations

from playtotv.gameplay import achievements, friends, schema
from playtotv.gameplay.documents import ScoreDoc, from_docs
from playtotv.gameplay.loyalty import tier_for
from playtotv.gameplay.service import Gameplay
from playtotv.protocol.rest import Profile

#: Score documents read per profile; far more episodes than anyone plays in years.
MAX_EPISODES_SUMMED = 10_000


async def profile(g: Gameplay, user_id: str) -> Profile:
    async def load() -> Profile:
        user = await g.ensure_user(user_id)
        scores = from_docs(await g.store.find(schema.SCORES, {"user_id": user_id}, limit=MAX_EPISODES_SUMMED),
                           ScoreDoc)
        lifetime = sum(s.score for s in scores)
        return Profile(
            user_id=user_id,
            name=user.name,
            score=lifetime,
            achievements=await achievements.earned(g, user_id),
            lifetime_points=lifetime,
            tier=tier_for(lifetime),
            friends=len(await friends.following(g, user_id)),
            answers=await g.store.count(schema.ANSWERS, {"user_id": user_id}),
            correct_answers=sum(s.correct for s in scores),
        )

    return await g.caches.profiles.get_or_load(user_id, load)


async def rename(g: Gameplay, user_id: str, name: str) -> Profile:
    await g.ensure_user(user_id)
    await g.store.update(schema.USERS, user_id, set={"name": name}, inc={"version": 1})
    await g.invalidate("user", [user_id])
    return await profile(g, user_id)
