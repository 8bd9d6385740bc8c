"""The embedded broker: everything in this process's memory, for ``--role all`` without Redis.

Single trio loop, so each operation is atomic by construction (no await between reading and writing
state). Channel epochs are random per broker instance: a restarted node has lost its history and its
clients must see that (``recovered: false``), exactly as after a Redis restart.

Channel state expires ``channel_ttl`` after the channel's last publish (or its creation by a read), as the
Redis keys do. Channels are kept in expiry order (a publish moves its channel to the end), so every channel
operation forgets the expired ones at the front in amortised constant time. Times are
``trio.current_time()`` so tests can drive expiry with ``MockClock``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from itertools import islice

import trio

from ._inbox import SubscriberInbox, SubscriptionItem
from ._memory_keyspace import MemoryKeyspace
from ._memory_queue import MemoryQueue
from ._semantics import (
    DEFAULT_SUBSCRIBER_BUFFER,
    check_history_args,
    check_ttl,
    history_complete,
    new_epoch,
)
from .base import (
    DEFAULT_CHANNEL_TTL,
    DEFAULT_HISTORY_SIZE,
    DEFAULT_MAX_DELIVERIES,
    DEFAULT_VISIBILITY_TIMEOUT,
    ChannelMessage,
    DeadLetter,
    History,
    QueueItem,
)


class _Channel:
    __slots__ = ("epoch", "offset", "history", "subscribers", "expires_at")

    def __init__(self, history_size: int, expires_at: float,
                 subscribers: set[MemorySubscription] | None = None) -> None:
        self.epoch = new_epoch()
        self.offset = 0
        self.history: deque[ChannelMessage] = deque(maxlen=history_size)
        self.subscribers: set[MemorySubscription] = set() if subscribers is None else subscribers
        self.expires_at = expires_at


class MemorySubscription:
    """Subscribed channels of one subscriber; publish delivers into its inbox without waiting."""

    def __init__(self, broker: MemoryBroker, buffer_size: int) -> None:
        self._broker = broker
        self._channels: set[str] = set()
        self._inbox = SubscriberInbox(buffer_size, lambda: sorted(self._channels))

    async def add(self, channels: Sequence[str]) -> None:
        await trio.lowlevel.checkpoint()
        for name in channels:
            self._broker._channel(name).subscribers.add(self)
            self._channels.add(name)

    async def remove(self, channels: Sequence[str]) -> None:
        await trio.lowlevel.checkpoint()
        for name in channels:
            self._detach(name)

    def _detach(self, name: str) -> None:
        channel = self._broker._channels.get(name)
        if channel is not None:
            channel.subscribers.discard(self)
        self._channels.discard(name)

    def deliver(self, message: ChannelMessage) -> None:
        self._inbox.deliver(message)

    def close(self) -> None:
        for name in list(self._channels):
            self._detach(name)
        self._inbox.close()

    def __aiter__(self) -> AsyncIterator[SubscriptionItem]:
        return self

    async def __anext__(self) -> SubscriptionItem:
        return await self._inbox.receive()


class MemoryBroker(MemoryKeyspace):
    """See ``base.Broker``. Needs no closing: it holds no resources beyond memory."""

    def __init__(
        self,
        *,
        history_size: int = DEFAULT_HISTORY_SIZE,
        visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        subscriber_buffer: int = DEFAULT_SUBSCRIBER_BUFFER,
        channel_ttl: float = DEFAULT_CHANNEL_TTL,
    ) -> None:
        super().__init__()
        if history_size < 1 or max_deliveries < 1:
            raise ValueError("history_size and max_deliveries must be >= 1")
        self.history_size = history_size
        self.channel_ttl = check_ttl(channel_ttl)
        self.visibility_timeout = check_ttl(visibility_timeout)
        self.max_deliveries = max_deliveries
        self.subscriber_buffer = subscriber_buffer
        self._channels: dict[str, _Channel] = {}
        self._queues: dict[str, MemoryQueue] = {}

    async def ping(self) -> None:
        await trio.lowlevel.checkpoint()

    # -- channels ------------------------------------------------------------------------------------------
    def _channel(self, name: str) -> _Channel:
        # Created on first sight, publish or read: the epoch a reader sees before the first publish must
        # be the one that publish uses, or the reader would take its first message for a lost history.
        now = trio.current_time()
        self._forget_expired_channels(now)
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = _Channel(self.history_size, now + self.channel_ttl)
        return channel

    def _forget_expired_channels(self, now: float) -> None:
        """Drop the state of channels idle past their TTL. A channel someone is subscribed to keeps its
        subscribers (on Redis the subscription outlives the keys too) under a new epoch."""
        while self._channels:
            name, channel = next(iter(self._channels.items()))
            if channel.expires_at > now:
                return
            del self._channels[name]
            if channel.subscribers:
                self._channels[name] = _Channel(self.history_size, now + self.channel_ttl, channel.subscribers)

    def _keep_alive(self, name: str, channel: _Channel) -> None:
        """A publish restarts the channel's TTL and moves it to the end of the expiry order."""
        channel.expires_at = trio.current_time() + self.channel_ttl
        del self._channels[name]
        self._channels[name] = channel

    async def publish(self, channel: str, data: bytes) -> ChannelMessage:
        await trio.lowlevel.checkpoint()
        return self._append(channel, data)

    async def publish_once(self, channel: str, data: bytes, marker: str, ttl: float) -> ChannelMessage | None:
        # ``set`` checkpoints before it looks, never after: marker and message are one step for other tasks.
        if not await self.set(f"publish-marker:{marker}", b"1", ttl=ttl, only_new=True):
            return None
        return self._append(channel, data)

    def _append(self, channel: str, data: bytes) -> ChannelMessage:
        state = self._channel(channel)
        self._keep_alive(channel, state)
        state.offset += 1
        message = ChannelMessage(channel, state.epoch, state.offset, time.time(), bytes(data))
        state.history.append(message)
        for subscriber in state.subscribers:
            subscriber.deliver(message)
        return message

    async def history(self, channel: str, since: int = 0, limit: int = 300) -> History:
        check_history_args(since, limit)
        await trio.lowlevel.checkpoint()
        state = self._channel(channel)
        first_kept = state.offset - len(state.history) + 1
        skip = max(since + 1 - first_kept, 0)
        messages = list(islice(state.history, skip, skip + limit))
        first_offset = messages[0].offset if messages else None
        complete = history_complete(since, state.offset, first_offset)
        return History(state.epoch, state.offset, messages, complete)

    async def position(self, channel: str) -> tuple[str, int]:
        await trio.lowlevel.checkpoint()
        state = self._channel(channel)
        return state.epoch, state.offset

    def subscribe(self, channels: Sequence[str] = ()) -> AbstractAsyncContextManager[MemorySubscription]:
        return self._subscription(channels)

    @asynccontextmanager
    async def _subscription(self, channels: Sequence[str]) -> AsyncIterator[MemorySubscription]:
        subscription = MemorySubscription(self, self.subscriber_buffer)
        try:
            await subscription.add(channels)
            yield subscription
        finally:
            subscription.close()

    async def trim_history(self, channel: str, keep: int) -> None:
        await trio.lowlevel.checkpoint()
        history = self._channel(channel).history
        while len(history) > max(keep, 0):
            history.popleft()

    # -- queues --------------------------------------------------------------------------------------------
    def _queue(self, name: str) -> MemoryQueue:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = MemoryQueue(self.visibility_timeout, self.max_deliveries)
        return queue

    async def enqueue(self, queue: str, items: Sequence[bytes]) -> None:
        await trio.lowlevel.checkpoint()
        self._queue(queue).enqueue(items)

    async def enqueue_unique(
        self, queue: str, entries: Sequence[tuple[str, bytes]], dedupe_ttl: float
    ) -> list[bool]:
        check_ttl(dedupe_ttl)
        await trio.lowlevel.checkpoint()
        return self._queue(queue).enqueue_unique(entries, dedupe_ttl)

    async def seen_unique(self, queue: str, dedupe_key: str) -> bool:
        await trio.lowlevel.checkpoint()
        return self._queue(queue).seen_unique(dedupe_key)

    async def claim(self, queue: str, consumer: str, count: int, wait: float = 0.0) -> list[QueueItem]:
        # ``consumer`` only matters to Redis (whose consumer group tracks it); any consumer may ack here.
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        return await self._queue(queue).claim(count, wait)

    async def ack(self, queue: str, ids: Sequence[str]) -> None:
        await trio.lowlevel.checkpoint()
        self._queue(queue).ack(ids)

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        await trio.lowlevel.checkpoint()
        return self._queue(queue).dead_letters(limit)

    async def queue_stats(self, queue: str) -> dict[str, int]:
        await trio.lowlevel.checkpoint()
        return self._queue(queue).stats()
