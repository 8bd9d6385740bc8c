"""Gatekeepers die (docs/reliability.md #9 with real processes): admitted viewers notice nothing.

Viewers are admitted through one gatekeeper, which is then SIGKILLed; a newcomer still gets in through
the other one; then that one is SIGKILLed too. Proved: with no gatekeeper left, the admitted viewers
still receive every event (no reconnect, no ``recovered: false``) and every answer is accepted at the
first core it tries and counted: once past the gatekeeper a client talks only to core and push.
"""

from __future__ import annotations

import pytest
import trio

from playtotv.devtools.audience import Viewer, ticks
from playtotv.devtools.cluster import ClusterSpec
from tests.killkit import TEST_BOUND, show

pytestmark = pytest.mark.slow

EVENTS = 10


async def test_admitted_viewers_notice_nothing_when_every_gatekeeper_dies() -> None:
    spec = ClusterSpec(layout=["gatekeeper", "gatekeeper", "core,push,worker,scheduler"])
    with trio.fail_after(TEST_BOUND):
        async with show(spec) as s, trio.open_nursery() as nursery:
            first, second = s.cluster.with_role("gatekeeper")
            viewers = await s.audience(nursery)

            await s.cluster.kill(first)
            newcomer = Viewer(second.listening["gatekeeper"], s.http, name="late")
            await newcomer.join()  # the other gatekeeper still admits
            await s.cluster.kill(second)

            for n in range(EVENTS):
                await s.director.event(s.episode_id, n)
            interaction = await s.director.open_quiz(s.episode_id)
            accepted = []
            async with trio.open_nursery() as burst:
                for i, viewer in enumerate(viewers):
                    async def answer(viewer: Viewer = viewer, choice: str = "ab"[i % 2]) -> None:
                        accepted.append(await viewer.answer(interaction, choice))

                    burst.start_soon(answer)

            with trio.fail_after(20):
                while not all(ticks(v, s.channel) == list(range(EVENTS)) for v in viewers):
                    await trio.sleep(0.1)
            assert accepted.count(True) == len(viewers)
            assert all(v.reconnects == 0 and v.state_lost == 0 and v.client.failovers == 0 for v in viewers)
            await s.director.close(interaction)
            assert (await s.director.wait_total(interaction, len(viewers)))["total"] == len(viewers)
            nursery.cancel_scope.cancel()
