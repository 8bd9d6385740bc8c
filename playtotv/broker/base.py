"""The broker interface: channels with history, work queues, counters, sorted sets, leases.

Each capability is a protocol of its own (``Channels``, ``WorkQueues``, ``Counters``, ``SortedSets``,
``Leases``); ``Broker`` is all of them, and code that needs one capability asks for that protocol alone.
A capability only some brokers have is a protocol of its own too (``ReplicatedQueues``), checked with
``isinstance``. Two implementations satisfy ``Broker`` (``memory.MemoryBroker`` for one process,
``redis.RedisBroker`` for a cluster) and one contract suite (``tests/test_broker_contract.py``, a class per
capability) runs against both: a behaviour one has and the other lacks is a bug.

Channels
    ``publish`` assigns each message the channel's ``epoch`` and the next gap-free ``offset`` (1, 2, 3,
    ...). History keeps the last ``history_size`` messages of a channel. The epoch changes when the history
    was lost (a Redis restart, a new memory broker), so a client holding ``(epoch, offset)`` can tell a gap
    it can fill from one it cannot. A channel's state (epoch, offset, history) expires ``channel_ttl``
    seconds after its last publish (or after a read created it): any name can be read, so state nobody
    publishes to must not accumulate. An expired channel starts a new epoch, like a lost history.

Queues
    At-least-once: an item claimed and not acked within ``visibility_timeout`` is delivered again (to any
    consumer); after ``max_deliveries`` deliveries it is moved to the queue's dead letters instead. Items
    may therefore be processed more than once: consumers make their effects idempotent.

Leases
    ``acquire_lease`` hands out a fencing token that grows every time the lease changes hands, so a deposed
    holder that wakes up late can be refused where its effect is written.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

import msgspec

#: Messages a channel keeps for recovery (docs/api.md: recovery is capped at 300 messages per client).
DEFAULT_HISTORY_SIZE = 1000
#: How long a claimed queue item may stay unacked before it is handed to another consumer.
DEFAULT_VISIBILITY_TIMEOUT = 30.0
#: Deliveries before an item is dead-lettered (poison items must not block the queue forever).
DEFAULT_MAX_DELIVERIES = 5
#: A channel nobody published to for this long is forgotten (see "Channels" above). A day: longer than any
#: show, so only channels that are really idle start a new epoch, which clients handle as a lost history.
DEFAULT_CHANNEL_TTL = 24 * 3600.0


class BrokerUnavailable(Exception):
    """The broker's server cannot be reached (or answered with a connection-level error)."""


class ChannelMessage(msgspec.Struct, frozen=True):
    """One published message as subscribers and history readers see it.

    ``data`` is the message payload exactly as published (already-encoded JSON bytes): the broker never
    re-encodes it, so a push node can splice it into every client frame unchanged.
    """

    channel: str
    epoch: str
    offset: int
    sent_at: float  # server wall clock (time.time()) when the broker assigned the offset
    data: bytes


class History(msgspec.Struct, frozen=True):
    """The answer to ``history(channel, since=...)``.

    ``epoch``/``offset``: the channel's current position (offset 0 when nothing was ever published).
    ``messages``: those with offset > since, oldest first, at most ``limit`` (the *oldest* ones when
    limited, so a reader can page forward).
    ``complete``: True when ``messages`` starts right after ``since`` with no gap (every message in
    ``(since, since + len(messages)]`` present). False when the history was trimmed past ``since`` or
    ``since`` is ahead of the channel.
    """

    epoch: str
    offset: int
    messages: list[ChannelMessage]
    complete: bool


class SubscriptionReset(msgspec.Struct, frozen=True):
    """Yielded by a subscription after its connection was lost and re-established, or after the
    subscriber fell more than its buffer (``subscriber_buffer``) behind and its backlog was dropped:
    publishers never wait for a slow subscriber.

    Messages may have been missed: the subscriber compares its last offset per channel with
    ``history()`` to fill the gap (docs/reliability.md #7). ``channels`` lists every subscribed channel. After
    a reconnect the reset comes once the server confirmed every channel again, so a history read made
    after seeing it cannot miss what is published next.
    """

    channels: list[str]


class QueueItem(msgspec.Struct, frozen=True):
    id: str  # opaque, pass back to ack()
    data: bytes
    deliveries: int  # 1 on first delivery


class DeadLetter(msgspec.Struct, frozen=True):
    id: str
    data: bytes
    deliveries: int
    failed_at: float


class Subscription(Protocol):
    """A live subscription to a changing set of channels (one connection to the server)."""

    async def add(self, channels: Sequence[str]) -> None:
        """Subscribe; returns once messages published from now on will arrive.

        Raises BrokerUnavailable when the server cannot confirm in time; the channels are kept then and
        subscribed once the connection is back, announced by a SubscriptionReset."""

    async def remove(self, channels: Sequence[str]) -> None: ...

    def __aiter__(self) -> AsyncIterator[ChannelMessage | SubscriptionReset]: ...


@runtime_checkable
class Channels(Protocol):
    """Publish/subscribe with gap-free offsets and a bounded history per channel ("Channels" above)."""

    async def publish(self, channel: str, data: bytes) -> ChannelMessage:
        """Append ``data`` to the channel's history and deliver it to subscribers; atomic."""

    async def publish_once(self, channel: str, data: bytes, marker: str, ttl: float) -> ChannelMessage | None:
        """``publish`` unless a message was already published under ``marker`` (within ``ttl`` seconds):
        then nothing is done and None returned. Marker and message are one atomic write. ValueError for a
        ttl that is not positive."""

    async def history(self, channel: str, since: int = 0, limit: int = 300) -> History:
        """Messages with offset > ``since`` (see History). ValueError if ``since`` < 0 or ``limit`` < 1."""

    async def position(self, channel: str) -> tuple[str, int]:
        """The channel's (epoch, last offset)."""

    def subscribe(self, channels: Sequence[str] = ()) -> AbstractAsyncContextManager[Subscription]:
        """``async with broker.subscribe([...]) as sub: async for msg in sub: ...``

        Entering raises BrokerUnavailable when the server cannot be reached; once entered, the
        subscription survives outages by itself (SubscriptionReset)."""

    async def trim_history(self, channel: str, keep: int) -> None: ...


@runtime_checkable
class WorkQueues(Protocol):
    """At-least-once work queues with redelivery, dead letters and deduplicated enqueues ("Queues" above)."""

    async def enqueue(self, queue: str, items: Sequence[bytes]) -> None: ...

    async def enqueue_unique(
        self, queue: str, entries: Sequence[tuple[str, bytes]], dedupe_ttl: float
    ) -> list[bool]:
        """For each ``(dedupe_key, data)``: enqueue unless the key was seen within ``dedupe_ttl`` s.

        One round trip for the whole batch; returns True for each entry that was enqueued. This is the
        answer path: a retried answer finds its key and is not enqueued twice.
        """

    async def seen_unique(self, queue: str, dedupe_key: str) -> bool:
        """Whether ``enqueue_unique`` accepted ``dedupe_key`` on ``queue`` within its dedupe TTL (so
        would refuse it now): "has this viewer answered?" before the worker has stored the answer."""

    async def claim(self, queue: str, consumer: str, count: int, wait: float = 0.0) -> list[QueueItem]:
        """Up to ``count`` items: redelivered ones whose visibility timeout passed first, then new ones.

        Waits up to ``wait`` seconds when none is available. Items past ``max_deliveries`` are moved to
        the dead letters instead of being returned.
        """

    async def ack(self, queue: str, ids: Sequence[str]) -> None: ...

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]: ...

    async def queue_stats(self, queue: str) -> dict[str, int]:
        """``{"pending": claimed-not-acked, "waiting": not yet claimed, "dead": dead letters}``."""


@runtime_checkable
class ReplicatedQueues(Protocol):
    """An optional capability: enqueues confirmed by replicas (``answers.durability = "replicated"``).

    Only a broker with replicas has it (Redis); callers ask with ``isinstance(broker, ReplicatedQueues)``."""

    async def enqueue_unique_replicated(
        self, queue: str, entries: Sequence[tuple[str, bytes]], dedupe_ttl: float, replicas: int,
        replica_timeout: float,
    ) -> list[bool]:
        """``enqueue_unique``, then wait until ``replicas`` replicas hold the batch, at most
        ``replica_timeout`` s; BrokerUnavailable if fewer confirm. The batch is enqueued either way: a
        retry finds its dedupe keys. ValueError unless ``replicas`` >= 1."""


@runtime_checkable
class Counters(Protocol):
    """Strings, counters and hashes under application keys, with expiry. ``delete``, ``expire`` and
    ``exists`` act on any application key, sorted sets included."""

    async def incr(self, key: str, amount: int = 1) -> int: ...

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float | None = None, only_new: bool = False) -> bool:
        """Returns False when ``only_new`` and the key exists."""

    async def delete(self, keys: Sequence[str]) -> None: ...

    async def expire(self, key: str, ttl: float) -> None: ...

    async def hincrby(self, key: str, increments: dict[str, int]) -> None:
        """Add each amount to its field, atomically for the whole dict."""

    async def hgetall(self, key: str) -> dict[str, int]: ...

    async def exists(self, key: str) -> bool: ...


@runtime_checkable
class SortedSets(Protocol):
    """Scored members (leaderboards, choice sets); ties ordered by member name, as Redis orders them."""

    async def zincrby(self, key: str, increments: dict[str, float]) -> None: ...

    async def zadd(self, key: str, scores: dict[str, float]) -> None: ...

    async def zadd_many(self, sets: Mapping[str, Mapping[str, float]]) -> None:
        """``zadd`` on several sorted sets in one round trip (the worker counts a batch of answers with
        it). Not atomic across the sets; each set's own update is."""

    async def ztop(self, key: str, start: int, stop: int) -> list[tuple[str, float]]:
        """Members by descending score, ranks ``start..stop`` inclusive (Redis ZREVRANGE semantics);
        ties are broken by member name descending, the same in every implementation."""

    async def zrank_desc(self, key: str, member: str) -> tuple[int, float] | None:
        """0-based rank by descending score and the score, or None."""

    async def zscores(self, key: str, members: Sequence[str]) -> list[float | None]: ...

    async def zcard(self, key: str) -> int: ...


@runtime_checkable
class Leases(Protocol):
    """Leadership leases with fencing tokens ("Leases" above)."""

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> int | None:
        """Take (or keep, if ``holder`` already has it) the lease; return its fencing token or None.

        The token is the same while one holder keeps renewing and strictly greater after any change of
        holder (including after expiry)."""

    async def release_lease(self, name: str, holder: str) -> None: ...

    async def lease_token(self, name: str) -> int:
        """The highest fencing token ever issued for ``name`` (0 if none): a writer holding a smaller
        token has been deposed."""


class Broker(Channels, WorkQueues, Counters, SortedSets, Leases, Protocol):
    """Every capability, for code that needs them all (a node's context). Optional capabilities
    (``ReplicatedQueues``) are not part of it."""

    async def ping(self) -> None:
        """Raise BrokerUnavailable unless the server answers."""
