"""The SQLite storage layer and the reader pool, against real database files."""

from __future__ import annotations

import itertools
import os
import sqlite3
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from threadstore._errors import StoreClosedError, StoreFormatError, ThreadNotFoundError
from threadstore.sqlite import _sql as _sqlite
from threadstore.sqlite._readers import ReaderPool

ORDERS = sorted(_sqlite.ORDER_COLUMNS)


NEWER_SCHEMA = (
    rf"newer threadstore \(schema {_sqlite.SCHEMA_VERSION + 1} > {_sqlite.SCHEMA_VERSION}\)"
)


def thread_row(thread_id: str, **overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": thread_id,
        "created_at": 1_000,
        "updated_at": 1_000,
        "recency_at": 1_000,
        "title": None,
        "goal": None,
        "preview": f"preview of {thread_id}",
        "last_message": None,
        "item_count": 0,
        "turn_count": 0,
        "status": "idle",
        "input_tokens": 0,
        "output_tokens": 0,
        "archived_at": None,
        "extra": "{}",
        "seq": 0,
        "namespace": "",
        "forked_from": None,
        "forked_at": None,
        "change": 0,
        "has_user_message": 0,
    }
    row.update(overrides)
    return row


def ids(rows: list[dict[str, object]]) -> list[object]:
    return [r["id"] for r in rows]


# --------------------------------------------------------------------------- schema


def test_schema_is_idempotent_and_keeps_the_secret(db: sqlite3.Connection, path: str) -> None:
    secret = _sqlite.cursor_secret(db)
    assert len(secret) == 32
    _sqlite.ensure_schema(db)
    other = _sqlite.connect(path, durability="full")
    try:
        _sqlite.ensure_schema(other)
        assert _sqlite.cursor_secret(other) == secret
        assert other.execute("PRAGMA user_version").fetchone() == (_sqlite.SCHEMA_VERSION,)
        assert other.execute("PRAGMA application_id").fetchone() == (_sqlite.APPLICATION_ID,)
        assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert other.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    finally:
        other.close()
    assert db.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    assert not db.in_transaction


def test_items_is_a_rowid_table_with_a_unique_thread_seq_index(db: sqlite3.Connection) -> None:
    (sql,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'items'").fetchone()
    assert "WITHOUT ROWID" not in sql.upper()
    index = db.execute("PRAGMA index_list(items)").fetchall()
    assert sorted((name, unique) for _, name, unique, *_ in index) == [
        ("items_compactions", 0),  # partial: compaction items only (read_context's start)
        ("items_thread_seq", 1),
    ]


def test_concurrent_first_open_of_a_new_file_succeeds_everywhere(path: str) -> None:
    workers = 6
    barrier = threading.Barrier(workers)
    secrets: list[bytes] = []
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            barrier.wait()
            conn = _sqlite.connect(path, durability="normal")
            try:
                _sqlite.ensure_schema(conn)
                secrets.append(_sqlite.cursor_secret(conn))
            finally:
                conn.close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(secrets) == workers
    assert len(set(secrets)) == 1


def test_foreign_sqlite_database_is_rejected(path: str) -> None:
    foreign = sqlite3.connect(path)
    foreign.execute("CREATE TABLE recipes (name TEXT)")
    foreign.commit()
    foreign.close()
    before = Path(path).read_bytes()
    with pytest.raises(StoreFormatError, match="not a threadstore database"):
        _sqlite.connect(path, durability="normal")
    assert Path(path).read_bytes() == before  # refused before any header change (no WAL)
    reader = _sqlite.connect(path, durability="normal", read_only=True)
    try:
        with pytest.raises(StoreFormatError, match="not a threadstore database"):
            _sqlite.check_schema(reader)
    finally:
        reader.close()
    # Nothing was added to the foreign file.
    check = sqlite3.connect(path)
    assert check.execute("SELECT name FROM sqlite_master").fetchall() == [("recipes",)]
    check.close()


@pytest.mark.parametrize(
    "content",
    [b"just some notes\n" * 300, os.urandom(8192)],
    ids=["text", "random-bytes"],
)
@pytest.mark.parametrize("read_only", [False, True])
def test_non_database_file_is_rejected(path: str, content: bytes, read_only: bool) -> None:
    Path(path).write_bytes(content)
    with pytest.raises(StoreFormatError, match="not a threadstore database") as info:
        _sqlite.connect(path, durability="normal", read_only=read_only)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
    assert Path(path).read_bytes() == content


def test_newer_schema_is_rejected(db: sqlite3.Connection, path: str) -> None:
    db.execute(f"PRAGMA user_version = {_sqlite.SCHEMA_VERSION + 1}")
    with pytest.raises(
        StoreFormatError,
        match=NEWER_SCHEMA,
    ):
        _sqlite.ensure_schema(db)
    reader = _sqlite.connect(path, durability="normal", read_only=True)
    try:
        with pytest.raises(
            StoreFormatError,
            match=NEWER_SCHEMA,
        ):
            _sqlite.check_schema(reader)
    finally:
        reader.close()


def test_check_schema(db: sqlite3.Connection, path: str, tmp_path: Path) -> None:
    reader = _sqlite.connect(path, durability="normal", read_only=True)
    try:
        _sqlite.check_schema(reader)
        assert reader.execute("PRAGMA query_only").fetchone() == (1,)
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.execute("DELETE FROM threads")
    finally:
        reader.close()
    empty = str(tmp_path / "empty.db")
    _sqlite.connect(empty, durability="normal").close()
    reader = _sqlite.connect(empty, durability="normal", read_only=True)
    try:
        with pytest.raises(StoreFormatError, match="no threadstore schema"):
            _sqlite.check_schema(reader)
    finally:
        reader.close()


def test_read_only_connect_to_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(FileNotFoundError):
        _sqlite.connect(str(missing), durability="normal", read_only=True)
    assert not missing.exists()


def test_files_are_private_to_their_owner(path: str) -> None:
    old = os.umask(0o022)
    try:
        conn = _sqlite.connect(path, durability="normal")
        _sqlite.ensure_schema(conn)
        _sqlite.insert_thread(conn, thread_row("t1"))
        for suffix in ("", "-wal", "-shm"):
            assert stat.S_IMODE(os.stat(path + suffix).st_mode) == 0o600, suffix
        conn.close()
    finally:
        os.umask(old)


# --------------------------------------------------------------------------- threads & items


def test_append_and_read_items_round_trip(db: sqlite3.Connection) -> None:
    _sqlite.insert_thread(db, thread_row("t1"))
    _sqlite.insert_thread(db, thread_row("t2"))
    tricky = [
        "quotes ' \" `; DROP TABLE items; --",
        "nul\x00inside",
        "emoji 🧵👩🏽‍💻 and ünïcödé",
        "",
        "%_\\",
    ]
    rows = [(i + 1, 10 + i, "user_message", text) for i, text in enumerate(tricky)]
    _sqlite.append_items(db, "t1", rows[:2])
    _sqlite.append_items(db, "t1", rows[2:])
    _sqlite.append_items(db, "t2", [(1, 99, "goal", '{"text": "other"}')])
    _sqlite.append_items(db, "t2", [])
    assert _sqlite.read_items(db, "t1", 0, None) == rows
    assert _sqlite.read_items(db, "t1", 2, None) == rows[2:]
    assert _sqlite.read_items(db, "t1", 1, 2) == rows[1:3]
    assert _sqlite.read_items(db, "t1", 5, None) == []
    assert _sqlite.read_items(db, "nope", 0, None) == []
    assert _sqlite.thread_index(db) == [("t1", 5, 0, 0, ""), ("t2", 1, 0, 0, "")]


def test_append_items_rejects_unknown_thread_and_duplicate_seq(db: sqlite3.Connection) -> None:
    with pytest.raises(ThreadNotFoundError):
        _sqlite.append_items(db, "ghost", [(1, 1, "x", "{}")])
    assert db.execute("SELECT count(*) FROM items").fetchone() == (0,)
    _sqlite.insert_thread(db, thread_row("t1"))
    _sqlite.append_items(db, "t1", [(1, 1, "x", "{}")])
    with pytest.raises(sqlite3.IntegrityError):
        _sqlite.append_items(db, "t1", [(1, 2, "x", "{}")])


def test_insert_thread_rejects_a_taken_id(db: sqlite3.Connection) -> None:
    _sqlite.insert_thread(db, thread_row("t1"))
    assert _sqlite.thread_exists(db, "t1")
    assert not _sqlite.thread_exists(db, "t2")
    with pytest.raises(sqlite3.IntegrityError):
        _sqlite.insert_thread(db, thread_row("t1", title="again"))


def test_projection_row_round_trip(db: sqlite3.Connection) -> None:
    _sqlite.insert_thread(db, thread_row("t1", archived_at=5, extra='{"a": 1}'))
    _sqlite.append_items(db, "t1", [(1, 1, "user_message", '{"text": "hi"}')])
    row = _sqlite.read_projection_row(db, "t1")
    assert row is not None
    assert list(row) == list(_sqlite.THREAD_COLUMNS)
    assert row["extra"] == '{"a": 1}'
    assert row["last_seq"] == 1
    update = dict(row)
    update.update(
        created_at=777,
        updated_at=2_000,
        title="T",
        preview="hi",
        item_count=1,
        seq=1,
        has_user_message=1,
        archived_at=None,
        last_seq=0,
    )
    assert _sqlite.update_projection(db, row, update)
    after = _sqlite.read_projection_row(db, "t1")
    assert after is not None
    assert after["created_at"] == 1_000  # not projected
    assert after["archived_at"] == 5  # not touched
    assert after["last_seq"] == 1  # not touched
    assert (after["updated_at"], after["title"], after["seq"]) == (2_000, "T", 1)
    assert not _sqlite.update_projection(db, row, {**update, "id": "ghost"})
    assert _sqlite.read_projection_row(db, "ghost") is None


def test_set_archived(db: sqlite3.Connection) -> None:
    _sqlite.insert_thread(db, thread_row("t1"))
    row = _sqlite.set_archived(db, "t1", 42)
    assert row is not None
    assert row["archived_at"] == 42
    assert ids(_list(db, archived=True)) == ["t1"]
    assert _list(db) == []
    row = _sqlite.set_archived(db, "t1", None)
    assert row is not None
    assert row["archived_at"] is None
    assert ids(_list(db)) == ["t1"]
    assert _sqlite.set_archived(db, "ghost", 1) is None


def test_delete_thread(db: sqlite3.Connection) -> None:
    for tid in ("t1", "t2"):
        _sqlite.insert_thread(db, thread_row(tid))
        _sqlite.append_items(db, tid, [(1, 1, "x", "{}"), (2, 2, "x", "{}")])
    assert _sqlite.delete_thread(db, "t1")
    assert not _sqlite.thread_exists(db, "t1")
    assert _sqlite.read_items(db, "t1", 0, None) == []
    assert len(_sqlite.read_items(db, "t2", 0, None)) == 2
    assert not _sqlite.delete_thread(db, "t1")


def test_lagging_threads(db: sqlite3.Connection) -> None:
    for tid in ("a", "b", "c"):
        _sqlite.insert_thread(db, thread_row(tid))
        _sqlite.append_items(db, tid, [(1, 1, "x", "{}"), (2, 2, "x", "{}")])
    row = _sqlite.read_projection_row(db, "b")
    assert row is not None
    _sqlite.update_projection(db, row, {**row, "seq": 2})
    _sqlite.update_projection(db, row, {**row, "id": "c", "seq": 1})
    assert _sqlite.lagging_threads(db) == [("a", 0, 2), ("c", 1, 2)]


# --------------------------------------------------------------------------- listing


def _list(
    conn: sqlite3.Connection,
    *,
    order_by: str = "updated_at",
    descending: bool = True,
    archived: bool = False,
    search: str | None = None,
    include_empty: bool = False,
    after: tuple[int, str] | None = None,
    limit: int = 1000,
) -> list[dict[str, object]]:
    rows = _sqlite.list_threads(
        conn,
        order_by=order_by,
        descending=descending,
        archived=archived,
        search=search,
        include_empty=include_empty,
        after=after,
        limit=limit,
    )
    return [dict(zip(_sqlite.THREAD_COLUMNS, row, strict=True)) for row in rows]


def _populate(conn: sqlite3.Connection) -> list[dict[str, object]]:
    """Threads with many ties, some empty, some archived; returns the inserted rows."""
    rows = []
    for n in range(30):
        tid = f"t{(n * 7) % 30:02d}"  # insertion order differs from id order
        rows.append(
            thread_row(
                tid,
                created_at=1_000 + n // 4,
                updated_at=2_000 + n % 5,
                recency_at=3_000 + n % 3,
                preview=None if n % 6 == 0 else f"preview {n}",
                title="titled" if n % 12 == 0 else None,
                archived_at=9 if n % 5 == 0 else None,
            )
        )
    for row in rows:
        _sqlite.insert_thread(conn, row)
    return rows


def _expected(
    rows: list[dict[str, object]], order_by: str, descending: bool, archived: bool, listed: bool
) -> list[object]:
    chosen = [
        r
        for r in rows
        if (r["archived_at"] is not None) == archived
        and (not listed or r["preview"] is not None or r["title"] is not None)
    ]
    chosen.sort(key=lambda r: (int(str(r[order_by])), str(r["id"])), reverse=descending)
    return ids(chosen)


@pytest.mark.parametrize(
    ("order_by", "descending", "archived", "include_empty"),
    list(itertools.product(ORDERS, [True, False], [True, False], [True, False])),
)
def test_listing_order_filters_and_ties(
    db: sqlite3.Connection, order_by: str, descending: bool, archived: bool, include_empty: bool
) -> None:
    rows = _populate(db)
    expected = _expected(rows, order_by, descending, archived, listed=not include_empty)
    assert len(expected) >= 4
    got = _list(
        db,
        order_by=order_by,
        descending=descending,
        archived=archived,
        include_empty=include_empty,
    )
    assert ids(got) == expected
    first = _list(
        db,
        order_by=order_by,
        descending=descending,
        archived=archived,
        include_empty=include_empty,
        limit=3,
    )
    assert ids(first) == expected[:3]


def test_listed_means_preview_or_title(db: sqlite3.Connection) -> None:
    _sqlite.insert_thread(db, thread_row("empty", preview=None))
    _sqlite.insert_thread(db, thread_row("titled", preview=None, title="T"))
    _sqlite.insert_thread(db, thread_row("previewed"))
    assert set(ids(_list(db))) == {"titled", "previewed"}
    assert set(ids(_list(db, include_empty=True))) == {"empty", "titled", "previewed"}
    row = _sqlite.read_projection_row(db, "empty")
    assert row is not None
    _sqlite.update_projection(db, row, {**row, "preview": "now it has one"})
    assert set(ids(_list(db))) == {"empty", "titled", "previewed"}


def test_search_is_case_insensitive_and_literal(db: sqlite3.Connection) -> None:
    _sqlite.insert_thread(db, thread_row("pct", preview="100% done"))
    _sqlite.insert_thread(db, thread_row("digits", preview="1000 done"))
    _sqlite.insert_thread(db, thread_row("under", title="snake_case", preview=None))
    _sqlite.insert_thread(db, thread_row("camel", title="snakeXcase", preview=None))
    _sqlite.insert_thread(db, thread_row("slash", preview="a\\b"))
    _sqlite.insert_thread(db, thread_row("goal", goal="Fix The Parser"))
    assert ids(_list(db, search="0%")) == ["pct"]
    assert ids(_list(db, search="e_c")) == ["under"]
    assert ids(_list(db, search="\\")) == ["slash"]
    assert ids(_list(db, search="the parser")) == ["goal"]
    assert set(ids(_list(db, search="SNAKE"))) == {"under", "camel"}
    assert len(_list(db, search="")) == 6
    assert _list(db, search="nowhere") == []


@pytest.mark.parametrize("order_by", ORDERS)
@pytest.mark.parametrize("descending", [True, False])
def test_keyset_pages_visit_every_row_once(
    db: sqlite3.Connection, order_by: str, descending: bool
) -> None:
    rows = _populate(db)
    expected = _expected(rows, order_by, descending, archived=False, listed=True)
    seen: list[object] = []
    after: tuple[int, str] | None = None
    while page := _list(db, order_by=order_by, descending=descending, after=after, limit=4):
        seen.extend(ids(page))
        last = page[-1]
        after = (int(str(last[order_by])), str(last["id"]))
    assert seen == expected


def test_keyset_pages_stay_correct_while_threads_are_updated(db: sqlite3.Connection) -> None:
    rows = _populate(db)
    listed = _expected(rows, "updated_at", True, archived=False, listed=True)
    seen: list[object] = []
    touched: set[object] = set()
    after: tuple[int, str] | None = None
    clock = itertools.count(10_000)
    while page := _list(db, after=after, limit=3):
        seen.extend(ids(page))
        last = page[-1]
        after = (int(str(last["updated_at"])), str(last["id"]))
        # Between pages, bump one row already seen and one not yet seen to the top.
        for tid in (page[0]["id"], next((t for t in listed if t not in seen), None)):
            if tid is None or tid in touched:
                continue
            touched.add(tid)
            row = _sqlite.read_projection_row(db, str(tid))
            assert row is not None
            _sqlite.update_projection(db, row, {**row, "updated_at": next(clock)})
    assert len(seen) == len(set(seen)), "a row was listed twice"
    untouched = [t for t in listed if t not in touched]
    assert [t for t in seen if t in untouched] == untouched
    # With order by created_at (never changed by updates) every row shows exactly once.
    seen = []
    after = None
    while page := _list(db, order_by="created_at", after=after, limit=3):
        seen.extend(ids(page))
        after = (int(str(page[-1]["created_at"])), str(page[-1]["id"]))
        row = _sqlite.read_projection_row(db, str(page[0]["id"]))
        assert row is not None
        _sqlite.update_projection(db, row, {**row, "updated_at": next(clock), "title": "x"})
    assert seen == _expected(rows, "created_at", True, archived=False, listed=True)


@pytest.mark.parametrize("order_by", ORDERS)
def test_every_listing_query_walks_an_index_without_sorting(
    db: sqlite3.Connection, order_by: str
) -> None:
    _populate(db)
    db.execute("ANALYZE")  # the plan must hold with statistics too
    variants = itertools.product([True, False], [True, False], [True, False])
    for descending, archived, include_empty in variants:
        for after, search in itertools.product([None, (2_001, "t05")], [None, "50%_"]):
            sql, params = _sqlite._list_query(
                order_by=order_by,
                descending=descending,
                archived=archived,
                search=search,
                include_empty=include_empty,
                after=after,
                limit=10,
            )
            plan = [r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql, params)]
            kind = "all" if include_empty else "listed"
            assert len(plan) == 1, plan
            assert plan[0].startswith(f"SEARCH threads USING INDEX threads_{kind}_{order_by} ")
            assert "TEMP B-TREE" not in plan[0]
            if after is not None:
                assert f"({order_by},id)" in plan[0], plan  # the keyset bound uses the index


def test_list_threads_rejects_unknown_order(db: sqlite3.Connection) -> None:
    with pytest.raises(ValueError, match="order_by"):
        _list(db, order_by="id; DROP TABLE threads")
    with pytest.raises(ValueError, match="limit"):
        _list(db, limit=-1)


# --------------------------------------------------------------------------- misc


def test_is_transient(db: sqlite3.Connection, path: str) -> None:
    other = _sqlite.connect(path, durability="normal")
    try:
        other.execute("PRAGMA busy_timeout = 0")
        db.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError) as info:
            other.execute("BEGIN IMMEDIATE")
        db.execute("ROLLBACK")
    finally:
        other.close()
    assert _sqlite.is_transient(info.value)
    assert _sqlite.is_transient(sqlite3.OperationalError("disk I/O error"))
    assert not _sqlite.is_transient(sqlite3.OperationalError("no such table: nope"))
    assert not _sqlite.is_transient(sqlite3.IntegrityError("UNIQUE constraint failed"))
    assert not _sqlite.is_transient(ValueError("database is locked"))


def test_checkpoint(db: sqlite3.Connection, path: str) -> None:
    _sqlite.insert_thread(db, thread_row("t1"))
    _sqlite.checkpoint(db)
    assert os.path.getsize(path) > 0


# --------------------------------------------------------------------------- readers


def _append_one(path_conn: sqlite3.Connection, seq: int) -> None:
    path_conn.execute("BEGIN IMMEDIATE")
    _sqlite.append_items(path_conn, "t1", [(seq, seq, "x", "{}")])
    path_conn.execute("COMMIT")


async def test_reader_pool_runs_concurrent_reads_on_two_connections(
    db: sqlite3.Connection, path: str
) -> None:
    _sqlite.insert_thread(db, thread_row("t1"))
    active = 0
    most_active = 0
    lock = threading.Lock()
    used: set[int] = set()

    def snapshot(conn: sqlite3.Connection) -> tuple[int, int]:
        nonlocal active, most_active
        with lock:
            active += 1
            most_active = max(most_active, active)
            used.add(id(conn))
        try:
            (last_seq,) = conn.execute("SELECT last_seq FROM threads WHERE id = 't1'").fetchone()
            (count,) = conn.execute("SELECT count(*) FROM items").fetchone()
            return int(last_seq), int(count)
        finally:
            with lock:
                active -= 1

    results: list[tuple[int, int]] = []

    async def reader() -> None:
        for _ in range(5):
            results.append(await pool.run(snapshot))

    async def writer() -> None:
        for seq in range(1, 41):
            await trio.to_thread.run_sync(_append_one, db, seq)

    async with ReaderPool(path, size=2) as pool:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            for _ in range(20):
                nursery.start_soon(reader)
        assert pool.connections == 2
        assert await pool.run(snapshot) == (40, 40)
    assert len(results) == 100
    assert all(last_seq == count for last_seq, count in results), "a read saw two snapshots"
    assert 1 <= most_active <= 2
    assert len(used) == 2
    assert pool.connections == 0
    with pytest.raises(StoreClosedError):
        await pool.run(snapshot)


async def test_reader_pool_ends_the_transaction_when_fn_raises(
    db: sqlite3.Connection, path: str
) -> None:
    _sqlite.insert_thread(db, thread_row("t1"))

    def boom(conn: sqlite3.Connection) -> None:
        conn.execute("SELECT * FROM threads").fetchall()
        raise KeyError("boom")

    def in_transaction(conn: sqlite3.Connection) -> bool:
        return conn.in_transaction

    pool = ReaderPool(path, size=1)
    with pytest.raises(KeyError):
        await pool.run(boom)
    # The same (only) connection is reused: a transaction left open would make its next
    # BEGIN fail, and a stale snapshot would hide the item appended below.
    assert await pool.run(in_transaction)
    assert pool.connections == 1
    await trio.to_thread.run_sync(_append_one, db, 1)
    assert await pool.run(lambda conn: _sqlite.read_items(conn, "t1", 0, None)) == [
        (1, 1, "x", "{}")
    ]
    await pool.aclose()
    await pool.aclose()
    with pytest.raises(StoreClosedError):
        await pool.run(in_transaction)


def _gated_read(
    started: threading.Event, release: threading.Event
) -> Callable[[sqlite3.Connection], list[tuple[object, ...]]]:
    """A read that signals it runs, then blocks its reader thread until released."""

    def read(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
        started.set()
        assert release.wait(timeout=30), "the test never released the read"
        return conn.execute("SELECT id FROM threads ORDER BY id").fetchall()

    return read


def _in_transaction(conn: sqlite3.Connection) -> bool:
    return conn.in_transaction


async def test_reader_pool_finishes_a_read_whose_caller_is_cancelled(
    db: sqlite3.Connection, path: str
) -> None:
    _sqlite.insert_thread(db, thread_row("t1"))
    started, release = threading.Event(), threading.Event()
    got: list[object] = []
    async with ReaderPool(path, size=1) as pool:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:

                async def cancel_once_running() -> None:
                    await trio.to_thread.run_sync(started.wait)
                    scope.cancel()
                    release.set()

                nursery.start_soon(cancel_once_running)
                got.append(await pool.run(_gated_read(started, release)))
                await trio.lowlevel.checkpoint()
                got.append("not cancelled")
        # The read ran to its end and its result came back; the cancellation landed at the
        # caller's next checkpoint, and the connection is clean for the next read.
        assert scope.cancelled_caught
        assert got == [[("t1",)]]
        calls: list[int] = []
        with trio.CancelScope() as already:
            already.cancel()
            await pool.run(lambda conn: calls.append(1))
        assert already.cancelled_caught
        assert calls == [], "an already-cancelled caller must queue nothing"
        assert await pool.run(_in_transaction)
        assert pool.connections == 1


async def test_reader_pool_close_lets_queued_reads_finish_then_ends_its_threads(
    db: sqlite3.Connection, path: str
) -> None:
    _sqlite.insert_thread(db, thread_row("t1"))
    started, release = threading.Event(), threading.Event()
    pool = ReaderPool(path, size=1)
    results: dict[str, object] = {}

    async def read(name: str, fn: Callable[[sqlite3.Connection], object]) -> None:
        results[name] = await pool.run(fn)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read, "gated", _gated_read(started, release))
        await trio.to_thread.run_sync(started.wait)
        nursery.start_soon(
            read, "queued", lambda conn: conn.execute("SELECT count(*) FROM threads").fetchone()
        )
        await trio.testing.wait_all_tasks_blocked()  # the second read is queued
        nursery.start_soon(pool.aclose)
        await trio.testing.wait_all_tasks_blocked()  # close is waiting for the reads
        with pytest.raises(StoreClosedError, match="closed"):
            await pool.run(_in_transaction)
        assert results == {}
        release.set()
    assert results == {"gated": [("t1",)], "queued": (1,)}
    assert pool.connections == 0
    threads = [t for t in threading.enumerate() if t.name.startswith("threadstore-reader")]
    for thread in threads:
        await trio.to_thread.run_sync(thread.join, 10)
    assert not any(t.is_alive() for t in threads), "a reader thread outlived aclose"


async def test_reader_pool_survives_cancelled_readers_and_a_close_among_them(
    db: sqlite3.Connection, path: str
) -> None:
    """Forty readers, every other one cancelled while queued or running, then a close while
    they wait: every read is answered, nothing hangs, nothing stays open."""
    _sqlite.insert_thread(db, thread_row("t1"))
    pool = ReaderPool(path, size=2)
    answers: list[object] = []
    scopes: list[trio.CancelScope] = []

    def count(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT count(*) FROM threads").fetchone()[0])

    async def reader(index: int) -> None:
        with trio.CancelScope() as scope:
            if index % 2:
                scopes.append(scope)
            answers.append(await pool.run(count))
            await trio.lowlevel.checkpoint()  # where a cancelled reader's cancel lands

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for index in range(40):
                nursery.start_soon(reader, index)
            await trio.testing.wait_all_tasks_blocked()
            for scope in scopes:
                scope.cancel()
            nursery.start_soon(pool.aclose)
    # A queued read is never abandoned: the cancelled readers got their answer too (their
    # cancellation landed at the checkpoint after it).
    assert answers == [1] * 40
    assert pool.connections == 0
    with pytest.raises(StoreClosedError):
        await pool.run(count)


def test_bad_arguments_are_rejected(path: str) -> None:
    with pytest.raises(ValueError, match="durability"):
        _sqlite.connect(path, durability="fast")  # type: ignore[arg-type]
    assert not os.path.exists(path)
    with pytest.raises(ValueError, match="size"):
        ReaderPool(path, size=0)


def test_update_projection_writes_what_changed_and_reports_missing_threads(
    db: sqlite3.Connection,
) -> None:
    _sqlite.insert_thread(db, thread_row("t1", title="old", item_count=1))
    before = _sqlite.read_projection_row(db, "t1")
    assert before is not None
    after = dict(before, title="new", item_count=2, updated_at=5_000)
    assert _sqlite.update_projection(db, before, after)
    stored = _sqlite.read_projection_row(db, "t1")
    assert stored == after
    # Nothing changed: nothing to write, and the thread exists.
    assert _sqlite.update_projection(db, after, dict(after))
    assert _sqlite.read_projection_row(db, "t1") == after
    # A deleted thread is reported, with or without changes.
    gone = dict(after, id="t2")
    assert not _sqlite.update_projection(db, gone, dict(gone, title="x"))
    assert not _sqlite.update_projection(db, gone, dict(gone))
    assert _sqlite.read_projection_row(db, "t2") is None
