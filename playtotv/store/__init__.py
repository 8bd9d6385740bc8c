"""Document store: ``open_store(url)`` and the input checks every implementation shares.

The interface is in ``base``; ``sqlite`` and ``mongo`` implement it. The backends are imported lazily so a
node configured for SQLite never pays for importing pymongo (and the reverse).

Every name and value that reaches a query is checked here, once, the same way for both backends: a field
or collection name that is not a plain identifier, or a filter value that is not a scalar, raises
ValueError before anything is sent. That is what keeps a client-supplied ``{"$ne": null}`` from ever
becoming a MongoDB operator, and what lets SQLite inline field names into ``json_extract`` paths.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from playtotv.store.base import Document, Scalar, Store, StoreUnavailable

__all__ = ["Document", "Scalar", "Store", "StoreUnavailable", "open_store"]

NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Longest collection or field name accepted: far above what we use, far below any backend's limit.
MAX_NAME_LENGTH = 64

SQLITE_SCHEME = "sqlite:///"
MONGODB_SCHEMES = ("mongodb://", "mongodb+srv://")


@asynccontextmanager
async def open_store(url: str) -> AsyncIterator[Store]:
    """Open the store named by ``url`` and close it on exit.

    - ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (SQLAlchemy's convention, so
      ``f"sqlite:///{path}"`` works for either kind of path), ``sqlite:///:memory:``;
    - ``mongodb://...`` or ``mongodb+srv://...`` (database from the URL path, default ``playtotv``).

    Opening does not contact the server: call ``ping()`` to find out whether it answers.
    """
    store: Store
    if url.startswith(SQLITE_SCHEME):
        from playtotv.store.sqlite import SqliteStore

        path = url[len(SQLITE_SCHEME) :]
        if not path:
            # sqlite3 would open a private temporary database per connection: never what was meant.
            raise ValueError(f"store URL {url!r} names no file: use sqlite:///path or sqlite:///:memory:")
        store = SqliteStore(path)
    elif url.startswith(MONGODB_SCHEMES):
        from playtotv.store.mongo import MongoStore

        store = MongoStore(url)
    else:
        scheme = url.split(":", 1)[0] if ":" in url else url
        raise ValueError(
            f"unsupported store URL scheme {scheme!r}: expected sqlite:///path, sqlite:///:memory: "
            "or mongodb://host/database"
        )
    try:
        yield store
    finally:
        await store.aclose()


# -- checks shared by the implementations -------------------------------------------------------------
def check_name(name: object, what: str = "field") -> str:
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or not NAME_PATTERN.match(name):
        raise ValueError(f"invalid {what} name {name!r}: expected [A-Za-z_][A-Za-z0-9_]*")
    return name


def check_collection(name: object) -> str:
    checked = check_name(name, "collection")
    # SQLite reserves the sqlite_ prefix for its own tables; refuse it everywhere so both backends agree.
    if checked.lower().startswith("sqlite_"):
        raise ValueError(f"invalid collection name {checked!r}: the sqlite_ prefix is reserved")
    return checked


def check_id(value: object) -> str:
    # A dict here would be a query operator in MongoDB ({"_id": {"$ne": None}} matches everything).
    if not isinstance(value, str):
        raise ValueError(f"document ids are strings, got {type(value).__name__}")
    return value


def check_ids(values: Sequence[str]) -> list[str]:
    if isinstance(values, str):
        raise ValueError("ids must be a sequence of strings, not one string")
    return [check_id(v) for v in values]


def check_where(where: Mapping[str, Scalar] | None) -> dict[str, Scalar]:
    if not where:
        return {}
    for field, value in where.items():
        check_name(field)
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise ValueError(f"filter value for {field!r} must be a scalar, got {type(value).__name__}")
    return dict(where)


def check_changes(
    set: Mapping[str, Any] | None, inc: Mapping[str, int | float] | None
) -> tuple[dict[str, Any], dict[str, int | float]]:
    """Validate an update's ``set`` and ``inc``; MongoDB refuses the same field in both, so both refuse."""
    set_ = dict(set or {})
    inc_ = dict(inc or {})
    for field in set_:
        check_name(field)
    for field, amount in inc_.items():
        check_name(field)
        if isinstance(amount, bool) or not isinstance(amount, (int, float)):
            raise ValueError(f"inc amount for {field!r} must be a number, got {type(amount).__name__}")
    if "_id" in set_ or "_id" in inc_:
        raise ValueError("_id cannot be changed")
    both = set_.keys() & inc_.keys()
    if both:
        raise ValueError(f"fields both set and incremented: {sorted(both)}")
    return set_, inc_


def check_update(
    id: str,
    set: Mapping[str, Any] | None,
    inc: Mapping[str, int | float] | None,
    where: Mapping[str, Scalar] | None,
    upsert: bool,
) -> tuple[dict[str, Any], dict[str, int | float], dict[str, Scalar]]:
    """Validate ``update``'s arguments (``set``, ``inc``, ``where``); an upsert cannot have a filter."""
    check_id(id)
    set_, inc_ = check_changes(set, inc)
    where_ = check_where(where)
    if upsert and where_:
        raise ValueError("upsert cannot be combined with where")
    return set_, inc_, where_


def check_doc(doc: Mapping[str, Any]) -> Document:
    if type(doc) is dict and type(doc.get("_id")) is str:
        return dict(doc)  # the common case, without isinstance against typing.Mapping (slow in bulk)
    if not isinstance(doc, Mapping):
        raise ValueError(f"documents are mappings, got {type(doc).__name__}")
    if "_id" not in doc:
        raise ValueError("document has no _id")
    check_id(doc["_id"])
    return dict(doc)


def check_docs(docs: Sequence[Document]) -> list[Document]:
    return [check_doc(d) for d in docs]


def last_by_id(docs: list[Document]) -> list[Document]:
    """Keep the last document for each ``_id``: a batch that repeats an id means "the latest wins" on
    every backend (an unordered MongoDB bulk would otherwise apply them in any order)."""
    return list({d["_id"]: d for d in docs}.values())


def check_find(order_by: str | None, limit: int | None) -> None:
    if order_by is not None:
        check_name(order_by)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
