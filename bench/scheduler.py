"""Scheduler: fire jitter of timeline entries, and takeover time after SIGKILL of the leader.

    python -m bench scheduler [--entries N] [--spread S] [--instances K] [--no-kill]

Starts a redis-server, one core+worker process and K scheduler processes on one SQLite file. Creates
prerecorded episodes holding N timeline entries spread evenly over S seconds (500 entries per episode, the
API's cap), starts them, and listens to their channels through the broker. Fire jitter of an entry =
arrival of its ``interaction.opened`` at the listener − its timecode. Halfway through, the leader is
SIGKILLed (unless ``--no-kill``); takeover = time from the kill until the registry shows a new leader,
and entries due during the takeover are reported apart (they fire late by design, and say ``late_by``).

Ceiling, measured in the same run: the jitter of a bare ``trio.sleep`` timer in this process (what a
perfect scheduler on this machine, at this load, could do). Prints one JSON object last.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import time

import httpx
import msgspec
import trio

from bench._play import Director, node_env, start_node
from playtotv import keys
from playtotv.broker import open_broker
from playtotv.registry import open_registry
from playtotv.percentile import percentile

MAX_PER_EPISODE = 500
LEAD_TIME = 3.0  # seconds between start and the first entry: listeners subscribed, agenda loaded


async def timer_ceiling(samples: int, period: float) -> list[float]:
    jitter = []
    for _ in range(samples):
        due = time.time() + period
        await trio.sleep(period)
        jitter.append((time.time() - due) * 1000)
    return jitter


async def current_leader(registry) -> str | None:
    leaders = [n.id for n in await registry.nodes() if n.load.get("leader") == 1.0]
    return leaders[0] if len(leaders) == 1 else None


async def run(args: argparse.Namespace) -> dict:
    from playtotv.devtools.localredis import RedisServer

    redis = RedisServer().start()
    workdir = tempfile.mkdtemp(prefix="ptv-bench-sched-")
    db = os.path.join(workdir, "bench.db")
    processes = []
    try:
        core = await start_node("core,worker", node_env(redis.url, db, "core"), "sched-core.log")
        processes.append(core)
        schedulers = {}
        for i in range(args.instances):
            proc = await start_node("scheduler", node_env(redis.url, db, f"sched-{i}", scheduler_lease_ttl="5"),
                                    f"sched-{i}.log")
            schedulers[f"sched-{i}"] = proc
            processes.append(proc)
        async with httpx.AsyncClient(timeout=30) as http, open_broker(redis.url) as broker, \
                open_registry(redis.url) as registry:
            director = Director(http, core.listening["core"])
            show = await director.post("/v1/shows", {"title": "Bench"})
            step = args.spread / args.entries
            episodes: list[tuple[str, dict[str, float]]] = []
            for first in range(0, args.entries, MAX_PER_EPISODE):
                count = min(MAX_PER_EPISODE, args.entries - first)
                timeline = [{"at": LEAD_TIME + (first + i) * step, "interaction": {
                    "kind": "poll", "prompt": f"entry {first + i}", "duration": 3600,
                    "options": [{"id": "a", "label": "A"}, {"id": "b", "label": "B"}]}} for i in range(count)]
                episode = await director.post(f"/v1/shows/{show['id']}/episodes",
                                              {"title": f"bench {first}", "mode": "prerecorded", "timeline": timeline})
                at = {f"entry {first + i}": LEAD_TIME + (first + i) * step for i in range(count)}
                episodes.append((episode["id"], at))
            arrivals: dict[str, tuple[float, float]] = {}  # prompt → (arrival wall time, late_by)
            duplicates = 0
            started_at = time.time() + 0.5
            with trio.fail_after(args.spread + 120):
                async with broker.subscribe([keys.episode_channel(e) for e, _ in episodes]) as sub, \
                        trio.open_nursery() as nursery:
                    async def listen() -> None:
                        nonlocal duplicates
                        async for item in sub:
                            if not hasattr(item, "data"):
                                continue
                            data = msgspec.json.decode(item.data)
                            if data.get("type") == "interaction.opened":
                                prompt = data["interaction"]["prompt"]
                                if prompt in arrivals:
                                    duplicates += 1
                                else:
                                    arrivals[prompt] = (time.time(), data.get("late_by", 0.0))

                    nursery.start_soon(listen)
                    for episode_id, _ in episodes:
                        await director.post(f"/v1/episodes/{episode_id}/start", {"at": started_at})
                    ceiling_task_result: list[float] = []

                    async def ceiling() -> None:
                        ceiling_task_result.extend(await timer_ceiling(int(args.spread / 0.05), 0.05))

                    nursery.start_soon(ceiling)
                    kill_at = started_at + LEAD_TIME + args.spread / 2
                    killed = None
                    takeover_s = None
                    if not args.no_kill:
                        await trio.sleep(max(0.0, kill_at - time.time()))
                        killed = await current_leader(registry)
                        if killed:
                            schedulers[killed].proc.send_signal(signal.SIGKILL)
                            t_kill = time.time()
                            while (leader := await current_leader(registry)) in (None, killed):
                                await trio.sleep(0.05)
                            takeover_s = time.time() - t_kill
                    while len(arrivals) < args.entries and time.time() < started_at + LEAD_TIME + args.spread + 30:
                        await trio.sleep(0.2)
                    await trio.sleep(1.0)  # late duplicates would show now
                    nursery.cancel_scope.cancel()
            due = {prompt: started_at + at for _, ats in episodes for prompt, at in ats.items()}
            window_end = kill_at + (takeover_s or 0) + 1.0
            normal, during = [], []
            for prompt, (arrived, _) in arrivals.items():
                jitter_ms = (arrived - due[prompt]) * 1000
                (during if killed and kill_at - 0.5 <= due[prompt] <= window_end else normal).append(jitter_ms)
            normal.sort()
            during.sort()
            ceiling_sorted = sorted(ceiling_task_result)
            result = {
                "benchmark": "scheduler", "entries": args.entries, "spread_s": args.spread,
                "instances": args.instances, "fired": len(arrivals), "missed": args.entries - len(arrivals),
                "duplicates": duplicates,
                "jitter_p50_ms": _r(percentile(normal, 0.5)), "jitter_p99_ms": _r(percentile(normal, 0.99)),
                "jitter_max_ms": _r(normal[-1] if normal else None), "early": sum(1 for j in normal if j < -5),
                "killed_leader": killed, "takeover_s": _r(takeover_s),
                "during_takeover": {"entries": len(during), "late_p50_ms": _r(percentile(during, 0.5)),
                                    "late_max_ms": _r(during[-1] if during else None)},
                "ceiling_timer_p50_ms": _r(percentile(ceiling_sorted, 0.5)),
                "ceiling_timer_p99_ms": _r(percentile(ceiling_sorted, 0.99)),
            }
            if result["jitter_p99_ms"] and result["ceiling_timer_p99_ms"]:
                result["ratio_p99_to_timer"] = round(result["jitter_p99_ms"] / max(result["ceiling_timer_p99_ms"], 0.1), 2)
            return result
    finally:
        for proc in processes:
            await proc.terminate()
        redis.close()


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench scheduler")
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=20.0)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--no-kill", action="store_true")
    args = parser.parse_args(argv)
    print(json.dumps(trio.run(run, args)))
    return 0
