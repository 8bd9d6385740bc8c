"""Synthetic monitoring by the scheduler leader: a probe, on a period, of every core and push node.

- core: the round trip of ``GET /healthz`` on each core node;
- push: publish → receive through each push node: the probe connects like a viewer (a ticket it signs
  itself for a ``probe-`` user), publishes on its own user channel through the broker and times the
  message's arrival over that node's WebSocket. This is the whole fan-out path a viewer sees.

The worst figure of each kind goes into this node's registry entry as QoS signals
(``probe_core_rtt_ms``, ``probe_push_delay_ms``), which the gatekeeper weighs with the nodes' own reports.
A node that does not answer within the probe timeout reports the timeout itself: unreachable is slow.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import TYPE_CHECKING

import httpx
import msgspec
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from playtotv import keys
from playtotv.broker.base import BrokerUnavailable
from playtotv.logs import event

if TYPE_CHECKING:
    from playtotv.node import NodeContext
    from playtotv.roles.scheduler.leadership import Leadership

log = logging.getLogger("playtotv.scheduler.probe")

PROBE_INTERVAL = 5.0
#: A probe slower than this counts as this slow (and is logged): bounded, so one dead node cannot
#: stall the probe loop.
PROBE_TIMEOUT = 3.0
PROBE_TICKET_TTL = 60.0


async def probe_core(http: httpx.AsyncClient, url: str) -> float:
    started = time.perf_counter()
    try:
        with trio.fail_after(PROBE_TIMEOUT):
            response = await http.get(f"{url}/healthz")
        if response.status_code != 200:
            return PROBE_TIMEOUT * 1000
    except (httpx.HTTPError, trio.TooSlowError):
        return PROBE_TIMEOUT * 1000
    return (time.perf_counter() - started) * 1000


async def probe_push(ctx: "NodeContext", ws_url: str) -> float:
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
                await ctx.broker.publish(keys.user_channel(user_id),
                                         msgspec.json.encode({"type": "probe", "nonce": nonce}))
                while True:
                    frame = msgspec.json.decode(await ws.get_message())
                    if frame.get("type") == "message" and frame.get("data", {}).get("nonce") == nonce:
                        return (time.perf_counter() - started) * 1000
    except (trio.TooSlowError, HandshakeError, ConnectionClosed, OSError, BrokerUnavailable,
            msgspec.DecodeError) as e:
        event(log, "push probe failed", url=ws_url, error=type(e).__name__)
        return PROBE_TIMEOUT * 1000


async def probe_once(ctx: "NodeContext", http: httpx.AsyncClient) -> dict[str, float]:
    nodes = await ctx.registry.nodes()
    core_urls = [n.endpoints["core"] for n in nodes if "core" in n.endpoints]
    push_urls = [n.endpoints["push_ws"] for n in nodes if "push_ws" in n.endpoints]
    core: list[float] = []
    push: list[float] = []
    async with trio.open_nursery() as nursery:
        for url in core_urls:
            nursery.start_soon(lambda u=url: _append(core, probe_core(http, u)))
        for url in push_urls:
            nursery.start_soon(lambda u=url: _append(push, probe_push(ctx, u)))
    signals = {}
    if core:
        signals["probe_core_rtt_ms"] = round(max(core), 2)
    if push:
        signals["probe_push_delay_ms"] = round(max(push), 2)
    return signals


async def _append(into: list[float], measurement) -> None:  # type: ignore[no-untyped-def]
    into.append(await measurement)


async def monitor(ctx: "NodeContext", leadership: "Leadership") -> None:
    async with httpx.AsyncClient(timeout=PROBE_TIMEOUT) as http:
        while True:
            await trio.sleep(PROBE_INTERVAL)
            if leadership.token is None:
                for name in ("probe_core_rtt_ms", "probe_push_delay_ms"):
                    ctx.qos.pop(name, None)  # a follower's old figures would go stale in the registry
                continue
            try:
                ctx.qos.update(await probe_once(ctx, http))
            except BrokerUnavailable:
                continue
