"""SIGKILL a core node in the middle of an answer burst (reliability.md #8 with real processes).

Two core nodes; the gatekeeper gives each viewer both, in its own order (stickiness spreads viewers over
them). Every viewer answers a quiz; a third of the way into the burst one core is SIGKILLed. Proved:
viewers of the dead core fail over to the other (the SDK moves on after a connection error), every
viewer's answer is accepted in the end, and the results count every answer exactly once (an answer whose
first attempt landed before the kill meets ``409 already_answered`` on retry, never a second count).
The worker and scheduler counterparts are tests/test_core_cluster.py (a worker SIGKILLed mid-batch,
reliability.md #12) and tests/test_scheduler.py (a scheduler leader SIGKILLed between timeline entries,
#14): not repeated here.
"""

from __future__ import annotations

from collections import Counter

import pytest
import trio

from playtotv.cluster import ClusterSpec
from tests.killkit import TEST_BOUND, show

pytestmark = pytest.mark.slow

#: Answers in flight at once: a burst, bounded so one test process can drive it.
BURST_CONCURRENCY = 40
KILL_AT = 1 / 3


async def test_core_sigkilled_mid_burst_every_answer_is_counted_exactly_once() -> None:
    spec = ClusterSpec(layout=["gatekeeper,push,worker,scheduler", "core", "core"])
    with trio.fail_after(TEST_BOUND):
        async with show(spec) as s, trio.open_nursery() as nursery:
            viewers = await s.audience(nursery, follow=False)
            doomed = s.cluster.with_role("core")[0]
            doomed_url = doomed.listening["core"]
            on_doomed = [v for v in viewers if v.client.session["core"][0] == doomed_url]
            assert on_doomed and len(on_doomed) < len(viewers), "the gatekeeper should spread viewers"
            s.director.cores = s.cluster.urls("core")[::-1]  # the director works on the survivor
            interaction = await s.director.open_quiz(s.episode_id, options="abc")

            choices = {id(v): "abc"[i % 3] for i, v in enumerate(viewers)}
            accepted: list[bool] = []
            limiter = trio.CapacityLimiter(BURST_CONCURRENCY)
            kill_now = trio.Event()

            async def answer(viewer) -> None:  # type: ignore[no-untyped-def]
                async with limiter:
                    accepted.append(await viewer.answer(interaction, choices[id(viewer)]))
                    if len(accepted) >= len(viewers) * KILL_AT:
                        kill_now.set()

            async def killer() -> None:
                await kill_now.wait()
                await s.cluster.kill(doomed)

            async with trio.open_nursery() as burst:
                burst.start_soon(killer)
                for viewer in viewers:
                    burst.start_soon(answer, viewer)

            assert not doomed.alive
            assert accepted.count(True) == len(viewers)
            assert sum(v.client.failovers for v in on_doomed) >= 1, "nobody had to fail over"
            await s.director.close(interaction)
            results = await s.director.wait_total(interaction, len(viewers))
            expected = Counter(choices.values())
            assert results["total"] == len(viewers)
            assert results["counts"] == {option: expected[option] for option in "abc"}
            nursery.cancel_scope.cancel()
