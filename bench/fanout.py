"""Push fan-out: N WebSocket clients on K push nodes, M published messages, delivery latency per client.

    python -m bench fanout --clients N [--messages M] [--nodes K] [--peer websockets] [--plot FILE]
                           [--generators G] [--interval S]

What runs (all on loopback, all started and stopped here):

- a ``redis-server`` of our own (``playtotv.devtools.localredis``), even for K = 1: the driver publishes through
  ``RedisBroker`` exactly as core does, and the push nodes fan out what their Redis subscription yields;
- K push nodes, each a real ``playtotv serve --role push`` process;
- G load-generator processes (bench/_fanout_load.py: raw sockets and one epoll loop, no task per client),
  each connecting its share of the N clients round-robin over the nodes and subscribing them all to
  ``episode:bench``.

Once every client is subscribed, the driver measures the nodes' RSS (per idle connection: the growth
since before the clients came, divided by N), then publishes M messages ``--interval`` seconds apart.
Latency is ``sent_at`` (the broker's clock when it assigned the offset) to the moment the generator's
``recv`` returned the frame, for every (message, client). The generators report how busy they were
during each message's receive window: far below 1.0 means the server, not the generator, set the pace.

``--peer websockets`` then runs the same load against bench/_fanout_peer.py (asyncio ``websockets`` with
``broadcast()``, fed by the same Redis channel) and adds its figures under ``peer`` and ``ratio_p99`` =
ours / peer. Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio

from bench._play import LineReader, add_episode, start_process
from playtotv.broker import open_broker
from playtotv.devtools.nodeprocess import NodeProcess
from playtotv.percentile import percentile
from playtotv.registry import open_registry

EPISODE_ID = "bench"
CHANNEL = f"episode:{EPISODE_ID}"
SECRET = "bench-fanout-secret-0123456789"
#: One realistic fan-out message: an interaction opening, about 300 bytes on the wire.
PAYLOAD = msgspec.json.encode({
    "type": "interaction.opened",
    "interaction": {"id": "i-bench", "episode_id": "bench", "kind": "quiz", "prompt": "Who wins tonight?",
                    "options": [{"id": "a", "label": "Ann"}, {"id": "b", "label": "Bob"},
                                {"id": "c", "label": "Cleo"}],
                    "status": "open", "duration": 15, "points": 1000},
})
#: Clients one generator process handles by default (one core keeps up with this many; see ``busy``).
CLIENTS_PER_GENERATOR = 5000
MAX_GENERATORS = 4
#: Bounds: a run that cannot finish in these ends with partial figures, never hangs.
CONNECT_TIMEOUT = 180.0
DELIVERY_TIMEOUT = 60.0
#: Pause after the last client subscribed before RSS is read (allocator and kernel settle).
SETTLE_SECONDS = 1.0
#: Long enough for a node's heartbeat to carry the fan-out p99 of the run.
QOS_REPORT_WAIT = 1.6
OUT_DIR = os.path.join("bench", "out")


@dataclass
class Server:
    """A push node or the peer: a process and the WebSocket URL it listens on."""

    node: NodeProcess
    url: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def proc(self) -> trio.Process:
        assert self.node.proc is not None
        return self.node.proc

    def cpu_seconds(self) -> tuple[float, float]:
        """(user, system) CPU seconds the process has used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / ticks, int(fields[12]) / ticks  # utime, stime (stat fields 14, 15)

    def rss_kb(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    async def stop(self) -> None:
        await self.node.terminate()


def raise_fd_limit() -> None:
    """10k clients need 10k descriptors in the server and as many across the generators; children
    inherit the raised limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def start_server(cmd: list[str] | None, env: dict[str, str], log_name: str, listener: str) -> Server:
    """A push node (``cmd`` None) or the peer, once ready; ``listener`` names its WebSocket listener."""
    node = await start_process(cmd, env, log_name, roles="push")
    server = Server(node, node.listening[listener])
    for line in node.lines:
        if line.startswith("loop "):
            server.extra["loop"] = line.split(" ", 1)[1]
    return server


async def start_push_node(index: int, redis_url: str, clients: int, store_url: str) -> Server:
    env = {
        "PLAYTOTV_REDIS_URL": redis_url, "PLAYTOTV_AUTH_SECRET": SECRET,
        "PLAYTOTV_PUSH_BIND": "127.0.0.1:0", "PLAYTOTV_PUSH_POLLING_BIND": "127.0.0.1:0",
        "PLAYTOTV_STORE_URL": store_url, "PLAYTOTV_NODE_ID": f"bench-push-{index}",
        "PLAYTOTV_PUSH_MAX_CONNECTIONS": str(clients + 1000),
    }
    return await start_server(None, env, f"fanout-push-{index}.log", "push")


async def start_peer(redis_url: str) -> Server:
    async with open_broker(redis_url) as broker:
        epoch, offset = await broker.position(CHANNEL)
    cmd = [sys.executable, "-m", "bench._fanout_peer", "--redis", redis_url, "--channel", CHANNEL,
           "--epoch", epoch, "--offset", str(offset)]
    return await start_server(cmd, {}, "fanout-peer.log", "peer")


@dataclass
class Generator:
    proc: trio.Process
    lines: LineReader
    ready: dict[str, Any] = field(default_factory=dict)
    done: dict[str, Any] = field(default_factory=dict)


async def run_load(servers: list[Server], args: argparse.Namespace, redis_url: str, *,
                   read_qos: bool) -> dict[str, Any]:
    """Connect the clients, measure idle RSS, publish, collect latencies. Returns the figures."""
    generators_n = args.generators or max(1, min(MAX_GENERATORS, math.ceil(args.clients / CLIENTS_PER_GENERATOR)))
    shares = [args.clients // generators_n + (1 if i < args.clients % generators_n else 0) for i in range(generators_n)]
    rss_before = sum(s.rss_kb() for s in servers)
    generators: list[Generator] = []
    started = time.monotonic()
    for i, share in enumerate(shares):
        cmd = [sys.executable, "-m", "bench._fanout_load", "--clients", str(share), "--secret", SECRET,
               "--channel", CHANNEL, "--messages", str(args.messages), "--prefix", f"g{i}-"]
        # Rotate the node order per generator so K nodes get equal shares whatever G is.
        for j in range(len(servers)):
            cmd += ["--url", servers[(i + j) % len(servers)].url]
        proc = await trio.lowlevel.open_process(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        generators.append(Generator(proc, LineReader(proc.stdout)))
    try:
        with trio.fail_after(CONNECT_TIMEOUT):
            for g in generators:
                g.ready = json.loads(await g.lines.line())
        connect_s = time.monotonic() - started
        connected = sum(g.ready["clients"] for g in generators)
        await trio.sleep(SETTLE_SECONDS)
        rss_after = sum(s.rss_kb() for s in servers)

        cpu_before = [s.cpu_seconds() for s in servers]
        async with open_broker(redis_url) as broker:
            async with trio.open_nursery() as nursery:
                async def collect(g: Generator) -> None:
                    g.done = json.loads(await g.lines.line())

                for g in generators:
                    nursery.start_soon(collect, g)
                for k in range(args.messages):
                    if k:
                        await trio.sleep(args.interval)
                    await broker.publish(CHANNEL, PAYLOAD)
                with trio.move_on_after(DELIVERY_TIMEOUT):
                    while not all(g.done for g in generators):
                        await trio.sleep(0.05)
                for g in generators:
                    if not g.done and g.proc.stdin is not None:
                        await g.proc.stdin.send_all(b"stop\n")
        cpu_after = [s.cpu_seconds() for s in servers]
        qos = await nodes_qos(redis_url) if read_qos else []
        for g in generators:  # now the clients may leave
            if g.proc.stdin is not None:
                await g.proc.stdin.send_all(b"stop\n")
    finally:
        for g in generators:
            with trio.move_on_after(10):
                await g.proc.wait()
            if g.proc.returncode is None:
                g.proc.kill()

    latencies = sorted(x for g in generators for x in g.done.get("latencies_ms", []))
    windows = sum(g.done.get("receive_window_s", 0.0) for g in generators)
    busy = sum(g.done.get("busy_s", 0.0) for g in generators)
    figures: dict[str, Any] = {
        "clients": args.clients,
        "connected": connected,
        "messages": args.messages,
        "expected": args.clients * args.messages,
        "delivered": len(latencies),
        "p50_ms": rounded_percentile(latencies, 0.50),
        "p99_ms": rounded_percentile(latencies, 0.99),
        "max_ms": round(latencies[-1], 1) if latencies else None,
        "rss_per_client_kb": round((rss_after - rss_before) / max(1, connected), 2),
        "connect_s": round(connect_s, 2),
        "generators": generators_n,
        "generator_busy": round(busy / windows, 3) if windows else None,
        # Checked by every client's PushClient: messages missed (offset skipped) or received twice.
        "gaps": sum(g.done.get("gaps", 0) for g in generators),
        "duplicates": sum(g.done.get("duplicates", 0) for g in generators),
        # The slowest delivery of each message: shows whether one message (say the first) sets the p99.
        # Where the servers' time went while the messages went out: Python (user) or the kernel (system,
        # which on loopback includes the receiving side of every TCP write).
        "server_cpu_user_s": round(sum(a[0] - b[0] for a, b in zip(cpu_after, cpu_before)), 2),
        "server_cpu_system_s": round(sum(a[1] - b[1] for a, b in zip(cpu_after, cpu_before)), 2),
        "max_by_message_ms": [max((m for m in ms if m is not None), default=None)
                              for ms in zip(*(g.done.get("max_by_message_ms", []) for g in generators))],
    }
    if read_qos:
        figures["server_fanout_p99_ms"] = [q.get("fanout_p99_ms") for q in qos]
        figures["server_loop_lag_ms"] = [q.get("loop_lag_ms") for q in qos]
    figures["_latencies"] = latencies
    return figures


def rounded_percentile(sorted_values: list[float], fraction: float) -> float | None:
    value = percentile(sorted_values, fraction)
    return None if value is None else round(value, 1)


async def nodes_qos(redis_url: str) -> list[dict[str, float]]:
    """What the push nodes report to the registry themselves: fan-out p99 (publish → last write, over
    their sliding window) and event-loop lag."""
    await trio.sleep(QOS_REPORT_WAIT)
    async with open_registry(redis_url) as registry:
        return [dict(n.qos) for n in sorted(await registry.nodes(), key=lambda n: n.id) if "push" in n.roles]


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    from playtotv.devtools.localredis import RedisServer

    raise_fd_limit()
    redis = RedisServer().start()
    os.makedirs(OUT_DIR, exist_ok=True)
    store_url = f"sqlite:///{os.path.join(OUT_DIR, 'fanout.db')}"
    await add_episode(store_url, EPISODE_ID)
    try:
        nodes = []
        try:
            for i in range(args.nodes):
                nodes.append(await start_push_node(i, redis.url, args.clients, store_url))
            ours = await run_load(nodes, args, redis.url, read_qos=True)
        finally:
            for node in nodes:
                await node.stop()
        result = {**ours, "nodes": args.nodes, "broker": "redis",
                  "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[1]}
        if args.peer:
            peer_server = await start_peer(redis.url)
            try:
                peer = await run_load([peer_server], args, redis.url, read_qos=False)
            finally:
                await peer_server.stop()
            peer["loop"] = peer_server.extra.get("loop", "asyncio")
            result["peer"] = {k: v for k, v in peer.items() if not k.startswith("_")}
            result["peer"]["server"] = "websockets.broadcast()"
            if ours["p99_ms"] and peer["p99_ms"]:
                result["ratio_p99"] = round(ours["p99_ms"] / peer["p99_ms"], 3)
            if args.plot:
                plot(args.plot, ours["_latencies"], peer["_latencies"], peer["loop"])
        elif args.plot:
            plot(args.plot, ours["_latencies"], None)
        return {k: v for k, v in result.items() if not k.startswith("_")}
    finally:
        redis.close()


def plot(path: str, ours: list[float], peer: list[float] | None, peer_loop: str = "asyncio") -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot needs matplotlib (pip install '.[bench]')", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, values in (("playtotv push (trio)", ours), (f"websockets.broadcast() ({peer_loop})", peer)):
        if values:
            ax.plot(values, [i / len(values) for i in range(1, len(values) + 1)], label=label)
    ax.set_xlabel("delivery latency, sent_at → received (ms)")
    ax.set_ylabel("fraction of deliveries")
    ax.set_title("push fan-out latency (CDF)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench fanout")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--peer", choices=["websockets"], default=None)
    parser.add_argument("--plot", default=None, help="write a PNG of the latency distributions")
    parser.add_argument("--generators", type=int, default=0, help="load-generator processes (default: auto)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between published messages")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.messages < 1 or args.nodes < 1:
        parser.error("--clients, --messages and --nodes must be >= 1")
    result = trio.run(bench, args)
    print(json.dumps(result))
    return 0
