"""``MongoStore``: the cluster document store (MongoDB replica set through pymongo, in threads).

Writes use ``w="majority"`` and retryable writes; documents carry natural ``_id``s, so a write retried
after a failover (docs/reliability.md #18) either finds its own earlier effect or applies once. pymongo is
blocking, so every call runs in ``trio.to_thread.run_sync`` behind a ``CapacityLimiter``.

Errors: the connection-level ones (no primary reachable, connection lost, pool timeout, write concern
timeout) become ``StoreUnavailable``; a duplicate key on ``update`` or ``bulk_upsert`` (a unique index)
and ``inc`` of a non-number become ``ValueError``, as in ``SqliteStore``. Other errors are bugs and
propagate unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import pymongo
import trio
from pymongo import ReplaceOne, ReturnDocument
from pymongo.errors import BulkWriteError, ConnectionFailure, DuplicateKeyError, OperationFailure, WTimeoutError
from pymongo.write_concern import WriteConcern

from playtotv.store import (
    check_collection,
    check_docs,
    check_find,
    check_id,
    check_ids,
    check_name,
    check_update,
    check_where,
    last_by_id,
)
from playtotv.store.base import Document, Scalar, StoreUnavailable

T = TypeVar("T")

DEFAULT_DATABASE = "playtotv"
#: Concurrent pymongo calls per store; pymongo's own pool (100 connections by default) is larger.
DEFAULT_THREADS = 16
#: How long an operation waits for a usable primary. Covers a replica-set election (typically well
#: under 12 s), so a retryable write survives a step-down instead of failing; shorter than pymongo's 30 s
#: default so a node probing at startup reports not-ready soon (docs/reliability.md #19). A URL may override.
SERVER_SELECTION_TIMEOUT_MS = 15_000
DUPLICATE_KEY = 11000
TYPE_MISMATCH = 14

#: Errors that mean "the server cannot be used now": retry later, the write is idempotent.
UNAVAILABLE = (ConnectionFailure, WTimeoutError)


class MongoStore:
    """``MongoStore("mongodb://host/db")`` owns its client; ``MongoStore(client)`` uses (and does not
    close) an injected ``pymongo.MongoClient`` or ``mongomock.MongoClient``. The database is the one in
    the URL path, else ``database``, else ``playtotv``."""

    def __init__(self, url_or_client: Any, *, database: str | None = None, threads: int = DEFAULT_THREADS) -> None:
        if isinstance(url_or_client, str):
            options: dict[str, Any] = {"w": "majority", "retryWrites": True}
            if "serverselectiontimeoutms" not in url_or_client.lower():
                options["serverSelectionTimeoutMS"] = SERVER_SELECTION_TIMEOUT_MS
            # The constructor does not block: pymongo connects in its background threads.
            self._client = pymongo.MongoClient(url_or_client, **options)
            self._owns_client = True
            name = database or self._client.get_default_database(default=DEFAULT_DATABASE).name
        else:
            self._client = url_or_client
            self._owns_client = False
            name = database or DEFAULT_DATABASE
        # Majority even on an injected client: an acknowledged write must survive a failover.
        self._db = self._client.get_database(name, write_concern=WriteConcern("majority"))
        self._limiter = trio.CapacityLimiter(threads)
        self._closed = False

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise StoreUnavailable("store is closed")
        # Abandoned on cancel: pymongo may wait for a primary for seconds, and a caller's cancel scope
        # (the only timeout we use) must win. The thread keeps its limiter token until it ends, and a
        # write it completes is one the caller's retry would have made anyway (natural ids).
        return await trio.to_thread.run_sync(self._translate, fn, args, limiter=self._limiter, abandon_on_cancel=True)

    @staticmethod
    def _translate(fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            return fn(*args)
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"MongoDB unavailable: {exc}") from exc

    def _collection(self, name: str) -> Any:
        return self._db[check_collection(name)]

    # -- Store --------------------------------------------------------------------------------------
    async def ping(self) -> None:
        await self._run(self._client.admin.command, "ping")

    async def ensure_index(self, collection: str, fields: Sequence[str], unique: bool = False) -> None:
        col = self._collection(collection)
        if isinstance(fields, str) or not fields:
            raise ValueError("fields must be a non-empty sequence of field names")
        for field in fields:
            check_name(field)
        if list(fields) == ["_id"]:
            return  # always indexed and unique; MongoDB refuses options on the _id index
        spec = [(f, pymongo.ASCENDING) for f in fields]
        await self._run(lambda: col.create_index(spec, unique=unique))

    async def get(self, collection: str, id: str) -> Document | None:
        col = self._collection(collection)
        return await self._run(col.find_one, {"_id": check_id(id)})

    async def get_many(self, collection: str, ids: Sequence[str]) -> list[Document]:
        col = self._collection(collection)
        wanted = list(dict.fromkeys(check_ids(ids)))
        if not wanted:
            await trio.lowlevel.checkpoint()
            return []
        return await self._run(lambda: list(col.find({"_id": {"$in": wanted}})))

    async def insert(self, collection: str, doc: Document) -> bool:
        col = self._collection(collection)
        (doc,) = check_docs([doc])

        def run() -> bool:
            try:
                col.insert_one(doc)
            except DuplicateKeyError:  # on _id or on a unique index: "not inserted", as in SqliteStore
                return False
            return True

        return await self._run(run)

    async def update(
        self,
        collection: str,
        id: str,
        *,
        set: Mapping[str, Any] | None = None,
        inc: Mapping[str, int | float] | None = None,
        where: Mapping[str, Scalar] | None = None,
        upsert: bool = False,
    ) -> Document | None:
        col = self._collection(collection)
        set_, inc_, where_ = check_update(id, set, inc, where, upsert)
        if where_.get("_id", id) != id:
            await trio.lowlevel.checkpoint()
            return None  # the filter names another document: nothing can match (as in SqliteStore)
        query = {**where_, "_id": id}
        change: dict[str, Any] = {}
        if set_:
            change["$set"] = set_
        if inc_:
            change["$inc"] = inc_

        def run() -> Document | None:
            if not change:  # MongoDB refuses an empty update: it is a match test (or create-if-missing)
                if upsert:
                    try:
                        col.insert_one({"_id": id})
                    except DuplicateKeyError:
                        pass
                return col.find_one(query)
            try:
                return col.find_one_and_update(query, change, upsert=upsert, return_document=ReturnDocument.AFTER)
            except DuplicateKeyError as exc:
                if not upsert or not _on_id(exc):
                    raise ValueError(f"update of {collection}/{id} violates a unique index: {exc}") from exc
                # Two upserts raced to create the document and we lost (older servers do not retry this
                # themselves); it exists now, so the same update applies to it.
                return col.find_one_and_update(query, change, return_document=ReturnDocument.AFTER)
            except OperationFailure as exc:
                if exc.code == TYPE_MISMATCH:
                    raise ValueError(f"cannot increment a non-number in {collection}/{id}: {exc}") from exc
                raise

        return await self._run(run)

    async def find(
        self,
        collection: str,
        where: Mapping[str, Scalar] | None = None,
        *,
        order_by: str | None = None,
        descending: bool = False,
        limit: int | None = None,
    ) -> list[Document]:
        col = self._collection(collection)
        query = check_where(where)
        check_find(order_by, limit)
        if limit == 0:
            await trio.lowlevel.checkpoint()
            return []  # pymongo's limit(0) means "no limit"
        direction = pymongo.DESCENDING if descending else pymongo.ASCENDING
        # _id breaks ties, so the order is the same on every backend and every call.
        sort = [(order_by, direction), ("_id", direction)] if order_by and order_by != "_id" else [("_id", direction)]

        def run() -> list[Document]:
            cursor = col.find(query).sort(sort)
            if limit is not None:
                cursor = cursor.limit(limit)
            return list(cursor)

        return await self._run(run)

    async def count(self, collection: str, where: Mapping[str, Scalar] | None = None) -> int:
        col = self._collection(collection)
        return await self._run(col.count_documents, check_where(where))

    async def bulk_upsert(self, collection: str, docs: Sequence[Document]) -> None:
        col = self._collection(collection)
        batch = last_by_id(check_docs(docs))
        if not batch:
            await trio.lowlevel.checkpoint()
            return
        ops = [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in batch]

        def run() -> None:
            try:
                col.bulk_write(ops, ordered=False)
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                if errors and all(e.get("code") == DUPLICATE_KEY for e in errors):
                    raise ValueError(f"bulk upsert into {collection} violates a unique index") from exc
                raise

        await self._run(run)

    async def bulk_insert(self, collection: str, docs: Sequence[Document]) -> int:
        col = self._collection(collection)
        batch = check_docs(docs)
        if not batch:
            await trio.lowlevel.checkpoint()
            return 0

        def run() -> int:
            try:
                return len(col.insert_many(batch, ordered=False).inserted_ids)
            except BulkWriteError as exc:
                # Unordered: every other document was still tried. Duplicates are the idempotent case
                # (already stored); anything else is a real failure.
                errors = exc.details.get("writeErrors", [])
                if any(e.get("code") != DUPLICATE_KEY for e in errors):
                    raise
                return int(exc.details.get("nInserted", 0))

        return await self._run(run)

    async def delete(self, collection: str, id: str) -> bool:
        col = self._collection(collection)
        check_id(id)
        return await self._run(lambda: col.delete_one({"_id": id}).deleted_count == 1)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            with trio.CancelScope(shield=True):  # close() joins pymongo's monitor threads
                await trio.to_thread.run_sync(self._client.close)


def _on_id(exc: DuplicateKeyError) -> bool:
    key_pattern = (exc.details or {}).get("keyPattern") or {}
    return list(key_pattern) == ["_id"] or "_id_" in str(exc)
