"""Housekeeping done by the scheduler leader, each duty on its own period, each cheap, none in the
firing path (it runs in its own task; a slow store query here never delays a timeline entry).

- prune expired registry entries (readers already ignore them; this keeps the index small);
- trim the channel history of ended episodes (late reconnects need little of it);
- expire the hot Redis state of ended episodes (viewer sets, leaderboards: rebuilt from the store if read);
- rebuild missing leaderboards of live episodes from the store (after Redis lost its memory);
- re-enqueue follow-up jobs (scoring, episode end) that Redis lost (docs/reliability.md #16);
- create the upcoming episodes of recurring series (``gameplay.series``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from playtotv import keys
from playtotv.broker.base import BrokerUnavailable
from playtotv.gameplay import leaderboard, schema, series
from playtotv.gameplay.documents import EpisodeDoc, from_docs
from playtotv.gameplay.service import Gameplay
from playtotv.gameplay.sweeper import requeue_lost_jobs
from playtotv.logs import event
from playtotv.store.base import StoreUnavailable

if TYPE_CHECKING:
    from playtotv.context import NodeContext
    from playtotv.roles.scheduler.leadership import Leadership

log = logging.getLogger("playtotv.scheduler.housekeeping")

PRUNE_REGISTRY_EVERY = 10.0
ENDED_EPISODES_EVERY = 60.0
LEADERBOARDS_EVERY = 15.0
REQUEUE_LOST_JOBS_EVERY = 30.0
SERIES_TOP_UP_EVERY = 60.0
#: History kept on an ended episode's channel: enough for a viewer reconnecting to the final results.
ENDED_HISTORY_KEEP = 50
#: Hot state of an ended episode lives on this long for the results screens, then expires.
ENDED_HOT_STATE_TTL = 3600.0
#: Ended episodes looked at per pass (the most recent ones: older ones were handled before).
ENDED_BATCH = 50


async def prune_registry(ctx: NodeContext) -> None:
    removed = await ctx.registry.prune()
    if removed:
        event(log, "pruned dead registry entries", count=removed)


async def wind_down_ended_episodes(gameplay: Gameplay) -> None:
    ended = from_docs(await gameplay.store.find(schema.EPISODES, {"status": "ended"}, order_by="ended_at",
                                                descending=True, limit=ENDED_BATCH), EpisodeDoc)
    for episode in ended:
        await gameplay.broker.trim_history(keys.episode_channel(episode.id), ENDED_HISTORY_KEEP)
        for key in (keys.episode_viewers(episode.id), keys.leaderboard(episode.id)):
            await gameplay.broker.expire(key, ENDED_HOT_STATE_TTL)


async def rebuild_missing_leaderboards(gameplay: Gameplay) -> None:
    for episode in from_docs(await gameplay.store.find(schema.EPISODES, {"status": "live"}), EpisodeDoc):
        await leaderboard.ensure(gameplay, episode.id)


async def housekeeping(ctx: NodeContext, leadership: Leadership) -> None:
    gameplay = Gameplay.of(ctx)
    duties = [
        (PRUNE_REGISTRY_EVERY, lambda: prune_registry(ctx)),
        (ENDED_EPISODES_EVERY, lambda: wind_down_ended_episodes(gameplay)),
        (LEADERBOARDS_EVERY, lambda: rebuild_missing_leaderboards(gameplay)),
        (REQUEUE_LOST_JOBS_EVERY, lambda: requeue_lost_jobs(gameplay, time.time())),
        (SERIES_TOP_UP_EVERY, lambda: series.top_up_all(gameplay)),
    ]
    async with trio.open_nursery() as nursery:
        for period, duty in duties:
            nursery.start_soon(_every, period, duty, leadership)


async def _every(period: float, duty: Callable[[], Awaitable[object]], leadership: Leadership) -> None:
    while True:
        await trio.sleep(period)
        if leadership.token is None:
            continue
        try:
            with trio.move_on_after(period):
                await duty()
        except (BrokerUnavailable, StoreUnavailable) as e:
            event(log, "housekeeping deferred", error=type(e).__name__)
