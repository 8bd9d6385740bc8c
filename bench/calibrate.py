"""Per-process capacities for ``playtotv plan``, measured on this machine in a few minutes.

    python -m bench calibrate [--out FILE] [--skip answers,admission,worker,fanout,redis,memory]

Runs small versions of the other benchmarks (``answers``, ``admission``, ``worker``, ``fanout``, each as
``python -m bench <name>`` in a subprocess, reading its JSON line), ``redis-benchmark`` against a private
redis-server, and a memory probe that publishes one message to many user channels through the project's
broker. Every figure the plan needs is written with its source: ``measured`` (this run), ``RESULTS.md``
(the figure in ``bench/RESULTS.md``, used when the measurement is skipped or fails) or ``assumed`` (a
count read off the code, or a figure no benchmark measures yet; the note says which). The model that
reads them is ``playtotv.plan``'s docstring.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_TIMEOUT = 300

#: The starting point of every figure: RESULTS.md's figure, or an assumption with its reason.
BASELINE: dict[str, dict[str, Any]] = {
    "push_open_files": {"value": 20000, "source": "assumed", "unit": "files",
                        "note": "the open-file limit of a push process on this machine class"},
    "push_reserved_files": {"value": 100, "source": "assumed", "unit": "files",
                            "note": "listener, Redis connections, logs, store: not viewer connections"},
    "push_delivery_p99_us_per_connection": {"value": 34.0, "source": "RESULTS.md", "unit": "µs",
                                            "note": "fan-out p99 340 ms over 10,000 clients on one push node"},
    "push_connects_per_s": {"value": 500.0, "source": "RESULTS.md", "unit": "connections/s",
                            "note": "10,000 connections in ~20 s on one push node"},
    "push_ws_answers_per_s": {"value": 17294.9, "source": "RESULTS.md", "unit": "answers/s",
                              "note": "answers over the push WebSocket: 12.7 x the REST figure, the CPU-per-answer "
                                      "ratio bench answers measured between the two paths in the same runs"},
    "push_rss_kib_per_connection": {"value": 16.8, "source": "RESULTS.md", "unit": "KiB",
                                    "note": "RSS per idle client of a push node"},
    "core_answers_per_s": {"value": 1361.8, "source": "RESULTS.md", "unit": "answers/s",
                           "note": "REST answers on one core process"},
    "gatekeeper_sessions_per_s": {"value": 519.0, "source": "RESULTS.md", "unit": "sessions/s",
                                  "note": "admissions on one gatekeeper"},
    "worker_aggregate_answers_per_s": {"value": 43280.0, "source": "RESULTS.md", "unit": "answers/s",
                                       "note": "answers aggregated per second by one worker"},
    "worker_score_answers_per_s": {"value": 18182.0, "source": "RESULTS.md", "unit": "answers/s",
                                   "note": "bench reveal --answers 100000: one worker needs at most 5.5 CPU s "
                                           "to score and store 100,000 answers"},
    "redis_ops_per_s_per_shard": {"value": 50000.0, "source": "assumed", "unit": "ops/s",
                                  "note": "redis-benchmark SET/GET, 50 clients, no pipelining"},
    "redis_ops_per_answer": {"value": 4, "source": "assumed", "unit": "ops",
                             "note": "dedupe key and queue entry (one script per batch), the worker's "
                                     "claim/ack share and answer-set add"},
    "redis_ops_per_broadcast": {"value": 2, "source": "assumed", "unit": "ops",
                                "note": "history append and PUBLISH (one script)"},
    "redis_ops_per_reveal_answerer": {"value": 1, "source": "assumed", "unit": "ops",
                                      "note": "one leaderboard member per answering viewer, written in ZADDs of "
                                              "2,000; no per-viewer message at reveal"},
    "redis_heartbeat_ops_per_process_per_s": {"value": 2, "source": "assumed", "unit": "ops/s",
                                              "note": "registry heartbeat each second (one script, one index)"},
    "redis_bytes_per_viewer": {"value": 1024, "source": "assumed", "unit": "bytes",
                               "note": "a user channel's history, offset and epoch, one leaderboard member"},
    "redis_bytes_per_answer": {"value": 200, "source": "assumed", "unit": "bytes",
                               "note": "dedupe key and answer-set member of one answer"},
    "store_writes_per_reveal_answerer": {"value": 1, "source": "assumed", "unit": "writes",
                                         "note": "one score document upsert per answering viewer (bulk)"},
    "store_writes_per_reveal_fixed": {"value": 1, "source": "assumed", "unit": "writes",
                                      "note": "the interaction's scored_at"},
}
STEPS = ("answers", "admission", "worker", "fanout", "redis", "memory")
FANOUT_CLIENTS = 2000
MEMORY_VIEWERS = 5000


def run_bench(name: str, *options: str) -> dict[str, Any]:
    """``python -m bench <name> <options>``'s JSON line (the last line of its stdout that is JSON)."""
    proc = subprocess.run([sys.executable, "-m", "bench", name, *options], cwd=ROOT, capture_output=True,
                          text=True, timeout=BENCH_TIMEOUT)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"bench {name} exited {proc.returncode} without JSON: {proc.stderr[-500:]}")


def measured(value: float, note: str, unit: str) -> dict[str, Any]:
    return {"value": round(value, 2), "source": "measured", "unit": unit, "note": note}


def step_answers() -> dict[str, dict[str, Any]]:
    r = run_bench("answers", "--viewers", "64", "--seconds", "3", "--rounds", "1")
    # Capacity per core from CPU per answer: a wall-clock rate would measure the neighbours' load too.
    per_s = 1e6 / r["core_cpu_us"]
    out = {"core_answers_per_s": measured(per_s, f"bench answers --seconds 3: 1e6 ÷ {r['core_cpu_us']} CPU µs "
                                          f"per REST answer on one core process ({r['answers_per_s']}/s wall)",
                                          "answers/s")}
    ws = r.get("ws_answers_per_s")  # reported once the WebSocket answer path is benchmarked
    if isinstance(ws, (int, float)) and ws > 0:
        out["push_ws_answers_per_s"] = measured(ws * per_s / r["answers_per_s"], "bench answers: answers over "
                                                "the push WebSocket, scaled like the REST figure", "answers/s")
    else:  # the target ratio, kept against the REST figure of the same run
        out["push_ws_answers_per_s"] = {**BASELINE["push_ws_answers_per_s"], "value": round(5 * per_s, 1)}
    return out


def step_admission() -> dict[str, dict[str, Any]]:
    r = run_bench("admission", "--seconds", "2", "--rounds", "1")["admissions"]
    return {"gatekeeper_sessions_per_s": measured(1e6 / r["cpu_us"], f"bench admission --seconds 2 --rounds 1: "
                                                  f"1e6 ÷ {r['cpu_us']} CPU µs per admission on one gatekeeper "
                                                  f"({r['per_s']}/s wall)", "sessions/s")}


def step_worker() -> dict[str, dict[str, Any]]:
    load = os.getloadavg()[0]
    r = run_bench("worker", "--answers", "20000", "--users", "5000", "--lag-seconds", "1")
    load = max(load, os.getloadavg()[0])
    note = f"bench worker --answers 20000: answers aggregated by one worker, load average {load:.1f}"
    # The worker's rate is wall-clock (the benchmark reports no CPU time for it): on a machine busier
    # than its cores it measures the neighbours, so RESULTS.md's quiet-machine figure stays.
    if load > (os.cpu_count() or 1):
        figure = BASELINE["worker_aggregate_answers_per_s"]
        return {"worker_aggregate_answers_per_s": {**figure, "note": f"{figure['note']}; this run's "
                                                   f"{r['answers_per_s']}/s at {note.split(', ')[-1]} not used"}}
    return {"worker_aggregate_answers_per_s": measured(r["answers_per_s"], note, "answers/s")}


def step_fanout() -> dict[str, dict[str, Any]]:
    r = run_bench("fanout", "--clients", str(FANOUT_CLIENTS), "--messages", "3", "--interval", "0.5")
    if r["delivered"] != r["expected"]:
        raise RuntimeError(f"fanout delivered {r['delivered']} of {r['expected']}")
    cpu_us = (r["server_cpu_user_s"] + r["server_cpu_system_s"]) * 1e6 / r["delivered"]
    out = {
        # The fan-out loop writes to a node's connections one after the other, so on a core of its own
        # the last write comes CPU per delivery × connections after the publish; on loopback that CPU
        # includes the receiving side's kernel work, which overstates it.
        "push_delivery_p99_us_per_connection": measured(
            cpu_us, f"bench fanout --clients {FANOUT_CLIENTS}: push CPU (user + system) per delivery; "
            f"wall p99 {r['p99_ms']} ms over {r['connected']} connections", "µs"),
        "push_connects_per_s": measured(r["connected"] / r["connect_s"], "bench fanout: connections ÷ "
                                        "seconds to connect them (one node, generator-bound)", "connections/s"),
        "push_open_files": measured(r.get("fd_limit") or resource.getrlimit(resource.RLIMIT_NOFILE)[1],
                                    "the hard open-file limit (RLIMIT_NOFILE)", "files"),
    }
    if r.get("rss_per_client_kb", 0) > 0:
        out["push_rss_kib_per_connection"] = measured(r["rss_per_client_kb"], "bench fanout: push RSS per idle "
                                                      "client", "KiB")
    return out


def _redis_memory(port: int) -> int:
    info = subprocess.run(["redis-cli", "-p", str(port), "info", "memory"], capture_output=True, text=True,
                          check=True, timeout=30).stdout
    return int(next(line.split(":")[1] for line in info.splitlines() if line.startswith("used_memory:")))


def step_redis() -> dict[str, dict[str, Any]]:
    from playtotv.devtools.localredis import RedisServer

    redis = RedisServer().start()
    try:
        out = subprocess.run(["redis-benchmark", "-p", str(redis.port), "-c", "50", "-n", "100000", "-q",
                              "-t", "set,get", "--csv"], capture_output=True, text=True, check=True,
                             timeout=BENCH_TIMEOUT).stdout
    finally:
        redis.close()
    rates = [float(row.split(",")[1].strip('"')) for row in out.splitlines()[1:] if row.count(",") >= 1]
    return {"redis_ops_per_s_per_shard": measured(min(rates), "redis-benchmark SET/GET, 50 clients, no "
                                                  "pipelining: the slower of the two", "ops/s")}


def step_memory() -> dict[str, dict[str, Any]]:
    """Redis bytes per viewer: one ~300-byte message on each viewer's user channel (history, offset,
    epoch) and one leaderboard member, through the broker the roles use."""
    import trio

    from playtotv import keys
    from playtotv.broker import open_broker
    from playtotv.devtools.localredis import RedisServer

    redis = RedisServer().start()
    payload = json.dumps({"type": "score.updated", "points": 1000, "total": 5000, "rank": 1234,
                          "interaction_id": "i" * 24, "pad": "x" * 160}).encode()

    async def fill() -> None:
        async with open_broker(redis.url) as broker:
            pending = iter(range(MEMORY_VIEWERS))

            async def publisher() -> None:
                for i in pending:
                    await broker.publish(keys.user_channel(f"viewer{i:07d}"), payload)

            async with trio.open_nursery() as nursery:
                for _ in range(16):
                    nursery.start_soon(publisher)
            await broker.zadd(keys.leaderboard("calibrate"), {f"viewer{i:07d}": float(i)
                                                                for i in range(MEMORY_VIEWERS)})

    try:
        before = _redis_memory(redis.port)
        trio.run(fill)
        after = _redis_memory(redis.port)
    finally:
        redis.close()
    return {"redis_bytes_per_viewer": measured((after - before) / MEMORY_VIEWERS, f"{MEMORY_VIEWERS} user "
                                               "channels with one ~300-byte message each and a leaderboard "
                                               "member: used_memory growth ÷ viewers", "bytes")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench calibrate", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="bench/out/calibration.json", help="where to write the calibration")
    parser.add_argument("--skip", default="", help=f"comma-separated steps not to run: {','.join(STEPS)}")
    args = parser.parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}
    if skip - set(STEPS):
        parser.error(f"--skip: unknown steps {','.join(sorted(skip - set(STEPS)))}")
    figures = {k: dict(v) for k, v in BASELINE.items()}
    steps: dict[str, Any] = {}
    load_before = os.getloadavg()[0]
    for name in STEPS:
        if name in skip:
            steps[name] = "skipped"
            continue
        started = time.monotonic()
        try:
            figures.update(globals()[f"step_{name}"]())
            steps[name] = f"measured in {time.monotonic() - started:.0f} s"
        except Exception as error:  # a failed step keeps its RESULTS.md/assumed figures and says why
            steps[name] = f"failed ({type(error).__name__}: {str(error)[:200]}); kept the baseline figures"
        print(f"calibrate: {name}: {steps[name]}", file=sys.stderr, flush=True)
    doc = {
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        "command": "python -m bench calibrate " + " ".join(argv if argv is not None else sys.argv[1:]),
        "steps": steps,
        # Other work on the machine lowers every measured rate: the 1-minute load average around the run.
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "figures": figures,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({"benchmark": "calibrate", "out": args.out, "steps": steps,
                      "figures": {k: [v["value"], v["source"]] for k, v in figures.items()}}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
