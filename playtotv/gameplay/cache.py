"""Instance-local caches with TTL, single-flight loading, and invalidation by broker message.

Clients are sticky to one core, so a per-process cache of what they read (their profile, whom they
follow, the interaction they are answering) hits almost always. It stays *correct* without stickiness:

* every change publishes an invalidation on ``keys.CACHE_INVALIDATION_CHANNEL``; every node drops the
  entries named (the writer drops its own at once, before it answers);
* a TTL bounds staleness should a message be lost (pub/sub is best effort), and a lost subscription
  (``SubscriptionReset``, broker down) clears everything.

A value loaded while an invalidation arrived is returned but not kept: it may predate the change.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, Literal, TypeVar, cast

import msgspec
import trio

from playtotv import keys
from playtotv.broker.base import BrokerUnavailable, Channels, SubscriptionReset
from playtotv.logs import event

log = logging.getLogger("playtotv.gameplay.cache")

V = TypeVar("V")

#: Entries per cache before the oldest are dropped: bounds memory on a core serving many users.
DEFAULT_MAX_ENTRIES = 100_000
#: Fallback staleness bounds when an invalidation message is lost. Interactions and episodes change
#: state under the director's hand, so they expire fast; user data changes only through events that
#: also send invalidations.
INTERACTION_TTL = 2.0
EPISODE_TTL = 2.0
USER_TTL = 15.0
FOLLOWING_TTL = 15.0
#: Live results change with every answer; a short TTL turns a crowd polling /results into one read per
#: interval per core.
RESULTS_TTL = 0.25
#: Ids per invalidation message (a scoring pass touches many users; keep each message small).
IDS_PER_MESSAGE = 500
#: Wait before resubscribing after the broker went away.
RESUBSCRIBE_BACKOFF = 0.5

Kind = Literal["interaction", "episode", "user", "following"]


class Invalidation(msgspec.Struct, kw_only=True):
    kind: Kind
    ids: list[str]


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Invalidation).decode


class _Flight:
    __slots__ = ("done", "value", "failed")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.value: object = None
        self.failed = False


class TTLCache(Generic[V]):
    def __init__(self, ttl: float, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[Hashable, tuple[float, V]] = {}
        self._flights: dict[Hashable, _Flight] = {}
        self._invalidations = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> tuple[bool, V | None]:
        entry = self._entries.get(key)
        if entry is not None and entry[0] > trio.current_time():
            self.hits += 1
            return True, entry[1]
        return False, None

    def put(self, key: Hashable, value: V, ttl: float | None = None) -> None:
        if len(self._entries) >= self.max_entries and key not in self._entries:
            # dicts keep insertion order: drop the oldest tenth in one go rather than one per insert.
            for old in list(self._entries)[: max(1, self.max_entries // 10)]:
                del self._entries[old]
        self._entries[key] = (trio.current_time() + (self.ttl if ttl is None else ttl), value)

    def invalidate(self, key: Hashable) -> None:
        self._invalidations += 1
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._invalidations += 1
        self._entries.clear()

    async def get_or_load(self, key: Hashable, load: Callable[[], Awaitable[V]], ttl: float | None = None) -> V:
        """The cached value, or ``await load()`` once for all concurrent callers of the same key.

        If the loading caller fails or is cancelled, each waiter loads for itself: a client that hung up
        must not make everyone else's request fail."""
        found, value = self.get(key)
        if found:
            return cast(V, value)  # found: the stored V (None only if V allows it)
        self.misses += 1
        flight = self._flights.get(key)
        if flight is not None:
            await flight.done.wait()
            if not flight.failed:
                return cast(V, flight.value)  # set by the loader of this key
            return await load()
        flight = self._flights[key] = _Flight()
        generation = self._invalidations
        try:
            value = await load()
        except BaseException:
            flight.failed = True
            raise
        else:
            flight.value = value
            if generation == self._invalidations:
                self.put(key, value, ttl)
            return value
        finally:
            del self._flights[key]
            flight.done.set()


class LocalCaches:
    """The caches of one process, by what an invalidation names."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.interactions: TTLCache = TTLCache(INTERACTION_TTL, max_entries)
        self.episodes: TTLCache = TTLCache(EPISODE_TTL, max_entries)
        self.users: TTLCache = TTLCache(USER_TTL, max_entries)
        self.profiles: TTLCache = TTLCache(USER_TTL, max_entries)
        self.following: TTLCache = TTLCache(FOLLOWING_TTL, max_entries)
        self.results: TTLCache = TTLCache(RESULTS_TTL, max_entries)

    def _by_kind(self, kind: str) -> list[TTLCache]:
        return {
            "interaction": [self.interactions, self.results],
            "episode": [self.episodes],
            "user": [self.users, self.profiles],
            "following": [self.following, self.profiles],
        }[kind]

    def invalidate(self, kind: Kind, ids: list[str]) -> None:
        for cache in self._by_kind(kind):
            for key in ids:
                cache.invalidate(key)

    def clear(self) -> None:
        for cache in (self.interactions, self.episodes, self.users, self.profiles, self.following, self.results):
            cache.clear()


async def announce_invalidation(broker: Channels, kind: Kind, ids: list[str], local: LocalCaches | None = None) -> None:
    """Drop ``ids`` here at once and tell every other node. The change is already stored: if the broker is
    down, other nodes fall back on their TTL, so the failure is logged rather than raised."""
    if local is not None:
        local.invalidate(kind, ids)
    try:
        for start in range(0, len(ids), IDS_PER_MESSAGE):
            chunk = ids[start:start + IDS_PER_MESSAGE]
            await broker.publish(keys.CACHE_INVALIDATION_CHANNEL, _encode(Invalidation(kind=kind, ids=chunk)))
    except BrokerUnavailable as exc:
        event(log, "cache invalidation not sent", kind=kind, error=str(exc))


async def follow_invalidations(
    broker: Channels, caches: LocalCaches, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Apply invalidations from other nodes until cancelled; reports started once subscribed (or once the
    first attempt failed: a node must not wait for Redis to serve from the store)."""
    started = False
    while True:
        try:
            async with broker.subscribe([keys.CACHE_INVALIDATION_CHANNEL]) as subscription:
                caches.clear()  # whatever changed while we were not subscribed is unknown
                if not started:
                    started = True
                    task_status.started()
                async for item in subscription:
                    if isinstance(item, SubscriptionReset):
                        caches.clear()
                        continue
                    try:
                        message = _decode(item.data)
                    except (msgspec.ValidationError, msgspec.DecodeError):
                        event(log, "malformed cache invalidation ignored", size=len(item.data))
                        continue
                    caches.invalidate(message.kind, message.ids)
        except BrokerUnavailable as exc:
            caches.clear()
            event(log, "cache invalidations unavailable, retrying", error=str(exc))
            if not started:
                started = True
                task_status.started()
            await trio.sleep(RESUBSCRIBE_BACKOFF)
