"""The bounded buffer between whatever delivers a subscription's messages and the task iterating it."""

from __future__ import annotations

from collections.abc import Callable

import trio

from .base import ChannelMessage, SubscriptionReset

SubscriptionItem = ChannelMessage | SubscriptionReset


class SubscriberInbox:
    """Delivery never blocks: a publisher (memory broker) or the pub/sub reader (Redis broker) must not
    wait for one slow subscriber, and must not buffer for it without bound either.

    When the buffer is full the inbox drops what it holds and everything that arrives until the
    subscriber reads again; that read returns a ``SubscriptionReset`` instead. That is the same signal a
    lost Redis connection gives, so a subscriber needs one recovery path (compare offsets, read history),
    not two. Dropping the backlog rather than only the newest messages is deliberate: the backlog is
    recoverable from history, and a subscriber that fell this far behind is better off skipping it.
    """

    def __init__(self, capacity: int, subscribed_channels: Callable[[], list[str]]) -> None:
        if capacity < 1:
            raise ValueError("a subscriber buffer holds at least one message")
        self._send, self._receive = trio.open_memory_channel[SubscriptionItem](capacity)
        self._subscribed_channels = subscribed_channels
        self._overflowed = False
        self._failure: Exception | None = None

    def deliver(self, item: SubscriptionItem) -> None:
        """Queue ``item`` for the subscriber, or note an overflow; never blocks."""
        if self._overflowed:
            return  # the subscriber will get a reset anyway; keeping these would only reorder things
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            self._overflowed = True
        except trio.ClosedResourceError:
            pass  # the subscription ended while a delivery was under way

    def fail(self, error: Exception) -> None:
        """End the subscription with ``error``, raised to the subscriber after what is buffered."""
        self._failure = error
        self._send.close()

    def close(self) -> None:
        """End the subscription: the subscriber's iteration stops after what is buffered."""
        self._send.close()

    async def receive(self) -> SubscriptionItem:
        """The next item; raises StopAsyncIteration once closed (or the failure passed to ``fail``)."""
        if self._overflowed:
            # Checkpoint first: a cancellation must not land between discarding and returning the reset.
            await trio.lowlevel.checkpoint()
            self._discard_buffered()
            self._overflowed = False
            return SubscriptionReset(channels=self._subscribed_channels())
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            if self._failure is not None:
                raise self._failure from None
            raise StopAsyncIteration from None

    def _discard_buffered(self) -> None:
        while True:
            try:
                self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return
