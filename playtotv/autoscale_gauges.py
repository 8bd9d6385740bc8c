"""Autoscaling gauges on ``/metrics``: the numbers a node reports to the registry, for an autoscaler.

Every node already tells the registry its load (``ctx.load``: connections, channels, recent admissions,
leadership) and quality of service (``ctx.qos``: fan-out p99, core p95, event-loop lag, queue lag); the
gatekeeper admits on them. An autoscaler (Kubernetes HPA through a Prometheus adapter, see
``config/k8s``) should scale on the same numbers, so this module mirrors them into gauges:

    playtotv_load{signal="connections"}        push: WebSockets + waiting long polls of this process
    playtotv_qos{signal="fanout_p99_ms"}       push / core_p95_ms core / queue_lag_s worker / loop_lag_ms,
                                               cpu_busy all
    playtotv_http_inflight{role="core"}        requests being served now, per listener (``playtotv.http``)
    playtotv_queue_backlog{queue, state}       worker processes: items waiting and claimed-but-unacked
    playtotv_admitted_sessions, playtotv_capacity   gatekeeper (set by the gatekeeper itself)

The backlog is the same cluster-wide number on every worker (it is read from the broker): use it as an
external metric or on a dashboard; per-pod scaling should use ``queue_lag_s``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from playtotv import keys
from playtotv.broker.base import BrokerUnavailable

if TYPE_CHECKING:
    from playtotv.context import NodeContext

#: How often the gauges are refreshed: the same cadence as the heartbeat that carries these numbers.
EXPORT_INTERVAL = 1.0
#: Queues whose backlog worker processes export.
QUEUES = (keys.ANSWER_QUEUE, keys.JOB_QUEUE)
#: Bound on one backlog read: a slow broker must not stall the export of everything else.
BACKLOG_TIMEOUT = 1.0


async def export_forever(ctx: NodeContext) -> None:
    """Mirror ``ctx.load`` / ``ctx.qos`` into gauges, and the queue backlog on worker processes; the total
    of in-flight requests also goes into ``ctx.load`` (the registry) as ``inflight``."""
    while True:
        export_once(ctx)
        if "worker" in ctx.roles:
            await export_backlog(ctx)
        await trio.sleep(EXPORT_INTERVAL)


def export_once(ctx: NodeContext) -> None:
    if ctx.inflight:
        ctx.load["inflight"] = float(sum(ctx.inflight.values()))
    for name, value in ctx.load.items():
        ctx.metrics.load.labels(name).set(value)
    for name, value in ctx.qos.items():
        ctx.metrics.qos.labels(name).set(value)


async def export_backlog(ctx: NodeContext) -> None:
    for queue in QUEUES:
        with trio.move_on_after(BACKLOG_TIMEOUT):
            try:
                stats = await ctx.broker.queue_stats(queue)
            except BrokerUnavailable:
                return  # readiness reports the outage; the gauges keep their last values
            ctx.metrics.queue_backlog.labels(queue, "waiting").set(stats["waiting"])
            ctx.metrics.queue_backlog.labels(queue, "pending").set(stats["pending"])
            if queue == keys.ANSWER_QUEUE:
                ctx.load["answer_backlog"] = float(stats["waiting"] + stats["pending"])
