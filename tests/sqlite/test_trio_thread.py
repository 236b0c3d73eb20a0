"""No SQL runs on the trio thread: every statement of every connection is traced.

Each connection the store opens (writer, checkpointer, readers; a read-only store's
readers) gets an SQLite trace callback, which SQLite calls on the thread that runs the
statement. The whole public API is driven from the trio thread; not one statement may
have run there, and the ones the API needs must have run somewhere.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from threadstore import Item, open_store
from threadstore.sqlite import _sql as _sqlite


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    """``(thread ident, statement)`` of every statement run on a store connection."""
    statements: list[tuple[int, str]] = []
    connect = _sqlite.connect

    def traced_connect(*args: object, **kwargs: object) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)  # type: ignore[arg-type]
        conn.set_trace_callback(lambda sql: statements.append((threading.get_ident(), sql)))
        return conn

    monkeypatch.setattr(_sqlite, "connect", traced_connect)
    return statements


async def test_no_statement_runs_on_the_trio_thread(
    tmp_path: Path, traced: list[tuple[int, str]]
) -> None:
    trio_thread = threading.get_ident()
    path = tmp_path / "store.db"
    async with open_store(path) as store:
        meta = await store.create_thread(goal="plan the launch", title="Launch")
        tid = meta.id
        await store.append(tid, Item.user_message("hi"), Item.turn_started("t1"))
        receipt = store.append_nowait(tid, Item.assistant_message("hello"))
        await receipt.durable()
        await store.append_and_flush(tid, Item.turn_completed("t1"))
        await store.flush(tid)
        other = (await store.create_thread(goal="second")).id
        await store.append(other, Item.user_message("more"))
        await store.discard(other)
        await store.flush_all()
        page = await store.list_threads(limit=1)
        assert page.next_cursor is not None
        await store.list_threads(limit=1, cursor=page.next_cursor)
        await store.list_threads(search="launch")
        await store.get_thread(tid)
        assert [i.kind for i in await store.read_items(tid)][-1] == "turn_completed"
        await store.update_thread(tid, title="Launch v2", extra={"team": "core"})
        await store.archive_thread(tid)
        await store.unarchive_thread(tid)
        await store.delete_thread(other)
    async with open_store(path) as reopened, open_store(path, read_only=True) as reader:
        assert (await reader.get_thread(tid)).title == "Launch v2"
        assert len((await reopened.list_threads()).threads) == 1

    on_trio = [sql for ident, sql in traced if ident == trio_thread]
    assert on_trio == []
    ran = " ".join(sql for _, sql in traced)
    for statement in ("INSERT INTO items", "UPDATE threads", "DELETE FROM items", "FROM threads"):
        assert statement in ran, statement
