"""Node lifecycle: one ``trio.run``, one root nursery, the selected roles under it (docs/architecture.md §3).

Start order: dependencies are opened (lazily connecting: a Redis that is down does not stop us), the
health loop and the heartbeat loop start, then each role with ``nursery.start`` — a role reports started
only once it listens and the node is registered. ``ready`` is printed once every role has started.

Drain (SIGTERM/SIGINT): deregister first (the gatekeeper stops sending clients here), set
``ctx.draining`` (listeners stop accepting, push tells clients to reconnect, core finishes requests, the
worker stops claiming), give the roles ``node.drain_seconds`` to return, then cancel what is left.
"""

from __future__ import annotations

import importlib
import logging
import signal
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from functools import partial

import trio

from playtotv import gcpacer
from playtotv.autoscale_gauges import export_forever as export_gauges
from playtotv.broker import open_broker
from playtotv.broker.base import BrokerUnavailable
from playtotv.context import HEALTH_CHECK_TIMEOUT, NodeContext
from playtotv.cpubusy import CpuBusy
from playtotv.credentials import DirectorKeys, KeyRing, generate_secret
from playtotv.gcpause import PauseTimer
from playtotv.keyfile import keys_path, load_or_generate
from playtotv.logs import event
from playtotv.metrics import Metrics
from playtotv.registry import open_registry
from playtotv.settings import Settings
from playtotv.store import open_store
from playtotv.store.base import StoreUnavailable

__all__ = ["NodeContext", "build_keyring", "run_node"]  # NodeContext lives in playtotv.context

log = logging.getLogger("playtotv.node")

#: Dependencies are checked this often; each check is bounded by ``context.HEALTH_CHECK_TIMEOUT``.
HEALTH_CHECK_INTERVAL = 1.0
#: Roles of one process start in this order: the gatekeeper last, so that when it first admits a client
#: the core and push roles beside it are already listening and registered.
START_ORDER = ("core", "push", "worker", "scheduler", "gatekeeper")
#: Event-loop lag is sampled by sleeping this long and measuring the overshoot.
LOOP_LAG_PROBE = 0.25
#: The CPU share (``cpu_busy``) is sampled this often: the heartbeat's cadence.
CPU_BUSY_INTERVAL = 1.0


RoleRunner = Callable[..., Awaitable[None]]


async def _cancel_if_drained_while_starting(
    drain: trio.Event, started: trio.Event, scope: trio.CancelScope
) -> None:
    """A signal while roles are still starting (say, waiting for Redis) stops them at once."""
    await drain.wait()
    if not started.is_set():
        scope.cancel()


async def _health_loop(ctx: NodeContext) -> None:
    while True:
        for name, check, errors in (
            ("broker", ctx.broker.ping, (BrokerUnavailable,)),
            ("store", ctx.store.ping, (StoreUnavailable,)),
        ):
            ok = False
            with trio.move_on_after(HEALTH_CHECK_TIMEOUT):
                try:
                    await check()
                    ok = True
                except errors:
                    ok = False
            if ok != ctx.checks[name]:
                event(log, "dependency " + ("up" if ok else "down"), dependency=name)
            ctx.checks[name] = ok
        ctx.metrics.ready.set(1 if ctx.ready else 0)
        await trio.sleep(HEALTH_CHECK_INTERVAL)


async def _heartbeat_loop(ctx: NodeContext) -> None:
    while not ctx._deregistered:
        await ctx._heartbeat_once()
        await trio.sleep(ctx.settings.node.heartbeat_interval)


async def _loop_lag_loop(ctx: NodeContext) -> None:
    """Measure how late the loop wakes us: the cheapest whole-process QoS signal (gatekeeper issue)."""
    smoothed = 0.0
    while True:
        before = trio.current_time()
        await trio.sleep(LOOP_LAG_PROBE)
        lag = max(0.0, trio.current_time() - before - LOOP_LAG_PROBE)
        smoothed = lag if lag > smoothed else smoothed * 0.7 + lag * 0.3  # rise fast, fall slowly
        ctx.qos["loop_lag_ms"] = round(smoothed * 1000, 2)
        ctx.metrics.loop_lag.set(smoothed)


async def _cpu_busy_loop(ctx: NodeContext) -> None:
    """The share of its CPU the node uses (``playtotv/cpubusy.py``): how near its saturation cliff it is."""
    busy = CpuBusy()
    while True:
        share = busy.sample()  # reads /proc and /sys: kernel memory, never a blocking disk read
        if share is not None:
            ctx.qos["cpu_busy"] = round(share, 3)
        await trio.sleep(CPU_BUSY_INTERVAL)


async def _watch_signals(drain: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            event(log, "signal received, draining", signal=signal.Signals(signum).name)
            drain.set()
            return


def _role_runner(role: str) -> RoleRunner:
    # Imported on demand: a process pays only for the roles it runs, and playtotv never imports roles
    # at module import time (dependency direction protocol <- playtotv <- roles).
    return importlib.import_module(f"playtotv.roles.{role}").run


def build_keyring(settings: Settings) -> tuple[KeyRing, DirectorKeys, list[str]]:
    """Ticket keys and director keys. In embedded mode the missing ones are generated, and kept beside a
    SQLite store file so that a restart keeps every ticket and director key valid (``playtotv.keyfile``);
    the generated director key is returned so the CLI can print it. Blocks on the file system."""
    need_secret = not settings.auth.secret
    need_director_key = not settings.auth.director_keys
    if not settings.embedded or not (need_secret or need_director_key):
        secret = settings.auth.secret or generate_secret()  # check_deployment requires it in a cluster
        return KeyRing.from_secrets(secret, settings.auth.previous_secrets), \
            DirectorKeys(settings.auth.director_keys), []
    path = keys_path(settings.store.url)
    generated = load_or_generate(path, secret=need_secret, director_key=need_director_key)
    missing = " and ".join(name for name, needed in (("auth.secret", need_secret),
                                                      ("auth.director_keys", need_director_key)) if needed)
    if path is None:
        event(log, f"{missing} not configured: generated for this run only (a restart invalidates them)")
    else:
        event(log, f"{missing} not configured: generated ones are kept in {path} (reused at every start)")
    generated_secret = settings.auth.secret or generated.secret
    keys = settings.auth.director_keys or ([generated.director_key] if generated.director_key else [])
    assert generated_secret is not None and keys  # load_or_generate made what was missing
    secret = generated_secret
    ring = KeyRing.from_secrets(secret, settings.auth.previous_secrets)
    return ring, DirectorKeys(keys), [] if settings.auth.director_keys else list(keys)


async def run_node(
    settings: Settings,
    roles: list[str],
    *,
    handle_signals: bool = True,
    drain: trio.Event | None = None,
    on_listening: Callable[[str, str], None] | None = None,
    on_director_key: Callable[[str], None] | None = None,
    on_ready: Callable[[], None] | None = None,
    pace_collections: bool = False,
    task_status: trio.TaskStatus[NodeContext] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``roles`` until ``drain`` is set (or a signal arrives), then drain and return.

    ``on_listening(role, url)`` is called for every listener as it comes up. ``pace_collections``: once
    ready, collect garbage on a clock (``playtotv.gcpacer``; it sets the process's collector, so only a
    process serving this one node asks for it)."""
    drain = trio.Event() if drain is None else drain
    tickets, director_keys, generated_keys = await trio.to_thread.run_sync(build_keyring, settings)
    runners = {role: _role_runner(role) for role in roles}
    async with AsyncExitStack() as stack:
        broker = await stack.enter_async_context(
            open_broker(settings.redis.url, channel_ttl=settings.push.channel_ttl))
        registry = await stack.enter_async_context(open_registry(settings.redis.url))
        store = await stack.enter_async_context(open_store(settings.store.url))
        ctx = NodeContext(
            settings=settings, node_id=settings.node_id(), roles=roles, broker=broker, registry=registry,
            store=store, tickets=tickets, director_keys=director_keys, metrics=Metrics(),
        )
        if on_listening is not None:
            ctx.on_listening = on_listening
        stack.enter_context(PauseTimer(ctx.metrics.gc_pause))
        for key in generated_keys:
            (on_director_key or (lambda k: None))(key)
        async with trio.open_nursery() as background:
            background.start_soon(_health_loop, ctx)
            background.start_soon(_loop_lag_loop, ctx)
            background.start_soon(_cpu_busy_loop, ctx)
            background.start_soon(export_gauges, ctx)
            if handle_signals:
                background.start_soon(_watch_signals, drain)
            if settings.node.ops_bind:
                from playtotv.http import serve_ops

                await background.start(serve_ops, ctx)
            with trio.CancelScope() as roles_scope:
                all_started = trio.Event()
                background.start_soon(_cancel_if_drained_while_starting, drain, all_started, roles_scope)
                async with trio.open_nursery() as role_nursery:
                    for role in sorted(roles, key=START_ORDER.index):
                        await role_nursery.start(runners[role], ctx)
                    all_started.set()
                    background.start_soon(_heartbeat_loop, ctx)
                    event(log, "ready", node=ctx.node_id, roles=",".join(roles))
                    if pace_collections:  # after start-up: its heap is what gets frozen
                        # Connections: a heap grown by clients joining is not garbage (gcpacer).
                        background.start_soon(partial(gcpacer.pace_collections,
                                                      load=lambda: ctx.load.get("connections", 0.0)))
                    if on_ready is not None:
                        on_ready()
                    task_status.started(ctx)
                    await drain.wait()
                    await ctx.deregister()
                    roles_scope.deadline = trio.current_time() + settings.node.drain_seconds
                    ctx.draining.set()
            if roles_scope.cancelled_caught:
                event(log, "drain deadline passed; remaining work cancelled")
            background.cancel_scope.cancel()


