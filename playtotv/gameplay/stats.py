"""Live figures: the director's ``/stats`` and the worker's throttled ``stats.updated`` messages."""

from __future__ import annotations

import logging

import trio

from playtotv import keys
from playtotv.broker.base import BrokerUnavailable
from playtotv.gameplay import publish, results
from playtotv.gameplay.documents import InteractionDoc
from playtotv.gameplay.service import Gameplay
from playtotv.logs import event
from playtotv.protocol.push import StatsUpdated
from playtotv.protocol.rest import EpisodeStats, InteractionStats
from playtotv.store.base import StoreUnavailable

log = logging.getLogger("playtotv.gameplay.stats")


async def episode_stats(gameplay: Gameplay, episode_id: str) -> EpisodeStats:
    interactions = [d for d in await gameplay.interactions_of(episode_id) if d.status != "draft"]
    per_interaction = []
    for doc in interactions:
        counts = await results.counts(gameplay, doc)
        per_interaction.append(InteractionStats(interaction_id=doc.id, kind=doc.kind, status=doc.status,
                                                answers=sum(counts.values()), counts=counts))
    return EpisodeStats(
        episode_id=episode_id,
        viewers=await gameplay.broker.zcard(keys.episode_viewers(episode_id)),
        answers=sum(s.answers for s in per_interaction),
        interactions=per_interaction,
        server_time=gameplay.clock(),
    )


class StatsPublisher:
    """Publishes ``stats.updated`` for interactions whose counts changed, at most once per ``interval``
    per interaction across all workers (a broker key with that TTL elects the publisher of each
    interval), always including a trailing update after the last change."""

    def __init__(self, gameplay: Gameplay, interval: float) -> None:
        self.gameplay = gameplay
        self.interval = interval
        self._dirty: dict[str, InteractionDoc] = {}
        self.published = 0

    def touched(self, interactions: dict[str, InteractionDoc]) -> None:
        self._dirty.update(interactions)

    async def run(self) -> None:
        while True:
            await trio.sleep(self.interval)
            await self.flush()

    async def flush(self) -> None:
        for interaction_id in list(self._dirty):
            doc = self._dirty.pop(interaction_id)
            try:
                sent = await self._publish(doc)
            except (BrokerUnavailable, StoreUnavailable) as exc:
                event(log, "stats.updated not published", interaction=interaction_id, error=str(exc))
                sent = True  # best effort: the next answer marks it dirty again
            if not sent:
                self._dirty.setdefault(interaction_id, doc)  # another worker had this interval

    async def _publish(self, doc: InteractionDoc) -> bool:
        if not await self.gameplay.broker.set(keys.stats_throttle(doc.id), b"1", ttl=self.interval, only_new=True):
            return False
        counts = await results.counts(self.gameplay, doc)
        await publish.to_episode(self.gameplay.broker, doc.episode_id,
                                 StatsUpdated(interaction_id=doc.id, counts=counts, total=sum(counts.values())))
        self.published += 1
        return True
