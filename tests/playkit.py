"""A node running the core and worker roles in the test's trio loop, with an HTTP client and helpers.

Built by hand (not through ``run_node``) so a test can give the broker options a real deployment would
not use, such as a visibility timeout of a fraction of a second. A small task stands in for the
scheduler role and closes interactions at their deadline with the same function the scheduler calls.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Iterable

import httpx
import trio

from playtotv import keys
from playtotv.broker import open_broker
from playtotv.gameplay.director import close_due_interactions
from playtotv.context import NodeContext
from playtotv.registry import open_registry
from playtotv.store import open_store
from tests.inprocess import make_settings, node_context, start_roles

SECRET = "playkit-secret-0123456789abcdef"
DIRECTOR_KEY = "dk_playkit_director"
#: The stand-in scheduler's tick (the real one ticks every ~0.2 s).
CLOSER_INTERVAL = 0.05
#: Longest a test node may take to drain when the test is over.
DRAIN_BOUND = 10.0
#: Polling period of ``wait_until``.
POLL = 0.02


@dataclass
class Play:
    ctx: NodeContext
    http: httpx.AsyncClient
    director: dict[str, str] = field(default_factory=lambda: {"Authorization": f"Bearer {DIRECTOR_KEY}"})

    def viewer(self, user_id: str, *, ttl: float = 3600.0) -> dict[str, str]:
        ticket, _ = self.ctx.tickets.issue(user_id, ttl=ttl)
        return {"Authorization": f"Bearer {ticket}"}

    async def drained(self) -> None:
        """Wait until both queues are empty and nothing is claimed (twice in a row: a job in progress
        may enqueue another)."""
        quiet = 0
        while quiet < 2:
            busy = 0
            for queue in (keys.ANSWER_QUEUE, keys.JOB_QUEUE):
                stats = await self.ctx.broker.queue_stats(queue)
                busy += stats["waiting"] + stats["pending"]
            quiet = quiet + 1 if busy == 0 else 0
            await trio.sleep(POLL)

    # -- director shortcuts -------------------------------------------------------------------------------
    async def post(self, path: str, json: Any = None, *, expect: int = 200, headers: dict | None = None) -> Any:
        r = await self.http.post(path, json=json if json is not None else {}, headers=headers or self.director)
        assert r.status_code == expect, f"{path}: {r.status_code} {r.text}"
        return r.json()

    async def live_episode(self, title: str = "Quiz night") -> str:
        show = await self.post("/v1/shows", {"title": "The Show"}, expect=201)
        episode = await self.post(f"/v1/shows/{show['id']}/episodes", {"title": title, "mode": "live"}, expect=201)
        await self.post(f"/v1/episodes/{episode['id']}/start")
        return episode["id"]

    async def interaction(self, episode_id: str, body: dict[str, Any], *, open_it: bool = True) -> str:
        created = await self.post(f"/v1/episodes/{episode_id}/interactions", body, expect=201)
        if open_it:
            await self.post(f"/v1/interactions/{created['id']}/open")
        return created["id"]


async def wait_until(condition, poll: float = POLL) -> None:
    while not await condition():
        await trio.sleep(poll)


async def _closer(ctx: NodeContext) -> None:
    while True:
        await close_due_interactions(ctx, time.time())
        await trio.sleep(CLOSER_INTERVAL)


def quiz(correct: str = "a", *, duration: float = 30, points: int = 1000, options: Iterable[str] = "abc") -> dict:
    return {"kind": "quiz", "prompt": "Who wins?", "options": [{"id": o, "label": o.upper()} for o in options],
            "correct": correct, "duration": duration, "points": points}


@asynccontextmanager
async def running(
    redis_url: str | None,
    *,
    roles: tuple[str, ...] = ("core", "worker"),
    store_url: str = "sqlite:///:memory:",
    broker_options: dict[str, Any] | None = None,
    closer: bool = True,
    **settings: str,
) -> AsyncIterator[Play]:
    overrides = {"store_url": store_url, "auth_secret": SECRET, "auth_director_keys": DIRECTOR_KEY,
                 "node_id": "playkit", **settings}
    if redis_url:
        overrides["redis_url"] = redis_url
    config = make_settings(**overrides)
    async with open_broker(redis_url, **(broker_options or {})) as broker, \
            open_registry(redis_url) as registry, open_store(store_url) as store:
        ctx = node_context(config, roles, broker=broker, registry=registry, store=store, secret=SECRET,
                           director_keys=[DIRECTOR_KEY], node_id="playkit")
        async with trio.open_nursery() as outer:
            if closer:
                outer.start_soon(_closer, ctx)
            with trio.move_on_after(DRAIN_BOUND):
                async with trio.open_nursery() as role_nursery:
                    await start_roles(role_nursery, ctx)
                    base_url = ctx.endpoints.get("core", "http://127.0.0.1:9")
                    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
                        yield Play(ctx, http)
                    ctx.draining.set()  # roles finish what they hold and return
            outer.cancel_scope.cancel()
