"""``playtotv plan``: the processes, Redis and store load a show of N viewers needs.

    playtotv plan --viewers N [--answer-share 0.6] [--answer-window 10] [--slo 2] [--join-window 300]
                  [--answer-path ws|rest] [--rest-share 0.1] [--score-within 30]
                  [--calibration FILE] [--json]

Every count comes from per-process capacities in a calibration file that ``python -m bench calibrate``
writes (``bench/calibrate.py``); without ``--calibration`` the file shipped for this project's machine
class is used (``calibration-2core.json`` beside this module). Each figure in that file says whether it
was measured by calibrate, copied from ``bench/RESULTS.md``, or assumed (with why).

The model. Every process is single-threaded (trio), so one process is counted as one core; each role is
sized by its binding constraint, rounded up, and never below its minimum (one of each role, two
schedulers: a leader and a standby, docs/reliability.md).

- **push**: connections per process = min(open-file limit − reserved descriptors, SLO ÷ fan-out p99 per
  connection). A broadcast is written to each connection of a process in turn, so its delivery p99 grows
  linearly with the connections: ``push_delivery_p99_us_per_connection`` is the time one more connection
  adds (calibrate measures the push CPU per delivery: on a core of its own, the last write comes that
  long × connections after the publish). With answers over the WebSocket (``--answer-path ws``, the default) the
  push processes also take the answer burst: processes ≥ burst × (1 − rest share) ÷ answers/s per push
  process. And connections must open within the join window at the measured connects/s per process.
- **answer burst** = viewers × answer share ÷ answer window (answers/s).
- **core**: the answers that arrive over REST (all with ``--answer-path rest``, else the rest share: polling
  clients and the SDK's fallback) ÷ answers/s per core process.
- **gatekeeper**: the join ramp, viewers ÷ join window (sessions/s), ÷ sessions/s per gatekeeper.
- **worker**: the larger of aggregation (burst ÷ answers aggregated/s per worker, so the queue does not
  grow during the burst) and scoring (answers of one reveal ÷ score window ÷ answers scored/s per worker).
- **scheduler**: two, whatever the audience (one fires, one stands by).
- **Redis**: ops/s at the burst's peak = burst × ops per answer + broadcasts/s × ops per broadcast +
  processes × heartbeat ops/s; shards = ops/s ÷ ops/s per shard. A reveal costs ops per answerer (the
  leaderboard and whatever is published per viewer). Memory = viewers × bytes per viewer (user channel,
  leaderboard entry) + answers of one interaction × bytes per answer (dedupe key, answer set member,
  queue entry until aggregated).
- **store**: writes per reveal = answerers × writes per answerer (score documents) + fixed writes.

Cores in all = the processes of every role + the Redis shards (one core each; more than one shard is
what the load needs, not a topology the platform deploys today: it runs one Redis primary). The store
is outside the count (a managed database in production); its writes per reveal are reported so it can be
sized.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

#: The calibration shipped as package data (setup.cfg) for this project's machine class.
DEFAULT_CALIBRATION = "calibration-2core.json"
SOURCES = ("measured", "RESULTS.md", "assumed")
#: Every figure the model reads; a calibration file must carry each one, positive.
FIGURES = (
    "push_open_files",
    "push_reserved_files",
    "push_delivery_p99_us_per_connection",
    "push_connects_per_s",
    "push_ws_answers_per_s",
    "push_rss_kib_per_connection",
    "core_answers_per_s",
    "gatekeeper_sessions_per_s",
    "worker_aggregate_answers_per_s",
    "worker_score_answers_per_s",
    "redis_ops_per_s_per_shard",
    "redis_ops_per_answer",
    "redis_ops_per_broadcast",
    "redis_ops_per_reveal_answerer",
    "redis_heartbeat_ops_per_process_per_s",
    "redis_bytes_per_viewer",
    "redis_bytes_per_answer",
    "store_writes_per_reveal_answerer",
    "store_writes_per_reveal_fixed",
)
ROLES = ("gatekeeper", "core", "push", "worker", "scheduler")
MINIMUM = {"gatekeeper": 1, "core": 1, "push": 1, "worker": 1, "scheduler": 2}
#: Broadcasts per second during the answer burst (opened, closed, director ticks): a small constant.
BROADCASTS_PER_S = 5.0


class PlanError(Exception):
    """Bad input: a calibration file that cannot be used or an argument out of range (one line)."""


@dataclass(frozen=True)
class Show:
    viewers: int
    answer_share: float = 0.6
    answer_window: float = 10.0
    slo: float = 2.0
    join_window: float = 300.0
    answer_path: str = "ws"
    rest_share: float = 0.1
    score_within: float = 30.0

    def check(self) -> None:
        if self.viewers < 1:
            raise PlanError("--viewers must be at least 1")
        if not 0 < self.answer_share <= 1:
            raise PlanError("--answer-share must be in (0, 1]")
        if not 0 <= self.rest_share <= 1:
            raise PlanError("--rest-share must be in [0, 1]")
        for name in ("answer_window", "slo", "join_window", "score_within"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise PlanError(f"--{name.replace('_', '-')} must be a positive number of seconds")
        if self.answer_path not in ("ws", "rest"):
            raise PlanError("--answer-path must be ws or rest")


def load_calibration(path: str | None) -> dict[str, Any]:
    """The calibration at ``path``, or the shipped one; PlanError naming the file if it is unusable."""
    name = path or f"package data {DEFAULT_CALIBRATION}"
    try:
        if path is None:
            text = resources.files(__name__).joinpath(DEFAULT_CALIBRATION).read_text(encoding="utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
        doc = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PlanError(f"--calibration {name}: {error}") from None
    figures = doc.get("figures") if isinstance(doc, dict) else None
    if not isinstance(figures, dict):
        raise PlanError(f"--calibration {name}: no 'figures' object")
    for key in FIGURES:
        entry = figures.get(key)
        if not isinstance(entry, dict):
            raise PlanError(f"--calibration {name}: no figure {key!r}")
        value = entry.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
            raise PlanError(f"--calibration {name}: figure {key!r} needs a positive 'value'")
        if entry.get("source") not in SOURCES:
            raise PlanError(f"--calibration {name}: figure {key!r} needs a 'source' among {', '.join(SOURCES)}")
    return doc


def _need(demand: float, capacity: float) -> int:
    # A tiny tolerance keeps an exact fit (e.g. 20,000 connections of 20,000) from rounding up.
    return math.ceil(demand / capacity - 1e-9)


def plan(show: Show, calibration: dict[str, Any]) -> dict[str, Any]:
    """The plan for ``show``: processes per role (each with its binding constraint), Redis, store, cores."""
    show.check()
    f = {k: float(v["value"]) for k, v in calibration["figures"].items() if isinstance(v, dict) and "value" in v}
    burst = show.viewers * show.answer_share / show.answer_window
    answerers = math.ceil(show.viewers * show.answer_share)
    rest_answers = burst if show.answer_path == "rest" else burst * show.rest_share
    ws_answers = burst - rest_answers

    by_files = f["push_open_files"] - f["push_reserved_files"]
    by_slo = show.slo * 1e6 / f["push_delivery_p99_us_per_connection"]
    per_push = math.floor(min(by_files, by_slo))
    if per_push < 1:
        raise PlanError("the calibration leaves no connection per push process within the SLO")
    push_needs = {
        "connections": _need(show.viewers, per_push),
        "connects": _need(show.viewers / show.join_window, f["push_connects_per_s"]),
        "answers": _need(ws_answers, f["push_ws_answers_per_s"]) if ws_answers else 0,
    }
    worker_needs = {
        "aggregation": _need(burst, f["worker_aggregate_answers_per_s"]),
        "scoring": _need(answerers / show.score_within, f["worker_score_answers_per_s"]),
    }
    needs = {
        "gatekeeper": {"join ramp": _need(show.viewers / show.join_window, f["gatekeeper_sessions_per_s"])},
        "core": {"REST answers": _need(rest_answers, f["core_answers_per_s"])},
        "push": push_needs,
        "worker": worker_needs,
        "scheduler": {"leader and standby": MINIMUM["scheduler"]},
    }
    roles: dict[str, dict[str, Any]] = {}
    for role in ROLES:
        binding, count = max(needs[role].items(), key=lambda item: item[1])
        if count < MINIMUM[role]:
            binding, count = "minimum", MINIMUM[role]
        roles[role] = {"processes": count, "binding": binding, "needs": needs[role]}
    processes = sum(r["processes"] for r in roles.values())

    ops = (burst * f["redis_ops_per_answer"] + BROADCASTS_PER_S * f["redis_ops_per_broadcast"]
           + processes * f["redis_heartbeat_ops_per_process_per_s"])
    shards = max(1, _need(ops, f["redis_ops_per_s_per_shard"]))
    memory = show.viewers * f["redis_bytes_per_viewer"] + answerers * f["redis_bytes_per_answer"]
    return {
        "show": {**show.__dict__, "answer_burst_per_s": round(burst, 1), "answerers": answerers,
                 "connections_per_push": per_push},
        "roles": roles,
        "processes": processes,
        "redis": {
            "ops_per_s": round(ops),
            "shards": shards,
            "memory_mib": round(memory / 2**20, 1),
            "ops_per_reveal": math.ceil(answerers * f["redis_ops_per_reveal_answerer"]),
        },
        "store": {"writes_per_reveal": math.ceil(answerers * f["store_writes_per_reveal_answerer"]
                                                 + f["store_writes_per_reveal_fixed"])},
        "push_rss_mib_per_process": round(per_push * f["push_rss_kib_per_connection"] / 1024, 1),
        "cores": processes + shards,
        "notes": [f"{shards} Redis shards: the platform runs one Redis primary (docs/reliability.md), so this "
                  "is the Redis capacity such a show needs, not a topology it deploys today"] if shards > 1 else [],
        "calibration": {"machine": calibration.get("machine"), "command": calibration.get("command"),
                        "sources": {k: v.get("source") for k, v in calibration["figures"].items()
                                    if isinstance(v, dict)}},
    }


def format_plan(result: dict[str, Any]) -> str:
    show = result["show"]
    lines = [
        f"{show['viewers']:,} viewers: {show['answer_share']:.0%} answer within {show['answer_window']:g} s "
        f"({show['answer_burst_per_s']:,.0f} answers/s, over {show['answer_path']}), join over "
        f"{show['join_window']:g} s, delivery SLO {show['slo']:g} s",
        f"{'role':<11} {'processes':>9}  binding constraint (processes each constraint needs)",
    ]
    for role, r in result["roles"].items():
        needs = ", ".join(f"{k} {v}" for k, v in r["needs"].items())
        lines.append(f"{role:<11} {r['processes']:>9}  {r['binding']} ({needs})")
    redis, store = result["redis"], result["store"]
    lines += [
        f"{'redis':<11} {redis['shards']:>9}  shards: {redis['ops_per_s']:,} ops/s at the burst, "
        f"{redis['memory_mib']:,} MiB, {redis['ops_per_reveal']:,} ops per reveal",
        f"store: {store['writes_per_reveal']:,} writes per reveal",
        f"push: {show['connections_per_push']:,} connections and {result['push_rss_mib_per_process']:,} MiB "
        "RSS per process",
        f"cores in all: {result['cores']} ({result['processes']} processes + Redis shards {redis['shards']})",
        *(f"note: {note}" for note in result["notes"]),
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--viewers", type=int, required=True, help="audience size")
    parser.add_argument("--answer-share", type=float, default=0.6, help="share of viewers answering a quiz")
    parser.add_argument("--answer-window", type=float, default=10.0, help="seconds in which they answer")
    parser.add_argument("--slo", type=float, default=2.0, help="delivery p99 target in seconds")
    parser.add_argument("--join-window", type=float, default=300.0, help="seconds over which the audience joins")
    parser.add_argument("--answer-path", choices=("ws", "rest"), default="ws",
                        help="answers over the push WebSocket (default) or REST")
    parser.add_argument("--rest-share", type=float, default=0.1,
                        help="with ws: the share of answers still sent over REST (polling clients, fallback)")
    parser.add_argument("--score-within", type=float, default=30.0,
                        help="seconds for authoritative scoring of one reveal")
    parser.add_argument("--calibration", default=None,
                        help="calibration JSON from `python -m bench calibrate` "
                             f"(default: the shipped {DEFAULT_CALIBRATION})")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


def run_cli(args: argparse.Namespace) -> int:
    show = Show(viewers=args.viewers, answer_share=args.answer_share, answer_window=args.answer_window,
                slo=args.slo, join_window=args.join_window, answer_path=args.answer_path,
                rest_share=args.rest_share, score_within=args.score_within)
    try:
        result = plan(show, load_calibration(args.calibration))
    except PlanError as error:
        print(f"playtotv: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else format_plan(result))
    return 0
