"""SIGKILL a push node while a show runs (docs/reliability.md #3 with real processes).

Two push nodes, viewers spread over both by the gatekeeper, the director sending a steady stream of
events. One push node is SIGKILLed mid-stream. Proved: every viewer of the dead node reconnects to the
other node and, through ``since``, recovers every event it missed, so every viewer ends with every
event exactly once and in order; nobody was told ``recovered: false``.
"""

from __future__ import annotations

import pytest
import trio

from playtotv.devtools.audience import ticks
from playtotv.devtools.cluster import ClusterSpec
from tests.killkit import TEST_BOUND, show

pytestmark = pytest.mark.slow

EVENTS = 40
KILL_AFTER = 12
EVENT_INTERVAL = 0.05


async def test_push_node_sigkilled_mid_stream_its_viewers_reconnect_and_miss_nothing() -> None:
    spec = ClusterSpec(layout=["gatekeeper,core,worker", "push", "push"])
    with trio.fail_after(TEST_BOUND):
        async with show(spec) as s, trio.open_nursery() as nursery:
            viewers = await s.audience(nursery)
            doomed = s.cluster.with_role("push")[0]
            doomed_ws = doomed.listening["push"]
            on_doomed = [v for v in viewers if v.client.session["push"][0]["websocket"] == doomed_ws]
            assert on_doomed and len(on_doomed) < len(viewers), "the gatekeeper should spread viewers"

            for n in range(EVENTS):
                if n == KILL_AFTER:
                    await s.cluster.kill(doomed)
                await s.director.event(s.episode_id, n)
                await trio.sleep(EVENT_INTERVAL)

            expected = list(range(EVENTS))
            with trio.fail_after(30):
                while not all(ticks(v, s.channel) == expected for v in viewers):
                    await trio.sleep(0.1)
            assert all(v.state_lost == 0 for v in viewers)
            assert all(v.reconnects >= 1 for v in on_doomed)
            nursery.cancel_scope.cancel()
