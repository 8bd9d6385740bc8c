"""One work queue of the memory broker: at-least-once delivery with a visibility timeout.

Times are ``trio.current_time()`` so tests can drive redelivery with ``MockClock``.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque
from collections.abc import Sequence

import trio

from ._semantics import DEAD_LETTER_CAP
from .base import DeadLetter, QueueItem


class _Claim:
    __slots__ = ("data", "deliveries", "visible_at")

    def __init__(self, data: bytes, deliveries: int, visible_at: float) -> None:
        self.data = data
        self.deliveries = deliveries
        self.visible_at = visible_at


class MemoryQueue:
    def __init__(self, visibility_timeout: float, max_deliveries: int) -> None:
        self._visibility_timeout = visibility_timeout
        self._max_deliveries = max_deliveries
        self._ids = itertools.count(1)
        self._waiting: deque[tuple[str, bytes]] = deque()
        # Claimed, not acked. Every claim uses the same timeout, so insertion order is also the order in
        # which claims become visible again: a redelivery pass can stop at the first one still hidden.
        self._pending: dict[str, _Claim] = {}
        self._dead: deque[DeadLetter] = deque(maxlen=DEAD_LETTER_CAP)
        self._dedupe_expires_at: dict[str, float] = {}
        # (deadline, key) in deadline order, so expired keys are forgotten without scanning them all.
        # TTLs may differ between calls, hence a heap rather than a deque.
        self._dedupe_deadlines: list[tuple[float, str]] = []
        self._arrivals = trio.lowlevel.ParkingLot()

    def enqueue(self, items: Sequence[bytes]) -> None:
        for data in items:
            self._waiting.append((str(next(self._ids)), bytes(data)))
        if items:
            self._arrivals.unpark_all()

    def enqueue_unique(self, entries: Sequence[tuple[str, bytes]], dedupe_ttl: float) -> list[bool]:
        now = trio.current_time()
        self._forget_expired_dedupe_keys(now)
        enqueued = []
        for key, data in entries:
            fresh = key not in self._dedupe_expires_at
            if fresh:
                self._dedupe_expires_at[key] = now + dedupe_ttl
                heapq.heappush(self._dedupe_deadlines, (now + dedupe_ttl, key))
                self.enqueue([data])
            enqueued.append(fresh)
        return enqueued

    def seen_unique(self, key: str) -> bool:
        self._forget_expired_dedupe_keys(trio.current_time())
        return key in self._dedupe_expires_at

    def _forget_expired_dedupe_keys(self, now: float) -> None:
        while self._dedupe_deadlines and self._dedupe_deadlines[0][0] <= now:
            _, key = heapq.heappop(self._dedupe_deadlines)
            del self._dedupe_expires_at[key]

    async def claim(self, count: int, wait: float) -> list[QueueItem]:
        await trio.lowlevel.checkpoint()
        deadline = trio.current_time() + wait
        while True:
            items = self._redeliver(count)
            items += self._deliver_new(count - len(items))
            now = trio.current_time()
            if items or now >= deadline:
                return items
            # Sleep until something arrives, a claim becomes visible again, or the wait is over.
            wake_at = min(deadline, self._next_visible_at())
            with trio.move_on_at(wake_at):
                await self._arrivals.park()

    def _next_visible_at(self) -> float:
        first = next(iter(self._pending.values()), None)
        return first.visible_at if first is not None else float("inf")

    def _redeliver(self, count: int) -> list[QueueItem]:
        now = trio.current_time()
        items: list[QueueItem] = []
        while len(items) < count and self._pending:
            item_id, claim = next(iter(self._pending.items()))
            if claim.visible_at > now:
                break
            del self._pending[item_id]
            if claim.deliveries >= self._max_deliveries:
                self._dead.append(DeadLetter(item_id, claim.data, claim.deliveries, time.time()))
                continue
            claim.deliveries += 1
            claim.visible_at = now + self._visibility_timeout
            self._pending[item_id] = claim  # re-insert: moves to the end, keeping the visibility order
            items.append(QueueItem(item_id, claim.data, claim.deliveries))
        return items

    def _deliver_new(self, count: int) -> list[QueueItem]:
        visible_at = trio.current_time() + self._visibility_timeout
        items: list[QueueItem] = []
        while len(items) < count and self._waiting:
            item_id, data = self._waiting.popleft()
            self._pending[item_id] = _Claim(data, 1, visible_at)
            items.append(QueueItem(item_id, data, 1))
        return items

    def ack(self, ids: Sequence[str]) -> None:
        for item_id in ids:
            self._pending.pop(item_id, None)

    def dead_letters(self, limit: int) -> list[DeadLetter]:
        return list(itertools.islice(self._dead, limit))

    def stats(self) -> dict[str, int]:
        return {"pending": len(self._pending), "waiting": len(self._waiting), "dead": len(self._dead)}
