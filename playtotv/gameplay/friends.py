"""Friends (follow model: following someone needs no consent) and friend notifications.

Following needs no consent and user ids are public on leaderboards, so a friend's choice in a scored
interaction (quiz, prediction) is shown only once the caller answered it or it closed: otherwise anyone
could copy a top player's answers. Polls, votes and ratings show friends' choices at any time: nothing is
won by copying them, and their running totals are public while they are open (``stats.updated``).

Friend notifications are rate limited twice, so a popular user never floods anyone: a follower gets at
most one notification of a kind per ``FRIEND_NOTIFY_INTERVAL`` (whoever it is about), and one event
reaches at most ``MAX_FOLLOWERS_NOTIFIED`` followers (the most recent ones).
"""

from __future__ import annotations

from playtotv import keys
from playtotv.broker.base import BrokerUnavailable
from playtotv.gameplay import ids, schema
from playtotv.gameplay.documents import AnswerDoc, FollowDoc, InteractionDoc, from_docs, to_doc
from playtotv.gameplay.notifications import deliver, notification_id
from playtotv.gameplay.service import Gameplay
from playtotv.protocol.errors import ApiError
from playtotv.protocol.rest import (
    Friend,
    FriendChoice,
    FriendList,
    FriendsChoices,
    Notification,
)

#: A user follows at most this many (bounds every friends view to one store read).
MAX_FOLLOWING = 500
FRIEND_NOTIFY_INTERVAL = 30.0
MAX_FOLLOWERS_NOTIFIED = 200


async def following(gameplay: Gameplay, user_id: str) -> list[str]:
    async def load() -> list[str]:
        docs = await gameplay.store.find(schema.FOLLOWS, {"follower": user_id}, order_by="since", limit=MAX_FOLLOWING)
        return [d["followee"] for d in docs]

    return await gameplay.caches.following.get_or_load(user_id, load)


async def follow(gameplay: Gameplay, user_id: str, target: str) -> tuple[Friend, bool]:
    """Follow ``target``; returns the friend entry and whether it is new. 404 for an unknown user."""
    if target == user_id:
        raise ApiError("bad_request", "you cannot follow yourself")
    target_doc = await gameplay.user(target)
    if target_doc is None:
        raise ApiError("not_found", "unknown user")
    current = await following(gameplay, user_id)
    if target in current:
        return Friend(user_id=target, name=target_doc.name), False
    if len(current) >= MAX_FOLLOWING:
        raise ApiError("bad_request", f"you already follow {MAX_FOLLOWING} users")
    await gameplay.ensure_user(user_id)
    now = gameplay.clock()
    # Counter first: a failure between the two writes leaves the hint high, which only costs a lookup.
    await gameplay.store.update(schema.USERS, target, inc={"followers": 1, "version": 1})
    created = await gameplay.store.insert(schema.FOLLOWS, to_doc(FollowDoc(
        id=ids.follow_id(user_id, target), follower=user_id, followee=target, since=now)))
    if not created:
        await gameplay.store.update(schema.USERS, target, inc={"followers": -1, "version": 1})
    await gameplay.invalidate("following", [user_id])
    await gameplay.invalidate("user", [target])
    return Friend(user_id=target, name=target_doc.name, since=now), created


async def unfollow(gameplay: Gameplay, user_id: str, target: str) -> bool:
    removed = await gameplay.store.delete(schema.FOLLOWS, ids.follow_id(user_id, target))
    if removed:
        await gameplay.store.update(schema.USERS, target, inc={"followers": -1, "version": 1})
        await gameplay.invalidate("user", [target])
    await gameplay.invalidate("following", [user_id])
    return removed


async def friend_list(gameplay: Gameplay, user_id: str) -> FriendList:
    docs = from_docs(await gameplay.store.find(schema.FOLLOWS, {"follower": user_id}, order_by="since",
                                               limit=MAX_FOLLOWING), FollowDoc)
    names = await gameplay.names([d.followee for d in docs])
    return FriendList(friends=[Friend(user_id=d.followee, name=names[d.followee], since=d.since) for d in docs])


async def choices(gameplay: Gameplay, user_id: str, interaction: InteractionDoc, now: float) -> FriendsChoices:
    """What the caller's friends answered (those who did); withheld (``hidden``) while a scored
    interaction is open and the caller has not answered it (see the module docstring)."""
    sealed = interaction.scored and interaction.accepts_answers(now)
    friends = await following(gameplay, user_id)
    wanted = [ids.answer_id(interaction.id, f) for f in friends]
    own = ids.answer_id(interaction.id, user_id)
    # The caller's own answer comes in the same read; an answer accepted but not yet stored by the
    # worker is known to the broker's dedupe key (set with the 202).
    answers = from_docs(await gameplay.store.get_many(schema.ANSWERS, [*wanted, own] if sealed else wanted), AnswerDoc)
    if sealed and all(a.user_id != user_id for a in answers) and not await _answered(gameplay, interaction.id, user_id):
        return FriendsChoices(interaction_id=interaction.id, friends=[], hidden=True)
    answers = sorted((a for a in answers if a.user_id != user_id), key=lambda a: a.received_at)
    names = await gameplay.names([a.user_id for a in answers])
    return FriendsChoices(interaction_id=interaction.id, friends=[
        FriendChoice(user_id=a.user_id, name=names[a.user_id], choice=a.choice, received_at=a.received_at)
        for a in answers])


async def _answered(gameplay: Gameplay, interaction_id: str, user_id: str) -> bool:
    try:
        return await gameplay.broker.seen_unique(keys.ANSWER_QUEUE, keys.answer_dedupe(interaction_id, user_id))
    except BrokerUnavailable as e:
        raise ApiError("unavailable", f"cannot tell whether you answered: {e}", retry_after=2.0) from None


async def followers(gameplay: Gameplay, user_id: str) -> list[str]:
    docs = await gameplay.store.find(schema.FOLLOWS, {"followee": user_id}, order_by="since", descending=True,
                                     limit=MAX_FOLLOWERS_NOTIFIED)
    return [d["follower"] for d in docs]


async def notify(gameplay: Gameplay, kind: str, followers_of: dict[str, list[str]], make: NotificationFactory) -> int:
    """Send ``kind`` notifications about each friend to the given followers, within the rate limits.

    ``followers_of`` maps the friend concerned to the followers to tell; ``make(friend, follower)`` builds
    the notification. Returns how many were sent."""
    items: list[tuple[str, Notification]] = []
    for friend, audience in followers_of.items():
        for follower in audience[:MAX_FOLLOWERS_NOTIFIED]:
            if await gameplay.broker.set(keys.friend_notify_throttle(kind, follower), b"1", ttl=FRIEND_NOTIFY_INTERVAL,
                                         only_new=True):
                items.append((follower, make(friend, follower)))
    return len(await deliver(gameplay, items))


class NotificationFactory:
    """Builds friend notifications of one kind about one episode / interaction, with natural ids."""

    def __init__(self, kind: str, names: dict[str, str], created_at: float, *, episode_id: str | None = None,
                 interaction_id: str | None = None, message: str = "{name}", points: dict[str, int] | None = None):
        self.kind = kind
        self.names = names
        self.created_at = created_at
        self.episode_id = episode_id
        self.interaction_id = interaction_id
        self.message = message
        self.points = points or {}

    def __call__(self, friend: str, follower: str) -> Notification:
        name = self.names.get(friend, friend)
        return Notification(
            id=notification_id(self.kind, follower, friend, self.episode_id or "", self.interaction_id or ""),
            kind=self.kind, created_at=self.created_at, message=self.message.format(name=name),
            user_id=friend, name=name, episode_id=self.episode_id, interaction_id=self.interaction_id,
            points=self.points.get(friend))

