"""The document store: the source of truth (answers, scores, users, shows).

A deliberately small document API on which the domain repositories are written once. Documents are
JSON-compatible dicts with a string ``_id`` chosen by us (natural ids, so a retried write is idempotent).
Implementations: ``sqlite.SqliteStore`` (embedded default; several processes may share the file) and
``mongo.MongoStore`` (pymongo in threads, ``w="majority"``, retryable writes). One contract suite
(``tests/test_store_contract.py``) runs against both.

Filters (``where``) are equality on top-level fields only; values are str, int, float, bool or None.
Field names are validated (``[A-Za-z_][A-Za-z0-9_]*``), so nothing a client sends becomes a query operator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

Document = dict[str, Any]
Scalar = str | int | float | bool | None


class StoreUnavailable(Exception):
    """The store cannot be reached."""


class Store(Protocol):
    async def ping(self) -> None:
        """Raise StoreUnavailable unless the store answers."""

    async def ensure_index(self, collection: str, fields: Sequence[str], unique: bool = False) -> None: ...

    async def get(self, collection: str, id: str) -> Document | None: ...

    async def get_many(self, collection: str, ids: Sequence[str]) -> list[Document]:
        """The documents that exist among ``ids`` (any order)."""

    async def insert(self, collection: str, doc: Document) -> bool:
        """Insert if no document has ``doc["_id"]``; False (and nothing changed) if one exists."""

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
        """Apply ``set`` and ``inc`` (top-level fields) atomically if the document exists and matches
        ``where``; return the document after the change, or None when nothing matched. With ``upsert``
        a missing document is created from ``_id``, ``set`` and ``inc`` (``where`` must then be None)."""

    async def find(
        self,
        collection: str,
        where: Mapping[str, Scalar] | None = None,
        *,
        order_by: str | None = None,
        descending: bool = False,
        limit: int | None = None,
    ) -> list[Document]: ...

    async def count(self, collection: str, where: Mapping[str, Scalar] | None = None) -> int: ...

    async def bulk_upsert(self, collection: str, docs: Sequence[Document]) -> None:
        """Replace-or-insert each document by ``_id`` in one batch (idempotent by natural id)."""

    async def bulk_insert(self, collection: str, docs: Sequence[Document]) -> int:
        """Insert-if-absent each document; returns how many were new. Idempotent by ``_id``."""

    async def delete(self, collection: str, id: str) -> bool: ...

    async def aclose(self) -> None: ...
