"""One contract for every document store (docs/architecture.md §4): SQLite on a file, SQLite in memory, MongoDB.

MongoDB is a real server when ``PLAYTOTV_TEST_MONGODB_URL`` is set (each test gets its own database,
dropped afterwards), otherwise mongomock: no MongoDB server can be installed on these machines, so
without the variable the Mongo query code is exercised against a fake, not proven against a server.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import uuid
from typing import AsyncIterator

import pytest
import trio

from playtotv.store import open_store
from playtotv.store.base import Store, StoreUnavailable
from playtotv.store.mongo import MongoStore
from playtotv.store.sqlite import SqliteStore
from tests.bounded import bound_every_test

MONGODB_URL = os.environ.get("PLAYTOTV_TEST_MONGODB_URL")
#: Every test is bounded (docs/architecture.md §8); generous, because the machine is shared.
TEST_TIMEOUT = 20


def _patch_mongomock_for_new_pymongo(monkeypatch: pytest.MonkeyPatch) -> None:
    """mongomock 4.3 predates pymongo 4.9's ``sort`` argument to ``ReplaceOne``, which pymongo passes to
    every bulk builder; the fake's builder rejects it. Accept and ignore it (we never sort a replace)."""
    from mongomock.collection import BulkOperationBuilder

    original = BulkOperationBuilder.add_replace

    def add_replace(self, selector, doc, upsert, collation=None, hint=None, sort=None):
        return original(self, selector, doc, upsert, collation=collation, hint=hint)

    monkeypatch.setattr(BulkOperationBuilder, "add_replace", add_replace)


@pytest.fixture(params=["sqlite-file", "sqlite-memory", "mongo"])
async def store(request: pytest.FixtureRequest, tmp_path, monkeypatch) -> AsyncIterator[Store]:
    kind = request.param
    if kind == "sqlite-file":
        async with open_store(f"sqlite:///{tmp_path / 'store.db'}") as s:
            yield s
    elif kind == "sqlite-memory":
        async with open_store("sqlite:///:memory:") as s:
            yield s
    elif MONGODB_URL:
        name = f"ptv_test_{uuid.uuid4().hex[:12]}"
        mongo = MongoStore(MONGODB_URL, database=name)
        try:
            yield mongo
        finally:
            await trio.to_thread.run_sync(mongo._client.drop_database, name)
            await mongo.aclose()
    else:
        import mongomock

        _patch_mongomock_for_new_pymongo(monkeypatch)
        yield MongoStore(mongomock.MongoClient())


def is_mongomock(store: Store) -> bool:
    return isinstance(store, MongoStore) and not MONGODB_URL


# -- single documents --------------------------------------------------------------------------------
async def test_ping(store: Store) -> None:
    await store.ping()


async def test_insert_get_delete(store: Store) -> None:
    doc = {"_id": "a1", "name": "Ada", "score": 3, "ratio": 0.5, "ok": True, "tags": ["x"], "nested": {"k": 1}}
    assert await store.insert("users", doc) is True
    assert await store.get("users", "a1") == doc
    assert await store.get("users", "missing") is None

    # Insert-if-absent: the second insert changes nothing.
    assert await store.insert("users", {"_id": "a1", "name": "Other"}) is False
    assert await store.get("users", "a1") == doc

    assert await store.delete("users", "a1") is True
    assert await store.delete("users", "a1") is False
    assert await store.get("users", "a1") is None


async def test_get_many(store: Store) -> None:
    for i in range(5):
        await store.insert("items", {"_id": f"i{i}", "n": i})
    got = await store.get_many("items", ["i4", "i1", "nope", "i1"])
    assert sorted(got, key=lambda d: d["_id"]) == [{"_id": "i1", "n": 1}, {"_id": "i4", "n": 4}]
    assert await store.get_many("items", []) == []


async def test_update_set_and_inc(store: Store) -> None:
    await store.insert("scores", {"_id": "u1", "points": 10, "name": "a"})
    after = await store.update("scores", "u1", set={"name": "b", "level": 2}, inc={"points": 5, "answers": 1})
    assert after == {"_id": "u1", "points": 15, "name": "b", "level": 2, "answers": 1}
    assert await store.get("scores", "u1") == after
    after = await store.update("scores", "u1", inc={"points": 0.5})
    assert after is not None and after["points"] == 15.5
    # No change requested: the current document (a match test).
    assert await store.update("scores", "u1") == after


async def test_update_missing_without_upsert(store: Store) -> None:
    assert await store.update("scores", "ghost", set={"x": 1}) is None
    assert await store.get("scores", "ghost") is None


async def test_upsert(store: Store) -> None:
    created = await store.update("scores", "u2", set={"name": "n"}, inc={"points": 3}, upsert=True)
    assert created == {"_id": "u2", "name": "n", "points": 3}
    again = await store.update("scores", "u2", inc={"points": 3}, upsert=True)
    assert again == {"_id": "u2", "name": "n", "points": 6}
    assert await store.update("scores", "u3", upsert=True) == {"_id": "u3"}
    with pytest.raises(ValueError):
        await store.update("scores", "u4", set={"a": 1}, where={"a": 0}, upsert=True)
    assert await store.get("scores", "u4") is None


async def test_update_where_is_compare_and_set(store: Store) -> None:
    await store.insert("questions", {"_id": "q1", "state": "open", "round": 1})
    closed = await store.update("questions", "q1", set={"state": "closed"}, where={"state": "open"})
    assert closed is not None and closed["state"] == "closed"
    # The second closer loses: the precondition no longer holds, nothing changes.
    assert await store.update("questions", "q1", set={"state": "closed", "by": "late"}, where={"state": "open"}) is None
    assert await store.get("questions", "q1") == {"_id": "q1", "state": "closed", "round": 1}
    # Several conditions are ANDed.
    assert await store.update("questions", "q1", inc={"round": 1}, where={"state": "closed", "round": 2}) is None
    assert await store.update("questions", "q1", inc={"round": 1}, where={"state": "closed", "round": 1}) is not None
    # A filter on another _id never matches.
    assert await store.update("questions", "q1", set={"x": 1}, where={"_id": "q2"}) is None


async def test_where_scalar_semantics(store: Store) -> None:
    await store.bulk_upsert(
        "flags",
        [
            {"_id": "t", "v": True},
            {"_id": "one", "v": 1},
            {"_id": "onef", "v": 1.0},
            {"_id": "s", "v": "1"},
            {"_id": "null", "v": None},
            {"_id": "missing"},
        ],
    )

    async def ids(where):
        return sorted(d["_id"] for d in await store.find("flags", where))

    assert await ids({"v": "1"}) == ["s"]  # no string/number coercion
    assert await ids({"v": None}) == ["missing", "null"]  # None matches null and missing
    assert await ids({"v": False}) == []
    if is_mongomock(store):
        pytest.skip("mongomock compares with Python's ==, so True == 1; MongoDB (and SQLite here) do not")
    assert await ids({"v": True}) == ["t"]  # True is not 1
    assert await ids({"v": 1}) == ["one", "onef"]  # 1 == 1.0, as in MongoDB


async def test_inc_of_non_number_is_refused(store: Store) -> None:
    if is_mongomock(store):
        pytest.skip("mongomock raises TypeError here; a real server answers TypeMismatch (-> ValueError)")
    await store.insert("c", {"_id": "x", "s": "text", "n": 1})
    with pytest.raises(ValueError):
        await store.update("c", "x", inc={"s": 1, "n": 1})
    assert await store.get("c", "x") == {"_id": "x", "s": "text", "n": 1}


# -- queries -------------------------------------------------------------------------------------------
async def _leaderboard(store: Store) -> None:
    docs = [
        {"_id": "p1", "show": "a", "points": 30},
        {"_id": "p2", "show": "a", "points": 10},
        {"_id": "p3", "show": "a", "points": 20},
        {"_id": "p4", "show": "b", "points": 50},
        {"_id": "p5", "show": "a", "points": 20},
    ]
    await store.bulk_upsert("players", docs)


async def test_find_where_order_limit(store: Store) -> None:
    await store.ensure_index("players", ["show", "points"])
    await _leaderboard(store)

    async def ids(**kw):
        return [d["_id"] for d in await store.find("players", **kw)]

    # Ties (p3, p5 at 20) are broken by _id in the same direction, on every backend.
    assert await ids(where={"show": "a"}, order_by="points") == ["p2", "p3", "p5", "p1"]
    assert await ids(where={"show": "a"}, order_by="points", descending=True) == ["p1", "p5", "p3", "p2"]
    assert await ids(where={"show": "a"}, order_by="points", descending=True, limit=2) == ["p1", "p5"]
    assert await ids(where={"show": "a"}, limit=0) == []
    # Without order_by: _id order.
    assert await ids() == ["p1", "p2", "p3", "p4", "p5"]
    assert await ids(order_by="_id", descending=True, limit=1) == ["p5"]
    assert await ids(where={"show": "zzz"}) == []
    assert await store.find("never_written") == []


async def test_count(store: Store) -> None:
    assert await store.count("players") == 0
    await _leaderboard(store)
    assert await store.count("players") == 5
    assert await store.count("players", {"show": "a"}) == 4
    assert await store.count("players", {"show": "a", "points": 20}) == 2
    assert await store.count("players", {"show": "none"}) == 0


async def test_unique_index(store: Store) -> None:
    await store.ensure_index("accounts", ["email"], unique=True)
    await store.ensure_index("accounts", ["email"], unique=True)  # idempotent
    await store.ensure_index("accounts", ["_id"])  # always there; accepted
    assert await store.insert("accounts", {"_id": "a", "email": "x@example.org"}) is True
    assert await store.insert("accounts", {"_id": "b", "email": "x@example.org"}) is False
    assert await store.get("accounts", "b") is None
    assert await store.insert("accounts", {"_id": "c", "email": "y@example.org"}) is True
    with pytest.raises(ValueError):
        await store.update("accounts", "c", set={"email": "x@example.org"})
    assert (await store.get("accounts", "c")) == {"_id": "c", "email": "y@example.org"}


# -- batches ---------------------------------------------------------------------------------------------
async def test_bulk_upsert_is_idempotent(store: Store) -> None:
    batch = [{"_id": f"d{i}", "v": i} for i in range(50)]
    await store.bulk_upsert("docs", batch)
    await store.bulk_upsert("docs", batch)  # a retried batch
    assert await store.count("docs") == 50
    # Replace, not merge; and the last of a repeated _id wins.
    await store.bulk_upsert("docs", [{"_id": "d1", "w": 1}, {"_id": "d2", "v": -1}, {"_id": "d2", "v": -2}])
    assert await store.get("docs", "d1") == {"_id": "d1", "w": 1}
    assert await store.get("docs", "d2") == {"_id": "d2", "v": -2}
    await store.bulk_upsert("docs", [])
    assert await store.count("docs") == 50


async def test_bulk_insert_counts_new_and_is_idempotent(store: Store) -> None:
    first = [{"_id": f"a{i}", "v": i} for i in range(20)]
    assert await store.bulk_insert("answers", first) == 20
    assert await store.bulk_insert("answers", first) == 0  # a retried batch adds nothing
    mixed = [{"_id": "a0", "v": "changed"}, {"_id": "new1", "v": 1}, {"_id": "new1", "v": 2}, {"_id": "new2"}]
    assert await store.bulk_insert("answers", mixed) == 2
    assert await store.get("answers", "a0") == {"_id": "a0", "v": 0}  # insert never overwrites
    assert await store.get("answers", "new1") == {"_id": "new1", "v": 1}  # the first of a repeat wins
    assert await store.count("answers") == 22
    assert await store.bulk_insert("answers", []) == 0


# -- validation ------------------------------------------------------------------------------------------
async def test_invalid_names_and_values_are_rejected_without_effect(store: Store) -> None:
    original = {"_id": "v1", "a": 1, "b": "x"}
    await store.insert("valid", original)
    bad_fields = ["a.b", "$where", "a b", "1a", "", "a'b", "a\"); DROP TABLE valid; --", "é"]
    for field in bad_fields:
        with pytest.raises(ValueError):
            await store.update("valid", "v1", set={field: 1})
        with pytest.raises(ValueError):
            await store.update("valid", "v1", inc={field: 1})
        with pytest.raises(ValueError):
            await store.update("valid", "v1", set={"a": 2}, where={field: 1})
        with pytest.raises(ValueError):
            await store.find("valid", {field: 1})
        with pytest.raises(ValueError):
            await store.find("valid", order_by=field)
        with pytest.raises(ValueError):
            await store.count("valid", {field: 1})
        with pytest.raises(ValueError):
            await store.ensure_index("valid", [field])
    for collection in ["bad name", "a.b", "$cmd", "x;y", "sqlite_master", ""]:
        with pytest.raises(ValueError):
            await store.insert(collection, {"_id": "z"})
        with pytest.raises(ValueError):
            await store.get(collection, "z")
    # Operators smuggled in as values or ids.
    with pytest.raises(ValueError):
        await store.find("valid", {"a": {"$ne": None}})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        await store.update("valid", "v1", set={"a": 3}, where={"a": {"$gt": 0}})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        await store.get("valid", {"$ne": None})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await store.get_many("valid", [{"$ne": None}])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        await store.update("valid", "v1", inc={"a": "1"})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        await store.update("valid", "v1", set={"a": 1}, inc={"a": 1})
    with pytest.raises(ValueError):
        await store.update("valid", "v1", set={"_id": "other"})
    with pytest.raises(ValueError):
        await store.insert("valid", {"name": "no id"})
    with pytest.raises(ValueError):
        await store.bulk_insert("valid", [{"_id": "ok1"}, {"_id": 7}])  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        await store.find("valid", limit=-1)
    assert await store.find("valid") == [original]


# -- concurrency -----------------------------------------------------------------------------------------
async def test_concurrent_incs_are_exact(store: Store) -> None:
    tasks, per_task = 40, 10

    async def bump(n: int) -> None:
        for _ in range(per_task):
            await store.update("counters", "c", inc={"hits": 1, "weight": 2}, upsert=True)

    async with trio.open_nursery() as nursery:
        for n in range(tasks):
            nursery.start_soon(bump, n)
    assert await store.get("counters", "c") == {"_id": "c", "hits": tasks * per_task, "weight": 2 * tasks * per_task}


async def test_concurrent_compare_and_set_has_one_winner(store: Store) -> None:
    await store.insert("leases", {"_id": "l", "holder": None})
    winners: list[int] = []

    async def claim(n: int) -> None:
        if await store.update("leases", "l", set={"holder": n}, where={"holder": None}) is not None:
            winners.append(n)

    async with trio.open_nursery() as nursery:
        for n in range(20):
            nursery.start_soon(claim, n)
    assert len(winners) == 1
    assert await store.get("leases", "l") == {"_id": "l", "holder": winners[0]}


# -- opening and closing ---------------------------------------------------------------------------------
async def test_open_store_rejects_unknown_schemes() -> None:
    for url in ["postgres://h/db", "sqlite://relative.db", "redis://h", "nonsense"]:
        with pytest.raises(ValueError, match="unsupported store URL"):
            async with open_store(url):
                pass
    with pytest.raises(ValueError, match="names no file"):
        async with open_store("sqlite:///"):
            pass


async def test_closed_store_is_unavailable(tmp_path) -> None:
    async with open_store(f"sqlite:///{tmp_path / 'c.db'}") as s:
        await s.insert("x", {"_id": "1"})
    with pytest.raises(StoreUnavailable):
        await s.get("x", "1")


async def test_unreachable_mongodb_is_unavailable() -> None:
    # Nothing listens on port 1; a short selection timeout keeps the test fast.
    store = MongoStore("mongodb://127.0.0.1:1/db?serverSelectionTimeoutMS=200&connectTimeoutMS=200")
    try:
        with pytest.raises(StoreUnavailable):
            await store.ping()
        with pytest.raises(StoreUnavailable):
            await store.get("x", "1")
    finally:
        await store.aclose()


async def test_mongodb_call_yields_to_a_cancel_scope() -> None:
    # pymongo would wait its full server-selection timeout; the caller's deadline must win.
    store = MongoStore("mongodb://127.0.0.1:1/db")
    try:
        with trio.move_on_after(0.2) as scope:
            await store.ping()
        assert scope.cancelled_caught
    finally:
        await store.aclose()


# -- SQLite specifics --------------------------------------------------------------------------------------
async def test_sqlite_index_is_used(tmp_path) -> None:
    path = tmp_path / "ix.db"
    async with open_store(f"sqlite:///{path}") as s:
        await s.ensure_index("answers", ["question"])
        await s.insert("answers", {"_id": "1", "question": "q"})
    with sqlite3.connect(path) as conn:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT doc FROM answers WHERE 1 AND json_extract(doc, '$.question') = ?", ("q",)
        ).fetchall()
        assert any("USING INDEX" in row[-1] for row in plan), plan
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


#: A separate OS process incrementing one document through its own SqliteStore.
_INCREMENTER = """
import sys, trio
from playtotv.store.sqlite import SqliteStore

async def main(path, count):
    store = SqliteStore(path)
    async def bump(n):
        for _ in range(n):
            await store.update("counters", "shared", inc={"n": 1}, upsert=True)
    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(bump, count // 4)
    await store.aclose()

trio.run(main, sys.argv[1], int(sys.argv[2]))
"""


@pytest.mark.slow  # two Python subprocesses
async def test_sqlite_two_processes_increment_exactly(tmp_path) -> None:
    path = str(tmp_path / "shared.db")
    per_process = 200

    async def incrementer() -> None:
        # run_process kills the child if the test is cancelled (its time bound).
        done = await trio.run_process(
            [sys.executable, "-c", _INCREMENTER, path, str(per_process)], capture_stderr=True, check=False
        )
        assert done.returncode == 0, done.stderr.decode()

    async with trio.open_nursery() as nursery:
        for _ in range(2):
            nursery.start_soon(incrementer)
    async with open_store(f"sqlite:///{path}") as s:
        assert await s.get("counters", "shared") == {"_id": "shared", "n": 2 * per_process}


async def test_sqlite_memory_stores_are_independent() -> None:
    async with open_store("sqlite:///:memory:") as a, open_store("sqlite:///:memory:") as b:
        await a.insert("x", {"_id": "1"})
        assert await b.get("x", "1") is None
        assert isinstance(a, SqliteStore)


bound_every_test(globals(), TEST_TIMEOUT)
