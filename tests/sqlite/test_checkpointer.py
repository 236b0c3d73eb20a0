"""WAL checkpoints off the commit path: the checkpointer thread, alone and inside a store."""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio

from threadstore import Item, open_store
from threadstore.sqlite import DEFAULTS, SqliteEngine
from threadstore.sqlite import _sql as _sqlite
from threadstore.sqlite._wal_checkpointer import WalCheckpointer
from threadstore.sqlite._writer import Writer

TIMEOUT = 30.0  # a guard against hangs, never a measurement


@pytest.fixture
def writer_db(db: sqlite3.Connection) -> sqlite3.Connection:
    """The writer's side: a store file whose commits never checkpoint by themselves."""
    db.execute("PRAGMA wal_autocheckpoint = 0")
    return db


@contextlib.contextmanager
def _started(
    connect: Callable[[], sqlite3.Connection], *, interval: float, eager_bytes: int
) -> Iterator[WalCheckpointer]:
    """A running checkpointer, closed (its thread joined) on the way out."""
    checkpointer = WalCheckpointer(connect, interval=interval, eager_bytes=eager_bytes)
    checkpointer.start()
    try:
        yield checkpointer
    finally:
        checkpointer.close()


def _store_file(path: str) -> Callable[[], sqlite3.Connection]:
    return partial(_sqlite.connect, path, durability="normal")


def _commit_threads(conn: sqlite3.Connection, first: int, count: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO threads (id, created_at, updated_at, recency_at) VALUES (?, 1, 1, 1)",
        [(f"t{i}",) for i in range(first, first + count)],
    )
    conn.execute("COMMIT")


def _in_file(path: str, conn: sqlite3.Connection) -> bool:
    """Whether the database file itself holds every committed page (a checkpoint copied
    the WAL into it); commits alone only grow the WAL."""
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    (size,) = conn.execute("PRAGMA page_size").fetchone()
    return os.path.getsize(path) == int(pages) * int(size)


class _FlakyConnection(sqlite3.Connection):
    """A real connection whose checkpoints fail while ``failing`` is set (a disk that
    refuses writes to the database file, say)."""

    failing = threading.Event()

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if "wal_checkpoint" in sql and self.failing.is_set():
            raise sqlite3.OperationalError("disk I/O error (injected)")
        return super().execute(sql, *args)


def _flaky(path: str) -> Callable[[], sqlite3.Connection]:
    def connect() -> sqlite3.Connection:
        return sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, factory=_FlakyConnection
        )

    return connect


def test_enough_committed_bytes_checkpoint_at_once(
    writer_db: sqlite3.Connection, path: str
) -> None:
    with _started(_store_file(path), interval=3600.0, eager_bytes=1000) as checkpointer:
        _commit_threads(writer_db, 0, 50)
        checkpointer.committed(600)  # under the threshold, and the interval is an hour
        _commit_threads(writer_db, 50, 50)
        assert not _in_file(path, writer_db)
        checkpointer.committed(600)  # together over it
        assert checkpointer.wait_for(1, TIMEOUT)
        assert (checkpointer.checkpoints, checkpointer.failures) == (1, 0)
    assert _in_file(path, writer_db)


def test_commits_are_checkpointed_after_the_interval(
    writer_db: sqlite3.Connection, path: str
) -> None:
    with _started(_store_file(path), interval=0.01, eager_bytes=1 << 30) as checkpointer:
        _commit_threads(writer_db, 0, 10)
        assert not _in_file(path, writer_db)
        checkpointer.committed(10)  # far under the threshold: the interval does it
        assert checkpointer.wait_for(1, TIMEOUT)
    assert _in_file(path, writer_db)


def test_a_failed_checkpoint_loses_nothing_and_is_tried_again(
    writer_db: sqlite3.Connection, path: str
) -> None:
    _FlakyConnection.failing.set()
    with structlog.testing.capture_logs() as logs:
        try:
            with _started(_flaky(path), interval=0.01, eager_bytes=1) as checkpointer:
                _commit_threads(writer_db, 0, 20)
                checkpointer.committed(100)
                assert checkpointer.wait_for(1, TIMEOUT)
                assert checkpointer.failures >= 1
                assert checkpointer.checkpoints == 0
                _commit_threads(writer_db, 20, 20)  # the writer goes on committing meanwhile
                _FlakyConnection.failing.clear()
                # No new commit needed: the failed attempt is retried after the interval.
                assert checkpointer.wait_for(checkpointer.failures + 1, TIMEOUT)
                assert checkpointer.checkpoints >= 1
        finally:
            _FlakyConnection.failing.clear()
    failed = [e for e in logs if e["event"] == "checkpoint.failed"]
    assert failed
    assert failed[0]["log_level"] == "warning"
    assert "disk I/O error" in failed[0]["error"]
    assert writer_db.execute("SELECT count(*) FROM threads").fetchone() == (40,)
    assert _in_file(path, writer_db)


def test_a_checkpointer_that_cannot_connect_raises_from_start(tmp_path: Path) -> None:
    missing = str(tmp_path / "no" / "such" / "dir" / "store.db")
    checkpointer = WalCheckpointer(_store_file(missing))
    with pytest.raises(FileNotFoundError):
        checkpointer.start()
    checkpointer.close()  # nothing started: returns at once


async def test_a_store_checkpoints_off_the_commit_path_and_ends_the_thread(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    with trio.fail_after(TIMEOUT):
        async with open_store(path) as store:
            engine = store._engine
            assert isinstance(engine, SqliteEngine)
            assert engine.writer is not None
            checkpointer = engine.writer.checkpointer
            assert checkpointer is not None
            thread = await store.create_thread(goal="checkpoint me")
            for index in range(200):
                await store.append(thread.id, Item.assistant_message(f"reply {index} " * 20))
            await store.flush_all()
            before = store.statistics().checkpoints
            checkpointer.request()
            assert await trio.to_thread.run_sync(checkpointer.wait_for, before + 1, TIMEOUT)
            stats = store.statistics()
            assert stats.checkpoints >= before + 1
            assert stats.checkpoint_failures == 0
            assert "threadstore-checkpointer" in {t.name for t in threading.enumerate()}
        assert "threadstore-checkpointer" not in {t.name for t in threading.enumerate()}
        async with open_store(path, read_only=True) as reopened:
            assert len(await reopened.read_items(thread.id)) == 201


async def test_the_writer_leaves_checkpoints_to_the_checkpointer_up_to_the_backstop(
    tmp_path: Path,
) -> None:
    """Past SQLite's usual 1000 pages, commits leave the WAL alone (the database file stays
    behind its page count); past ``backstop_pages`` a commit checkpoints after all, so a
    WAL that the checkpointer never catches up with under a ceaseless write load (it copies
    up to the last frame it saw, while new ones keep coming) still starts over."""
    path = str(tmp_path / "w.db")

    def connect() -> sqlite3.Connection:
        conn = _sqlite.connect(path, durability="normal")
        _sqlite.ensure_schema(conn)
        return conn

    checkpointer = WalCheckpointer(_store_file(path), interval=3600.0, eager_bytes=1 << 40)
    writer = Writer(connect, checkpointer=checkpointer)
    await writer.start()
    try:
        with trio.fail_after(TIMEOUT):
            batches = iter(range(1000))
            for batch in itertools.islice(batches, 60):  # about 1,500 pages
                await writer.run(partial(_commit_big_rows, batch))
            assert not await writer.run(partial(_in_file, path))
            checkpointer.request()
            assert await trio.to_thread.run_sync(checkpointer.wait_for, 1, TIMEOUT)
            assert await writer.run(partial(_in_file, path))
            copied = await trio.Path(path).stat()
            for batch in itertools.islice(batches, 40):  # about 1,000 pages more
                await writer.run(partial(_commit_big_rows, batch))
            assert (await trio.Path(path).stat()).st_size == copied.st_size  # no checkpoint
            for batch in itertools.islice(batches, DEFAULTS.backstop_pages // 25):
                await writer.run(partial(_commit_big_rows, batch))
            assert (await trio.Path(path).stat()).st_size > copied.st_size  # the backstop
    finally:
        await writer.aclose()
    assert checkpointer.checkpoints == 1


def _commit_big_rows(batch: int, conn: sqlite3.Connection) -> None:
    """About 25 pages of thread rows (60 of these: 1,500 pages, past SQLite's 1000)."""
    conn.executemany(
        "INSERT INTO threads (id, created_at, updated_at, recency_at, title) "
        "VALUES (?, 1, 1, 1, ?)",
        [(f"b{batch}-{i}", "x" * 4000) for i in range(25)],
    )
