"""Hold: a push node with a small CPU budget holding a steady number of clients, second by second.

    python -m bench hold [--clients 1000] [--seconds 60] [--cpus 0.1] [--rate 5] [--slo-ms 200]

The overload benchmark's set-up (``bench/overload.py``: a ``redis-server``, one push node in a CPU budget
on a core of its own, the epoll load generator, ``--rate`` messages a second to every client) without
the ramp or the gatekeeper: ``--clients`` join at 50 a second, then for ``--seconds`` every second
reports the node's CPU share (its threads' CPU time from ``/proc``, nanoseconds, over the budget) and
the p99 of that second's deliveries. What the overload benchmark's gated phase cannot show, because
its population moves: how much one node's latency varies at a fixed load, and what causes it; each
garbage collection over 50 ms the node logged while holding is listed with its CPU time. Made to find
why admitted clients' p99 rose with no clients added (``playtotv/gcpacer.py``).

Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from statistics import median
from typing import Any

import trio

from bench._cpu_budget import CpuBudget
from bench._play import OUT_DIR, SECRET, thread_cpu_seconds
from bench.overload import TICKET_TTL, fanning_push, run_budgeted, summary, wait_subscribed
from playtotv.credentials import KeyRing

ARRIVAL_RATE = 50.0
#: After the clients are subscribed, this long before the first measured second (handshakes settle).
SETTLE_SECONDS = 2.0
LOG_NAME = "overload-hold-push.log"
_SLOW = re.compile(r"generation=(\d) wall_ms=([\d.]+) cpu_ms=([\d.]+)")


async def hold(args: argparse.Namespace, redis_url: str, db_path: str, budget: CpuBudget) -> dict[str, Any]:
    ring = KeyRing.from_secrets(SECRET)
    seconds: list[dict[str, Any]] = []
    async with fanning_push(redis_url, db_path, budget, "hold-push", args.rate) as (push, gen):
        url = push.listening["push"]
        for i in range(args.clients):
            await gen.connect(url, ring.issue(f"hold-{i}", ttl=TICKET_TTL)[0])
            await trio.sleep(1.0 / ARRIVAL_RATE)
        ready = (await wait_subscribed(gen, args.clients))["ready"]
        await trio.sleep(SETTLE_SECONDS)
        await gen.report()  # drop the deliveries made while clients were still connecting
        start, cpu_before = trio.current_time(), thread_cpu_seconds(push.proc.pid)
        first = time.strftime("%H:%M:%S")  # as the node's log stamps its lines
        for t in range(1, args.seconds + 1):
            # The log's stamps are whole seconds: the last measured one is left out of the slow
            # collections, as it shares its stamp with the clients' mass departure after the hold.
            last = time.strftime("%H:%M:%S")
            await trio.sleep_until(start + t)
            report, cpu = await gen.report(), thread_cpu_seconds(push.proc.pid)
            seconds.append({"t": t, "cpu_share": round((cpu - cpu_before) / budget.cpus, 3),
                            "p99_ms": summary(report["latencies_ms"])["p99_ms"]})
            cpu_before = cpu
    # Collections logged while holding, not those of the clients' mass departure after it.
    return {"clients": ready, "seconds": seconds,
            "slow_collections": slow_collections(os.path.join(OUT_DIR, LOG_NAME), first, last)}


def slow_collections(log_path: str, first: str, last: str) -> list[dict[str, float]]:
    """The node's "slow garbage collection" lines stamped from ``first`` to before ``last`` (HH:MM:SS,
    the same day: a hold across midnight lists none)."""
    found = []
    with open(log_path) as f:
        for line in f:
            match = _SLOW.search(line)
            if match and first <= line[:8] < last:
                generation, wall, cpu = match.groups()
                found.append({"at": line[:8], "generation": int(generation), "wall_ms": float(wall),
                              "cpu_ms": float(cpu)})
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench hold", description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000, help="clients held")
    parser.add_argument("--seconds", type=int, default=60, help="seconds measured")
    parser.add_argument("--cpus", type=float, default=0.1, help="the push node's CPU budget (CPUs)")
    parser.add_argument("--rate", type=float, default=5.0, help="messages published per second")
    parser.add_argument("--slo-ms", type=float, default=200.0, help="a second's p99 above this is counted")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.seconds < 1:
        parser.error("--clients and --seconds must be at least 1")
    outcome = run_budgeted("bench hold", hold, args)
    if outcome is None:
        return 2
    result, _ = outcome
    rows = result["seconds"]
    for row in rows:
        print(f"{row['t']:3d}s  cpu {row['cpu_share']:.2f}  p99 {row['p99_ms']} ms", file=sys.stderr)
    p99s = [r["p99_ms"] for r in rows if r["p99_ms"] is not None]
    print(json.dumps({
        "benchmark": "hold", "cpus": args.cpus, "rate": args.rate, "clients": result["clients"],
        "seconds_over_slo": sum(1 for v in p99s if v > args.slo_ms), "seconds": len(rows),
        "median_second_p99_ms": median(p99s) if p99s else None,
        "worst_second_p99_ms": max(p99s, default=None),
        "median_cpu_share": median(r["cpu_share"] for r in rows) if rows else None,
        "slow_collections": result["slow_collections"],
        "timeline": rows,
    }))
    return 0
