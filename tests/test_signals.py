"""Autoscaling signals on ``/metrics`` (scaling in and out): what the registry carries, in gauges an
autoscaler can read, on every listener of the node."""

from __future__ import annotations

import httpx
import trio

from tests.inprocess import start_node

EXPECTED = (
    'playtotv_load{signal="connections"}',  # push
    'playtotv_qos{signal="loop_lag_ms"}',  # every node
    'playtotv_qos{signal="cpu_busy"}',  # every node
    'playtotv_queue_backlog{queue="answers",state="waiting"}',  # worker
    "playtotv_admitted_sessions",  # gatekeeper
    "playtotv_capacity",
)


async def test_signals_are_exported_and_inflight_counts_the_request_being_served(nursery) -> None:
    node = await start_node(nursery, ["gatekeeper", "core", "push", "worker", "scheduler"])
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
