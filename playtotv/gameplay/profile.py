"""``/v1/me``: the profile with lifetime points, loyalty tier and achievements.

Lifetime points are summed from the user's score documents (one per episode played) rather than kept in
a counter, so no failure can make them drift. The profile is cached per process and invalidated whenever
the scorer, an award, a rename or a follow changes it.
"""

from __future__ import annotations

from playtotv.gameplay import achievements, friends, schema
from playtotv.gameplay.documents import ScoreDoc, UserDoc, from_doc, from_docs, to_doc
from playtotv.gameplay.loyalty import tier_for
from playtotv.gameplay.service import Gameplay
from playtotv.protocol.rest import Profile

#: Score documents read per profile; far more episodes than anyone plays in years.
MAX_EPISODES_SUMMED = 10_000
#: Compare-and-set attempts when a ticket's name is adopted.
NAME_ATTEMPTS = 5


async def profile(gameplay: Gameplay, user_id: str) -> Profile:
    async def load() -> Profile:
        user = await gameplay.ensure_user(user_id)
        scores = from_docs(await gameplay.store.find(schema.SCORES, {"user_id": user_id}, limit=MAX_EPISODES_SUMMED),
                           ScoreDoc)
        lifetime = sum(s.score for s in scores)
        return Profile(
            user_id=user_id,
            name=user.name,
            score=lifetime,
            achievements=await achievements.earned(gameplay, user_id),
            lifetime_points=lifetime,
            tier=tier_for(lifetime),
            friends=len(await friends.following(gameplay, user_id)),
            answers=await gameplay.store.count(schema.ANSWERS, {"user_id": user_id}),
            correct_answers=sum(s.correct for s in scores),
        )

    return await gameplay.caches.profiles.get_or_load(user_id, load)


async def rename(gameplay: Gameplay, user_id: str, name: str) -> Profile:
    await gameplay.ensure_user(user_id)
    await gameplay.store.update(schema.USERS, user_id, set={"name": name, "name_set_at": gameplay.clock()},
                                inc={"version": 1})
    await gameplay.invalidate("user", [user_id])
    return await profile(gameplay, user_id)


async def adopt_name(gameplay: Gameplay, user_id: str, name: str, chosen_at: float) -> bool:
    """Make ``name``, chosen at ``chosen_at``, the user's name, creating the user on first sight; a name
    set later (a rename, a newer ticket's) is kept. Compare-and-set on the version, so concurrent
    changes to the user are never lost. False if the user kept changing under every attempt."""
    for _ in range(NAME_ATTEMPTS):
        found = await gameplay.store.get(schema.USERS, user_id)
        if found is None:
            fresh = UserDoc(id=user_id, name=name, name_set_at=chosen_at, created_at=gameplay.clock(), version=1)
            if await gameplay.store.insert(schema.USERS, to_doc(fresh)):
                break
            continue  # created meanwhile (the worker scoring a first answer, another core): look again
        doc = from_doc(found, UserDoc)
        if chosen_at <= doc.name_set_at or doc.name == name:
            return True
        if await gameplay.store.update(schema.USERS, user_id, set={"name": name, "name_set_at": chosen_at},
                                       inc={"version": 1}, where={"version": doc.version}) is not None:
            break
    else:
        return False
    await gameplay.invalidate("user", [user_id])
    return True
