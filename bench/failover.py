"""``python -m bench failover``: how long the platform takes to recover from each fault, and who noticed.

    python -m bench failover [--viewers 150] [--observe 10] [--faults gatekeeper,core,...]

Starts a local cluster (``playtotv.devtools.cluster``: Redis primary + replica + three Sentinels; two of every
role), an audience following the episode channel (``playtotv.devtools.audience``: the SDK plus the push client,
reconnecting and recovering as a real app does), and two probes that run throughout:

* delivery: the director publishes a tick every ``TICK_INTERVAL``; a tick is on time when every viewer
  received it within ``DELIVERY_SLO`` of the publish call;
* answers: a viewer answers every ``ANSWER_INTERVAL``; on time when accepted within ``ANSWER_SLO``
  (failover to another core included).

Then, one at a time, each fault: SIGKILL a gatekeeper, a core, a push node, a worker, the scheduler
leader; SIGKILL the Redis primary (the Sentinels promote the replica); restart Redis with empty memory.
Per fault it reports the recovery time of each probe (from the fault to the first probe after which
every probe was on time; 0 when none missed), the viewers told ``recovered: false``, the answers accepted
and counted (exactly once), the time from closing the phase's question to the last answer counted, and
the scheduler's takeover time. After each fault the cluster is healed (a replacement process, the old
Redis node back as a replica) before the next. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import httpx
import trio

from playtotv.devtools.audience import Director, Viewer, follow_all, gather_audience, ticks
from playtotv.devtools.cluster import ClusterSpec, LocalCluster, local_cluster
from playtotv.registry import open_registry

DELIVERY_SLO = 1.5
ANSWER_SLO = 1.0
TICK_INTERVAL = 0.2
ANSWER_INTERVAL = 0.1
#: Probes before each fault (a baseline) and after the last one (so recovery can be seen).
BASELINE = 2.0
SETTLE = 3.0
FAULTS = ("gatekeeper", "core", "push", "worker", "scheduler", "redis_primary", "redis_restart")
LAYOUT = ["gatekeeper", "gatekeeper", "core", "core", "push", "push", "worker", "worker", "scheduler",
          "scheduler"]
FAST_NODES = {"PLAYTOTV_NODE_HEARTBEAT_TTL": "2", "PLAYTOTV_NODE_HEARTBEAT_INTERVAL": "0.5",
              "PLAYTOTV_ANSWERS_DURABILITY": "replicated",
              # The whole audience joins from this one address: no per-address limit on new sessions.
              "PLAYTOTV_GATEKEEPER_SESSION_RATE": "0"}


@dataclass
class Probe:
    started: float
    seconds: float | None  # None: never completed


@dataclass
class Phase:
    name: str
    interaction: str
    fault_at: float = 0.0
    ticks: dict[int, float] = field(default_factory=dict)  # tick n -> publish time
    answers: list[Probe] = field(default_factory=list)
    accepted: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def worst(probes: list[Probe], fault_at: float) -> float | None:
    """The slowest probe started after the fault (None if one never completed)."""
    after = [p.seconds for p in probes if p.started >= fault_at]
    if not after or any(s is None for s in after):
        return None
    return round(max(after), 3)  # type: ignore[type-var]


def recovery(probes: list[Probe], fault_at: float, slo: float) -> float | None:
    """Seconds from the fault to the first probe after which every probe met the SLO; 0 when none
    missed it; None when the last probe still missed it."""
    relevant = sorted((p for p in probes if p.started >= fault_at - slo), key=lambda p: p.started)
    late = [i for i, p in enumerate(relevant) if p.seconds is None or p.seconds > slo]
    if not late:
        return 0.0
    if late[-1] == len(relevant) - 1:
        return None
    return round(max(0.0, relevant[late[-1] + 1].started - fault_at), 2)


class Bench:
    def __init__(self, cluster: LocalCluster, http: httpx.AsyncClient, viewers: list[Viewer], director: Director,
                 episode: str) -> None:
        self.cluster = cluster
        self.http = http
        self.viewers = viewers
        self.director = director
        self.episode = episode
        self.channel = f"episode:{episode}"
        self.tick = 0
        self.phase: Phase | None = None
        self._next_viewer = 0

    # -- probes -------------------------------------------------------------------------------------------
    async def tick_forever(self) -> None:
        while True:
            n, self.tick = self.tick, self.tick + 1
            started = trio.current_time()
            if self.phase is not None:
                self.phase.ticks[n] = started
            await self.director.event(self.episode, n)
            await trio.sleep(max(0.0, TICK_INTERVAL - (trio.current_time() - started)))

    async def answer_forever(self, nursery: trio.Nursery) -> None:
        while True:
            phase = self.phase
            if phase is not None and self._next_viewer < len(self.viewers):
                nursery.start_soon(self._answer, phase, self.viewers[self._next_viewer])
                self._next_viewer += 1
            await trio.sleep(ANSWER_INTERVAL)

    async def _answer(self, phase: Phase, viewer: Viewer) -> None:
        probe = Probe(trio.current_time(), None)
        phase.answers.append(probe)
        if await viewer.answer(phase.interaction, "a", give_up_after=60.0):
            probe.seconds = trio.current_time() - probe.started
            phase.accepted += 1
        else:
            errors = phase.extra.setdefault("answer_errors", {})
            errors[viewer.last_answer_error] = errors.get(viewer.last_answer_error, 0) + 1

    def delivery_probes(self, phase: Phase) -> list[Probe]:
        arrivals: dict[int, list[float]] = {}
        for viewer in self.viewers:
            for received in viewer.received.get(self.channel, []):
                data = received.data
                if data.get("type") == "director.event" and data.get("event_type") == "tick":
                    arrivals.setdefault(data["data"]["n"], []).append(received.at)
        probes = []
        for n, published in phase.ticks.items():
            times = arrivals.get(n, [])
            complete = len(times) == len(self.viewers)
            probes.append(Probe(published, max(times) - published if complete else None))
        return probes

    # -- one fault ----------------------------------------------------------------------------------------
    async def run_phase(self, name: str, inject: Callable[[Phase], Awaitable[Callable[[], Awaitable[None]]]],
                        observe: float) -> dict[str, Any]:
        interaction = await self.director.open_quiz(self.episode, duration=600)
        self._next_viewer = 0
        phase = self.phase = Phase(name, interaction)
        lost_before = {id(v): v.state_lost for v in self.viewers}
        await trio.sleep(BASELINE)
        phase.fault_at = trio.current_time()
        heal = await inject(phase)
        await trio.sleep(observe)
        self.phase = None
        await trio.sleep(SETTLE)  # ticks and answers already under way complete
        closed_at = trio.current_time()
        await self.director.close(interaction)
        results = await self.director.wait_total(interaction, phase.accepted, timeout=60)
        count_lag = trio.current_time() - closed_at
        await heal()
        deliveries = self.delivery_probes(phase)
        return {
            "delivery_recovery_s": recovery(deliveries, phase.fault_at, DELIVERY_SLO),
            "answer_recovery_s": recovery(phase.answers, phase.fault_at, ANSWER_SLO),
            "worst_delivery_s": worst(deliveries, phase.fault_at),
            "worst_answer_s": worst(phase.answers, phase.fault_at),
            "recovered_false_clients": sum(1 for v in self.viewers if v.state_lost > lost_before[id(v)]),
            "answers_probed": len(phase.answers),
            "answers_accepted": phase.accepted,
            "answers_counted": results.get("total"),
            "count_lag_s": round(count_lag, 2),
            **phase.extra,
        }

    # -- the faults ---------------------------------------------------------------------------------------
    async def kill_role(self, role: str, phase: Phase) -> Callable[[], Awaitable[None]]:
        victim = self.cluster.with_role(role)[0]
        await self.cluster.kill(victim)

        async def heal() -> None:
            await self.cluster.add_process(victim.roles)
            await self.cluster.wait_admitting()
            self.director.cores = self.cluster.urls("core")

        return heal

    async def kill_leader(self, phase: Phase) -> Callable[[], Awaitable[None]]:
        async with open_registry(self.cluster.redis.url) as registry:
            leaders = [n.id for n in await registry.nodes() if n.load.get("leader") == 1.0]
            victim = next(p for p in self.cluster.with_role("scheduler") if p.name in leaders)
            await self.cluster.kill(victim)
            with trio.move_on_after(30):
                while not [n for n in await registry.nodes() if n.load.get("leader") == 1.0 and n.id != victim.name]:
                    await trio.sleep(0.05)
                phase.extra["scheduler_takeover_s"] = round(trio.current_time() - phase.fault_at, 2)

        async def heal() -> None:
            await self.cluster.add_process(victim.roles)

        return heal

    async def kill_redis_primary(self, phase: Phase) -> Callable[[], Awaitable[None]]:
        old = await self.cluster.redis.kill_primary()
        report = await self.cluster.redis.wait_failover(old.address)
        phase.extra["sentinel_failover_s"] = round(report.seconds, 2)
        await self.cluster.redis.rejoin(old)  # "replicated" answers need a replica to confirm them

        async def heal() -> None:
            await self.cluster.redis.wait_settled()

        return heal

    async def restart_redis(self, phase: Phase) -> Callable[[], Awaitable[None]]:
        await self.cluster.redis.restart_empty()

        async def heal() -> None:
            await self.cluster.redis.wait_settled()

        return heal

    def injector(self, fault: str) -> Callable[[Phase], Awaitable[Callable[[], Awaitable[None]]]]:
        if fault in ("gatekeeper", "core", "push", "worker"):
            return lambda phase: self.kill_role(fault, phase)
        return {"scheduler": self.kill_leader, "redis_primary": self.kill_redis_primary,
                "redis_restart": self.restart_redis}[fault]


async def run(viewers: int, observe: float, faults: list[str]) -> dict[str, Any]:
    spec = ClusterSpec(layout=LAYOUT, env=dict(FAST_NODES))
    started = time.monotonic()
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with local_cluster(spec) as cluster, httpx.AsyncClient(timeout=5, limits=limits) as http, \
            trio.open_nursery() as nursery:
        director = Director(http, cluster.urls("core"), cluster.director_key)
        gatekeeper = cluster.urls("gatekeeper")[-1]  # the first gatekeeper is among the victims
        episode = await director.live_episode("failover bench")
        audience = await gather_audience(gatekeeper, viewers, http)
        await follow_all(nursery, audience, [f"episode:{episode}"])
        bench = Bench(cluster, http, audience, director, episode)
        nursery.start_soon(bench.tick_forever)
        nursery.start_soon(bench.answer_forever, nursery)
        print(f"cluster up in {time.monotonic() - started:.1f} s; {viewers} viewers following", file=sys.stderr)
        figures: dict[str, Any] = {}
        for fault in faults:
            figures[fault] = await bench.run_phase(fault, bench.injector(fault), observe)
            print(f"{fault}: {json.dumps(figures[fault])}", file=sys.stderr)
        received_all = all(ticks(v, bench.channel) for v in audience)
        nursery.cancel_scope.cancel()
    return {
        "bench": "failover", "viewers": viewers, "observe_s": observe, "layout": LAYOUT,
        "slo": {"delivery_s": DELIVERY_SLO, "answer_s": ANSWER_SLO},
        "faults": figures, "viewers_received_ticks": received_all,
        "seconds": round(time.monotonic() - started, 1),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench failover", description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int, default=150)
    parser.add_argument("--observe", type=float, default=10.0, help="seconds watched after each fault")
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"subset of {','.join(FAULTS)}")
    args = parser.parse_args(argv)
    faults = [f for f in args.faults.split(",") if f]
    unknown = set(faults) - set(FAULTS)
    if unknown or not 1 <= args.viewers <= 1000:
        parser.error(f"unknown faults {sorted(unknown)}" if unknown else "--viewers must be 1..1000")
    print(json.dumps(trio.run(run, args.viewers, args.observe, faults)), flush=True)
    return 0
