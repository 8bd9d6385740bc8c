"""The answer batcher: what a 202 promises when an embedded node is draining."""

from __future__ import annotations

import trio

from playtotv import keys
from playtotv.broker.memory import MemoryBroker
from playtotv.gameplay import ids, schema
from playtotv.gameplay.answers import AnswerBatcher, AnswerItem
from playtotv.store import open_store


async def test_once_draining_embedded_answers_are_stored_before_their_202() -> None:
    """The embedded queue ends with the process, and the worker empties it when the drain begins:
    an answer acknowledged after that must already be in the store (and is still queued, for counting)."""
    with trio.fail_after(10):
        broker = MemoryBroker()
        draining = trio.Event()
        async with open_store("sqlite:///:memory:") as store, trio.open_nursery() as nursery:
            batcher = AnswerBatcher(broker, store, store_from=draining)
            await nursery.start(batcher.run)

            assert await batcher.submit(AnswerItem("i_1", "e_1", "u_before", "a", 1.0), ttl=60)
            assert await store.get(schema.ANSWERS, ids.answer_id("i_1", "u_before")) is None  # only queued

            draining.set()
            assert await batcher.submit(AnswerItem("i_1", "e_1", "u_after", "b", 2.0), ttl=60)
            stored = await store.get(schema.ANSWERS, ids.answer_id("i_1", "u_after"))
            assert stored is not None and stored["choice"] == "b"
            assert (await broker.queue_stats(keys.ANSWER_QUEUE))["waiting"] == 2
            # A retry is still refused, and stores nothing twice.
            assert not await batcher.submit(AnswerItem("i_1", "e_1", "u_after", "a", 3.0), ttl=60)
            assert (await store.get(schema.ANSWERS, ids.answer_id("i_1", "u_after")))["choice"] == "b"
            nursery.cancel_scope.cancel()
