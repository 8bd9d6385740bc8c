"""``SqliteStore``: the embedded document store (stdlib sqlite3, one file, several processes may share it).

Layout: one table per collection, ``(_id TEXT PRIMARY KEY, doc TEXT)``, the whole document as JSON in
``doc`` (``_id`` included); created on first use. ``ensure_index`` adds expression indexes on
``json_extract(doc, '$.field')``, and filters and ordering use that exact expression so the planner can use
them. Field names are validated (``playtotv.store.check_name``) before they are inlined into a JSON path;
values are always bound parameters.

Concurrency:

- Every call runs in ``trio.to_thread.run_sync`` behind a ``CapacityLimiter``: sqlite3 blocks.
- Connections come from a small pool (one per concurrently running thread, at most the limiter's
  capacity). trio reuses worker threads but does not pin a call to one, so connections are opened with
  ``check_same_thread=False`` and handed to one thread at a time; the module is built thread-safe
  (``sqlite3.threadsafety == 3``), and a connection is never used by two threads at once.
- WAL lets readers run while one writer writes, in this process and in others on the same machine.
  Writes that read-modify-write use ``BEGIN IMMEDIATE``, which takes the write lock up front (a deferred
  transaction that upgrades can fail with SQLITE_BUSY without waiting); ``busy_timeout`` makes the other
  process's writer wait rather than fail.
- Writers of this process queue on a ``trio.Lock`` before taking a thread, so contention between our own
  connections never falls to SQLite's sleeping busy handler (and never ties up threads readers need).
- ``:memory:`` has one connection (a second one would see a different, empty database) and capacity 1.

Not for network filesystems: WAL needs shared memory between the processes, i.e. one machine.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import msgspec
import trio

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

MEMORY = ":memory:"
#: Threads (and so connections) per store. WAL readers run in parallel; writes are serialised anyway.
DEFAULT_THREADS = 4
#: How long a writer waits for another process's write transaction before giving up (StoreUnavailable).
#: Transactions here last milliseconds; seconds of waiting means something is wrong.
BUSY_TIMEOUT_S = 10.0
#: NORMAL is safe in WAL mode: a killed process (the fault we design for) loses nothing committed; only
#: an OS crash or power loss may drop the last commits. FULL would fsync on every commit.
SYNCHRONOUS = "NORMAL"
#: Ids per ``IN (...)`` query: well below SQLite's bound-parameter limit on every version.
IDS_PER_QUERY = 500
#: Rows per INSERT statement in ``bulk_insert`` (two bound parameters each; SQLite allows 32766 since
#: 3.32). Python's sqlite3 releases the GIL while SQLite works and takes it back after each step; a
#: thread that wants it back while the trio thread computes waits up to the switch interval, so
#: executemany (one step per row) ran a batch of 500 answers 16 times slower when the trio thread was
#: busy than when it was idle. One statement per batch takes the GIL back once.
ROWS_PER_INSERT = 5000
#: Primary result codes that mean "the database cannot be used right now", not "your query is wrong".
UNAVAILABLE_CODES = frozenset(
    {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL}
)

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def _table(collection: str) -> str:
    return f'"{collection}"'


def _expr(field: str) -> str:
    """The SQL expression for a top-level field: the same text in indexes, filters and ORDER BY."""
    return "_id" if field == "_id" else f"json_extract(doc, '$.{field}')"


def _where_sql(where: Mapping[str, Scalar]) -> tuple[str, list[Any]]:
    """``(" AND ..." clause, params)`` with MongoDB's equality semantics (see the comments)."""
    clauses: list[str] = []
    params: list[Any] = []
    for field, value in where.items():
        expr = _expr(field)
        if field == "_id" and not isinstance(value, str):
            clauses.append("0")  # ids are strings: a non-string never matches (TEXT affinity would coerce)
        elif value is None:
            clauses.append(f"{expr} IS NULL")  # like MongoDB: matches null and missing fields
        elif isinstance(value, bool):
            # JSON true/false come out of json_extract as 1/0; check the JSON type so True != 1, as in
            # MongoDB. The first term still matches an index on the field.
            clauses.append(f"{expr} = ? AND json_type(doc, '$.{field}') = ?")
            params += [int(value), "true" if value else "false"]
        elif isinstance(value, (int, float)) and field != "_id":
            clauses.append(f"{expr} = ? AND json_type(doc, '$.{field}') IN ('integer', 'real')")  # 1 != true
            params.append(value)
        else:
            clauses.append(f"{expr} = ?")
            params.append(value)
    return "".join(f" AND {c}" for c in clauses), params


def _apply(doc: Document, set: Mapping[str, Any], inc: Mapping[str, int | float]) -> None:
    doc.update(set)
    for field, amount in inc.items():
        current = doc.get(field, 0)
        if isinstance(current, bool) or not isinstance(current, (int, float)):
            raise ValueError(f"cannot increment {field!r}: it holds {type(current).__name__}")
        doc[field] = current + amount


class SqliteStore:
    """See the module docstring. ``path`` is a file path or ``":memory:"``."""

    def __init__(self, path: str, *, threads: int = DEFAULT_THREADS) -> None:
        self._path = path
        self._memory = path == MEMORY
        self._limiter = trio.CapacityLimiter(1 if self._memory else threads)
        self._write_lock = trio.Lock()
        # deque append/pop are atomic, so worker threads share the pool without a lock.
        self._idle: collections.deque[sqlite3.Connection] = collections.deque()
        self._all: list[sqlite3.Connection] = []
        self._tables: set[str] = set()
        self._closed = False
        if self._memory:
            self._idle.append(self._connect())  # no I/O for :memory:, so not worth a thread

    # -- plumbing -----------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; we write BEGIN IMMEDIATE / COMMIT ourselves.
        conn = sqlite3.connect(self._path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={SYNCHRONOUS}")
        except BaseException:
            conn.close()
            raise
        self._all.append(conn)
        return conn

    def _with_connection(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        """Runs in a worker thread: borrow a connection, run ``fn(conn, *args)``, give it back."""
        if self._closed:  # a call that queued for a thread while aclose() ran
            raise StoreUnavailable("store is closed")
        try:
            conn = self._idle.pop() if self._idle else self._connect()
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"cannot open {self._path}: {exc}") from exc
        try:
            return fn(conn, *args)
        except sqlite3.OperationalError as exc:
            if (exc.sqlite_errorcode & 0xFF) in UNAVAILABLE_CODES:
                raise StoreUnavailable(f"{self._path}: {exc}") from exc
            raise
        finally:
            self._checkin(conn)

    def _checkin(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:  # COMMIT (or _transaction's ROLLBACK) itself failed
            try:
                conn.rollback()
            except sqlite3.Error:
                # A connection that cannot even roll back is broken: drop it; the next call opens another.
                self._all.remove(conn)
                conn.close()
                return
        self._idle.append(conn)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise StoreUnavailable("store is closed")
        # Not abandoned on cancel: a transaction always finishes (commit or rollback) and returns its
        # connection before the caller sees Cancelled, so aclose() never races a running thread.
        return await trio.to_thread.run_sync(self._with_connection, fn, args, limiter=self._limiter)

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        async with self._write_lock:
            return await self._run(fn, *args)

    def _ensure_table(self, conn: sqlite3.Connection, collection: str) -> str:
        table = _table(collection)
        if collection not in self._tables:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (_id TEXT PRIMARY KEY, doc TEXT NOT NULL)")
            self._tables.add(collection)
        return table

    @staticmethod
    def _transaction(conn: sqlite3.Connection, body: Callable[[], T]) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body()
        except BaseException:
            if conn.in_transaction:  # some errors (SQLITE_FULL, IOERR) already rolled it back
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    # -- Store --------------------------------------------------------------------------------------
    async def ping(self) -> None:
        await self._run(lambda conn: conn.execute("SELECT 1").fetchone())

    async def ensure_index(self, collection: str, fields: Sequence[str], unique: bool = False) -> None:
        check_collection(collection)
        if isinstance(fields, str) or not fields:
            raise ValueError("fields must be a non-empty sequence of field names")
        for field in fields:
            check_name(field)
        name = f'"ix_{collection}__{"__".join(fields)}{"__unique" if unique else ""}"'
        columns = ", ".join(_expr(f) for f in fields)

        def run(conn: sqlite3.Connection) -> None:
            table = self._ensure_table(conn, collection)
            kind = "UNIQUE INDEX" if unique else "INDEX"
            conn.execute(f"CREATE {kind} IF NOT EXISTS {name} ON {table} ({columns})")

        await self._write(run)

    async def get(self, collection: str, id: str) -> Document | None:
        check_collection(collection)
        check_id(id)

        def run(conn: sqlite3.Connection) -> Document | None:
            table = self._ensure_table(conn, collection)
            row = conn.execute(f"SELECT doc FROM {table} WHERE _id = ?", (id,)).fetchone()
            return None if row is None else _decode(row[0])

        return await self._run(run)

    async def get_many(self, collection: str, ids: Sequence[str]) -> list[Document]:
        check_collection(collection)
        wanted = list(dict.fromkeys(check_ids(ids)))
        if not wanted:
            await trio.lowlevel.checkpoint()
            return []

        def run(conn: sqlite3.Connection) -> list[Document]:
            table = self._ensure_table(conn, collection)
            docs: list[Document] = []
            for start in range(0, len(wanted), IDS_PER_QUERY):
                chunk = wanted[start : start + IDS_PER_QUERY]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(f"SELECT doc FROM {table} WHERE _id IN ({marks})", chunk)
                docs.extend(_decode(r[0]) for r in rows)
            return docs

        return await self._run(run)

    async def insert(self, collection: str, doc: Document) -> bool:
        check_collection(collection)
        (doc,) = check_docs([doc])
        text = _encode(doc).decode()

        def run(conn: sqlite3.Connection) -> bool:
            table = self._ensure_table(conn, collection)
            # OR IGNORE also skips a row that violates a unique index: "not inserted", as in MongoStore.
            cur = conn.execute(f"INSERT OR IGNORE INTO {table} (_id, doc) VALUES (?, ?)", (doc["_id"], text))
            return cur.rowcount == 1

        return await self._write(run)

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
        check_collection(collection)
        set_, inc_, where_ = check_update(id, set, inc, where, upsert)
        where_clause, where_params = _where_sql(where_)

        def run(conn: sqlite3.Connection) -> Document | None:
            table = self._ensure_table(conn, collection)

            def body() -> Document | None:
                row = conn.execute(
                    f"SELECT doc FROM {table} WHERE _id = ?{where_clause}", (id, *where_params)
                ).fetchone()
                if row is None and not upsert:
                    return None
                doc: Document = {"_id": id} if row is None else _decode(row[0])
                if row is not None and not set_ and not inc_:
                    return doc  # nothing to change: a match test only
                _apply(doc, set_, inc_)
                text = _encode(doc).decode()
                if row is None:
                    conn.execute(f"INSERT INTO {table} (_id, doc) VALUES (?, ?)", (id, text))
                else:
                    conn.execute(f"UPDATE {table} SET doc = ? WHERE _id = ?", (text, id))
                return doc

            try:
                return self._transaction(conn, body)
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"update of {collection}/{id} violates a unique index: {exc}") from exc

        return await self._write(run)

    async def find(
        self,
        collection: str,
        where: Mapping[str, Scalar] | None = None,
        *,
        order_by: str | None = None,
        descending: bool = False,
        limit: int | None = None,
    ) -> list[Document]:
        check_collection(collection)
        where_ = check_where(where)
        check_find(order_by, limit)
        if limit == 0:
            await trio.lowlevel.checkpoint()
            return []
        where_clause, params = _where_sql(where_)
        direction = "DESC" if descending else "ASC"
        # _id breaks ties, so the order is the same on every backend and every call.
        order = f"{_expr(order_by)} {direction}, _id {direction}" if order_by else f"_id {direction}"
        tail = " LIMIT ?" if limit is not None else ""
        if limit is not None:
            params.append(limit)

        def run(conn: sqlite3.Connection) -> list[Document]:
            table = self._ensure_table(conn, collection)
            rows = conn.execute(f"SELECT doc FROM {table} WHERE 1{where_clause} ORDER BY {order}{tail}", params)
            return [_decode(r[0]) for r in rows]

        return await self._run(run)

    async def count(self, collection: str, where: Mapping[str, Scalar] | None = None) -> int:
        check_collection(collection)
        where_clause, params = _where_sql(check_where(where))

        def run(conn: sqlite3.Connection) -> int:
            table = self._ensure_table(conn, collection)
            return conn.execute(f"SELECT COUNT(*) FROM {table} WHERE 1{where_clause}", params).fetchone()[0]

        return await self._run(run)

    async def bulk_upsert(self, collection: str, docs: Sequence[Document]) -> None:
        check_collection(collection)
        rows = [(d["_id"], _encode(d).decode()) for d in last_by_id(check_docs(docs))]
        if not rows:
            await trio.lowlevel.checkpoint()
            return

        def run(conn: sqlite3.Connection) -> None:
            table = self._ensure_table(conn, collection)
            sql = f"INSERT INTO {table} (_id, doc) VALUES (?, ?) ON CONFLICT(_id) DO UPDATE SET doc = excluded.doc"
            try:
                self._transaction(conn, lambda: conn.executemany(sql, rows))
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"bulk upsert into {collection} violates a unique index: {exc}") from exc

        await self._write(run)

    async def bulk_insert(self, collection: str, docs: Sequence[Document]) -> int:
        check_collection(collection)
        rows = [(d["_id"], _encode(d).decode()) for d in check_docs(docs)]
        if not rows:
            await trio.lowlevel.checkpoint()
            return 0

        def run(conn: sqlite3.Connection) -> int:
            table = self._ensure_table(conn, collection)
            chunks = [rows[start : start + ROWS_PER_INSERT] for start in range(0, len(rows), ROWS_PER_INSERT)]

            def insert() -> int:
                # One multi-row statement, not executemany: sqlite3 takes the GIL back after every step,
                # and executemany steps once per row (see ROWS_PER_INSERT). OR IGNORE: rowcount counts only
                # the rows inserted.
                inserted = 0
                for chunk in chunks:
                    values = ",".join(["(?, ?)"] * len(chunk))
                    params = [value for row in chunk for value in row]
                    statement = f"INSERT OR IGNORE INTO {table} (_id, doc) VALUES {values}"
                    inserted += conn.execute(statement, params).rowcount
                return inserted

            # A single statement is atomic by itself; several need a transaction around them.
            return insert() if len(chunks) == 1 else self._transaction(conn, insert)

        return await self._write(run)

    async def delete(self, collection: str, id: str) -> bool:
        check_collection(collection)
        check_id(id)

        def run(conn: sqlite3.Connection) -> bool:
            table = self._ensure_table(conn, collection)
            return conn.execute(f"DELETE FROM {table} WHERE _id = ?", (id,)).rowcount == 1

        return await self._write(run)

    async def aclose(self) -> None:
        """Close every connection, after the calls already running in threads finish.

        Holding every token of the limiter is what proves no thread still uses a connection; calls that
        were waiting for a token afterwards find the store closed and raise StoreUnavailable.
        """
        if self._closed:
            return
        self._closed = True
        borrowers = [object() for _ in range(int(self._limiter.total_tokens))]
        with trio.CancelScope(shield=True):  # a half-closed pool would leak file handles
            for borrower in borrowers:
                await self._limiter.acquire_on_behalf_of(borrower)
            for conn in self._all:
                conn.close()
            self._all.clear()
            self._idle.clear()
            for borrower in borrowers:
                self._limiter.release_on_behalf_of(borrower)
