"""Autoscaling gauges on ``/metrics`` (``playtotv.autoscale_gauges``): what the registry carries, in gauges
an autoscaler can read, on every listener of the node; in-flight requests counted by ``playtotv.http``."""

from __future__ import annotations

import httpx
import trio

from playtotv import autoscale_gauges
from playtotv import node as node_module
from tests.inprocess import start_node

EXPECTED = (
    'playtotv_load{signal="connections"}',  # push
    'playtotv_qos{signal="loop_lag_ms"}',  # every node
    'playtotv_qos{signal="cpu_busy"}',  # every node
    'playtotv_queue_backlog{queue="answers",state="waiting"}',  # worker
    "playtotv_admitted_sessions",  # gatekeeper
    "playtotv_capacity",
)


async def test_gauges_are_exported_and_inflight_counts_the_request_being_served(nursery, monkeypatch) -> None:
    # Every gauge shows after its sampler's first period or two: short periods, so it takes a fraction of a second.
    monkeypatch.setattr(node_module, "CPU_BUSY_INTERVAL", 0.1)
    monkeypatch.setattr(autoscale_gauges, "EXPORT_INTERVAL", 0.1)
    node = await start_node(nursery, ["gatekeeper", "core", "push", "worker", "scheduler"],
                            node_heartbeat_interval="0.1")
    async with httpx.AsyncClient(timeout=10) as http:
        with trio.fail_after(10):
            while True:
                text = (await http.get(node.url("core") + "/metrics")).text
                if all(name in text for name in EXPECTED):
                    break
                await trio.sleep(0.1)
        # This very request is in flight on core while the metrics are rendered...
        assert 'playtotv_http_inflight{role="core"} 1.0' in text
        # ...and no longer once it has been answered.
        text = (await http.get(node.url("gatekeeper") + "/metrics")).text
        assert 'playtotv_http_inflight{role="core"} 0.0' in text
        assert 'playtotv_http_inflight{role="gatekeeper"} 1.0' in text
    node.drain.set()
