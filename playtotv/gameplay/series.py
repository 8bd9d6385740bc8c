"""Recurring series: "Quiz Night, every Friday at 20:00 UTC", episodes created from a template.

A series holds an episode template (title, mode, timeline). Its episodes are created ahead of air time,
within ``horizon`` seconds, each with its ``starts_at`` (a prerecorded one then starts and fires by
itself: the scheduler's timelines). Creation is idempotent by natural ids (the episode id is the series id
and the start minute; its interactions are numbered after it), so the core that creates a series and the
scheduler leader that tops it up every minute can both run it, as often as they like, and never create an
episode twice.
"""

from __future__ import annotations

import datetime as dt
import time

import msgspec

from playtotv.gameplay import director, ids, publish, schema
from playtotv.gameplay.documents import EpisodeDoc, _Doc, from_doc, from_docs, to_doc
from playtotv.gameplay.service import Gameplay
from playtotv.protocol.errors import ApiError
from playtotv.protocol.rest import CreateSeries, Mode, Series, TimelineEntry, TimelineItem, check_interaction

#: Episodes are created this far ahead of their air time (audiences and directors see them coming).
DEFAULT_HORIZON = 7 * 24 * 3600.0
#: Occurrences looked at per call: bounds the work of one top-up whatever the horizon.
MAX_PER_CALL = 60


class SeriesDoc(_Doc, kw_only=True):
    show_id: str
    title: str
    time: str
    weekday: int | None = None
    mode: Mode = "prerecorded"
    timeline: list[TimelineEntry] = []
    first_after: float
    episodes: int | None = None
    created_at: float = 0.0


def occurrences(time_of_day: str, weekday: int | None, after: float, until: float,
                limit: int = MAX_PER_CALL) -> list[float]:
    """Start times (UTC) strictly after ``after`` and at most ``until``, in order."""
    hour, minute = (int(part) for part in time_of_day.split(":"))
    day = dt.datetime.fromtimestamp(after, dt.UTC).replace(hour=hour, minute=minute, second=0,
                                                           microsecond=0)
    found: list[float] = []
    while len(found) < limit:
        stamp = day.timestamp()
        if stamp > until:
            break
        if stamp > after and (weekday is None or day.weekday() == weekday):
            found.append(stamp)
        day += dt.timedelta(days=1)
    return found


def episode_id_for(series_id: str, starts_at: float) -> str:
    return f"e_{series_id}_{time.strftime('%Y%m%d%H%M', time.gmtime(starts_at))}"


def view(doc: SeriesDoc, created: list[str]) -> Series:
    return Series(id=doc.id, show_id=doc.show_id, title=doc.title, time=doc.time, weekday=doc.weekday,
                  mode=doc.mode, episodes=doc.episodes, created=created)


async def create_series(gameplay: Gameplay, show_id: str, body: CreateSeries, *,
                        horizon: float = DEFAULT_HORIZON) -> Series:
    if await gameplay.show(show_id) is None:
        raise ApiError("not_found", "unknown show")
    for entry in body.timeline:
        check_interaction(entry.interaction)  # a bad template is a 400 with nothing stored
    doc = SeriesDoc(id=ids.new_id("r"), show_id=show_id, title=body.title, time=body.time,
                    weekday=body.weekday, mode=body.mode, timeline=list(body.timeline),
                    first_after=body.first_after if body.first_after is not None else gameplay.clock(),
                    episodes=body.episodes, created_at=gameplay.clock())
    await gameplay.store.insert(schema.SERIES, to_doc(doc))
    return view(doc, await top_up(gameplay, doc, horizon=horizon))


async def get_series(gameplay: Gameplay, series_id: str) -> Series:
    found = await gameplay.store.get(schema.SERIES, series_id)
    if found is None:
        raise ApiError("not_found", "unknown series")
    doc = from_doc(found, SeriesDoc)
    return view(doc, await _created(gameplay, doc.id))


async def _created(gameplay: Gameplay, series_id: str) -> list[str]:
    episodes = from_docs(await gameplay.store.find(schema.EPISODES, {"series_id": series_id}, order_by="starts_at"),
                         EpisodeDoc)
    return [e.id for e in episodes]


async def top_up(gameplay: Gameplay, doc: SeriesDoc, *, horizon: float = DEFAULT_HORIZON) -> list[str]:
    """Create the episodes due within ``horizon``; returns every episode id of the series so far."""
    created = await _created(gameplay, doc.id)
    remaining = None if doc.episodes is None else doc.episodes - len(created)
    now = gameplay.clock()
    after = max(doc.first_after, now) - 1e-6
    for starts_at in occurrences(doc.time, doc.weekday, after, now + horizon):
        episode_id = episode_id_for(doc.id, starts_at)
        if episode_id in created:
            continue
        if remaining is not None and remaining <= 0:
            break
        if await _create_episode(gameplay, doc, episode_id, starts_at):
            created.append(episode_id)
            if remaining is not None:
                remaining -= 1
    return created


async def _create_episode(gameplay: Gameplay, doc: SeriesDoc, episode_id: str, starts_at: float) -> bool:
    planned = [
        msgspec.structs.replace(director.new_interaction(gameplay, episode_id, entry.interaction, entry.at),
                                id=f"i_{episode_id}_{n}")
        for n, entry in enumerate(doc.timeline)
    ]
    for interaction in planned:
        await gameplay.store.insert(schema.INTERACTIONS, to_doc(interaction))  # if absent: a retry is harmless
    date = time.strftime("%Y-%m-%d", time.gmtime(starts_at))
    episode = EpisodeDoc(
        id=episode_id, show_id=doc.show_id, title=f"{doc.title} {date}", mode=doc.mode, starts_at=starts_at,
        timeline=[TimelineItem(at=i.timeline_at or 0.0, interaction_id=i.id) for i in planned],
        series_id=doc.id, created_at=gameplay.clock(),
    )
    inserted = await gameplay.store.insert(schema.EPISODES, to_doc(episode))
    if inserted and doc.mode == "prerecorded":
        await publish.notify_scheduler(gameplay.broker, episode_id)  # it starts by itself at starts_at
    return inserted


async def top_up_all(gameplay: Gameplay, *, horizon: float = DEFAULT_HORIZON) -> int:
    """The scheduler leader's periodic duty: every series gets its upcoming episodes. Returns how many
    series were looked at."""
    docs = from_docs(await gameplay.store.find(schema.SERIES), SeriesDoc)
    for doc in docs:
        await top_up(gameplay, doc, horizon=horizon)
    return len(docs)
