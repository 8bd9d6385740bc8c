"""The worker: answers aggregated per second by one worker process, and the lag from 202 to results.

    python -m bench worker [--answers M] [--users U] [--lag-seconds S] [--rate R]

Starts a redis-server, one core process and one worker process (sharing a SQLite file).

1. Lag: background viewers answer one quiz at a steady ``--rate`` through the core while a probe answers
   another quiz one viewer at a time and polls ``GET /results`` (as clients do, through core's results
   cache) until its answer is counted: ``lag`` is the time from the 202 to that moment. Target p99 ≤ 1 s.
2. Throughput: the first worker stops, the answer queue is pre-filled with M answers (U viewers × M/U
   quizzes, enqueued the way core does: ``enqueue_unique``, one dedupe key each), and a fresh worker
   process starts; ``answers_per_s`` = M / time from its ``ready`` to the queue being empty (every item
   stored, counted and acknowledged). Target ≥ 20,000/s. The follow-up jobs the batches enqueue
   (achievements, friends) run in the same process meanwhile, as in production; ``jobs_drained_s`` says
   when they were done too.

Totals are checked afterwards (``counted`` must equal ``answers``). Prints one JSON object last.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import httpx
import trio

from playtotv import keys
from playtotv.credentials import KeyRing
from playtotv.broker import open_broker
from playtotv.gameplay.answers import DEDUPE_MARGIN, AnswerItem, encode_item
from playtotv.percentile import percentile
from bench._play import run_on_private_redis, SECRET, Director, KeepAliveHttp, node_env, post_request, start_node

#: Answers enqueued per broker call while pre-filling the queue.
FILL_CHUNK = 1000
#: Period of the probe's results polling.
PROBE_POLL = 0.01
QUEUE_POLL = 0.02
DRAIN_BOUND = 300.0


async def lag_phase(core_url: str, director: Director, episode_id: str, seconds: float, rate: float) -> dict[str, Any]:
    ring = KeyRing.from_secrets(SECRET)
    background_quiz = await director.open_quiz(episode_id)
    probe_quiz = await director.open_quiz(episode_id)
    lags: list[float] = []
    stop_at = trio.current_time() + seconds

    async def background() -> None:
        client = await KeepAliveHttp.connect(core_url)
        interval, i = 1.0 / rate, 0
        next_at = trio.current_time()
        while next_at < stop_at:
            ticket, _ = ring.issue(f"bg{i}", ttl=600)
            await client.request(post_request(f"/v1/interactions/{background_quiz}/answers", b'{"choice":"a"}',
                                              ticket))
            i += 1
            next_at += interval
            await trio.sleep_until(next_at)
        await client.aclose()

    async def probe() -> None:
        client = await KeepAliveHttp.connect(core_url)
        results_path = f"/v1/interactions/{probe_quiz}/results"
        results_request = (f"GET {results_path} HTTP/1.1\r\nHost: bench\r\n"
                           f"Authorization: Bearer {director.headers['Authorization'].split()[1]}\r\n\r\n").encode()
        k = 0
        while trio.current_time() < stop_at:
            ticket, _ = ring.issue(f"probe{k}", ttl=600)
            status, _ = await client.request(post_request(f"/v1/interactions/{probe_quiz}/answers",
                                                          b'{"choice":"b"}', ticket))
            accepted_at = trio.current_time()
            assert status == 202, status
            k += 1
            while True:
                _, body = await client.request(results_request)
                if json.loads(body)["total"] >= k:
                    break
                await trio.sleep(PROBE_POLL)
            lags.append(trio.current_time() - accepted_at)
        await client.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(background)
        nursery.start_soon(probe)
    lags.sort()
    return {
        "lag_p50_ms": round((percentile(lags, 0.5) or 0) * 1000, 1),
        "lag_p99_ms": round((percentile(lags, 0.99) or 0) * 1000, 1),
        "lag_max_ms": round((lags[-1] if lags else 0) * 1000, 1),
        "lag_samples": len(lags),
        "background_rate_per_s": rate,
    }


async def fill_queue(redis_url: str, episode_id: str, quizzes: list[str], users: int) -> int:
    now = time.time()
    async with open_broker(redis_url) as broker:
        total = 0
        for quiz in quizzes:
            for start in range(0, users, FILL_CHUNK):
                entries = [(keys.answer_dedupe(quiz, f"w{u}"),
                            encode_item(AnswerItem(quiz, episode_id, f"w{u}", "ab"[u % 2], now)))
                           for u in range(start, min(users, start + FILL_CHUNK))]
                total += sum(await broker.enqueue_unique(keys.ANSWER_QUEUE, entries, 3600 + DEDUPE_MARGIN))
    return total


async def queue_busy(broker: Any, queue: str) -> int:
    stats = await broker.queue_stats(queue)
    return stats["waiting"] + stats["pending"]


async def bench(args: argparse.Namespace, redis_url: str, db_path: str) -> dict[str, Any]:
    core = await start_node("core", node_env(redis_url, db_path, "bench-core"), "worker-core.log")
    worker = await start_node("worker", node_env(redis_url, db_path, "bench-worker-1"), "worker-1.log")
    second = None
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            director = Director(http, core.listening["core"])
            episode_id = await director.live_episode()
            lag = await lag_phase(core.listening["core"], director, episode_id, args.lag_seconds, args.rate)
            await worker.terminate()  # throughput is measured on a fresh worker facing a full queue

            quizzes = [await director.open_quiz(episode_id) for _ in range(max(1, args.answers // args.users))]
            answers = await fill_queue(redis_url, episode_id, quizzes, args.users)
            async with open_broker(redis_url) as broker:
                second = await start_node("worker", node_env(redis_url, db_path, "bench-worker-2"), "worker-2.log")
                started = trio.current_time()
                with trio.fail_after(DRAIN_BOUND):
                    while await queue_busy(broker, keys.ANSWER_QUEUE):
                        await trio.sleep(QUEUE_POLL)
                    elapsed = trio.current_time() - started
                    while await queue_busy(broker, keys.JOB_QUEUE):
                        await trio.sleep(QUEUE_POLL)
                    jobs_elapsed = trio.current_time() - started
            counted = 0
            for quiz in quizzes:
                body = (await http.get(f"{core.listening['core']}/v1/interactions/{quiz}/results",
                                       headers=director.headers)).json()
                counted += body["total"]
    finally:
        for process in (second, worker, core):
            if process is not None:
                await process.terminate()
    return {
        "benchmark": "worker",
        "answers": answers,
        "users": args.users,
        "interactions": len(quizzes),
        "answers_per_s": round(answers / elapsed, 1),
        "aggregate_seconds": round(elapsed, 3),
        "jobs_drained_s": round(jobs_elapsed, 3),
        "counted": counted,
        **lag,
        "target_answers_per_s": 20_000,
        "target_lag_p99_ms": 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench worker", description=__doc__.split("\n")[0])
    parser.add_argument("--answers", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--lag-seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=200.0, help="background answers per second (lag phase)")
    args = parser.parse_args(argv)
    return run_on_private_redis(lambda redis, db: bench(args, redis.url, db))


if __name__ == "__main__":
    sys.exit(main())
