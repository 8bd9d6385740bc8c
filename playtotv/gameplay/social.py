"""The ``answered`` job: first-answer and episodes-played achievements, ``friend_answered`` and
``friend_joined`` notifications.

User documents are changed by compare-and-set on their ``version`` (core bumps it on renames and follows
too), so a concurrent change is never overwritten; a lost race re-reads and tries again.
"""

from __future__ import annotations

import msgspec

from playtotv.gameplay import achievements, friends, schema
from playtotv.gameplay.achievements import Grant
from playtotv.gameplay.documents import UserDoc, default_name, from_docs, to_doc
from playtotv.gameplay.jobs import AnsweredJob
from playtotv.gameplay.service import Gameplay

#: Episode ids kept per user (the list only has to reach EPISODES_FOR_REGULAR; the bound keeps user
#: documents small for viewers who never miss an episode).
MAX_EPISODES_KEPT = 100
#: Compare-and-set attempts per user before the job fails (and is retried by redelivery).
CAS_ATTEMPTS = 5


class _Changes:
    def __init__(self) -> None:
        self.grants: list[Grant] = []
        self.joined: list[str] = []  # users who entered the episode (for friend_joined)
        self.touched: list[str] = []


def _wanted(doc: UserDoc, episode_id: str, received_at: float) -> dict:
    changes: dict = {}
    if doc.first_answer_at is None:
        changes["first_answer_at"] = received_at
    if episode_id not in doc.episodes:
        changes["episodes"] = [*doc.episodes, episode_id][-MAX_EPISODES_KEPT:]
    return changes


def _record(out: _Changes, doc: UserDoc, changes: dict, episode_id: str) -> None:
    out.touched.append(doc.id)
    if "first_answer_at" in changes:
        out.grants.append(Grant(doc.id, achievements.FIRST_ANSWER, episode_id))
    if "episodes" in changes:
        out.joined.append(doc.id)
        if len(changes["episodes"]) >= achievements.EPISODES_FOR_REGULAR:
            out.grants.append(Grant(doc.id, achievements.FIVE_EPISODES, episode_id))


async def _update_user(gameplay: Gameplay, doc: UserDoc, episode_id: str, received_at: float, out: _Changes) -> UserDoc:
    for _ in range(CAS_ATTEMPTS):
        changes = _wanted(doc, episode_id, received_at)
        if not changes:
            return doc
        updated = await gameplay.store.update(schema.USERS, doc.id, set=changes, inc={"version": 1},
                                              where={"version": doc.version})
        if updated is not None:
            _record(out, doc, changes, episode_id)
            return msgspec.structs.replace(doc, **changes, version=doc.version + 1)
        fresh = await gameplay.store.get(schema.USERS, doc.id)
        assert fresh is not None  # users are never deleted
        doc = from_docs([fresh], UserDoc)[0]
    raise RuntimeError(f"user {doc.id} changed {CAS_ATTEMPTS} times while being updated")


async def process_answered(gameplay: Gameplay, job: AnsweredJob) -> None:
    now = gameplay.clock()
    first_at: dict[str, float] = {}
    for user_id, received_at in job.answers:
        first_at[user_id] = min(received_at, first_at.get(user_id, received_at))
    users = {d.id: d for d in from_docs(await gameplay.store.get_many(schema.USERS, list(first_at)), UserDoc)}
    out = _Changes()

    # New users in bulk: one insert for the whole job (a premiere brings thousands of first answers).
    missing = [u for u in first_at if u not in users]
    if missing:
        planned = {u: UserDoc(id=u, name=default_name(u), created_at=now, version=1, first_answer_at=first_at[u],
                              episodes=[job.episode_id]) for u in missing}
        await gameplay.store.bulk_insert(schema.USERS, [to_doc(d) for d in planned.values()])
        for doc in from_docs(await gameplay.store.get_many(schema.USERS, missing), UserDoc):
            if doc == planned[doc.id]:
                _record(out, doc, {"first_answer_at": doc.first_answer_at, "episodes": doc.episodes}, job.episode_id)
            users[doc.id] = doc  # created by someone else meanwhile: updated like any existing user below

    for user_id, doc in list(users.items()):
        users[user_id] = await _update_user(gameplay, doc, job.episode_id, first_at[user_id], out)

    await achievements.award(gameplay, out.grants, now)
    if out.touched:
        await gameplay.invalidate("user", out.touched)
    await _notify_friends(gameplay, job, users, out, now)


async def _notify_friends(gameplay: Gameplay, job: AnsweredJob, users: dict[str, UserDoc], out: _Changes,
                          now: float) -> None:
    popular = [u for u, doc in users.items() if doc.followers > 0]
    if not popular:
        return
    fans = {u: await friends.followers(gameplay, u) for u in popular}
    names = await gameplay.names(popular)
    joined = set(out.joined)
    await friends.notify(gameplay, "friend_joined", {u: f for u, f in fans.items() if u in joined},
                         friends.NotificationFactory("friend_joined", names, now, episode_id=job.episode_id,
                                                     message="{name} is playing along"))
    await friends.notify(gameplay, "friend_answered", fans,
                         friends.NotificationFactory("friend_answered", names, now, episode_id=job.episode_id,
                                                     interaction_id=job.interaction_id, message="{name} answered"))
