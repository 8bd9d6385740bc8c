"""A queue consumer: claim a batch, process it, acknowledge what was done; repeat until draining.

At-least-once, stated plainly (as arq does): an item may be processed more than once (its worker died
before acknowledging, or a transient failure outlasted the retries), so handlers make their effects
idempotent. What a handler cannot process is not acknowledged: the broker redelivers it after its
visibility timeout and dead-letters it after ``max_deliveries`` (docs/reliability.md #13), so one poison item
never blocks the queue.

Failures are split by kind:

* transient (broker or store unavailable): retried in place with back-off, the batch kept claimed;
* anything else: the batch is split and each item processed alone, so one bad item does not take its
  batch-mates down with it; the failing items are logged and left unacknowledged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from playtotv.broker.base import BrokerUnavailable, QueueItem
from playtotv.logs import event
from playtotv.store.base import StoreUnavailable

if TYPE_CHECKING:
    from playtotv.context import NodeContext

log = logging.getLogger("playtotv.worker")

#: A claim waits this long for items when the queue is empty; also bounds how long a drain waits for an
#: idle consumer to notice.
CLAIM_WAIT = 0.5
#: How long a batch is retried through transient failures before it is left to redelivery: longer than
#: a Redis Sentinel failover (a few seconds), so a batch held across one is finished, not left to wait
#: for its visibility timeout.
TRANSIENT_WINDOW = 15.0
BACKOFF_MIN = 0.1
BACKOFF_MAX = 2.0

#: Returns the ids to acknowledge.
Handler = Callable[[list[QueueItem]], Awaitable[list[str]]]

TRANSIENT = (BrokerUnavailable, StoreUnavailable)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(is_transient(e) for e in exc.exceptions)
    return isinstance(exc, TRANSIENT)


class Backlog:
    """Whether a queue is backlogged, for consumers of less urgent queues to defer to it.

    ``wait_clear`` returns once the backlog is gone, or after ``max_deferral`` seconds at most: lower
    priority work is slowed down during a burst, never starved."""

    def __init__(self, max_deferral: float) -> None:
        self.max_deferral = max_deferral
        self._high = False
        self._cleared = trio.Event()

    def report(self, backlogged: bool) -> None:
        if backlogged and not self._high:
            self._high = True
            self._cleared = trio.Event()
        elif not backlogged and self._high:
            self._high = False
            self._cleared.set()

    async def wait_clear(self, draining: trio.Event) -> None:
        if not self._high:
            return
        with trio.move_on_after(self.max_deferral):
            async with trio.open_nursery() as nursery:
                async def cancel_when(event: trio.Event) -> None:
                    await event.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(cancel_when, draining)
                nursery.start_soon(cancel_when, self._cleared)


class Consumer:
    def __init__(self, ctx: NodeContext, queue: str, handler: Handler, batch_size: int,
                 linger: float = 0.0, gate: Backlog | None = None, signal: Backlog | None = None) -> None:
        self.ctx = ctx
        self.queue = queue
        self.handler = handler
        self.batch_size = batch_size
        #: After a batch smaller than ``batch_size``, wait this long before claiming again so the next
        #: batch is bigger: each batch costs a fixed dozen round trips, so under a moderate trickle of
        #: items this divides the worker's cost per item, for a bounded extra lag.
        self.linger = linger
        #: Claims wait while this backlog is high (lower priority than the queue that signals it).
        self.gate = gate
        #: This consumer reports whether its queue is backlogged (full batches) to it.
        self.signal = signal
        self.processed = 0

    async def run(self) -> None:
        delay = BACKOFF_MIN
        while not self.ctx.draining.is_set():
            if self.gate is not None:
                await self.gate.wait_clear(self.ctx.draining)
            try:
                items = await self.ctx.broker.claim(self.queue, self.ctx.node_id, self.batch_size, wait=CLAIM_WAIT)
            except BrokerUnavailable as exc:
                event(log, "claim failed, backing off", queue=self.queue, error=str(exc))
                await trio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            delay = BACKOFF_MIN
            if self.signal is not None:
                self.signal.report(len(items) >= self.batch_size)
            if items:
                await self._acknowledge(await self._process(items))
                if self.linger and len(items) < self.batch_size:
                    with trio.move_on_after(self.linger):
                        await self.ctx.draining.wait()

    async def finish(self) -> int:
        """Claim and process until nothing is left to claim (no waiting, no gate); return how many items
        were claimed. For a draining embedded worker, whose queue ends with the process."""
        claimed = 0
        while True:
            items = await self.ctx.broker.claim(self.queue, self.ctx.node_id, self.batch_size)
            if not items:
                return claimed
            claimed += len(items)
            await self._acknowledge(await self._process(items))

    async def _process(self, items: list[QueueItem]) -> list[str]:
        delay = BACKOFF_MIN
        give_up_at = trio.current_time() + TRANSIENT_WINDOW
        while trio.current_time() < give_up_at:
            try:
                return await self.handler(items)
            except Exception as exc:
                if not is_transient(exc):
                    return await self._isolate(items, exc)
                event(log, "transient failure, retrying batch", queue=self.queue, items=len(items), error=str(exc))
                await trio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
        event(log, "batch left for redelivery", queue=self.queue, items=len(items))
        return []

    async def _isolate(self, items: list[QueueItem], exc: Exception) -> list[str]:
        if len(items) == 1:
            item = items[0]
            log.error("queue %s item %s failed (delivery %d); left for redelivery / dead letter",
                      self.queue, item.id, item.deliveries, exc_info=exc)
            self.ctx.metrics.queue_items.labels(self.queue, "failed").inc()
            return []
        acked: list[str] = []
        for item in items:
            acked += await self._process([item])
        return acked

    async def _acknowledge(self, ids: list[str]) -> None:
        if not ids:
            return
        try:
            await self.ctx.broker.ack(self.queue, ids)
        except BrokerUnavailable as exc:
            # The effects are idempotent: the items will be redelivered and processed again harmlessly.
            event(log, "ack failed; items will be redelivered", queue=self.queue, items=len(ids), error=str(exc))
            return
        self.processed += len(ids)
        self.ctx.metrics.queue_items.labels(self.queue, "done").inc(len(ids))
