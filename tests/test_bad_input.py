"""Every kind of bad input in DESIGN §6 gets a clear error, and nothing is written.

One table drives the API cases: each names the call, the error type and a distinctive piece
of its message. The test compares what a user can see — the listing, every thread's metadata
and items, the append counters — before and after, and then the file itself through a fresh
read-only store.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from threadstore import (
    InvalidCursorError,
    InvalidItemError,
    Item,
    StoreClosedError,
    StoredItem,
    StoreFormatError,
    ThreadExistsError,
    ThreadMeta,
    ThreadNotFoundError,
    ThreadStoreError,
    open_store,
)
from threadstore._store import Store

MAX_ITEM_BYTES = 2048


@attrs.frozen(kw_only=True)
class Env:
    """A populated store: thread ``t`` (goal, 2 items), 3 titled threads, a deleted one."""

    store: Store
    tid: str
    deleted: str
    cursor: str
    foreign_cursor: str


@attrs.frozen(kw_only=True)
class Case:
    id: str
    act: Callable[[Env], Awaitable[object]]
    error: type[ThreadStoreError]
    message: str
    after_close: bool = False


async def _now(fn: Callable[[], object]) -> object:
    """Run a sync call (``append_nowait``) as a case action."""
    await trio.lowlevel.checkpoint()
    return fn()


def _append(*items: Any, thread: str | None = None) -> Callable[[Env], Awaitable[object]]:
    return lambda env: env.store.append(env.tid if thread is None else thread, *items)


def _append_nowait(*items: Any, thread: str | None = None) -> Callable[[Env], Awaitable[object]]:
    return lambda env: _now(
        lambda: env.store.append_nowait(env.tid if thread is None else thread, *items)
    )


def _note(data: Any) -> Item:
    return Item(kind="note", data=data)


def _self_referencing() -> dict[str, Any]:
    data: dict[str, Any] = {}
    data["self"] = data
    return data


def _flip(token: str) -> str:
    index = len(token) // 2
    return token[:index] + ("B" if token[index] == "A" else "A") + token[index + 1 :]


OK = Item.user_message("fine")
TOO_BIG = Item.user_message("x" * MAX_ITEM_BYTES)
NOT_JSON = "which is not JSON"
NO_NAN = "which JSON cannot represent"
BAD_KIND = "is invalid: it must be a str matching"
LIMIT = "limit must be an int in 1..1000"

CASES = [
    # Non-JSON data.
    Case(id="data-object", act=_append(_note({"x": object()})), error=InvalidItemError,
         message=NOT_JSON),
    Case(id="data-set", act=_append(_note({"x": {1, 2}})), error=InvalidItemError,
         message="of type set"),
    Case(id="data-bytes", act=_append(_note({"x": b"raw"})), error=InvalidItemError,
         message="b'raw' of type bytes"),
    Case(id="data-nan", act=_append(_note({"x": math.nan})), error=InvalidItemError,
         message=f"data['x'] is nan, {NO_NAN}"),
    Case(id="data-infinity", act=_append(_note({"x": [1, -math.inf]})), error=InvalidItemError,
         message=f"data['x'][1] is -inf, {NO_NAN}"),
    Case(id="data-int-key", act=_append(_note({"x": {1: "one"}})), error=InvalidItemError,
         message="key 1 of type int; JSON object keys must be str"),
    Case(id="data-not-a-mapping", act=_append(_note([1, 2])), error=InvalidItemError,
         message="data must be a mapping"),
    Case(id="data-self-referencing", act=_append(_note(_self_referencing())),
         error=InvalidItemError, message="nested deeper than 256 levels"),
    Case(id="data-builtin-field-missing", act=_append(Item(kind="user_message", data={})),
         error=InvalidItemError, message="user_message item: data['text'] is missing"),
    Case(id="data-builtin-field-wrong", act=_append(Item.token_usage(-1, 2)),
         error=InvalidItemError, message="data['input'] must be an int >= 0, got -1"),
    Case(id="data-nowait-not-json", act=_append_nowait(_note({"x": object()})),
         error=InvalidItemError, message=NOT_JSON),
    # Size.
    Case(id="item-over-max-bytes", act=_append(TOO_BIG), error=InvalidItemError,
         message=f"over max_item_bytes={MAX_ITEM_BYTES}"),
    Case(id="item-over-max-bytes-after-a-good-one", act=_append(OK, TOO_BIG),
         error=InvalidItemError, message=f"over max_item_bytes={MAX_ITEM_BYTES}"),
    Case(id="item-over-max-bytes-nowait", act=_append_nowait(OK, TOO_BIG),
         error=InvalidItemError, message=f"over max_item_bytes={MAX_ITEM_BYTES}"),
    Case(id="create-goal-over-max-bytes",
         act=lambda env: env.store.create_thread(goal="g" * MAX_ITEM_BYTES),
         error=InvalidItemError, message="goal item is"),
    # Kinds.
    Case(id="kind-uppercase", act=_append(Item(kind="User_message", data={"text": "x"})),
         error=InvalidItemError, message=f"item kind 'User_message' {BAD_KIND}"),
    Case(id="kind-empty", act=_append(Item(kind="", data={})), error=InvalidItemError,
         message=f"item kind '' {BAD_KIND}"),
    Case(id="kind-too-long", act=_append(Item(kind="k" * 65, data={})),
         error=InvalidItemError, message=BAD_KIND),
    Case(id="kind-leading-digit", act=_append(Item(kind="1note", data={})),
         error=InvalidItemError, message=f"item kind '1note' {BAD_KIND}"),
    Case(id="kind-not-a-str", act=_append(Item(kind=7, data={})),  # type: ignore[arg-type]
         error=InvalidItemError, message=f"item kind 7 {BAD_KIND}"),
    # Thread ids.
    Case(id="thread-id-empty", act=_append(OK, thread=""), error=InvalidItemError,
         message="must be 1-128 characters long, not 0"),
    Case(id="thread-id-129-chars", act=_append(OK, thread="t" * 129), error=InvalidItemError,
         message="must be 1-128 characters long, not 129"),
    Case(id="thread-id-leading-space", act=_append(OK, thread=" t"), error=InvalidItemError,
         message="thread id ' t' has whitespace at an end"),
    Case(id="thread-id-trailing-space", act=_append(OK, thread="t "), error=InvalidItemError,
         message="thread id 't ' has whitespace at an end"),
    Case(id="thread-id-non-printable", act=_append(OK, thread="t\x00x"),
         error=InvalidItemError, message="contains unprintable characters"),
    Case(id="thread-id-not-a-str", act=_append(OK, thread=42),  # type: ignore[arg-type]
         error=InvalidItemError, message="thread id must be a str, got 42 of type int"),
    Case(id="create-thread-id-trailing-newline",
         act=lambda env: env.store.create_thread(thread_id="new\n", goal="g"),
         error=InvalidItemError, message="contains unprintable characters"),
    Case(id="create-thread-id-not-a-str",
         act=lambda env: env.store.create_thread(thread_id=b"id"),  # type: ignore[arg-type]
         error=InvalidItemError, message="thread id must be a str, got b'id' of type bytes"),
    Case(id="create-thread-id-taken", act=lambda env: env.store.create_thread(thread_id="t"),
         error=ThreadExistsError, message="a thread with id 't' already exists"),
    Case(id="get-thread-id-too-long", act=lambda env: env.store.get_thread("t" * 129),
         error=InvalidItemError, message="not 129"),
    # Unknown, deleted, closed.
    Case(id="append-unknown-thread", act=_append(OK, thread="nope"),
         error=ThreadNotFoundError, message="no thread with id 'nope'"),
    Case(id="append-deleted-thread", act=_append(OK, thread="gone"),
         error=ThreadNotFoundError, message="no thread with id 'gone'"),
    Case(id="append-nowait-deleted-thread", act=_append_nowait(OK, thread="gone"),
         error=ThreadNotFoundError, message="no thread with id 'gone'"),
    Case(id="update-deleted-thread",
         act=lambda env: env.store.update_thread("gone", title="x"),
         error=ThreadNotFoundError, message="no thread with id 'gone'"),
    Case(id="append-after-close", act=_append(OK), error=StoreClosedError,
         message="is closed", after_close=True),
    Case(id="append-nowait-after-close", act=_append_nowait(OK), error=StoreClosedError,
         message="is closed", after_close=True),
    Case(id="create-after-close", act=lambda env: env.store.create_thread(goal="g"),
         error=StoreClosedError, message="is closed", after_close=True),
    # Cursors.
    Case(id="cursor-tampered",
         act=lambda env: env.store.list_threads(limit=1, cursor=_flip(env.cursor)),
         error=InvalidCursorError, message="was tampered with or made by another store"),
    Case(id="cursor-foreign",
         act=lambda env: env.store.list_threads(limit=1, cursor=env.foreign_cursor),
         error=InvalidCursorError, message="was tampered with or made by another store"),
    Case(id="cursor-other-query",
         act=lambda env: env.store.list_threads(limit=1, cursor=env.cursor, archived=True),
         error=InvalidCursorError, message="was made for a different query"),
    Case(id="cursor-garbage",
         act=lambda env: env.store.list_threads(cursor="not a cursor!"),
         error=InvalidCursorError, message="malformed cursor 'not a cursor!'"),
    # Limits and ranges.
    Case(id="list-limit-0", act=lambda env: env.store.list_threads(limit=0),
         error=InvalidItemError, message=f"{LIMIT}, not 0"),
    Case(id="list-limit-1001", act=lambda env: env.store.list_threads(limit=1001),
         error=InvalidItemError, message=f"{LIMIT}, not 1001"),
    Case(id="list-limit-str",
         act=lambda env: env.store.list_threads(limit="5"),  # type: ignore[arg-type]
         error=InvalidItemError, message=f"{LIMIT}, not '5'"),
    Case(id="list-order-by-unknown",
         act=lambda env: env.store.list_threads(order_by="title"),  # type: ignore[arg-type]
         error=InvalidItemError, message="order_by must be one of"),
    Case(id="read-limit-0", act=lambda env: env.store.read_items(env.tid, limit=0),
         error=InvalidItemError, message="limit must be None or an int in 1..100000, not 0"),
    Case(id="read-after-seq-negative",
         act=lambda env: env.store.read_items(env.tid, after_seq=-1),
         error=InvalidItemError, message="after_seq must be an int >= 0, not -1"),
    Case(id="flush-seq-beyond-last", act=lambda env: env.store.flush(env.tid, 4),
         error=InvalidItemError, message="seq must be an int in 0..3, not 4"),
    # Text that cannot be encoded.
    Case(id="text-lone-surrogate", act=_append(Item.user_message("bad \ud800 text")),
         error=InvalidItemError, message="cannot be encoded as UTF-8"),
    Case(id="key-lone-surrogate", act=_append(_note({"\udc80": 1})),
         error=InvalidItemError, message="key is '\\udc80', which cannot be encoded as UTF-8"),
    Case(id="create-title-lone-surrogate",
         act=lambda env: env.store.create_thread(title="\ud83d"),
         error=InvalidItemError, message="cannot be encoded as UTF-8"),
    # Shape of the call.
    Case(id="append-no-items", act=_append(), error=InvalidItemError,
         message="append needs at least one item"),
    Case(id="append-nowait-no-items", act=_append_nowait(), error=InvalidItemError,
         message="append needs at least one item"),
    Case(id="append-not-an-item", act=_append(OK, {"kind": "user_message"}),
         error=InvalidItemError, message="expected threadstore.Item, got {'kind': "),
    Case(id="append-nowait-not-an-item", act=_append_nowait("hello"), error=InvalidItemError,
         message="expected threadstore.Item, got 'hello'"),
    Case(id="create-goal-not-a-str",
         act=lambda env: env.store.create_thread(goal=5),  # type: ignore[arg-type]
         error=InvalidItemError, message="goal must be a str, not 5"),
    Case(id="create-extra-not-a-mapping",
         act=lambda env: env.store.create_thread(extra=[1]),  # type: ignore[arg-type]
         error=InvalidItemError, message="extra must be a mapping, not [1]"),
    Case(id="create-extra-not-json",
         act=lambda env: env.store.create_thread(goal="g", extra={"when": object()}),
         error=InvalidItemError, message=NOT_JSON),
    Case(id="update-nothing", act=lambda env: env.store.update_thread(env.tid),
         error=InvalidItemError, message="update_thread needs title= or extra="),
    Case(id="update-extra-nan",
         act=lambda env: env.store.update_thread(env.tid, title="x", extra={"n": math.inf}),
         error=InvalidItemError, message=NO_NAN),
]  # fmt: skip


async def _populate(store: Store, foreign_cursor: str) -> Env:
    tid = (await store.create_thread(thread_id="t", goal="the goal")).id
    await store.append(tid, Item.user_message("hello"), Item.assistant_message("hi"))
    for n in range(3):
        await store.create_thread(thread_id=f"listed-{n}", title=f"listed {n}")
    await store.create_thread(thread_id="gone", goal="deleted")
    await store.append(
        "gone", Item.user_message("accepted before the delete"), Item.error("also gone")
    )
    await store.delete_thread("gone")
    with trio.fail_after(10):
        await store.flush_all()
    cursor = (await store.list_threads(limit=1)).next_cursor
    assert cursor is not None
    return Env(store=store, tid=tid, deleted="gone", cursor=cursor, foreign_cursor=foreign_cursor)


async def _foreign_cursor(path: Path) -> str:
    async with open_store(path) as other:
        for n in range(2):
            await other.create_thread(thread_id=f"listed-{n}", title=f"listed {n}")
        cursor = (await other.list_threads(limit=1)).next_cursor
    assert cursor is not None
    return cursor


Snapshot = tuple[
    tuple[ThreadMeta, ...], tuple[ThreadMeta, ...], dict[str, list[StoredItem]], ThreadMeta
]


async def _snapshot(store: Store) -> Snapshot:
    """Everything a user can see: both listings, every thread's items, ``t``'s metadata."""
    active = (await store.list_threads(limit=1000, include_empty=True)).threads
    archived = (await store.list_threads(limit=1000, include_empty=True, archived=True)).threads
    items = {meta.id: await store.read_items(meta.id) for meta in active + archived}
    return active, archived, items, await store.get_thread("t")


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_bad_input_gets_a_clear_error_and_writes_nothing(tmp_path: Path, case: Case) -> None:
    path = tmp_path / "store.db"
    foreign_cursor = await _foreign_cursor(tmp_path / "other.db")

    async def expect_error(env: Env) -> None:
        with trio.fail_after(10), pytest.raises(case.error) as info:
            await case.act(env)
        message = str(info.value)
        assert case.message in message
        assert len(message) <= 300  # quoted values are shortened

    async with open_store(path, max_item_bytes=MAX_ITEM_BYTES) as store:
        env = await _populate(store, foreign_cursor)
        before = await _snapshot(store)
        counts = {tid: len(items) for tid, items in before[2].items()}
        assert counts == {"t": 3, "listed-0": 1, "listed-1": 1, "listed-2": 1}
        stats = store.statistics()
        if not case.after_close:
            await expect_error(env)
            assert await _snapshot(store) == before
            after = store.statistics()
            assert (after.appends, after.items_appended) == (stats.appends, stats.items_appended)
            with pytest.raises(ThreadNotFoundError):
                await store.get_thread("gone")
    if case.after_close:
        await expect_error(env)

    async with open_store(path, read_only=True) as reader:
        assert await _snapshot(reader) == before
        with pytest.raises(ThreadNotFoundError):
            await reader.read_items("gone")


def _text_file(path: Path) -> None:
    path.write_text("these are my notes, not a database\n" * 200)


def _foreign_database(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        conn.executemany("INSERT INTO invoices (total) VALUES (?)", [(9.5,), (12.0,)])
    conn.close()


FILES: dict[str, Callable[[Path], None]] = {
    "text-file": _text_file,
    "foreign-sqlite-database": _foreign_database,
}


@pytest.mark.parametrize("make", FILES.values(), ids=FILES.keys())
@pytest.mark.parametrize("read_only", [False, True], ids=["writer", "read-only"])
async def test_a_file_that_is_not_a_store_is_refused_and_left_alone(
    tmp_path: Path, make: Callable[[Path], None], read_only: bool
) -> None:
    path = tmp_path / "notes.db"
    make(path)
    original = path.read_bytes()

    with pytest.raises(StoreFormatError, match="is not a threadstore database"):
        async with open_store(path, read_only=read_only):
            pytest.fail("opened a file that is not a threadstore database")

    assert path.read_bytes() == original
