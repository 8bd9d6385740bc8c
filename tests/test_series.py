"""Recurring series (docs/api.md §4.4): episodes created from a template ahead of air time, on the
right days, once each, and bounded."""

from __future__ import annotations

import datetime as dt

import httpx

from playtotv.gameplay import series
from playtotv.gameplay.service import Gameplay
from tests.inprocess import start_node

DIRECTOR = {"Authorization": "Bearer director-key-0123456789"}
FRIDAY = 4


def test_occurrences_fall_on_the_weekday_and_time_in_utc():
    after = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.timezone.utc).timestamp()  # a Thursday
    found = series.occurrences("20:00", FRIDAY, after, after + 15 * 86400)
    assert [dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat() for t in found] == [
        "2026-11-27T20:00:00+00:00", "2026-12-04T20:00:00+00:00"]
    daily = series.occurrences("06:30", None, after, after + 3 * 86400)
    assert len(daily) == 3 and all(dt.datetime.fromtimestamp(t, dt.timezone.utc).minute == 30 for t in daily)
    assert series.occurrences("11:00", None, after, after + 86400 - 3601) == []  # 11:00 today is past


async def test_a_weekly_series_creates_its_episodes_once_with_their_timeline(nursery):
    node = await start_node(nursery, ["core", "worker", "scheduler"])
    async with httpx.AsyncClient(base_url=node.url("core"), headers=DIRECTOR, timeout=10) as http:
        show = (await http.post("/v1/shows", json={"title": "Quiz Night"})).json()
        body = {"title": "Quiz Night", "time": "20:00", "weekday": FRIDAY, "episodes": 3,
                "timeline": [{"at": 60, "interaction": {"kind": "poll", "prompt": "Ready?",
                                                        "options": [{"id": "y", "label": "Yes"}, {"id": "n", "label": "No"}]}}]}
        r = await http.post(f"/v1/shows/{show['id']}/series", json=body)
        assert r.status_code == 201, r.text
        created = r.json()
        assert len(created["created"]) == 1  # one Friday within the default 7-day horizon
        episode = (await http.get(f"/v1/episodes/{created['created'][0]}")).json()
        assert episode["mode"] == "prerecorded" and episode["status"] == "scheduled"
        starts = dt.datetime.fromtimestamp(episode["starts_at"], dt.timezone.utc)
        assert (starts.weekday(), starts.hour, starts.minute) == (FRIDAY, 20, 0)
        # topping up again (the scheduler does it every minute) creates nothing twice; a longer horizon
        # creates more, never past the series' episode count
        gameplay = Gameplay.of(node.ctx)
        doc = series.from_doc(await node.ctx.store.get("series", created["id"]), series.SeriesDoc)
        assert await series.top_up(gameplay, doc) == created["created"]
        assert len(await series.top_up(gameplay, doc, horizon=60 * 86400)) == 3
        again = (await http.get(f"/v1/series/{created['id']}")).json()
        assert len(again["created"]) == 3 and len(set(again["created"])) == 3
        for bad in ({"title": "x", "time": "25:00"}, {"title": "x", "time": "20:00", "weekday": 7},
                    {"title": "x", "time": "20:00", "timeline": [{"at": 1, "interaction": {"kind": "quiz", "prompt": "?"}}]}):
            r = await http.post(f"/v1/shows/{show['id']}/series", json=bad)
            assert r.status_code == 400, (bad, r.text)
        assert (await http.post("/v1/shows/s_nope/series", json=body)).status_code == 404
        assert (await http.get("/v1/series/r_nope")).status_code == 404
