"""Shared by the kill tests (``test_kill_*.py``): a local cluster of real processes, an audience and a
director, all on loopback.

Every kill test starts its own cluster (``playtotv.devtools.cluster``: Redis primary + replica + three Sentinels,
and ``playtotv serve`` processes) so the fault it injects cannot leak into another test.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator

import httpx
import trio

from playtotv.devtools.audience import Director, Viewer, follow_all, gather_audience
from playtotv.devtools.cluster import ClusterSpec, LocalCluster, local_cluster
from playtotv.devtools.localredis import RedisBinaryMissing

#: Viewers per kill test: enough to spread over every node and to make a burst, few enough for two cores.
VIEWERS = 120
#: Every kill test ends within this bound (cluster start included).
TEST_BOUND = 150.0
#: Concurrent HTTP connections of the test's one client pool (joins, answers, director calls).
HTTP_CONNECTIONS = 64
#: Node settings that shorten what the tests wait for: heartbeats expire in 2 s (a dead node leaves the
#: gatekeeper's lists quickly), drains take 2 s. These tests are about faults, not QoS: SLOs that a
#: loaded test machine cannot breach, so the gatekeeper never refuses the audience (admission by QoS has
#: tests of its own).
FAST_NODES = {"PLAYTOTV_NODE_HEARTBEAT_TTL": "2", "PLAYTOTV_NODE_HEARTBEAT_INTERVAL": "0.5",
              "PLAYTOTV_GATEKEEPER_SLO_CORE_P95_MS": "60000", "PLAYTOTV_GATEKEEPER_SLO_LOOP_LAG_MS": "60000",
              "PLAYTOTV_GATEKEEPER_SLO_FANOUT_P99_MS": "60000", "PLAYTOTV_GATEKEEPER_SLO_QUEUE_LAG_S": "600",
              # The whole audience joins from this one address: no per-address limit on new sessions.
              "PLAYTOTV_GATEKEEPER_SESSION_RATE": "0"}


@dataclass
class Show:
    cluster: LocalCluster
    http: httpx.AsyncClient
    director: Director
    episode_id: str

    @property
    def channel(self) -> str:
        return f"episode:{self.episode_id}"

    async def audience(self, nursery: trio.Nursery, count: int = VIEWERS, *, follow: bool = True) -> list[Viewer]:
        gatekeeper = self.cluster.urls("gatekeeper")[0]
        viewers = await gather_audience(gatekeeper, count, self.http)
        if follow:
            await follow_all(nursery, viewers, [self.channel])
        return viewers


@asynccontextmanager
async def show(spec: ClusterSpec) -> AsyncIterator[Show]:
    """A running cluster with a live episode."""
    spec.env = {**FAST_NODES, **spec.env}
    try:
        cluster_cm = local_cluster(spec)
        limits = httpx.Limits(max_connections=HTTP_CONNECTIONS, max_keepalive_connections=HTTP_CONNECTIONS)
        async with cluster_cm as cluster, httpx.AsyncClient(timeout=5, limits=limits) as http:
            director = Director(http, cluster.urls("core"), cluster.director_key)
            yield Show(cluster, http, director, await director.live_episode())
    except RedisBinaryMissing as e:  # pragma: no cover - the test command installs it
        raise RuntimeError(str(e)) from None


async def wait_admitting(cluster: LocalCluster) -> None:
    """Until every gatekeeper lists every core and push node (they register within a heartbeat)."""
    await cluster.wait_admitting(timeout=30)


async def ready_everywhere(http: httpx.AsyncClient, cluster: LocalCluster, timeout: float = 30.0) -> None:
    """Until every live process answers ``/readyz`` with 200 on each of its HTTP listeners."""
    with trio.fail_after(timeout):
        for process in [p for p in cluster.processes if p.alive]:
            for listener, url in process.listening.items():
                if listener == "push":
                    continue  # the WebSocket listener; the push role's health is on push-polling
                while True:
                    try:
                        if (await http.get(f"{url}/readyz")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await trio.sleep(0.1)
