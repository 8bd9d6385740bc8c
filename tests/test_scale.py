"""Scale out and in while a show runs, with real processes.

Proved: a core and a push node added mid-show are handed out by the gatekeeper within a heartbeat (and
new viewers land on them); a push node and a core removed by SIGTERM drain: the push node's viewers are
told to reconnect, move to the other node and miss no event (no ``recovered: false``), answers sent while
the core drains are all accepted and counted once, and both processes exit 0.
"""

from __future__ import annotations

import pytest
import trio

from playtotv.devtools.audience import follow_all, gather_audience, ticks
from playtotv.devtools.cluster import ClusterSpec
from tests.killkit import FAST_NODES, TEST_BOUND, show

pytestmark = pytest.mark.slow

VIEWERS = 60
#: A new node is listed once it has registered (one heartbeat) and the gatekeeper has refreshed its
#: snapshot (every second); the margin covers a loaded machine.
LISTED_WITHIN = float(FAST_NODES["PLAYTOTV_NODE_HEARTBEAT_INTERVAL"]) + 1.0 + 3.0
EVENTS = 30


async def test_nodes_added_get_traffic_and_nodes_removed_drain_without_anyone_noticing() -> None:
    spec = ClusterSpec(layout=["gatekeeper,worker,scheduler", "core", "push"])
    with trio.fail_after(TEST_BOUND):
        async with show(spec) as s, trio.open_nursery() as nursery:
            first = await s.audience(nursery, VIEWERS)
            old_core, old_push = s.cluster.with_role("core")[0], s.cluster.with_role("push")[0]

            new_core = await s.cluster.add_process("core")
            new_push = await s.cluster.add_process("push")
            await s.cluster.wait_admitting(timeout=LISTED_WITHIN)
            gatekeeper = s.cluster.urls("gatekeeper")[0]
            second = await gather_audience(gatekeeper, VIEWERS, s.http)
            await follow_all(nursery, second, [s.channel])
            assert any(v.client.session["push"][0]["websocket"] == new_push.listening["push"] for v in second)
            assert any(v.client.session["core"][0] == new_core.listening["core"] for v in second)
            viewers = first + second

            s.director.cores = [new_core.listening["core"]]
            interaction = await s.director.open_quiz(s.episode_id)
            accepted: list[bool] = []

            async def stream_and_answer() -> None:
                async with trio.open_nursery() as work:
                    for i, viewer in enumerate(viewers):
                        async def answer(viewer=viewer, choice="ab"[i % 2]) -> None:
                            accepted.append(await viewer.answer(interaction, choice))

                        work.start_soon(answer)
                    for n in range(EVENTS):
                        await s.director.event(s.episode_id, n)
                        await trio.sleep(0.05)

            async with trio.open_nursery() as scaling_in:
                scaling_in.start_soon(stream_and_answer)
                await trio.sleep(0.3)
                codes = {}
                for process in (old_push, old_core):
                    async def remove(process=process) -> None:
                        codes[process.name] = await s.cluster.remove_process(process)

                    scaling_in.start_soon(remove)

            assert codes == {old_push.name: 0, old_core.name: 0}
            with trio.fail_after(20):
                while not all(ticks(v, s.channel) == list(range(EVENTS)) for v in viewers):
                    await trio.sleep(0.1)
            assert all(v.state_lost == 0 for v in viewers)
            moved = [v for v in first if v.reconnects]
            assert moved, "the drained push node's viewers should have reconnected"
            assert accepted.count(True) == len(viewers)
            await s.director.close(interaction)
            assert (await s.director.wait_total(interaction, len(viewers)))["total"] == len(viewers)
            nursery.cancel_scope.cancel()
