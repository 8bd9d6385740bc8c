"""A whole show on one machine: viewers join, a quiz opens, 60 % answer, it closes and is revealed, a poll.

    python -m bench show [--viewers 50000] [--answer-share 0.6] [--answer-window 10] [--push-nodes P]
                         [--core-nodes C] [--plot bench/out/show.png]

What runs (loopback only; all started and stopped here): a ``redis-server``, ``--core-nodes`` core
processes, one worker, ``--push-nodes`` push processes (default: one per ``VIEWERS_PER_PUSH`` viewers, as
one process holds at most ``ulimit -n`` sockets) and a gatekeeper, sharing one SQLite store; one load
generator per push node (``bench/_show_load.py``: raw sockets, one ``epoll`` loop, no task per client).
The gatekeeper's admission control is opened wide (capacity above the audience, QoS limits out of
reach): this measures the show, not admission (``bench overload`` does that).

The show, phase by phase:

1. **join**: every viewer asks ``POST /v1/session`` (``JOIN_CONCURRENCY`` at a time, keep-alive, as many
   SDKs behind one address) and opens the WebSocket the session lists first; joins per second, the
   session request's p99, and the time until every socket is subscribed.
2. **quiz**: the director opens a quiz (``interaction.opened`` to every viewer); ``--answer-share`` of
   the viewers answer it over REST (the session's first core), spread evenly over ``--answer-window``
   seconds; the director closes it (``interaction.closed``) and reveals it (``interaction.revealed``,
   from which each viewer's SDK computes its points).
3. **poll**: the director opens and closes a poll.

Reported per phase: each broadcast's delivery p99 (``sent_at`` → the client's ``recv``) and how many
clients got it; answers accepted, their p99 and errors; reveal → points p99 (the director's reveal
request → ``interaction.revealed`` at the client, whose SDK computes the points from it) and how many got it; CPU seconds per viewer of each role over the
phase (``/proc/<pid>/stat``) and RSS per viewer at the end. Checks: the quiz's results ``total`` equals
the answers accepted, every viewer got every broadcast (the reveal included: its points). Each
figure is judged against ``--slo`` (2 s). Prints one JSON object on its last line; ``--plot`` writes a
PNG of delivery and answer latency over the show.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from typing import Any

import httpx
import msgspec
import trio

from bench._fanout_load import raise_fd_limit
from bench._play import (
    OUT_DIR,
    Director,
    KeepAliveHttp,
    cpu_seconds,
    node_env,
    post_request,
    redis_and_workdir,
    start_node,
)
from bench._sessions import SessionPool
from bench.overload import LoadGenerator
from playtotv.devtools.nodeprocess import NodeProcess
from playtotv.percentile import percentile

#: One push process per this many viewers: under the 20,000 open files a process may hold here, with room
#: for its Redis connections, logs and sockets still handshaking.
VIEWERS_PER_PUSH = 15000
#: Session requests in flight at once.
JOIN_CONCURRENCY = 32
#: Keep-alive connections that carry the answers to each core node.
ANSWER_CONNECTIONS = 64
#: Bounds: joining, waiting for a broadcast or the points to arrive everywhere, reading a generator.
JOIN_TIMEOUT = 600.0
DELIVERY_TIMEOUT = 60.0
GENERATOR_TIMEOUT = 30.0
TICKET_TTL = 3600.0
SESSION_BODY = b'{"name":"bench","transports":["websocket"]}'
SESSION_REQUEST = (b"POST /v1/session HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n" % len(SESSION_BODY)) + SESSION_BODY
ANSWER_BODY = b'{"choice":"a"}'
#: The message types whose every receipt is timed; the generators only count the others.
TIMED = ("interaction.opened", "interaction.closed", "interaction.revealed")
#: At most this many points per series in the plot (a scatter of 50,000 points says no more).
PLOT_POINTS = 4000
_decode = msgspec.json.Decoder(dict[str, Any]).decode


class ShowGenerator(LoadGenerator):
    """One ``bench/_show_load.py`` process: ``connect`` clients, ``report`` what they received (the
    overload benchmark's generator driver, with the viewer's id and the timed message types)."""

    @classmethod
    async def start(cls, channel: str) -> ShowGenerator:  # type: ignore[override]
        cmd = [sys.executable, "-m", "bench._show_load", "--channel", channel, "--timed", ",".join(TIMED)]
        return cls(await trio.lowlevel.open_process(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE))

    async def connect(self, url: str, ticket: str, user_id: str) -> None:  # type: ignore[override]
        async with self.lock:
            await self.stdin.send_all(f"connect {url} {ticket} {user_id}\n".encode())


class Audience:
    """The generators, and what their clients received, by message type, since the show began."""

    def __init__(self, generators: dict[str, ShowGenerator]) -> None:
        self.by_url = generators
        self.received: dict[str, list[tuple[float, float]]] = {}
        self.counts: dict[str, int] = {}
        self.others: dict[str, int] = {}  # receipts of the types not timed
        self.busy_s = 0.0

    async def collect(self) -> None:
        counts: dict[str, int] = {}
        for gen in self.by_url.values():
            report = await gen.report()
            for kind, pairs in report["messages"].items():
                self.received.setdefault(kind, []).extend(pairs)
            for kind, n in report["others"].items():
                self.others[kind] = self.others.get(kind, 0) + n
            for key in ("ready", "failed", "closed", "reconnect_requested", "gaps", "connecting"):
                counts[key] = counts.get(key, 0) + report[key]
            self.busy_s += report["busy_s"]
        self.counts = counts

    def take(self, kind: str) -> list[tuple[float, float]]:
        return self.received.pop(kind, [])

    async def wait_for(self, kind: str, expected: int, since: int = 0) -> list[tuple[float, float]]:
        """Receipts of ``kind`` (beyond the first ``since`` already counted) until ``expected`` arrived
        or ``DELIVERY_TIMEOUT``; returns them all (the caller judges how many)."""
        with trio.move_on_after(DELIVERY_TIMEOUT):
            while len(self.received.get(kind, [])) < expected:
                await trio.sleep(0.25)
                await self.collect()
        await self.collect()
        return self.take(kind)


class Roles:
    """The node processes by role, for CPU and RSS per viewer."""

    def __init__(self) -> None:
        self.pids: dict[str, list[int]] = {}

    def add(self, role: str, pid: int | None) -> None:
        if pid is not None:
            self.pids.setdefault(role, []).append(pid)

    def cpu(self) -> dict[str, float]:
        return {role: sum(_cpu(pid) for pid in pids) for role, pids in self.pids.items()}

    def rss_mb(self) -> dict[str, float]:
        return {role: sum(_rss_kb(pid) for pid in pids) / 1024 for role, pids in self.pids.items()}


def _cpu(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _ms(value: float | None) -> float | None:
    return round(value * 1000, 1) if value is not None else None


def latency_summary(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    return {"count": len(ordered), "p50_ms": _ms(percentile(ordered, 0.5)), "p99_ms": _ms(percentile(ordered, 0.99)),
            "max_ms": _ms(ordered[-1] if ordered else None)}


class Timeline:
    """(wall time, latency seconds) per series, for the plot."""

    def __init__(self) -> None:
        self.series: dict[str, list[tuple[float, float]]] = {}

    def add(self, name: str, points: list[tuple[float, float]]) -> None:
        self.series.setdefault(name, []).extend(points)


# -- phases --------------------------------------------------------------------------------------------------

async def join(gatekeeper_url: str, viewers: int, audience: Audience) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Every viewer: a session from the gatekeeper, then its WebSocket. Returns the figures and each
    admitted viewer's (ticket, first core URL)."""
    pool = SessionPool(gatekeeper_url, size=JOIN_CONCURRENCY)
    latencies: list[float] = []
    viewers_in: list[tuple[str, str]] = []
    errors: dict[str, int] = {}
    next_index = 0
    began = trio.current_time()

    async def joiner() -> None:
        nonlocal next_index
        while next_index < viewers:
            next_index += 1
            for _attempt in range(5):
                start = trio.current_time()
                try:
                    status, body = await pool.request(SESSION_REQUEST)
                except (OSError, EOFError, trio.BrokenResourceError, trio.TooSlowError) as e:
                    status, body = 0, type(e).__name__.encode()
                if status == 200:
                    latencies.append(trio.current_time() - start)
                    session = _decode(body)
                    ws = next(p["websocket"] for p in session["push"] if p.get("websocket"))
                    viewers_in.append((session["ticket"], session["core"][0]))
                    gen = audience.by_url.get(ws)
                    if gen is None:
                        errors["unknown_push"] = errors.get("unknown_push", 0) + 1
                    else:
                        await gen.connect(ws, session["ticket"], session["user_id"])
                    break
                errors[str(status)] = errors.get(str(status), 0) + 1
                await trio.sleep(1.0)

    async with trio.open_nursery() as nursery:
        for _ in range(JOIN_CONCURRENCY):
            nursery.start_soon(joiner)
    sessions_s = trio.current_time() - began
    with trio.move_on_after(JOIN_TIMEOUT):
        while True:
            await audience.collect()
            if audience.counts["ready"] + audience.counts["failed"] >= len(viewers_in) \
                    or not audience.counts["connecting"]:
                break
            await trio.sleep(0.5)
    connected_s = trio.current_time() - began
    return {
        "sessions": len(viewers_in),
        "sessions_s": round(sessions_s, 2),
        "joins_per_s": round(len(viewers_in) / sessions_s, 1) if sessions_s else None,
        "session_p99_ms": latency_summary(latencies)["p99_ms"],
        "session_p50_ms": latency_summary(latencies)["p50_ms"],
        "connected": audience.counts["ready"],
        "connect_failed": audience.counts["failed"],
        "all_connected_s": round(connected_s, 2),
        "connected_per_s": round(audience.counts["ready"] / connected_s, 1) if connected_s else None,
        "errors": errors,
    }, viewers_in


async def broadcast(audience: Audience, timeline: Timeline, name: str, kind: str, interaction_id: str,
                    act: Any, receipts: list[tuple[float, float]] | None = None) -> dict[str, Any]:
    """``act()`` (a director call) and the delivery of the ``kind`` message about ``interaction_id`` it
    causes to every client; ``receipts`` gets each (received, sent) pair."""
    await act()
    pairs = await audience.wait_for(f"{kind}/{interaction_id}", audience.counts["ready"])
    if receipts is not None:
        receipts.extend(pairs)
    timeline.add(f"delivery: {name}", [(sent, recv - sent) for recv, sent in pairs])
    return {"message": kind, **latency_summary([recv - sent for recv, sent in pairs]),
            "clients": audience.counts["ready"]}


async def answer(viewers_in: list[tuple[str, str]], interaction_id: str, share: float, window: float,
                 timeline: Timeline) -> dict[str, Any]:
    """``share`` of the viewers answer, one every ``window / n`` seconds, over keep-alive connections to
    their own core node; latency is from each request's send to its response."""
    chosen = viewers_in[: round(len(viewers_in) * share)]
    path = f"/v1/interactions/{interaction_id}/answers"
    by_core: dict[str, list[tuple[int, bytes]]] = {}
    for i, (ticket, core) in enumerate(chosen):
        by_core.setdefault(core, []).append((i, post_request(path, ANSWER_BODY, ticket)))
    step = window / max(1, len(chosen))
    statuses: dict[str, int] = {}
    points: list[tuple[float, float]] = []
    late: list[float] = []
    from_due: list[tuple[float, float]] = []  # what the viewer sees: from when it answered (its due time)
    start = trio.current_time()
    wall_start = time.time()

    async def connection(queue: list[tuple[int, bytes]], url: str) -> None:
        client: KeepAliveHttp | None = None
        while queue:
            i, raw = queue.pop()
            due = start + i * step
            await trio.sleep_until(due)
            sent = trio.current_time()
            late.append(sent - due)
            try:
                if client is None:
                    client = await KeepAliveHttp.connect(url)
                status = str((await client.request(raw))[0])
            except (OSError, EOFError, trio.BrokenResourceError) as e:
                status = type(e).__name__
                if client is not None:
                    await client.aclose()
                client = None
            statuses[status] = statuses.get(status, 0) + 1
            done = trio.current_time()
            points.append((wall_start + (sent - start), done - sent))
            from_due.append((wall_start + (due - start), done - due))
        if client is not None:
            await client.aclose()

    async with trio.open_nursery() as nursery:
        for url, requests in by_core.items():
            requests.reverse()  # popped from the end: in order of due time
            for _ in range(ANSWER_CONNECTIONS):
                nursery.start_soon(connection, requests, url)
    took = trio.current_time() - start
    timeline.add("answer (REST), from the viewer's click", from_due)
    accepted = statuses.get("202", 0)
    return {
        "answering": len(chosen),
        "accepted": accepted,
        "errors": {k: v for k, v in statuses.items() if k != "202"},
        **{f"answer_{k}": v for k, v in latency_summary([p[1] for p in points]).items() if k != "count"},
        # Judged: from each viewer's due time to its 202, so answers queued behind a slow core count
        # their wait (the driver holds ANSWER_CONNECTIONS per core, as a server's accept queue would).
        **{f"answer_from_due_{k}": v for k, v in latency_summary([p[1] for p in from_due]).items() if k != "count"},
        "answers_per_s": round(accepted / took, 1) if took else None,
        "window_s": window,
        "took_s": round(took, 2),
        "behind_schedule_p99_ms": latency_summary(late)["p99_ms"],
    }


async def results_total(http: httpx.AsyncClient, director: Director, interaction_id: str, expected: int) -> int:
    """The results' ``total``, read until it reaches ``expected`` or ``DELIVERY_TIMEOUT``."""
    total = -1
    with trio.move_on_after(DELIVERY_TIMEOUT):
        while True:
            r = await http.get(f"{director.core}/v1/interactions/{interaction_id}/results", headers=director.headers)
            total = r.json().get("total", -1) if r.status_code == 200 else -1
            if total >= expected:
                break
            await trio.sleep(0.5)
    return total


# -- the run --------------------------------------------------------------------------------------------------

class Phases:
    """Per phase: the figures, the wall time it took, and each role's CPU seconds per viewer over it."""

    def __init__(self, roles: Roles, audience: Audience, viewers: int) -> None:
        self.roles = roles
        self.audience = audience
        self.viewers = viewers
        self.out: dict[str, dict[str, Any]] = {}

    async def run(self, name: str, body: Any) -> Any:
        cpu_before = self.roles.cpu()
        busy_before = self.audience.busy_s
        began = trio.current_time()
        figures, value = await body()
        cpu_after = self.roles.cpu()
        n = max(1, self.viewers)
        self.out[name] = {
            **figures,
            "phase_s": round(trio.current_time() - began, 2),
            "cpu_ms_per_viewer": {role: round((cpu_after[role] - cpu_before.get(role, 0.0)) / n * 1000, 3)
                                  for role in cpu_after},
            "generators_busy_s": round(self.audience.busy_s - busy_before, 2),
        }
        return value


async def show(args: argparse.Namespace, redis: Any, db_path: str) -> dict[str, Any]:
    roles = Roles()
    roles.add("redis", redis.pid)
    roles.add("driver", os.getpid())  # sessions and answers are sent from here
    push_nodes = args.push_nodes or max(1, math.ceil(args.viewers / VIEWERS_PER_PUSH))
    per_push = math.ceil(args.viewers / push_nodes)
    nodes: list[NodeProcess] = []
    timeline = Timeline()
    async with AsyncExitStack() as stack:
        async def node(role: str, name: str, **extra: str) -> NodeProcess:
            n = await start_node(role, node_env(redis.url, db_path, name, **extra), f"show-{name}.log")
            nodes.append(n)
            roles.add(role, n.pid)
            return n

        async def stop_nodes() -> None:
            for n in reversed(nodes):
                await n.terminate()

        stack.push_async_callback(stop_nodes)
        cores = [await node("core", f"core{i}") for i in range(args.core_nodes)]
        await node("worker", "worker0")
        pushes = [await node("push", f"push{i}", push_bind="127.0.0.1:0", push_polling_bind="127.0.0.1:0",
                             # room for the randomised placement's imbalance
                             push_max_connections=str(min(18500, per_push * 2)))
                  for i in range(push_nodes)]
        gatekeeper = await node("gatekeeper", "gatekeeper", gatekeeper_bind="127.0.0.1:0",
                                gatekeeper_licensed_capacity=str(args.viewers * 2),
                                gatekeeper_qos_initial_capacity=str(args.viewers * 2),
                                gatekeeper_slo_fanout_p99_ms="600000", gatekeeper_slo_core_p95_ms="600000",
                                gatekeeper_slo_loop_lag_ms="600000", gatekeeper_slo_queue_lag_s="600000",
                                gatekeeper_slo_cpu_busy="100")
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=60))
        director = Director(http, cores[0].listening["core"])
        episode_id = await director.live_episode()
        channel = f"episode:{episode_id}"
        generators: dict[str, ShowGenerator] = {}
        for p in pushes:
            gen = await ShowGenerator.start(channel)
            generators[p.listening["push"]] = gen
            stack.push_async_callback(gen.stop)
        for gen in generators.values():
            roles.add("load", gen.proc.pid)
        audience = Audience(generators)
        pool = SessionPool(gatekeeper.listening["gatekeeper"])
        with trio.fail_after(30):
            while True:  # every push node registered: the gatekeeper spreads viewers over them all
                if (await pool.status()).get("nodes", {}).get("push", 0) >= push_nodes:
                    break
                await trio.sleep(0.2)

        phases = Phases(roles, audience, args.viewers)
        show_began = time.time()

        async def joining() -> tuple[dict[str, Any], Any]:
            figures, viewers_in = await join(gatekeeper.listening["gatekeeper"], args.viewers, audience)
            audience.received.clear()  # episode messages before the show (none expected) are not its
            return figures, viewers_in

        viewers_in = await phases.run("join", joining)
        quiz_id = ""

        async def quiz_open() -> tuple[dict[str, Any], None]:
            nonlocal quiz_id
            created = await director.post(f"/v1/episodes/{episode_id}/interactions", {
                "kind": "quiz", "prompt": "Show?", "options": [{"id": "a", "label": "A"}, {"id": "b", "label": "B"}],
                "correct": "a", "duration": 3600, "points": 1000})
            quiz_id = created["id"]
            return await broadcast(audience, timeline, "quiz opened", "interaction.opened", quiz_id,
                                   lambda: director.post(f"/v1/interactions/{quiz_id}/open")), None

        await phases.run("quiz_open", quiz_open)

        async def answering() -> tuple[dict[str, Any], int]:
            figures = await answer(viewers_in, quiz_id, args.answer_share, args.answer_window, timeline)
            return figures, figures["accepted"]

        accepted = await phases.run("answers", answering)

        async def quiz_close() -> tuple[dict[str, Any], None]:
            return await broadcast(audience, timeline, "quiz closed", "interaction.closed", quiz_id,
                                   lambda: director.post(f"/v1/interactions/{quiz_id}/close")), None

        await phases.run("quiz_close", quiz_close)

        async def reveal() -> tuple[dict[str, Any], None]:
            revealed_at = time.time()
            # Each viewer's SDK computes its points from interaction.revealed (there is no per-viewer score
            # message at reveal): reveal -> points is the reveal request -> that broadcast at each client.
            points: list[tuple[float, float]] = []
            figures = await broadcast(audience, timeline, "quiz revealed", "interaction.revealed", quiz_id,
                                      lambda: director.post(f"/v1/interactions/{quiz_id}/reveal"), points)
            timeline.add("reveal -> points", [(revealed_at, recv - revealed_at) for recv, _ in points])
            total = await results_total(http, director, quiz_id, accepted)
            return {**figures, "points": latency_summary([recv - revealed_at for recv, _ in points]),
                    "points_received": len(points), "results_total": total}, None

        await phases.run("reveal", reveal)
        poll_id = ""

        async def poll_open() -> tuple[dict[str, Any], None]:
            nonlocal poll_id
            created = await director.post(f"/v1/episodes/{episode_id}/interactions", {
                "kind": "poll", "prompt": "Poll?", "options": [{"id": "a", "label": "A"}, {"id": "b", "label": "B"}],
                "duration": 3600})
            poll_id = created["id"]
            return await broadcast(audience, timeline, "poll opened", "interaction.opened", poll_id,
                                   lambda: director.post(f"/v1/interactions/{poll_id}/open")), None

        await phases.run("poll_open", poll_open)

        async def poll_close() -> tuple[dict[str, Any], None]:
            return await broadcast(audience, timeline, "poll closed", "interaction.closed", poll_id,
                                   lambda: director.post(f"/v1/interactions/{poll_id}/close")), None

        await phases.run("poll_close", poll_close)
        rss = roles.rss_mb()
        final_counts = dict(audience.counts)
        other = {**audience.others, **{k: len(v) for k, v in audience.received.items()}}
    result = judge(args, phases.out, rss, final_counts, accepted, push_nodes)
    result["other_messages"] = other  # e.g. best-effort stats.updated
    if args.plot:
        try:
            plot(timeline, show_began, args.plot, args.viewers)
            result["plot"] = args.plot
        except ImportError:  # the figures stand without it
            print("bench show: no plot: matplotlib is not installed (pip install -e '.[bench]')", file=sys.stderr)
            result["plot"] = None
    return result


def judge(args: argparse.Namespace, phases: dict[str, dict[str, Any]], rss_mb: dict[str, float],
          counts: dict[str, int], accepted: int, push_nodes: int) -> dict[str, Any]:
    slo_ms = args.slo * 1000
    join = phases["join"]
    reveal = phases["reveal"]
    p99s = {
        "session": join["session_p99_ms"],
        **{name: phases[name]["p99_ms"] for name in ("quiz_open", "quiz_close", "reveal", "poll_open", "poll_close")},
        "answer": phases["answers"]["answer_from_due_p99_ms"],
        "points": reveal["points"]["p99_ms"],
    }
    delivered = all(phases[n]["count"] == phases[n]["clients"] == args.viewers
                    for n in ("quiz_open", "quiz_close", "reveal", "poll_open", "poll_close"))
    totals_exact = reveal["results_total"] == accepted and reveal["points_received"] == args.viewers
    return {
        "benchmark": "show",
        "viewers": args.viewers,
        "push_nodes": push_nodes,
        "core_nodes": args.core_nodes,
        "slo_ms": slo_ms,
        "p99_ms": p99s,
        "p99_to_slo": {k: round(v / slo_ms, 3) if v is not None else None for k, v in p99s.items()},
        "within_slo": all(v is not None and v <= slo_ms for v in p99s.values()),
        "joins_per_s": join["joins_per_s"],
        "answers_accepted": accepted,
        "results_total": reveal["results_total"],
        "points_received": reveal["points_received"],
        "totals_exact": totals_exact,
        "all_delivered": delivered,
        "errors": {"join": join["errors"], "answers": phases["answers"]["errors"],
                   "connect_failed": join["connect_failed"], "closed": counts.get("closed", 0),
                   "gaps": counts.get("gaps", 0)},
        "rss_kb_per_viewer": {role: round(mb * 1024 / max(1, args.viewers), 2) for role, mb in rss_mb.items()},
        "rss_mb": {role: round(mb, 1) for role, mb in rss_mb.items()},
        "cpu_ms_per_viewer": {role: round(sum(p["cpu_ms_per_viewer"].get(role, 0.0) for p in phases.values()), 3)
                              for role in phases["join"]["cpu_ms_per_viewer"]},
        "phases": phases,
    }


def plot(timeline: Timeline, began: float, path: str, viewers: int) -> None:
    """Latency (log scale) against time into the show, one colour per series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5))
    for name, points in timeline.series.items():
        if not points:
            continue
        stride = max(1, len(points) // PLOT_POINTS)
        sample = sorted(points)[::stride]
        ax.scatter([t - began for t, _ in sample], [max(lat, 1e-4) * 1000 for _, lat in sample], s=2, label=name)
    ax.set_yscale("log")
    ax.axhline(2000, color="red", linewidth=0.8, linestyle="--", label="2 s target")
    ax.set_xlabel("seconds since the first viewer joined (deliveries at their sent_at, answers at their click)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"bench show: {viewers:,} viewers")
    ax.legend(markerscale=4, fontsize=8)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench show", description=__doc__.split("\n")[0])
    parser.add_argument("--viewers", type=int, default=50000)
    parser.add_argument("--answer-share", type=float, default=0.6)
    parser.add_argument("--answer-window", type=float, default=10.0, help="seconds over which the answers come")
    parser.add_argument("--push-nodes", type=int, default=0, help=f"default: one per {VIEWERS_PER_PUSH} viewers")
    parser.add_argument("--core-nodes", type=int, default=2)
    parser.add_argument("--slo", type=float, default=2.0, help="seconds every p99 must stay within")
    parser.add_argument("--plot", default=os.path.join(OUT_DIR, "show.png"), help="PNG path ('' for none)")
    args = parser.parse_args(argv)
    raise_fd_limit()  # the driver holds the session pool and the answer connections
    with redis_and_workdir() as (redis, db):
        result = trio.run(show, args, redis, db)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
