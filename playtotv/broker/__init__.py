"""Channels with history, work queues, counters, sorted sets and leases (see ``base`` for the contract).

``open_broker(None)`` gives the embedded memory broker, ``open_broker("redis://...")`` the Redis one;
both satisfy ``base.Broker`` and pass the same contract suite.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ..redis_client import is_redis_url
from .base import (
    Broker,
    BrokerUnavailable,
    ChannelMessage,
    Channels,
    Counters,
    DeadLetter,
    History,
    Leases,
    QueueItem,
    ReplicatedQueues,
    SortedSets,
    Subscription,
    SubscriptionReset,
    WorkQueues,
)
from .memory import MemoryBroker
from .redis import RedisBroker

__all__ = [
    "Broker",
    "BrokerUnavailable",
    "ChannelMessage",
    "Channels",
    "Counters",
    "DeadLetter",
    "History",
    "Leases",
    "MemoryBroker",
    "QueueItem",
    "RedisBroker",
    "ReplicatedQueues",
    "SortedSets",
    "Subscription",
    "SubscriptionReset",
    "WorkQueues",
    "open_broker",
]


@asynccontextmanager
async def open_broker(url: str | None, **options: Any) -> AsyncIterator[Broker]:
    """The broker for ``url``: None for the in-process memory broker, a Redis URL (``redis://``,
    ``rediss://``, ``unix://`` or ``redis+sentinel://``, see ``playtotv.redis_client``) for Redis.

    ``options`` (history_size, visibility_timeout, max_deliveries, subscriber_buffer) go to the
    broker's constructor. Entering does not wait for Redis: calls raise BrokerUnavailable until it
    answers. Exceptions raised in the body of a Redis broker arrive in an ExceptionGroup (it runs a
    nursery); handle them with ``except*``, which also matches the memory broker's bare exceptions.
    """
    if url is None:
        yield MemoryBroker(**options)
    elif is_redis_url(url):
        async with RedisBroker.open(url, **options) as broker:
            yield broker
    else:
        raise ValueError(f"unsupported broker URL {url!r}: expected redis://, rediss://, unix:// or redis+sentinel://")
