"""``Gameplay``: the backends and caches one process uses for the domain, plus typed repository reads.

Roles build one per process (``Gameplay.of(ctx)`` finds or creates it as ``ctx.gameplay``), so core,
worker and scheduler running in one process share one set of caches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import trio

from playtotv.broker.base import Broker
from playtotv.context import NodeContext
from playtotv.gameplay import schema
from playtotv.gameplay.cache import Kind, LocalCaches, TTLCache, announce_invalidation
from playtotv.gameplay.documents import (
    D,
    EpisodeDoc,
    InteractionDoc,
    ShowDoc,
    UserDoc,
    default_name,
    from_doc,
    from_docs,
    to_doc,
)
from playtotv.store.base import Store, StoreUnavailable

#: Back-off while the store is unreachable at start (docs/reliability.md #19: wait, don't crash).
SCHEMA_RETRY_MIN = 0.2
SCHEMA_RETRY_MAX = 5.0


class Backends(Protocol):
    broker: Broker
    store: Store


class Gameplay:
    def __init__(self, broker: Broker, store: Store, caches: LocalCaches | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.broker = broker
        self.store = store
        self.caches = caches or LocalCaches()
        self.clock = clock
        self.schema_ready = False

    @classmethod
    def of(cls, deps: Any) -> Gameplay:
        """The process's ``Gameplay`` for a NodeContext (created on first use), ``deps`` itself when it is
        one, or a new one over anything else with a broker and a store."""
        if isinstance(deps, Gameplay):
            return deps
        if not isinstance(deps, NodeContext):
            return cls(deps.broker, deps.store)
        if deps.gameplay is None:
            deps.gameplay = cls(deps.broker, deps.store)
        return deps.gameplay

    async def ensure_schema(self) -> None:
        """Create indexes once per process, retrying with back-off while the store is down."""
        delay = SCHEMA_RETRY_MIN
        while not self.schema_ready:
            try:
                await schema.ensure_schema(self.store)
                self.schema_ready = True
            except StoreUnavailable:
                await trio.sleep(delay)
                delay = min(delay * 2, SCHEMA_RETRY_MAX)

    async def invalidate(self, kind: Kind, ids: list[str]) -> None:
        await announce_invalidation(self.broker, kind, ids, self.caches)

    # -- reads ------------------------------------------------------------------------------------------
    async def show(self, show_id: str) -> ShowDoc | None:
        return await self._document(schema.SHOWS, show_id, ShowDoc, None)

    async def episode(self, episode_id: str, *, fresh: bool = False) -> EpisodeDoc | None:
        return await self._document(schema.EPISODES, episode_id, EpisodeDoc, None if fresh else self.caches.episodes)

    async def interaction(self, interaction_id: str, *, fresh: bool = False) -> InteractionDoc | None:
        cache = None if fresh else self.caches.interactions
        return await self._document(schema.INTERACTIONS, interaction_id, InteractionDoc, cache)

    async def _document(self, collection: str, id: str, cls: type[D], cache: TTLCache | None) -> D | None:
        """One document read from the store, through ``cache`` unless it is None (a fresh read)."""

        async def load() -> D | None:
            doc = await self.store.get(collection, id)
            return from_doc(doc, cls) if doc else None

        if cache is None:
            return await load()
        return await cache.get_or_load(id, load)

    async def interactions_of(self, episode_id: str) -> list[InteractionDoc]:
        docs = await self.store.find(schema.INTERACTIONS, {"episode_id": episode_id}, order_by="created_at")
        return from_docs(docs, InteractionDoc)

    async def user(self, user_id: str) -> UserDoc | None:
        async def load() -> UserDoc | None:
            doc = await self.store.get(schema.USERS, user_id)
            return from_doc(doc, UserDoc) if doc else None

        return await self.caches.users.get_or_load(user_id, load)

    async def names(self, user_ids: Sequence[str]) -> dict[str, str]:
        """Display names (a default for users without a document), through the user cache."""
        names: dict[str, str] = {}
        missing: list[str] = []
        for user_id in user_ids:
            found, doc = self.caches.users.get(user_id)
            if found:
                names[user_id] = doc.name if doc else default_name(user_id)
            else:
                missing.append(user_id)
        if missing:
            docs = {d["_id"]: from_doc(d, UserDoc) for d in await self.store.get_many(schema.USERS, missing)}
            for user_id in missing:
                doc = docs.get(user_id)
                self.caches.users.put(user_id, doc)
                names[user_id] = doc.name if doc else default_name(user_id)
        return names

    async def ensure_user(self, user_id: str) -> UserDoc:
        """The user's document, created with a default name on first sight (tickets come from the
        gatekeeper, which does not write users)."""
        doc = await self.user(user_id)
        if doc is not None:
            return doc
        fresh = UserDoc(id=user_id, name=default_name(user_id), created_at=self.clock(), version=1)
        created = await self.store.insert(schema.USERS, to_doc(fresh))
        # Other nodes may hold "no such user" in their caches (a follow attempt, a leaderboard name).
        await self.invalidate("user", [user_id])
        if created:
            return fresh
        doc = await self.user(user_id)
        assert doc is not None  # it existed a moment ago and users are never deleted
        return doc
