"""Synthetic monitoring by the scheduler leader: a probe, on a period, of every core and push node.

- core: the round trip of ``GET /healthz`` on each core node;
- push: publish → receive through each push node: the probe connects like a viewer (a ticket it signs
  itself for a ``probe-`` user), publishes on its own user channel through the broker and times the
  message's arrival over that node's WebSocket. This is the whole fan-out path a viewer sees.

The worst figure of each kind goes into this node's registry entry as QoS signals
(``probe_core_rtt_ms``, ``probe_push_delay_ms``), which the gatekeeper weighs with the nodes' own reports.

Dead is not slow (docs/architecture.md §5): a node that fails its probe (refused, no answer within the probe
timeout, an error status) is not measured at all. Its id goes into this node's ``unreachable`` list,
which the gatekeeper leaves out of the endpoint lists it hands out; the live nodes alone measure load.
Reporting a failure as the timeout (3,000 ms) made one SIGKILLed core node read as a platform-wide QoS
breach, and the gatekeeper refused every newcomer.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import httpx
import msgspec
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from playtotv import keys
from playtotv.broker.base import BrokerUnavailable
from playtotv.logs import event
from playtotv.registry.base import NodeInfo

if TYPE_CHECKING:
    from playtotv.context import NodeContext
    from playtotv.roles.scheduler.leadership import Leadership

log = logging.getLogger("playtotv.scheduler.probe")

PROBE_INTERVAL = 5.0
#: A probe not done within this long has failed (and is logged): bounded, so one dead node cannot stall
#: the probe loop.
PROBE_TIMEOUT = 3.0
PROBE_TICKET_TTL = 60.0
#: The QoS signals the probes report (absent when no node of that kind could be measured).
SIGNALS = ("probe_core_rtt_ms", "probe_push_delay_ms")


class Unmeasured(Exception):
    """The probe could not be made for a reason that is not the node's (the broker is down)."""


@dataclass
class ProbeReport:
    signals: dict[str, float] = field(default_factory=dict)
    unreachable: set[str] = field(default_factory=set)


async def probe_core(http: httpx.AsyncClient, url: str) -> float | None:
    """The round trip of ``GET /healthz`` in ms, or None when the node failed it."""
    started = time.perf_counter()
    try:
        with trio.fail_after(PROBE_TIMEOUT):
            response = await http.get(f"{url}/healthz")
    except (httpx.HTTPError, trio.TooSlowError) as e:
        event(log, "core probe failed", url=url, error=type(e).__name__)
        return None
    if response.status_code != 200:
        event(log, "core probe failed", url=url, status=response.status_code)
        return None
    return (time.perf_counter() - started) * 1000


async def probe_push(ctx: NodeContext, ws_url: str) -> float | None:
    """Publish → receipt over the node's WebSocket in ms, or None when the node failed it; raises
    ``Unmeasured`` when the broker could not publish."""
    user_id = f"probe-{ctx.node_id}"
    ticket, _ = ctx.tickets.issue(user_id, ttl=PROBE_TICKET_TTL)
    nonce = secrets.token_hex(8)
    try:
        with trio.fail_after(PROBE_TIMEOUT):
            async with open_websocket_url(f"{ws_url}?ticket={ticket}") as ws:
                # the user channel is subscribed on connect; publish only once the node confirmed it
                while True:
                    frame = msgspec.json.decode(await ws.get_message())
                    if frame.get("type") == "subscribed" and frame.get("channel") == keys.user_channel(user_id):
                        break
                started = time.perf_counter()
                try:
                    await ctx.broker.publish(keys.user_channel(user_id),
                                             msgspec.json.encode({"type": "probe", "nonce": nonce}))
                except BrokerUnavailable:
                    raise Unmeasured("the broker is down") from None  # not this node's failure
                while True:
                    frame = msgspec.json.decode(await ws.get_message())
                    if frame.get("type") == "message" and frame.get("data", {}).get("nonce") == nonce:
                        return (time.perf_counter() - started) * 1000
    except (trio.TooSlowError, HandshakeError, ConnectionClosed, OSError, msgspec.DecodeError) as e:
        event(log, "push probe failed", url=ws_url, error=type(e).__name__)
        return None


async def probe_once(ctx: NodeContext, http: httpx.AsyncClient) -> ProbeReport:
    """Probe every core and push node once: the worst figure of each kind from the nodes that passed,
    and the ids of those that failed."""
    nodes = await ctx.registry.nodes()
    core: dict[str, float | None] = {}
    push: dict[str, float | None] = {}

    async def measure(into: dict[str, float | None], node: NodeInfo,
                      probe: Callable[[], Awaitable[float | None]]) -> None:
        try:
            into[node.id] = await probe()
        except Unmeasured:
            pass

    async with trio.open_nursery() as nursery:
        for node in nodes:
            if "core" in node.endpoints:
                nursery.start_soon(measure, core, node, partial(probe_core, http, node.endpoints["core"]))
            if "push_ws" in node.endpoints:
                nursery.start_soon(measure, push, node, partial(probe_push, ctx, node.endpoints["push_ws"]))
    report = ProbeReport()
    for name, figures in (("probe_core_rtt_ms", core), ("probe_push_delay_ms", push)):
        passed = [ms for ms in figures.values() if ms is not None]
        if passed:
            report.signals[name] = round(max(passed), 2)
        report.unreachable.update(node_id for node_id, ms in figures.items() if ms is None)
    return report


async def monitor(ctx: NodeContext, leadership: Leadership) -> None:
    async with httpx.AsyncClient(timeout=PROBE_TIMEOUT) as http:
        while True:
            await trio.sleep(PROBE_INTERVAL)
            if leadership.token is None:
                report = ProbeReport()  # a follower's old figures would go stale in the registry
            else:
                try:
                    report = await probe_once(ctx, http)
                except BrokerUnavailable:
                    continue
            for name in SIGNALS:
                if name in report.signals:
                    ctx.qos[name] = report.signals[name]
                else:
                    ctx.qos.pop(name, None)  # nothing measured: no figure, rather than a stale one
            ctx.unreachable = report.unreachable
