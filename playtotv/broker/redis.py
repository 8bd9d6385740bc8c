"""The cluster broker on Redis, through coredis (native on trio).

Every operation is one round trip: a Lua script where it must be atomic or touches several keys
(``lua/*.lua``), a plain command otherwise. They go through coredis's pool, which multiplexes them
over shared connections; blocking reads and subscriptions use connections of their own
(``_redis_connections`` says why). Connection errors of any call become ``BrokerUnavailable`` so callers
can report not-ready; nothing here needs a restart once Redis is back, because broken connections are
replaced on the next call, and a connection that saw a cancelled command is invalidated, never reused.

The client comes from ``playtotv.redis_client`` (plain or Sentinel URL). A reply that only a demoted
primary gives (READONLY, ...) means the command was refused, not applied: the broker drops its
connections, which makes the next one go to the primary the Sentinels name now, and tries once more.

Channel history is a capped stream whose entry ids are the offsets; a Redis restart loses it along with
the epoch, so the next publish starts a new epoch at offset 1 (docs/reliability.md #16).
"""

from __future__ import annotations

import functools
import math
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Literal, ParamSpec, TypeVar, cast

import coredis
import msgspec
import trio
from coredis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from coredis.exceptions import (
    PrimaryNotFoundError,
    ReadOnlyError,
    ResponseError,
    StalePrimaryError,
    StreamConsumerGroupError,
)

from .. import keys as redis_keys
from ..redis_client import RedisEndpoint, is_failover_error, open_redis
from ._redis_connections import DedicatedConnections
from ._redis_script_loader import ScriptSet, lua_source
from ._redis_subscription import RedisSubscription
from ._semantics import (
    DEAD_LETTER_CAP,
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
    BrokerUnavailable,
    ChannelMessage,
    DeadLetter,
    History,
    QueueItem,
)

#: A command unanswered this long means Redis is unreachable (a frozen host, a partition): report
#: BrokerUnavailable instead of hanging the caller.
COMMAND_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0
#: A waiting ``claim`` blocks in Redis at most this long at a time, then looks for expired claims again:
#: the upper bound on how late a redelivery is noticed by an idle consumer. Below COMMAND_TIMEOUT.
CLAIM_BLOCK_SLICE = 1.0

#: Longest time between two looks for expired claims (see ``claim``): a redelivery is at most this late.
REDELIVERY_SCAN_PERIOD = 1.0

#: Errors that mean "Redis is not reachable (as a primary) right now", as opposed to a bug in a call.
_UNAVAILABLE = (RedisConnectionError, TimeoutError, ReadOnlyError, PrimaryNotFoundError, StalePrimaryError)

_P = ParamSpec("_P")
_R = TypeVar("_R")
#: A broker method: a coroutine function, as the ``base`` protocols declare them.
_Method = Callable[_P, Coroutine[Any, Any, _R]]


def _redis_call(*, retry_safe: bool) -> Callable[[_Method[_P, _R]], _Method[_P, _R]]:
    """Translate "Redis unreachable" errors into BrokerUnavailable.

    A ``retry_safe`` call (repeating it cannot apply anything twice) is tried once more when its
    connection turns out to be broken: right after an outage the pool may hand out a connection whose
    loss it has not noticed yet, and the second try runs on a fresh one. Calls that could apply twice
    (publish, incr, enqueue, ...) are never retried after a broken connection: their caller decides.
    Any call is tried once more after a failover reply (``redis_client.is_failover_error``): Redis
    refused it, so it was not applied, and the retry goes to the new primary.
    """

    def decorate(method: _Method[_P, _R]) -> _Method[_P, _R]:
        @functools.wraps(method)
        async def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            endpoint: RedisEndpoint = args[0].endpoint  # type: ignore[attr-defined]  # args[0]: the broker (self)
            for second_try in (False, True):
                try:
                    return await method(*args, **kwargs)
                except (ResponseError, StalePrimaryError) as exc:
                    if not is_failover_error(exc):
                        raise
                    endpoint.primary_lost(f"{type(exc).__name__}: {str(exc)[:80]}")
                    if second_try:
                        raise BrokerUnavailable(f"redis: failing over ({exc})") from exc
                except _UNAVAILABLE as exc:
                    # coredis turns a cancellation that lands while it sets up a connection into a
                    # ConnectionError (6.9); let the cancellation win, or cancel scopes would not work.
                    await trio.lowlevel.checkpoint_if_cancelled()
                    if second_try or not (retry_safe and isinstance(exc, RedisConnectionError)):
                        raise BrokerUnavailable(f"redis: {exc}") from exc
            raise AssertionError("unreachable: the second try returns or raises")

        return call

    return decorate


def _script(name: str) -> str:
    return lua_source("playtotv.broker", f"{name}.lua")


#: Long lists travel to scripts as one msgpack argument (scripts decode it with ``cmsgpack``).
_pack = msgspec.msgpack.Encoder().encode


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _field(fields: list[bytes], name: bytes) -> bytes:
    """A field of a stream entry as Redis sends it: ``[name, value, name, value, ...]``."""
    for index in range(0, len(fields) - 1, 2):
        if fields[index] == name:
            return fields[index + 1]
    raise ValueError(f"stream entry without field {name!r}: not written by this broker")


def _new_items(answer: Any) -> list[QueueItem]:
    """Items from an XREADGROUP reply (RESP3: ``{stream: [[id, [field, value, ...]], ...]}``, or null when
    there was nothing to read)."""
    entries: list[Any] = next(iter(answer.values()), []) if answer else []
    return [QueueItem(entry_id.decode(), _field(fields, b"d"), 1) for entry_id, fields in entries]


def _decode_history_entry(channel: str, epoch: str, entry: list[Any]) -> ChannelMessage:
    entry_id, fields = entry
    offset = int(entry_id.split(b"-", 1)[0])
    return ChannelMessage(channel, epoch, offset, float(_field(fields, b"t")), _field(fields, b"d"))


class RedisBroker:
    """See ``base.Broker`` and ``base.ReplicatedQueues``. Open it with ``RedisBroker.open(url)`` (or
    ``playtotv.broker.open_broker``):
    it owns a connection pool and a nursery for subscription relays, both closed on exit."""

    def __init__(
        self,
        endpoint: RedisEndpoint,
        nursery: trio.Nursery,
        *,
        history_size: int = DEFAULT_HISTORY_SIZE,
        visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        subscriber_buffer: int = DEFAULT_SUBSCRIBER_BUFFER,
        channel_ttl: float = DEFAULT_CHANNEL_TTL,
    ) -> None:
        if history_size < 1 or max_deliveries < 1:
            raise ValueError("history_size and max_deliveries must be >= 1")
        self.history_size = history_size
        self._channel_ttl_ms = _ms(check_ttl(channel_ttl))
        self.visibility_timeout = check_ttl(visibility_timeout)
        self.max_deliveries = max_deliveries
        self.subscriber_buffer = subscriber_buffer
        self.endpoint = endpoint
        self._client = client = endpoint.client
        self._nursery = nursery
        self._dedicated = DedicatedConnections(endpoint, nursery)
        self._scripts = ScriptSet(client)
        self._publish = self._scripts.register(_script("publish"))
        self._publish_once = self._scripts.register(_script("publish_once"))
        self._read_history = self._scripts.register(_script("read_history"))
        self._enqueue = self._scripts.register(_script("enqueue"))
        self._enqueue_unique = self._scripts.register(_script("enqueue_unique"))
        self._redeliver = self._scripts.register(_script("redeliver"))
        self._ack = self._scripts.register(_script("ack"))
        self._queue_stats = self._scripts.register(_script("queue_stats"))
        self._acquire_lease = self._scripts.register(_script("acquire_lease"))
        self._release_lease = self._scripts.register(_script("release_lease"))
        self._hincrby_many = self._scripts.register(_script("hincrby_many"))
        self._zincrby_many = self._scripts.register(_script("zincrby_many"))
        self._zrank_desc = self._scripts.register(_script("zrank_desc"))
        self._zadd_many = self._scripts.register(_script("zadd_many"))
        #: How often this broker looks for expired claims to redeliver, per queue, while claims keep
        #: finding new items (a claim that finds nothing always looks).
        self._redelivery_period = min(REDELIVERY_SCAN_PERIOD, self.visibility_timeout / 4)
        self._next_redelivery_scan: dict[str, float] = {}

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, **options: Any) -> AsyncIterator[RedisBroker]:
        """Connect lazily: entering succeeds while Redis is down (calls raise BrokerUnavailable until it
        is back), so a node can start, report not-ready and wait (docs/reliability.md #19)."""
        async with open_redis(url, connect_timeout=CONNECT_TIMEOUT, stream_timeout=COMMAND_TIMEOUT) as endpoint, \
                trio.open_nursery() as nursery:
            yield cls(endpoint, nursery, **options)
            nursery.cancel_scope.cancel()  # subscription relays end with the broker

    @_redis_call(retry_safe=True)
    async def ping(self) -> None:
        await self._client.ping()

    # -- channels ------------------------------------------------------------------------------------------
    def _channel_keys(self, channel: str) -> list[str]:
        return [
            redis_keys.channel_epoch(channel),
            redis_keys.channel_offset(channel),
            redis_keys.channel_history(channel),
        ]

    def _publish_args(self, channel: str, data: bytes) -> list[Any]:
        return [new_epoch(), self.history_size, redis_keys.channel_pubsub(channel), data, self._channel_ttl_ms]

    @staticmethod
    def _published(channel: str, data: bytes, reply: list[Any]) -> ChannelMessage:
        epoch, offset, sent_at = reply
        return ChannelMessage(channel, epoch.decode(), offset, float(sent_at), bytes(data))

    @_redis_call(retry_safe=False)
    async def publish(self, channel: str, data: bytes) -> ChannelMessage:
        reply = await self._publish(keys=self._channel_keys(channel), args=self._publish_args(channel, data))
        return self._published(channel, data, reply)

    @_redis_call(retry_safe=False)
    async def publish_once(self, channel: str, data: bytes, marker: str, ttl: float) -> ChannelMessage | None:
        reply = await self._publish_once(
            keys=[*self._channel_keys(channel), redis_keys.publish_marker(marker)],
            args=[*self._publish_args(channel, data), int(check_ttl(ttl) * 1000)],
        )
        return self._published(channel, data, reply) if reply else None

    @_redis_call(retry_safe=True)
    async def history(self, channel: str, since: int = 0, limit: int = 300) -> History:
        check_history_args(since, limit)
        epoch_bytes, offset, entries = await self._read_history(
            keys=self._channel_keys(channel), args=[new_epoch(), f"{since + 1}-0", limit, self._channel_ttl_ms]
        )
        epoch = epoch_bytes.decode()
        messages = [_decode_history_entry(channel, epoch, entry) for entry in entries]
        first_offset = messages[0].offset if messages else None
        return History(epoch, offset, messages, history_complete(since, offset, first_offset))

    @_redis_call(retry_safe=True)
    async def position(self, channel: str) -> tuple[str, int]:
        epoch, offset, _ = await self._read_history(
            keys=self._channel_keys(channel), args=[new_epoch(), "0-0", 0, self._channel_ttl_ms]
        )
        return epoch.decode(), offset

    def subscribe(self, channels: Sequence[str] = ()) -> AbstractAsyncContextManager[RedisSubscription]:
        return self._subscription(channels)

    @asynccontextmanager
    async def _subscription(self, channels: Sequence[str]) -> AsyncIterator[RedisSubscription]:
        subscription = RedisSubscription(self._dedicated.open, channels, self.subscriber_buffer)
        await self._nursery.start(subscription.run)
        try:
            yield subscription
        finally:
            subscription.close()

    @_redis_call(retry_safe=True)
    async def trim_history(self, channel: str, keep: int) -> None:
        history = redis_keys.channel_history(channel)
        await self._client.xtrim(history, trim_strategy=coredis.PureToken.MAXLEN, threshold=max(keep, 0))

    # -- queues --------------------------------------------------------------------------------------------
    @_redis_call(retry_safe=False)
    async def enqueue(self, queue: str, items: Sequence[bytes]) -> None:
        if items:
            await self._enqueue(keys=[redis_keys.queue_stream(queue)], args=list(items))

    @_redis_call(retry_safe=False)
    async def enqueue_unique(
        self, queue: str, entries: Sequence[tuple[str, bytes]], dedupe_ttl: float
    ) -> list[bool]:
        check_ttl(dedupe_ttl)
        if not entries:
            return []
        script_keys, script_args = self._unique_batch(queue, entries, dedupe_ttl)
        enqueued = await self._enqueue_unique(keys=script_keys, args=script_args)
        return [flag == 1 for flag in enqueued]

    @_redis_call(retry_safe=False)
    async def enqueue_unique_replicated(
        self, queue: str, entries: Sequence[tuple[str, bytes]], dedupe_ttl: float, replicas: int,
        replica_timeout: float,
    ) -> list[bool]:
        """See ``base.ReplicatedQueues``: the script and a Redis WAIT on one dedicated connection."""
        check_ttl(dedupe_ttl)
        if replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {replicas}")
        if not entries:
            return []
        script_keys, script_args = self._unique_batch(queue, entries, dedupe_ttl)
        reply, confirmed = await self._dedicated.execute_replicated(
            COMMAND_TIMEOUT, replicas, replica_timeout,
            b"EVAL", _script("enqueue_unique"), len(script_keys), *script_keys, *script_args,
        )
        if confirmed < replicas:
            raise BrokerUnavailable(f"redis: only {confirmed} of {replicas} replicas confirmed in time")
        return [flag == 1 for flag in cast("list[int]", reply)]  # the script's reply: 1 or 0 per entry

    @staticmethod
    def _unique_batch(
        queue: str, entries: Sequence[tuple[str, bytes]], dedupe_ttl: float
    ) -> tuple[list[str], list[Any]]:
        """Keys and arguments of ``lua/enqueue_unique.lua``."""
        dedupe_keys = [redis_keys.queue_dedupe(queue, key) for key, _ in entries]
        return [redis_keys.queue_stream(queue), *dedupe_keys], [_ms(dedupe_ttl), *(data for _, data in entries)]

    @_redis_call(retry_safe=True)
    async def seen_unique(self, queue: str, dedupe_key: str) -> bool:
        return await self._client.exists([redis_keys.queue_dedupe(queue, dedupe_key)]) == 1

    @_redis_call(retry_safe=True)
    async def claim(self, queue: str, consumer: str, count: int, wait: float = 0.0) -> list[QueueItem]:
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        deadline = trio.current_time() + wait
        while True:
            items = await self._claim_ready(queue, consumer, count)
            remaining = deadline - trio.current_time()
            if items or remaining <= 0:
                return items
            block = min(remaining, CLAIM_BLOCK_SLICE)
            items = await self._claim_next_arrival(queue, consumer, count, block)
            if items:
                return items

    async def _claim_ready(self, queue: str, consumer: str, count: int) -> list[QueueItem]:
        """Expired claims first, then new items. Two commands rather than one script (see
        ``lua/redeliver.lua``); expired claims are looked for at most every ``_redelivery_period`` while
        new items keep coming, and whenever there are none."""
        now = trio.current_time()
        items: list[QueueItem] = []
        scanned = now >= self._next_redelivery_scan.get(queue, -math.inf)
        if scanned:
            self._next_redelivery_scan[queue] = now + self._redelivery_period
            items = await self._take_expired(queue, consumer, count)
            if len(items) >= count:
                return items
        try:
            fresh = await self._read_new(queue, consumer, count - len(items))
        except StreamConsumerGroupError:  # NOGROUP
            # Redis lost the group (a restart) since the last scan: the scan recreates it (a new group has
            # no claims to redeliver), then read again.
            await self._take_expired(queue, consumer, count)
            try:
                fresh = await self._read_new(queue, consumer, count - len(items))
            except StreamConsumerGroupError as again:  # lost again at once: Redis is restarting
                raise BrokerUnavailable(f"redis: consumer group of {queue} keeps vanishing") from again
        if not fresh and not scanned:
            items = await self._take_expired(queue, consumer, count)
        return items + fresh

    async def _take_expired(self, queue: str, consumer: str, count: int) -> list[QueueItem]:
        raw = await self._redeliver(
            keys=[redis_keys.queue_stream(queue), redis_keys.queue_dead(queue)],
            args=[
                redis_keys.QUEUE_GROUP, consumer, count, _ms(self.visibility_timeout), self.max_deliveries,
                DEAD_LETTER_CAP,
            ],
        )
        return [QueueItem(item_id.decode(), data, deliveries) for item_id, data, deliveries in raw]

    async def _read_new(self, queue: str, consumer: str, count: int) -> list[QueueItem]:
        answer = await self._dedicated.execute_blocking(
            COMMAND_TIMEOUT,
            b"XREADGROUP", b"GROUP", redis_keys.QUEUE_GROUP, consumer, b"COUNT", count,
            b"STREAMS", redis_keys.queue_stream(queue), b">",
        )
        return _new_items(answer)

    async def _claim_next_arrival(
        self, queue: str, consumer: str, count: int, block: float
    ) -> list[QueueItem]:
        """Block in Redis until a new item arrives (not in a script: scripts cannot block)."""
        try:
            answer = await self._dedicated.execute_blocking(
                block + COMMAND_TIMEOUT,
                b"XREADGROUP", b"GROUP", redis_keys.QUEUE_GROUP, consumer, b"COUNT", count,
                b"BLOCK", _ms(block), b"STREAMS", redis_keys.queue_stream(queue), b">",
            )
        except StreamConsumerGroupError:  # NOGROUP
            return []  # Redis lost the group (a restart); the next claim recreates it
        return _new_items(answer)

    @_redis_call(retry_safe=True)
    async def ack(self, queue: str, ids: Sequence[str]) -> None:
        if ids:
            await self._ack(keys=[redis_keys.queue_stream(queue)], args=[redis_keys.QUEUE_GROUP, _pack(list(ids))])

    @_redis_call(retry_safe=True)
    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        entries = await self._client.xrange(redis_keys.queue_dead(queue), count=limit)
        letters = []
        for entry in entries:
            fields = entry.field_values
            letters.append(
                DeadLetter(cast(bytes, fields[b"id"]).decode(), cast(bytes, fields[b"d"]), int(fields[b"n"]),
                           float(fields[b"t"]))
            )
        return letters

    @_redis_call(retry_safe=True)
    async def queue_stats(self, queue: str) -> dict[str, int]:
        queue_keys = [redis_keys.queue_stream(queue), redis_keys.queue_dead(queue)]
        pending, waiting, dead = await self._queue_stats(keys=queue_keys, args=[redis_keys.QUEUE_GROUP])
        return {"pending": pending, "waiting": waiting, "dead": dead}

    # -- counters, hashes, sorted sets ---------------------------------------------------------------------
    @_redis_call(retry_safe=False)
    async def incr(self, key: str, amount: int = 1) -> int:
        return await self._client.incrby(redis_keys.user_key(key), amount)

    @_redis_call(retry_safe=True)
    async def get(self, key: str) -> bytes | None:
        return await self._client.get(redis_keys.user_key(key))

    @_redis_call(retry_safe=False)
    async def set(self, key: str, value: bytes, ttl: float | None = None, only_new: bool = False) -> bool:
        px = _ms(check_ttl(ttl)) if ttl is not None else None
        condition: Literal[coredis.PureToken.NX] | None = coredis.PureToken.NX if only_new else None
        return bool(await self._client.set(redis_keys.user_key(key), value, px=px, condition=condition))

    @_redis_call(retry_safe=True)
    async def delete(self, keys: Sequence[str]) -> None:
        if keys:
            await self._client.delete([redis_keys.user_key(key) for key in keys])

    @_redis_call(retry_safe=True)
    async def expire(self, key: str, ttl: float) -> None:
        await self._client.pexpire(redis_keys.user_key(key), _ms(check_ttl(ttl)))

    @_redis_call(retry_safe=True)
    async def exists(self, key: str) -> bool:
        return await self._client.exists([redis_keys.user_key(key)]) == 1

    @_redis_call(retry_safe=False)
    async def hincrby(self, key: str, increments: dict[str, int]) -> None:
        if not increments:
            return
        arguments = [part for field, amount in increments.items() for part in (field, int(amount))]
        await self._hincrby_many(keys=[redis_keys.user_key(key)], args=arguments)

    @_redis_call(retry_safe=True)
    async def hgetall(self, key: str) -> dict[str, int]:
        fields = await self._client.hgetall(redis_keys.user_key(key))
        return {field.decode(): int(value) for field, value in fields.items()}

    @_redis_call(retry_safe=False)
    async def zincrby(self, key: str, increments: dict[str, float]) -> None:
        if not increments:
            return
        arguments = [part for member, amount in increments.items() for part in (member, repr(float(amount)))]
        await self._zincrby_many(keys=[redis_keys.user_key(key)], args=arguments)

    @_redis_call(retry_safe=True)
    async def zadd(self, key: str, scores: dict[str, float]) -> None:
        if scores:
            members: dict[str | bytes, float] = {member: score for member, score in scores.items()}
            await self._client.zadd(redis_keys.user_key(key), members)

    @_redis_call(retry_safe=True)
    async def zadd_many(self, sets: Mapping[str, Mapping[str, float]]) -> None:
        sets = {key: scores for key, scores in sets.items() if scores}
        if not sets:
            return
        flat = [[part for member, score in scores.items() for part in (float(score), member)]
                for scores in sets.values()]
        await self._zadd_many(keys=[redis_keys.user_key(key) for key in sets], args=[_pack(flat)])

    @_redis_call(retry_safe=True)
    async def ztop(self, key: str, start: int, stop: int) -> list[tuple[str, float]]:
        ranked = await self._client.zrange(
            redis_keys.user_key(key), start, stop, rev=True, withscores=True
        )
        return [(cast(bytes, member).decode(), float(score)) for member, score in ranked]

    @_redis_call(retry_safe=True)
    async def zrank_desc(self, key: str, member: str) -> tuple[int, float] | None:
        found = await self._zrank_desc(keys=[redis_keys.user_key(key)], args=[member])
        return None if found is None else (found[0], float(found[1]))

    @_redis_call(retry_safe=True)
    async def zscores(self, key: str, members: Sequence[str]) -> list[float | None]:
        if not members:
            return []
        return list(await self._client.zmscore(redis_keys.user_key(key), list(members)))

    @_redis_call(retry_safe=True)
    async def zcard(self, key: str) -> int:
        return await self._client.zcard(redis_keys.user_key(key))

    # -- leases --------------------------------------------------------------------------------------------
    @_redis_call(retry_safe=True)
    async def acquire_lease(self, name: str, holder: str, ttl: float) -> int | None:
        return await self._acquire_lease(
            keys=[redis_keys.lease(name), redis_keys.lease_token(name)], args=[holder, _ms(check_ttl(ttl))]
        )

    @_redis_call(retry_safe=True)
    async def release_lease(self, name: str, holder: str) -> None:
        await self._release_lease(keys=[redis_keys.lease(name)], args=[holder])

    @_redis_call(retry_safe=True)
    async def lease_token(self, name: str) -> int:
        token = await self._client.get(redis_keys.lease_token(name))
        return int(token) if token is not None else 0
