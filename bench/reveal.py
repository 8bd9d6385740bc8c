"""The reveal: from ``POST /reveal`` to the broadcast at a subscriber, and to every answer scored and stored.

    python -m bench reveal [--answers N] [--workers 1,2]

Starts a redis-server and one core process, then for each worker count K: K worker processes (sharing
a SQLite file), an episode with a quiz of 4 s, N answers from N viewers pre-filled into the answer queue
the way core enqueues them (``received_at`` spread over the 4 s, a third of them wrong), stored by the
workers; the quiz closes at its deadline. A bench process subscribed to the episode channel on Redis then
reveals it and times:

* ``broadcast_ms``: the reveal request → ``interaction.revealed`` at the subscriber (what every viewer
  needs to know its points: the SDK computes them from it);
* ``scored_s``: the reveal request → ``leaderboard.updated`` at the subscriber, which the scoring pass
  publishes once every score is stored;
* ``worker_cpu_s``: CPU seconds each worker process used meanwhile (a cost that, unlike ``scored_s``,
  does not depend on what else the shared machine runs).

Then every stored score is compared with what the SDK computes (``playtotv.points.PointsTracker``, fed
the answer's ``received_at`` and the broadcast): ``sdk_equal`` must equal ``answers``. Prints one JSON
object last.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from typing import Any

import httpx
import msgspec
import trio

from bench._play import Director, cpu_seconds, node_env, redis_and_workdir, start_node
from playtotv import keys
from playtotv.broker import open_broker
from playtotv.gameplay import schema
from playtotv.gameplay.answers import DEDUPE_MARGIN, AnswerItem, encode_item
from playtotv.gameplay.documents import ScoreDoc, from_docs
from playtotv.points import PointsTracker
from playtotv.protocol.push import InteractionRevealed, LeaderboardUpdated, message_data_decoder
from playtotv.store import open_store

FILL_CHUNK = 1000
QUIZ_SECONDS = 4.0
QUEUE_POLL = 0.05
BOUND = 600.0
TARGETS_S = {1: 10.0, 2: 6.0}


async def queues_idle(broker: Any) -> bool:
    for queue in (keys.ANSWER_QUEUE, keys.JOB_QUEUE):
        stats = await broker.queue_stats(queue)
        if stats["waiting"] + stats["pending"]:
            return False
    return True


async def one_run(http: httpx.AsyncClient, core_url: str, redis_url: str, db_path: str, answers: int, workers: int,
                  rng: random.Random) -> dict[str, Any]:
    director = Director(http, core_url)
    episode_id = await director.live_episode()
    quiz = await director.open_quiz(episode_id, duration=QUIZ_SECONDS)
    opens_at = (await http.get(f"{core_url}/v1/interactions/{quiz}", headers=director.headers)).json()["opens_at"]
    sent: dict[str, tuple[str, float]] = {}
    nodes = [await start_node("worker", node_env(redis_url, db_path, f"bench-reveal-w{workers}-{i}"),
                              f"reveal-w{workers}-{i}.log") for i in range(workers)]
    try:
        async with open_broker(redis_url) as broker:
            for start in range(0, answers, FILL_CHUNK):
                entries = []
                for u in range(start, min(answers, start + FILL_CHUNK)):
                    user = f"r{workers}u{u}"
                    choice = "a" if rng.random() < 2 / 3 else "b"
                    received_at = opens_at + rng.uniform(0.0, QUIZ_SECONDS * 0.999)
                    sent[user] = (choice, received_at)
                    entries.append((keys.answer_dedupe(quiz, user),
                                    encode_item(AnswerItem(quiz, episode_id, user, choice, received_at))))
                await broker.enqueue_unique(keys.ANSWER_QUEUE, entries, 3600 + DEDUPE_MARGIN)
            with trio.fail_after(BOUND):
                await trio.sleep(max(0.0, opens_at + QUIZ_SECONDS - time.time()) + 0.3)
                await director.post(f"/v1/interactions/{quiz}/close")
                # Another process's queues have no event to wait on: poll them.
                while not await queues_idle(broker):  # noqa: ASYNC110 (every answer stored, its jobs done)
                    await trio.sleep(QUEUE_POLL)
            revealed: InteractionRevealed | None = None
            pids = [node.pid for node in nodes if node.pid is not None]
            async with broker.subscribe([keys.episode_channel(episode_id)]) as subscription:
                cpu_before = [cpu_seconds(pid) for pid in pids]
                started = time.perf_counter()
                await director.post(f"/v1/interactions/{quiz}/reveal")
                with trio.fail_after(BOUND):
                    async for message in subscription:
                        data = getattr(message, "data", None)
                        if data is None:
                            continue
                        decoded = message_data_decoder.decode(data)
                        if isinstance(decoded, InteractionRevealed) and revealed is None:
                            revealed = decoded
                            broadcast = time.perf_counter() - started
                        elif isinstance(decoded, LeaderboardUpdated):
                            scored = time.perf_counter() - started
                            cpu = [round(cpu_seconds(pid) - b, 2) for pid, b in zip(pids, cpu_before, strict=True)]
                            break
    finally:
        for node in nodes:
            await node.terminate()
    assert revealed is not None
    raw = msgspec.json.decode(msgspec.json.encode(revealed))
    async with open_store(f"sqlite:///{db_path}") as store:
        stored = {d.user_id: d.score for d in from_docs(await store.find(schema.SCORES, {"episode_id": episode_id}),
                                                         ScoreDoc)}
    equal = 0
    for user, (choice, received_at) in sent.items():
        tracker = PointsTracker()
        tracker.answered(quiz, choice, received_at)
        mine = tracker.revealed(episode_id, raw)
        if mine is not None and stored.get(user) == mine.total:
            equal += 1
    return {"workers": workers, "broadcast_ms": round(broadcast * 1000, 1), "scored_s": round(scored, 3),
            "worker_cpu_s": cpu,
            "stored_scores": len(stored), "sdk_equal": equal, "target_s": TARGETS_S.get(workers)}


async def bench(args: argparse.Namespace, redis_url: str, db_path: str) -> dict[str, Any]:
    core = await start_node("core", node_env(redis_url, db_path, "bench-core"), "reveal-core.log")
    runs = []
    try:
        async with httpx.AsyncClient(timeout=60) as http:
            for workers in args.workers:
                runs.append(await one_run(http, core.listening["core"], redis_url, db_path, args.answers, workers,
                                          random.Random(workers)))
    finally:
        await core.terminate()
    return {"benchmark": "reveal", "answers": args.answers, "runs": runs,
            "all_equal": all(r["sdk_equal"] == args.answers for r in runs)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench reveal", description=__doc__.split("\n")[0])
    parser.add_argument("--answers", type=int, default=100_000)
    parser.add_argument("--workers", type=lambda s: [int(k) for k in s.split(",")], default=[1, 2],
                        help="worker counts to measure, comma-separated (default 1,2)")
    args = parser.parse_args(argv)
    with redis_and_workdir() as (redis, db):
        result = trio.run(bench, args, redis.url, db)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
