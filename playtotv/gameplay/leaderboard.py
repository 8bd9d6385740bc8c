"""Episode leaderboards: a Redis sorted set per episode, rebuilt from the store's score documents when
Redis lost it. Global scope ranks everyone; friends scope ranks the caller among those they follow."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from playtotv import keys
from playtotv.gameplay import schema
from playtotv.gameplay.documents import ScoreDoc, from_docs
from playtotv.gameplay.service import Gameplay
from playtotv.protocol.push import ScoreDistribution
from playtotv.protocol.rest import Leaderboard, LeaderboardEntry, LeaderboardMe

#: Members added per broker call while rebuilding.
REBUILD_CHUNK = 1000
#: After finding a board empty with nothing in the store, don't look again for this long (an episode
#: before its first reveal is read often and has no scores).
EMPTY_CHECK_TTL = 1.0
MAX_LIMIT = 100
#: The shares of players ``distribution`` reports the lowest total of ("top 1 %", ..., everyone): enough
#: for a client to say "top 7 %"-like things without asking, at one indexed read each.
DISTRIBUTION_TOP = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0)
#: Up to this many players one read of the whole board is cheaper than one read per share.
DISTRIBUTION_FULL_READ = 2_000


async def rebuild(gameplay: Gameplay, episode_id: str) -> int:
    docs = from_docs(await gameplay.store.find(schema.SCORES, {"episode_id": episode_id}), ScoreDoc)
    scores = {d.user_id: float(d.score) for d in docs}
    items = list(scores.items())
    for start in range(0, len(items), REBUILD_CHUNK):
        await gameplay.broker.zadd(keys.leaderboard(episode_id), dict(items[start:start + REBUILD_CHUNK]))
    return len(items)


async def ensure(gameplay: Gameplay, episode_id: str) -> None:
    """Rebuild the board if Redis has none while the store has scores."""
    if await gameplay.broker.zcard(keys.leaderboard(episode_id)) > 0:
        return
    found, _ = gameplay.caches.results.get(("lb-empty", episode_id))
    if found:
        return
    if await rebuild(gameplay, episode_id) == 0:
        gameplay.caches.results.put(("lb-empty", episode_id), True, EMPTY_CHECK_TTL)


def _ranked(scores: dict[str, float]) -> list[tuple[str, float]]:
    # The broker's order: score descending, ties by member descending (the same on both backends).
    return sorted(scores.items(), key=lambda item: (item[1], item[0]), reverse=True)


async def board(
    gameplay: Gameplay,
    episode_id: str,
    *,
    scope: Literal["global", "friends"],
    limit: int,
    me: str | None,
    following: Sequence[str] = (),
) -> Leaderboard:
    await ensure(gameplay, episode_id)
    key = keys.leaderboard(episode_id)
    if scope == "global":
        top = await gameplay.broker.ztop(key, 0, limit - 1)
        mine = await gameplay.broker.zrank_desc(key, me) if me else None
        me_view = (LeaderboardMe(rank=mine[0] + 1, score=int(mine[1])) if mine
                   else LeaderboardMe(rank=None, score=0)) if me else None
        ranked = top
    else:
        members = list(dict.fromkeys([*following, *([me] if me else [])]))
        scores = await gameplay.broker.zscores(key, members) if members else []
        everyone = _ranked({m: s for m, s in zip(members, scores, strict=True) if s is not None})
        ranked = everyone[:limit]
        me_view = None
        if me:
            position = next((i for i, (m, _) in enumerate(everyone) if m == me), None)
            me_view = (LeaderboardMe(rank=position + 1, score=int(everyone[position][1])) if position is not None
                       else LeaderboardMe(rank=None, score=0))
    names = await gameplay.names([m for m, _ in ranked])
    entries = [LeaderboardEntry(rank=i + 1, user_id=m, name=names[m], score=int(s)) for i, (m, s) in enumerate(ranked)]
    return Leaderboard(entries=entries, me=me_view, scope=scope)


async def top_entries(gameplay: Gameplay, episode_id: str, limit: int) -> list[LeaderboardEntry]:
    top = await gameplay.broker.ztop(keys.leaderboard(episode_id), 0, limit - 1)
    names = await gameplay.names([m for m, _ in top])
    return [LeaderboardEntry(rank=i + 1, user_id=m, name=names[m], score=int(s)) for i, (m, s) in enumerate(top)]


async def distribution(gameplay: Gameplay, episode_id: str) -> ScoreDistribution | None:
    """The spread of totals (protocol.push.ScoreDistribution): one read per share, by rank (O(log n) each
    on Redis), so its cost does not grow with the audience. None for an empty board."""
    key = keys.leaderboard(episode_id)
    players = await gameplay.broker.zcard(key)
    if players == 0:
        return None
    # Rounded down, and shares smaller than one player left out: whoever reaches at_least[i] is within the
    # top share, never outside it.
    shares = [share for share in DISTRIBUTION_TOP if math.floor(share * players / 100.0) >= 1]
    indexes = [math.floor(share * players / 100.0) - 1 for share in shares]
    at_least: list[int] = []
    if players <= DISTRIBUTION_FULL_READ:
        ranked = await gameplay.broker.ztop(key, 0, -1)
        at_least = [int(ranked[min(i, len(ranked) - 1)][1]) if ranked else 0 for i in indexes]
    else:
        for index in indexes:
            found = await gameplay.broker.ztop(key, index, index)
            at_least.append(int(found[0][1]) if found else 0)
    return ScoreDistribution(players=players, top=shares, at_least=at_least)
