"""Counters, hashes, sorted sets and leases of the memory broker (one process, one trio loop).

Values live in one dict, like Redis keys: ``bytes`` for strings and counters, ``dict[str, int]`` for
hashes, ``dict[str, float]`` for sorted sets. Expiry uses ``trio.current_time()`` so tests can drive it
with ``MockClock``. Every method checkpoints before it touches state, so it is a cancellation point (as
the Redis implementation's calls are) and a cancelled call has no effect.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

import trio

from ._semantics import check_ttl, next_fencing_token

_Value = TypeVar("_Value", bytes, dict)


class _Lease:
    __slots__ = ("holder", "token", "expires_at")

    def __init__(self, holder: str, token: int, expires_at: float) -> None:
        self.holder = holder
        self.token = token
        self.expires_at = expires_at


class MemoryKeyspace:
    def __init__(self) -> None:
        self._values: dict[str, bytes | dict] = {}
        self._expires_at: dict[str, float] = {}
        self._leases: dict[str, _Lease] = {}
        self._lease_tokens: dict[str, int] = {}

    # -- internals -----------------------------------------------------------------------------------------
    def _expire_if_due(self, key: str) -> None:
        deadline = self._expires_at.get(key)
        if deadline is not None and deadline <= trio.current_time():
            del self._expires_at[key]
            self._values.pop(key, None)

    def _lookup(self, key: str, kind: type[_Value]) -> _Value | None:
        self._expire_if_due(key)
        value = self._values.get(key)
        if value is not None and not isinstance(value, kind):
            raise TypeError(f"key {key!r} holds a {type(value).__name__}, not a {kind.__name__}")
        return value

    def _container(self, key: str) -> dict:
        found = self._lookup(key, dict)
        if found is None:
            found = self._values[key] = {}
        return found

    def _drop_if_empty(self, key: str) -> None:
        # Redis deletes a hash or sorted set when its last member goes; mirror it so exists() agrees.
        if self._values.get(key) == {}:
            del self._values[key]
            self._expires_at.pop(key, None)

    # -- strings and counters ------------------------------------------------------------------------------
    async def incr(self, key: str, amount: int = 1) -> int:
        await trio.lowlevel.checkpoint()
        current = self._lookup(key, bytes)
        value = (int(current) if current is not None else 0) + amount
        self._values[key] = str(value).encode()
        return value

    async def get(self, key: str) -> bytes | None:
        await trio.lowlevel.checkpoint()
        return self._lookup(key, bytes)

    async def set(self, key: str, value: bytes, ttl: float | None = None, only_new: bool = False) -> bool:
        if ttl is not None:
            check_ttl(ttl)
        await trio.lowlevel.checkpoint()
        self._expire_if_due(key)
        if only_new and key in self._values:
            return False
        self._values[key] = bytes(value)
        if ttl is None:
            self._expires_at.pop(key, None)
        else:
            self._expires_at[key] = trio.current_time() + ttl
        return True

    async def delete(self, keys: Sequence[str]) -> None:
        await trio.lowlevel.checkpoint()
        for key in keys:
            self._values.pop(key, None)
            self._expires_at.pop(key, None)

    async def expire(self, key: str, ttl: float) -> None:
        check_ttl(ttl)
        await trio.lowlevel.checkpoint()
        self._expire_if_due(key)
        if key in self._values:
            self._expires_at[key] = trio.current_time() + ttl

    async def exists(self, key: str) -> bool:
        await trio.lowlevel.checkpoint()
        self._expire_if_due(key)
        return key in self._values

    # -- hashes --------------------------------------------------------------------------------------------
    async def hincrby(self, key: str, increments: dict[str, int]) -> None:
        await trio.lowlevel.checkpoint()
        fields = self._container(key)
        for field, amount in increments.items():
            fields[field] = fields.get(field, 0) + amount
        self._drop_if_empty(key)

    async def hgetall(self, key: str) -> dict[str, int]:
        await trio.lowlevel.checkpoint()
        return dict(self._lookup(key, dict) or {})

    # -- sorted sets ---------------------------------------------------------------------------------------
    async def zincrby(self, key: str, increments: dict[str, float]) -> None:
        await trio.lowlevel.checkpoint()
        scores = self._container(key)
        for member, amount in increments.items():
            scores[member] = float(scores.get(member, 0.0) + amount)
        self._drop_if_empty(key)

    async def zadd(self, key: str, scores: dict[str, float]) -> None:
        await trio.lowlevel.checkpoint()
        self._container(key).update({member: float(score) for member, score in scores.items()})
        self._drop_if_empty(key)

    async def zadd_many(self, sets: Mapping[str, Mapping[str, float]]) -> None:
        for key, scores in sets.items():
            await self.zadd(key, dict(scores))

    def _ranked(self, key: str) -> list[tuple[str, float]]:
        # Redis ZREVRANGE order: score descending, ties by member descending (byte order; for UTF-8 the
        # same as Python's code point order).
        scores = self._lookup(key, dict) or {}
        return sorted(scores.items(), key=lambda item: (item[1], item[0]), reverse=True)

    async def ztop(self, key: str, start: int, stop: int) -> list[tuple[str, float]]:
        await trio.lowlevel.checkpoint()
        ranked = self._ranked(key)
        # Redis index semantics: negative indexes count from the end, ``stop`` is inclusive.
        size = len(ranked)
        first = max(start + size if start < 0 else start, 0)
        last = stop + size if stop < 0 else min(stop, size - 1)
        return ranked[first : last + 1] if first <= last else []

    async def zrank_desc(self, key: str, member: str) -> tuple[int, float] | None:
        await trio.lowlevel.checkpoint()
        for rank, (name, score) in enumerate(self._ranked(key)):
            if name == member:
                return rank, score
        return None

    async def zscores(self, key: str, members: Sequence[str]) -> list[float | None]:
        await trio.lowlevel.checkpoint()
        scores = self._lookup(key, dict) or {}
        return [scores.get(member) for member in members]

    async def zcard(self, key: str) -> int:
        await trio.lowlevel.checkpoint()
        return len(self._lookup(key, dict) or {})

    # -- leases --------------------------------------------------------------------------------------------
    async def acquire_lease(self, name: str, holder: str, ttl: float) -> int | None:
        check_ttl(ttl)
        await trio.lowlevel.checkpoint()
        now = trio.current_time()
        lease = self._leases.get(name)
        if lease is not None and lease.expires_at > now:
            if lease.holder != holder:
                return None
            lease.expires_at = now + ttl  # renewal keeps the token
            return lease.token
        token = self._lease_tokens[name] = next_fencing_token(self._lease_tokens.get(name, 0))
        self._leases[name] = _Lease(holder, token, now + ttl)
        return token

    async def release_lease(self, name: str, holder: str) -> None:
        await trio.lowlevel.checkpoint()
        lease = self._leases.get(name)
        if lease is not None and lease.holder == holder:
            del self._leases[name]

    async def lease_token(self, name: str) -> int:
        await trio.lowlevel.checkpoint()
        return self._lease_tokens.get(name, 0)
