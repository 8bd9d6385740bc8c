"""A local cluster of separate processes: ``playtotv cluster up``, and the same from Python for tests and
benchmarks.

    async with local_cluster(ClusterSpec(cores=2, pushes=2)) as cluster:
        gatekeeper = cluster.urls("gatekeeper")[0]
        await cluster.kill(cluster.with_role("core")[0])

What runs: a Redis primary, a replica and three Sentinels (``playtotv.devtools.localredis``; or one plain Redis
with ``sentinel=False``), then one ``playtotv serve`` process per entry of the layout, all sharing one
SQLite file in the cluster's directory (or the MongoDB given as ``store_url``), one ticket secret and one
director key. Every process gets ``redis.url`` in its Sentinel form, so the roles find the primary
exactly as in production.

Supervision: a process that exits without being stopped through this module is reported
(``on_event``) and, with ``restart=True``, started again after ``RESTART_DELAY`` (doubling while it keeps
dying). A Redis data node that dies is started again only once the Sentinels name another primary, and
then as its replica: an empty process must never come back as the primary and wipe the replica.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from playtotv.cli import listening_line
from playtotv.credentials import generate_director_key, generate_secret
from playtotv.devtools.localredis import DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS, RedisProcess, RedisTopology
from playtotv.devtools.nodeprocess import NodeProcess
from playtotv.settings import ROLE_NAMES

log = logging.getLogger("playtotv.cluster")

#: Drain time given to each node (``node.drain_seconds``): short, a local cluster has few clients.
DRAIN_SECONDS = 2.0
#: A node that does not exit this long after SIGTERM (beyond its drain) is killed.
STOP_MARGIN = 5.0
#: First delay before a died process is started again; doubles while it keeps dying, up to the cap.
RESTART_DELAY = 1.0
RESTART_DELAY_MAX = 30.0
#: A process that stayed up this long is healthy again: the next restart waits RESTART_DELAY again.
STABLE_AFTER = 60.0
#: How long a dead Redis data node waits for the Sentinels to fail over before it is started again.
REJOIN_WAIT = (DOWN_AFTER_MS + 3 * FAILOVER_TIMEOUT_MS) / 1000
#: After every process is ready, how long the gatekeepers may take to list every core and push node (they
#: refresh their registry snapshot every second).
ADMITTING_TIMEOUT = 15.0
#: Ports of a cluster started with a base port: Redis data nodes and Sentinels first, roles after.
ROLE_PORTS_OFFSET = 10
#: Listener settings in the order ports are handed out.
_BINDS = (("gatekeeper", "GATEKEEPER_BIND"), ("core", "CORE_BIND"), ("push", "PUSH_BIND"),
          ("push", "PUSH_POLLING_BIND"))
_HTTP_ROLES = {"gatekeeper", "core", "push"}


@dataclass
class ClusterSpec:
    gatekeepers: int = 1
    cores: int = 2
    pushes: int = 2
    workers: int = 1
    schedulers: int = 2
    #: Explicit processes (each a ``--role`` value such as "gatekeeper,worker"); replaces the counts.
    layout: list[str] | None = None
    #: ``mongodb://...`` or ``sqlite:///...``; default: a SQLite file in the cluster's directory.
    store_url: str | None = None
    #: 0: free ports everywhere. P: Redis on P..P+4, role listeners from P+10 on, in layout order.
    base_port: int = 0
    sentinel: bool = True
    #: Extra settings for every node, as environment variables (``PLAYTOTV_ANSWERS_DURABILITY``...).
    env: dict[str, str] = field(default_factory=dict)
    restart: bool = False
    drain_seconds: float = DRAIN_SECONDS
    #: Where the cluster keeps its files; default a new temporary directory, removed at the end.
    workdir: str | None = None

    def processes(self) -> list[str]:
        if self.layout is not None:
            return list(self.layout)
        counts = {"gatekeeper": self.gatekeepers, "core": self.cores, "push": self.pushes,
                  "worker": self.workers, "scheduler": self.schedulers}
        return [role for role in ROLE_NAMES for _ in range(counts[role])]


class LocalCluster:
    def __init__(self, spec: ClusterSpec, on_event: Callable[[str], None] | None = None) -> None:
        self.spec = spec
        self._own_dir = spec.workdir is None
        self.workdir = spec.workdir or tempfile.mkdtemp(prefix="ptv-cluster-")
        os.makedirs(self.workdir, exist_ok=True)
        ports = _port_plan(spec.base_port)
        redis_ports = [next(ports) for _ in range(5)] if spec.base_port else None
        self.redis = RedisTopology(sentinel=spec.sentinel, workdir=os.path.join(self.workdir, "redis"),
                                   ports=redis_ports)
        os.makedirs(self.redis.workdir, exist_ok=True)
        if spec.base_port:
            for _ in range(ROLE_PORTS_OFFSET - 5):
                next(ports)
        self._ports = ports
        self.store_url = spec.store_url or f"sqlite:///{os.path.join(self.workdir, 'playtotv.db')}"
        self.secret = generate_secret()
        self.director_key = generate_director_key()
        self.processes: list[NodeProcess] = []
        self.events: list[str] = []
        self._on_event = on_event or (lambda line: None)
        self._names: dict[str, Iterator[int]] = {}
        self._nursery: trio.Nursery | None = None
        #: Keep the directory (logs, database) at the end even when it is a temporary one: set after a
        #: failure.
        self.keep_files = False

    # -- what runs where ----------------------------------------------------------------------------------
    def with_role(self, role: str) -> list[NodeProcess]:
        """Live processes holding ``role``, in start order."""
        return [p for p in self.processes if role in p.role_list and p.alive]

    def urls(self, listener: str) -> list[str]:
        """URLs of a listener kind (``gatekeeper``, ``core``, ``push``, ``push-polling``, ``ops``)."""
        return [p.listening[listener] for p in self.processes if p.alive and listener in p.listening]

    def describe(self) -> dict[str, object]:
        return {
            "redis": self.redis.describe(),
            "store": self.store_url,
            "director_key": self.director_key,
            "workdir": self.workdir,
            "processes": [{"name": p.name, "roles": p.roles, "pid": p.pid, "listening": p.listening}
                          for p in self.processes if p.alive],
        }

    def node_env(self, name: str, roles: str) -> dict[str, str]:
        env = {
            "PLAYTOTV_REDIS_URL": self.redis.url, "PLAYTOTV_STORE_URL": self.store_url,
            "PLAYTOTV_AUTH_SECRET": self.secret, "PLAYTOTV_AUTH_DIRECTOR_KEYS": self.director_key,
            "PLAYTOTV_NODE_ID": name, "PLAYTOTV_NODE_DRAIN_SECONDS": str(self.spec.drain_seconds),
        }
        role_set = set(roles.split(","))
        for role, key in _BINDS:
            if role in role_set:
                env[f"PLAYTOTV_{key}"] = f"127.0.0.1:{next(self._ports)}"
        if not role_set & _HTTP_ROLES:  # health and metrics for worker and scheduler processes
            env["PLAYTOTV_NODE_OPS_BIND"] = f"127.0.0.1:{next(self._ports)}"
        return {**env, **self.spec.env}

    def _name(self, roles: str) -> str:
        stem = roles.replace(",", "_")  # node ids allow [A-Za-z0-9_.:-] (playtotv.keys)
        return f"{stem}-{next(self._names.setdefault(stem, itertools.count(1)))}"

    # -- lifecycle ----------------------------------------------------------------------------------------
    async def start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        await self.redis.start()
        # Ports are handed out in layout order before anything starts (the starts run concurrently).
        processes = [self._new_process(roles, {}) for roles in self.spec.processes()]
        async with trio.open_nursery() as starting:
            for process in processes:
                starting.start_soon(self._launch, process)
        nursery.start_soon(self._supervise_redis)
        await self.wait_admitting()

    async def wait_admitting(self, timeout: float = ADMITTING_TIMEOUT) -> None:
        """Until every gatekeeper lists every live core and push node: then a client that joins is sent
        everywhere the cluster has (a node is ready before the gatekeepers' next snapshot sees it)."""
        import httpx

        wanted = {"core": len(self.with_role("core")), "push": len(self.with_role("push"))}
        async with httpx.AsyncClient(timeout=2.0) as http:
            with trio.fail_after(timeout):
                for gatekeeper in self.urls("gatekeeper"):
                    while True:
                        try:
                            nodes = (await http.get(f"{gatekeeper}/v1/status")).json()["nodes"]
                            if all(nodes[role] >= count for role, count in wanted.items()):
                                break
                        except (httpx.HTTPError, ValueError, KeyError):
                            pass  # not answering yet: ask again
                        await trio.sleep(0.1)

    async def add_process(self, roles: str, **env: str) -> NodeProcess:
        """Start one more node (scale out) and wait until it is ready. ``env``: extra settings, as
        ``answers_durability="stored"``."""
        process = self._new_process(roles, {f"PLAYTOTV_{k.upper()}": v for k, v in env.items()})
        await self._launch(process)
        return process

    def _new_process(self, roles: str, extra_env: dict[str, str]) -> NodeProcess:
        name = self._name(roles)
        process = NodeProcess(roles, {**self.node_env(name, roles), **extra_env}, name=name,
                              log_path=os.path.join(self.workdir, f"{name}.log"))
        self.processes.append(process)
        return process

    async def _launch(self, process: NodeProcess) -> None:
        assert self._nursery is not None, "start() first"
        await process.start(self._nursery)
        self._nursery.start_soon(self._supervise, process)

    async def kill(self, process: NodeProcess) -> None:
        """SIGKILL a node (a crash): no drain, not restarted."""
        process.kill()
        await process.wait_exited()
        self._report(f"{process.name} killed")

    async def remove_process(self, process: NodeProcess) -> int | None:
        """SIGTERM a node (scale in): it drains; not restarted."""
        code = await process.terminate(self.spec.drain_seconds + STOP_MARGIN)
        self._report(f"{process.name} stopped with {code}")
        return code

    async def stop(self) -> None:
        with trio.CancelScope(shield=True):  # teardown must finish even when the caller is cancelled
            async with trio.open_nursery() as stopping:
                for process in self.processes:
                    if process.alive:
                        stopping.start_soon(process.terminate, self.spec.drain_seconds + STOP_MARGIN)
            await self.redis.close()
        if self._own_dir and not self.keep_files:
            shutil.rmtree(self.workdir, ignore_errors=True)
        elif self.keep_files:
            self._report(f"cluster files kept in {self.workdir}")

    def _report(self, line: str) -> None:
        self.events.append(line)
        log.info("%s", line)
        self._on_event(line)

    async def _supervise(self, process: NodeProcess) -> None:
        delay = RESTART_DELAY
        while True:
            started = trio.current_time()
            await process.exited.wait()
            if process.stopped_on_purpose:
                return
            self._report(f"{process.name} ({process.roles}) exited with {process.returncode}; "
                         f"log: {process.log_path}")
            if not self.spec.restart:
                return
            if trio.current_time() - started > STABLE_AFTER:
                delay = RESTART_DELAY
            await trio.sleep(delay)
            delay = min(delay * 2, RESTART_DELAY_MAX)
            try:
                await process.start(self._nursery)
            except (RuntimeError, OSError, trio.TooSlowError) as e:
                self._report(f"{process.name} did not come back: {e}")
                continue
            self._report(f"{process.name} restarted")

    async def _supervise_redis(self) -> None:
        watched: list[RedisProcess] = [*self.redis.data, *self.redis.sentinels]
        async with trio.open_nursery() as nursery:
            for process in watched:
                nursery.start_soon(self._watch_redis, process)

    async def _watch_redis(self, process: RedisProcess) -> None:
        while True:
            await process.wait_exited()
            started_as = process.proc
            self._report(f"redis {process.name} ({process.address}) exited")
            if not self.spec.restart:
                return
            if process in self.redis.data and self.redis.use_sentinel:
                try:
                    await self.redis.wait_failover(process.address, timeout=REJOIN_WAIT)
                except trio.TooSlowError:
                    pass  # it was not the primary (or no failover happened): it rejoins as it can
            if process.proc is not started_as:  # a test restarted it meanwhile
                continue
            try:
                if process in self.redis.data:
                    await self.redis.rejoin(process)
                else:
                    await process.start()
            except (RuntimeError, OSError, trio.TooSlowError) as e:
                self._report(f"redis {process.name} did not come back: {e}")
                return
            self._report(f"redis {process.name} restarted")


def _port_plan(base_port: int) -> Iterator[int]:
    if base_port:
        return iter(range(base_port, 65536))
    return itertools.repeat(0)


@asynccontextmanager
async def local_cluster(spec: ClusterSpec, on_event: Callable[[str], None] | None = None
                        ) -> AsyncIterator[LocalCluster]:
    """Start everything, yield the running cluster, stop everything (also on error or cancellation)."""
    cluster = LocalCluster(spec, on_event)
    async with trio.open_nursery() as nursery:
        try:
            await cluster.start(nursery)
            yield cluster
        except Exception:
            cluster.keep_files = True  # the logs say what went wrong
            raise
        finally:
            await cluster.stop()
            nursery.cancel_scope.cancel()


async def run_cluster_up(spec: ClusterSpec, say: Callable[[str], None]) -> None:
    """``playtotv cluster up``: start, print the endpoints and ``cluster ready``, supervise until SIGINT
    or SIGTERM, then tear everything down."""
    import signal

    async def run() -> None:
        async with local_cluster(spec, on_event=say) as cluster:
            for line in endpoint_lines(cluster):
                say(line)
            say("cluster ready")
            await trio.sleep_forever()

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)  # a signal during start-up stops it too
            async for signum in signals:
                say(f"{signal.Signals(signum).name}: stopping the cluster")
                nursery.cancel_scope.cancel()  # local_cluster's teardown is shielded: it completes
                break


def endpoint_lines(cluster: LocalCluster) -> list[str]:
    """What ``playtotv cluster up`` prints: one line per endpoint, then the JSON of everything."""
    redis = cluster.redis.describe()
    lines = [f"redis url: {redis['url']}"]
    lines += [f"redis data node: {a}" for a in redis["data_nodes"]]
    lines += [f"redis sentinel: {a}" for a in redis["sentinels"]]
    lines.append(f"store: {cluster.store_url}")
    lines.append(f"director key: {cluster.director_key}")
    for process in cluster.processes:
        for listener, url in sorted(process.listening.items()):
            lines.append(listening_line(f"{process.name} {listener}", url))
    lines.append("cluster: " + json.dumps(cluster.describe(), sort_keys=True))
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``playtotv cluster up`` options."""
    defaults = ClusterSpec()
    parser.add_argument("action", choices=("up",), help="start a local cluster and supervise it until Ctrl-C")
    for role, plural in (("gatekeeper", "gatekeepers"), ("core", "cores"), ("push", "pushes"),
                         ("worker", "workers"), ("scheduler", "schedulers")):
        parser.add_argument(f"--{plural}", type=int, default=getattr(defaults, plural), metavar="N",
                            help=f"{role} processes (default {getattr(defaults, plural)})")
    parser.add_argument("--store", default=None, metavar="URL",
                        help="mongodb://... or sqlite:///...; default: a SQLite file in the cluster directory")
    parser.add_argument("--base-port", type=int, default=0, metavar="P",
                        help="Redis on P..P+4, role listeners from P+10 (default: free ports)")
    parser.add_argument("--dir", default=None, help="keep the cluster's files (logs, database) here")
    parser.add_argument("--no-sentinel", action="store_true", help="one plain Redis instead of Sentinel")
    parser.add_argument("--no-restart", action="store_true", help="report died processes, do not restart them")


def run_cli(args: argparse.Namespace) -> int:
    counts = (args.gatekeepers, args.cores, args.pushes, args.workers, args.schedulers)
    if min(counts) < 0 or args.gatekeepers < 1 or args.cores < 1 or args.pushes < 1:
        print("playtotv cluster: at least one gatekeeper, core and push process are needed", file=sys.stderr)
        return 2
    if args.base_port and not 1024 <= args.base_port <= 65000:
        print("playtotv cluster: --base-port must be between 1024 and 65000", file=sys.stderr)
        return 2
    spec = ClusterSpec(
        gatekeepers=args.gatekeepers, cores=args.cores, pushes=args.pushes, workers=args.workers,
        schedulers=args.schedulers, store_url=args.store, base_port=args.base_port, workdir=args.dir,
        sentinel=not args.no_sentinel, restart=not args.no_restart,
    )
    from playtotv.logs import setup_logging

    setup_logging("text")
    try:
        trio.run(run_cluster_up, spec, lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        pass
    except (RuntimeError, OSError, trio.TooSlowError, BaseExceptionGroup) as e:
        # Start-up failed (no redis-server, a port in use, a node that exits): everything started has
        # been stopped already; say why in one line (the node logs were in the cluster directory).
        print(f"playtotv cluster: {_first_cause(e)}", file=sys.stderr)
        return 1
    return 0


def _first_cause(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}".splitlines()[0]
