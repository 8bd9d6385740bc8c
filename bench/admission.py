"""Admission under a thundering herd: sessions per second on one gatekeeper, against the same stack's ceiling.

    python -m bench admission [--clients N] [--seconds S] [--rounds R] [--profile]

Starts a redis-server, one ``core,push`` process (so the gatekeeper's snapshot lists a core and a push
node and admissions succeed; no worker or scheduler: nothing here needs them, and idle processes only add
noise), two gatekeeper processes (``--role gatekeeper``) and the ceiling (``bench/_ceiling.py``: a trivial
``POST /v1/session`` on the same Hypercorn + quart-trio app factory). The two gatekeepers differ only in
configuration:

- *open*: ``licensed_capacity`` and ``qos_initial_capacity`` far above what a run can admit, so every
  request is an admission (ticket signed, endpoint lists ordered and encoded);
- *full*: ``licensed_capacity`` = 1, so every request after the first is a 503 ``at_capacity``.

N connections (one keep-alive socket each, the raw client of ``bench/_play.py``: pre-built requests, an
order of magnitude cheaper than httpx) send back-to-back ``POST /v1/session`` for S seconds after a
warm-up, to each target in turn: the ceiling, the open gatekeeper, the full gatekeeper with new arrivals
(no queue token: the gatekeeper signs one and seats the client in its waiting room) and the full gatekeeper
with returning clients (each presents the queue token of its previous 503, as the SDK does). Each is
reported as a ratio to the ceiling: ``admission_ratio`` (target ≥ 0.7), ``rejection_ratio`` (new arrivals)
and ``rejection_returning_ratio`` (target ≥ 1.0 for both). The four phases repeat ``--rounds`` times; each
ratio is the median of the per-round ratios (this machine's throughput swings 2× from one 3-s phase to
the next, so one round proves little).

Throughput on a shared 2-core machine moves with the neighbours, so each phase also reports the server's
CPU time per request (``cpu_us``), and ``*_cpu_ratio`` = ceiling cpu_us / gatekeeper cpu_us asks the same
question of cost. ``--profile`` runs py-spy on the gatekeeper during each of its phases and writes the
collapsed stacks to ``bench/out/admission-<phase>.txt``. Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from statistics import median
from typing import Any, Callable

import msgspec
import trio

from bench._play import run_on_private_redis, OUT_DIR, KeepAliveHttp, cpu_seconds, node_env, start_node, start_process
from playtotv.percentile import percentile

WARMUP_SECONDS = 1.0
BODY = b'{"name":"bench","transports":["websocket","polling"]}'
#: Far above what any run can admit (admissions count as "recent" for 10 s): the open gatekeeper never
#: refuses, so its phase measures admissions only.
UNLIMITED = 1_000_000_000
#: Bound on one request: a stuck server ends the phase with errors, never a hung benchmark.
REQUEST_TIMEOUT = 10.0


def session_request(body: bytes) -> bytes:
    return (b"POST /v1/session HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


_SESSION = session_request(BODY)
_queue_of = msgspec.json.Decoder(dict[str, Any])


class NewArrival:
    """Every request is a first visit: the same bytes each time."""

    def request(self) -> bytes:
        return _SESSION

    def answered(self, status: int, body: bytes) -> None:
        pass


class Returning:
    """A rejected client that comes back with the ``queue`` token of its previous 503 (as the SDK does)."""

    def __init__(self) -> None:
        self.raw = _SESSION

    def request(self) -> bytes:
        return self.raw

    def answered(self, status: int, body: bytes) -> None:
        if status == 503 and self.raw is _SESSION:
            token = _queue_of.decode(body).get("queue")
            if token:
                self.raw = session_request(msgspec.json.encode({"name": "bench", "queue": token}))


@dataclass
class Phase:
    name: str
    url: str
    pid: int
    expected: int
    client: Callable[[], NewArrival | Returning] = NewArrival


async def drive(phase: Phase, clients: int, seconds: float, profile: bool) -> dict[str, Any]:
    """N connections send back-to-back requests; only those started after the warm-up count."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    unexpected: list[bytes] = []  # the first unexpected answer, to say what went wrong
    start = trio.current_time()
    measure_from, stop_at = start + WARMUP_SECONDS, start + WARMUP_SECONDS + seconds

    async def one_client() -> None:
        nonlocal errors
        state = phase.client()
        client = await KeepAliveHttp.connect(phase.url)
        try:
            while (begun := trio.current_time()) < stop_at:
                with trio.fail_after(REQUEST_TIMEOUT):
                    status, body = await client.request(state.request())
                state.answered(status, body)
                if status != phase.expected and not unexpected:
                    unexpected.append(body[:300])
                if begun >= measure_from:
                    latencies.append(trio.current_time() - begun)
                    statuses[status] = statuses.get(status, 0) + 1
        except (OSError, EOFError, trio.BrokenResourceError, trio.TooSlowError):
            errors += 1
        finally:
            await client.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(one_client)
        await trio.sleep_until(measure_from)
        cpu_before = cpu_seconds(phase.pid)
        spy = await start_profiler(phase, seconds) if profile else None
        await trio.sleep_until(stop_at)
        cpu_used = cpu_seconds(phase.pid) - cpu_before
    if spy is not None:
        with trio.move_on_after(10):
            await spy.wait()
    latencies.sort()
    ok = statuses.get(phase.expected, 0)
    return {
        "per_s": round(ok / seconds, 1),
        "p50_ms": round((percentile(latencies, 0.5) or 0) * 1000, 2),
        "p99_ms": round((percentile(latencies, 0.99) or 0) * 1000, 2),
        "cpu_us": round(cpu_used / ok * 1e6, 1) if ok else None,
        "errors": errors + sum(n for s, n in statuses.items() if s != phase.expected),
        "statuses": {str(s): n for s, n in sorted(statuses.items())},
        **({"unexpected": unexpected[0].decode(errors="replace")} if unexpected else {}),
    }


async def start_profiler(phase: Phase, seconds: float) -> trio.Process | None:
    """py-spy on the server for the measured part of the phase (it slows the server a little: profile
    runs are for where the time goes, not for the figures)."""
    spy = shutil.which("py-spy")
    if spy is None:
        print("--profile needs py-spy on PATH", file=sys.stderr)
        return None
    out = os.path.join(OUT_DIR, f"admission-{phase.name}.txt")
    cmd = [spy, "record", "--pid", str(phase.pid), "--duration", str(max(1, int(seconds))), "--rate", "250",
           "--format", "raw", "--output", out, "--nonblocking"]
    return await trio.lowlevel.open_process(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def bench(args: argparse.Namespace, redis_url: str, db_path: str) -> dict[str, Any]:
    def env(node_id: str, **extra: str) -> dict[str, str]:
        return node_env(redis_url, db_path, node_id, push_bind="127.0.0.1:0", push_polling_bind="127.0.0.1:0",
                        gatekeeper_bind="127.0.0.1:0", **extra)

    processes = []
    try:
        processes.append(await start_node("core,push", env("bench-node"), "admission-node.log"))
        open_gk = await start_node("gatekeeper", env("bench-gk-open", gatekeeper_licensed_capacity=str(UNLIMITED),
                                                     gatekeeper_qos_initial_capacity=str(UNLIMITED)),
                                   "admission-gk-open.log")
        processes.append(open_gk)
        full_gk = await start_node("gatekeeper", env("bench-gk-full", gatekeeper_licensed_capacity="1"),
                                   "admission-gk-full.log")
        processes.append(full_gk)
        ceiling = await start_process([sys.executable, "-m", "bench._ceiling"], dict(os.environ),
                                      "admission-ceiling.log")
        processes.append(ceiling)
        phases = [
            Phase("ceiling", ceiling.listening["ceiling"], ceiling.proc.pid, 200),
            Phase("admissions", open_gk.listening["gatekeeper"], open_gk.proc.pid, 200),
            Phase("rejections", full_gk.listening["gatekeeper"], full_gk.proc.pid, 503),
            Phase("rejections_returning", full_gk.listening["gatekeeper"], full_gk.proc.pid, 503, Returning),
        ]
        rounds = []
        for _ in range(args.rounds):
            rounds.append({p.name: await drive(p, args.clients, args.seconds, args.profile) for p in phases})
    finally:
        for process in reversed(processes):
            await process.terminate()
    return summarise(args, rounds)


def summarise(args: argparse.Namespace, rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Medians over rounds. Ratios are taken within each round (a phase against the ceiling measured
    seconds before it) and then their median: the machine's load drifts more between rounds than within
    one."""
    def med(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return round(median(present), 3) if present else None

    result: dict[str, Any] = {"benchmark": "admission", "clients": args.clients, "seconds": args.seconds,
                              "rounds": args.rounds}
    for phase, stem in (("ceiling", None), ("admissions", "admission"), ("rejections", "rejection"),
                        ("rejections_returning", "rejection_returning")):
        runs = [r[phase] for r in rounds]
        result[phase] = {key: med([run[key] for run in runs]) for key in ("per_s", "p50_ms", "p99_ms", "cpu_us")}
        result[phase]["errors"] = sum(run["errors"] for run in runs)
        result[phase]["statuses"] = runs[-1]["statuses"]
        if "unexpected" in runs[-1]:
            result[phase]["unexpected"] = runs[-1]["unexpected"]
        if stem is not None:
            ceilings = [r["ceiling"] for r in rounds]
            result[f"{stem}_ratio"] = med([run["per_s"] / c["per_s"] if c["per_s"] else None
                                           for run, c in zip(runs, ceilings)])
            result[f"{stem}_cpu_ratio"] = med([c["cpu_us"] / run["cpu_us"] if run["cpu_us"] and c["cpu_us"] else None
                                               for run, c in zip(runs, ceilings)])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench admission", description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=64, help="concurrent keep-alive connections")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per phase")
    parser.add_argument("--rounds", type=int, default=5, help="repeat the four phases; medians")
    parser.add_argument("--profile", action="store_true", help="py-spy the servers (bench/out/admission-*.txt)")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.seconds <= 0 or args.rounds < 1:
        parser.error("--clients, --seconds and --rounds must be positive")
    return run_on_private_redis(lambda redis, db: bench(args, redis.url, db))


if __name__ == "__main__":
    sys.exit(main())
