"""Every kind of bad input in DESIGN §6 gets a clear error, and nothing is written.

One table drives one test. Each case names the call, the error type and a piece of the
message that names the problem (the offending field or value; matched with
``pytest.raises(match=...)``). A case runs at one of three stages:

- ``open``: against a populated, settled store (thread ``t`` with a goal and two items,
  three titled threads, a deleted thread ``gone``; nothing left to project, periodic retry
  off, so the store writes nothing on its own);
- ``closed``: against the same store after it was closed;
- ``file``: opening (for writing and read-only) a file that is not a usable store.

"Nothing is written" is checked on the bytes: the database file and its ``-wal`` must be
byte-for-byte the same after the rejected call (and, while the store is open, after a
``flush_all`` that lets it settle). A rejected input must not write at all, so this is exact,
and it needs no knowledge of the schema. Closing the store legitimately rewrites the file
(the last connection checkpoints the WAL into it), so across the close the test compares a
full dump instead — every row of every table and the header pragmas, read through a separate
read-only ``sqlite3`` connection — and, while open, what a user sees (listings, metadata,
items, counters). A missing ``-wal`` counts as an empty one: a read-only connection may
create an empty one.

``test_text_is_stored_verbatim`` checks the other half of §6: text that can be encoded is
stored exactly (quotes, SQL, NUL, emoji, control characters, LIKE wildcards).
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
import random
import re
import sqlite3
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, Final, Literal

import attrs
import pytest
import trio

from threadstore import (
    InvalidCursorError,
    InvalidItemError,
    Item,
    Store,
    StoreClosedError,
    StoredItem,
    StoreFormatError,
    ThreadExistsError,
    ThreadMeta,
    ThreadNotFoundError,
    ThreadStoreError,
    open_store,
)
from threadstore.sqlite._sql import SCHEMA_VERSION

MAX_ITEM_BYTES: Final = 2048
GUARD_S: Final = 10
#: Stands for the store file's repr in expected messages about files.
PATH: Final = "<path>"

Stage = Literal["open", "closed", "file"]


@attrs.frozen(kw_only=True)
class Env:
    """Where a case runs: the file (or URL), and for ``open``/``closed`` the populated store."""

    path: Path | str
    opened: Store | None = None
    tid: str = "t"
    deleted: str = "gone"
    cursor: str = ""
    foreign_cursor: str = ""

    @property
    def store(self) -> Store:
        assert self.opened is not None
        return self.opened


@attrs.frozen(kw_only=True)
class Case:
    id: str
    act: Callable[[Env], Awaitable[object]]
    error: type[ThreadStoreError]
    message: str
    stage: Stage = "open"
    #: For ``file`` cases: makes the file at the given path.
    make: Callable[[Path], Awaitable[None]] | None = None


async def _now(fn: Callable[[], object]) -> object:
    """Run a sync call (``append_nowait``) as a case action."""
    await trio.lowlevel.checkpoint()
    return fn()


_T: Final = object()  # the default thread: ``t``


def _append(*items: Any, thread: Any = _T) -> Callable[[Env], Awaitable[object]]:
    return lambda env: env.store.append(env.tid if thread is _T else thread, *items)


def _append_nowait(*items: Any, thread: Any = _T) -> Callable[[Env], Awaitable[object]]:
    return lambda env: _now(
        lambda: env.store.append_nowait(env.tid if thread is _T else thread, *items)
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
#: Fewer characters than max_item_bytes, but more bytes once encoded as UTF-8.
TOO_BIG_IN_BYTES = Item.user_message("é" * (MAX_ITEM_BYTES // 2 + 10))
NOT_JSON = "which is not JSON"
NO_NAN = "which JSON cannot represent"
STR_KEYS = "JSON object keys must be str"
BAD_KIND = "is invalid: it must be a str matching"
LIMIT = "limit must be an int in 1..1000"
READ_LIMIT = "limit must be None or an int in 1..100000"
NOT_FOUND = "no thread with id"
CLOSED = "is closed"
TAMPERED = "was tampered with or made by another store"

API_CASES = [
    # Non-JSON data: objects, NaN/Infinity, non-str keys, wrong shapes.
    Case(id="data-object", act=_append(_note({"x": object()})), error=InvalidItemError,
         message="data['x'] is <object object at"),
    Case(id="data-set", act=_append(_note({"x": {1, 2}})), error=InvalidItemError,
         message=f"data['x'] is {{1, 2}} of type set, {NOT_JSON}"),
    Case(id="data-bytes", act=_append(_note({"x": b"raw"})), error=InvalidItemError,
         message=f"data['x'] is b'raw' of type bytes, {NOT_JSON}"),
    Case(id="data-datetime", act=_append(_note({"at": datetime.date(2024, 1, 2)})),
         error=InvalidItemError, message="data['at'] is datetime.date(2024, 1, 2) of type date"),
    Case(id="data-decimal", act=_append(_note({"n": decimal.Decimal("1.5")})),
         error=InvalidItemError, message="data['n'] is Decimal('1.5') of type Decimal"),
    Case(id="data-nan", act=_append(_note({"x": math.nan})), error=InvalidItemError,
         message=f"data['x'] is nan, {NO_NAN}"),
    Case(id="data-infinity", act=_append(_note({"x": [1, -math.inf]})), error=InvalidItemError,
         message=f"data['x'][1] is -inf, {NO_NAN}"),
    Case(id="data-infinity-nested", act=_append(_note({"a": {"b": [0, (1, math.inf)]}})),
         error=InvalidItemError, message=f"data['a']['b'][1][1] is inf, {NO_NAN}"),
    Case(id="data-nan-in-tool-arguments",
         act=_append(Item.tool_call("calc", {"x": math.nan}, "call-1")),
         error=InvalidItemError, message="tool_call item: data['arguments']['x'] is nan"),
    Case(id="data-object-in-tool-output",
         act=_append(Item.tool_result("call-1", {"rows": [object()]})),
         error=InvalidItemError, message="data['output']['rows'][0] is <object object at"),
    Case(id="data-int-key", act=_append(_note({"x": {1: "one"}})), error=InvalidItemError,
         message=f"data['x'] has a key 1 of type int; {STR_KEYS}"),
    Case(id="data-none-key", act=_append(_note({None: 1})), error=InvalidItemError,
         message=f"data has a key None of type NoneType; {STR_KEYS}"),
    Case(id="data-tuple-key", act=_append(_note({"x": {(1, 2): 3}})), error=InvalidItemError,
         message=f"data['x'] has a key (1, 2) of type tuple; {STR_KEYS}"),
    Case(id="data-bool-key", act=_append(_note({True: 1})), error=InvalidItemError,
         message=f"data has a key True of type bool; {STR_KEYS}"),
    Case(id="data-float-key", act=_append(_note({1.5: 1})), error=InvalidItemError,
         message=f"data has a key 1.5 of type float; {STR_KEYS}"),
    Case(id="data-not-a-mapping", act=_append(_note([1, 2])), error=InvalidItemError,
         message="note item: data must be a mapping, got [1, 2] of type list"),
    Case(id="data-self-referencing", act=_append(_note(_self_referencing())),
         error=InvalidItemError, message="nested deeper than 256 levels (or contains itself)"),
    Case(id="data-builtin-field-missing", act=_append(Item(kind="user_message", data={})),
         error=InvalidItemError, message="user_message item: data['text'] is missing"),
    Case(id="data-builtin-field-wrong", act=_append(Item.token_usage(-1, 2)),
         error=InvalidItemError, message="data['input'] must be an int >= 0, got -1"),
    Case(id="data-builtin-field-bool-for-int", act=_append(Item.token_usage(True, 2)),
         error=InvalidItemError, message="data['input'] must be an int >= 0, got True"),
    Case(id="data-builtin-is-error-not-bool",
         act=_append(Item.tool_result("call-1", "out", is_error="yes")),  # type: ignore[arg-type]
         error=InvalidItemError, message="data['is_error'] must be a bool, got 'yes'"),
    Case(id="data-builtin-text-not-str", act=_append(Item.user_message(42)),  # type: ignore[arg-type]
         error=InvalidItemError, message="user_message item: data['text'] must be a str, got 42"),
    Case(id="data-nowait-not-json", act=_append_nowait(_note({"x": object()})),
         error=InvalidItemError, message=NOT_JSON),
    Case(id="data-append-and-flush-nan",
         act=lambda env: env.store.append_and_flush(env.tid, _note({"x": math.nan})),
         error=InvalidItemError, message=f"data['x'] is nan, {NO_NAN}"),
    Case(id="data-not-json-after-a-good-item", act=_append(OK, _note({"x": object()})),
         error=InvalidItemError, message=NOT_JSON),
    # Size.
    Case(id="item-over-max-bytes", act=_append(TOO_BIG), error=InvalidItemError,
         message=f"user_message item is 2071 bytes encoded, over max_item_bytes={MAX_ITEM_BYTES}"),
    Case(id="item-over-max-bytes-in-utf8", act=_append(TOO_BIG_IN_BYTES),
         error=InvalidItemError, message=f"over max_item_bytes={MAX_ITEM_BYTES}"),
    Case(id="item-over-max-bytes-after-a-good-one", act=_append(OK, TOO_BIG),
         error=InvalidItemError, message=f"over max_item_bytes={MAX_ITEM_BYTES}"),
    Case(id="item-over-max-bytes-nowait", act=_append_nowait(OK, TOO_BIG),
         error=InvalidItemError, message=f"over max_item_bytes={MAX_ITEM_BYTES}"),
    Case(id="item-over-max-bytes-append-and-flush",
         act=lambda env: env.store.append_and_flush(env.tid, TOO_BIG),
         error=InvalidItemError, message=f"over max_item_bytes={MAX_ITEM_BYTES}"),
    Case(id="create-goal-over-max-bytes",
         act=lambda env: env.store.create_thread(goal="g" * MAX_ITEM_BYTES),
         error=InvalidItemError, message="goal item is"),
    Case(id="create-extra-over-max-bytes",
         act=lambda env: env.store.create_thread(goal="g", extra={"blob": "b" * MAX_ITEM_BYTES}),
         error=InvalidItemError, message="metadata item is"),
    Case(id="update-title-over-max-bytes",
         act=lambda env: env.store.update_thread(env.tid, title="t" * MAX_ITEM_BYTES),
         error=InvalidItemError, message="title item is 2064 bytes encoded, over max_item_bytes"),
    # Kinds.
    Case(id="kind-uppercase", act=_append(Item(kind="User_message", data={"text": "x"})),
         error=InvalidItemError, message=f"item kind 'User_message' {BAD_KIND}"),
    Case(id="kind-empty", act=_append(Item(kind="", data={})), error=InvalidItemError,
         message=f"item kind '' {BAD_KIND}"),
    Case(id="kind-too-long", act=_append(Item(kind="k" * 65, data={})),
         error=InvalidItemError, message="item kind 'kkkkk"),
    Case(id="kind-leading-digit", act=_append(Item(kind="1note", data={})),
         error=InvalidItemError, message=f"item kind '1note' {BAD_KIND}"),
    Case(id="kind-space", act=_append(Item(kind="tool call", data={})),
         error=InvalidItemError, message=f"item kind 'tool call' {BAD_KIND}"),
    Case(id="kind-non-ascii", act=_append(Item(kind="nöte", data={})),
         error=InvalidItemError, message=f"item kind 'nöte' {BAD_KIND}"),
    Case(id="kind-not-a-str", act=_append(Item(kind=7, data={})),  # type: ignore[arg-type]
         error=InvalidItemError, message=f"item kind 7 {BAD_KIND}"),
    Case(id="kind-none", act=_append_nowait(Item(kind=None, data={})),  # type: ignore[arg-type]
         error=InvalidItemError, message=f"item kind None {BAD_KIND}"),
    # Thread ids.
    Case(id="thread-id-empty", act=_append(OK, thread=""), error=InvalidItemError,
         message="thread id '' must be 1-128 characters long, not 0"),
    Case(id="thread-id-129-chars", act=_append(OK, thread="t" * 129), error=InvalidItemError,
         message="must be 1-128 characters long, not 129"),
    Case(id="thread-id-leading-space", act=_append(OK, thread=" t"), error=InvalidItemError,
         message="thread id ' t' has whitespace at an end"),
    Case(id="thread-id-trailing-space", act=_append(OK, thread="t "), error=InvalidItemError,
         message="thread id 't ' has whitespace at an end"),
    Case(id="thread-id-non-printable", act=_append(OK, thread="t\x00x"),
         error=InvalidItemError, message="thread id 't\\x00x' contains unprintable characters"),
    Case(id="thread-id-tab", act=_append_nowait(OK, thread="a\tb"),
         error=InvalidItemError, message="thread id 'a\\tb' contains unprintable characters"),
    Case(id="thread-id-not-a-str", act=_append(OK, thread=42),
         error=InvalidItemError, message="thread id must be a str, got 42 of type int"),
    Case(id="thread-id-none", act=_append_nowait(OK, thread=None),
         error=InvalidItemError, message="thread id must be a str, got None of type NoneType"),
    Case(id="create-thread-id-trailing-newline",
         act=lambda env: env.store.create_thread(thread_id="new\n", goal="g"),
         error=InvalidItemError, message="thread id 'new\\n' contains unprintable characters"),
    Case(id="create-thread-id-lone-surrogate",
         act=lambda env: env.store.create_thread(thread_id="new\ud800", goal="g"),
         error=InvalidItemError, message="contains unprintable characters"),
    Case(id="create-thread-id-not-a-str",
         act=lambda env: env.store.create_thread(thread_id=b"id"),  # type: ignore[arg-type]
         error=InvalidItemError, message="thread id must be a str, got b'id' of type bytes"),
    Case(id="create-thread-id-taken", act=lambda env: env.store.create_thread(thread_id="t"),
         error=ThreadExistsError, message="a thread with id 't' already exists"),
    Case(id="create-thread-id-taken-by-a-listed-thread",
         act=lambda env: env.store.create_thread(thread_id="listed-1", goal="other goal"),
         error=ThreadExistsError, message="a thread with id 'listed-1' already exists"),
    Case(id="get-thread-id-too-long", act=lambda env: env.store.get_thread("t" * 129),
         error=InvalidItemError, message="must be 1-128 characters long, not 129"),
    Case(id="read-items-thread-id-not-a-str", act=lambda env: env.store.read_items(7),  # type: ignore[arg-type]
         error=InvalidItemError, message="thread id must be a str, got 7 of type int"),
    Case(id="flush-thread-id-whitespace", act=lambda env: env.store.flush(" t"),
         error=InvalidItemError, message="thread id ' t' has whitespace at an end"),
    Case(id="update-thread-id-empty", act=lambda env: env.store.update_thread("", title="x"),
         error=InvalidItemError, message="thread id '' must be 1-128 characters long"),
    Case(id="archive-thread-id-not-a-str",
         act=lambda env: env.store.archive_thread(["t"]),  # type: ignore[arg-type]
         error=InvalidItemError, message="thread id must be a str, got ['t'] of type list"),
    Case(id="delete-thread-id-too-long", act=lambda env: env.store.delete_thread("d" * 200),
         error=InvalidItemError, message="must be 1-128 characters long, not 200"),
    Case(id="discard-thread-id-unprintable", act=lambda env: env.store.discard("t\x1b"),
         error=InvalidItemError, message="thread id 't\\x1b' contains unprintable characters"),
    # Unknown and deleted threads.
    Case(id="append-unknown-thread", act=_append(OK, thread="nope"),
         error=ThreadNotFoundError, message=f"{NOT_FOUND} 'nope'"),
    Case(id="append-nowait-unknown-thread", act=_append_nowait(OK, thread="nope"),
         error=ThreadNotFoundError, message=f"{NOT_FOUND} 'nope'"),
    Case(id="append-and-flush-unknown-thread",
         act=lambda env: env.store.append_and_flush("nope", OK),
         error=ThreadNotFoundError, message=f"{NOT_FOUND} 'nope'"),
    Case(id="append-deleted-thread", act=_append(OK, thread="gone"),
         error=ThreadNotFoundError, message=f"{NOT_FOUND} 'gone'"),
    Case(id="append-nowait-deleted-thread", act=_append_nowait(OK, thread="gone"),
         error=ThreadNotFoundError, message=f"{NOT_FOUND} 'gone'"),
    Case(id="append-and-flush-deleted-thread",
         act=lambda env: env.store.append_and_flush("gone", OK),
         error=ThreadNotFoundError, message=f"{NOT_FOUND} 'gone'"),
    Case(id="update-deleted-thread",
         act=lambda env: env.store.update_thread("gone", title="x"),
         error=ThreadNotFoundError, message=f"{NOT_FOUND} 'gone'"),
    Case(id="update-unknown-thread",
         act=lambda env: env.store.update_thread("nope", extra={"k": 1}),
         error=ThreadNotFoundError, message=f"{NOT_FOUND} 'nope'"),
    Case(id="archive-deleted-thread", act=lambda env: env.store.archive_thread("gone"),
         error=ThreadNotFoundError, message=f"{NOT_FOUND} 'gone'"),
    Case(id="unarchive-unknown-thread", act=lambda env: env.store.unarchive_thread("nope"),
         error=ThreadNotFoundError, message=f"{NOT_FOUND} 'nope'"),
    Case(id="delete-deleted-thread", act=lambda env: env.store.delete_thread("gone"),
         error=ThreadNotFoundError, message=f"{NOT_FOUND} 'gone'"),
    Case(id="flush-deleted-thread", act=lambda env: env.store.flush("gone"),
         error=ThreadNotFoundError, message=f"{NOT_FOUND} 'gone'"),
    Case(id="discard-unknown-thread", act=lambda env: env.store.discard("nope"),
         error=ThreadNotFoundError, message=f"{NOT_FOUND} 'nope'"),
    Case(id="get-deleted-thread", act=lambda env: env.store.get_thread("gone"),
         error=ThreadNotFoundError, message=f"{NOT_FOUND} 'gone'"),
    Case(id="read-items-deleted-thread", act=lambda env: env.store.read_items("gone"),
         error=ThreadNotFoundError, message=f"{NOT_FOUND} 'gone'"),
    # After close.
    Case(id="append-after-close", act=_append(OK), error=StoreClosedError,
         message=f"store {PATH} {CLOSED}", stage="closed"),
    Case(id="append-nowait-after-close", act=_append_nowait(OK), error=StoreClosedError,
         message=f"store {PATH} {CLOSED}", stage="closed"),
    Case(id="append-and-flush-after-close",
         act=lambda env: env.store.append_and_flush(env.tid, OK),
         error=StoreClosedError, message=CLOSED, stage="closed"),
    Case(id="create-after-close", act=lambda env: env.store.create_thread(goal="g"),
         error=StoreClosedError, message=CLOSED, stage="closed"),
    Case(id="update-after-close", act=lambda env: env.store.update_thread(env.tid, title="x"),
         error=StoreClosedError, message=CLOSED, stage="closed"),
    Case(id="archive-after-close", act=lambda env: env.store.archive_thread(env.tid),
         error=StoreClosedError, message=CLOSED, stage="closed"),
    Case(id="delete-after-close", act=lambda env: env.store.delete_thread(env.tid),
         error=StoreClosedError, message=CLOSED, stage="closed"),
    Case(id="discard-after-close", act=lambda env: env.store.discard(env.tid),
         error=StoreClosedError, message=CLOSED, stage="closed"),
    Case(id="flush-after-close", act=lambda env: env.store.flush(env.tid),
         error=StoreClosedError, message=CLOSED, stage="closed"),
    Case(id="flush-all-after-close", act=lambda env: env.store.flush_all(),
         error=StoreClosedError, message=CLOSED, stage="closed"),
    Case(id="get-after-close", act=lambda env: env.store.get_thread(env.tid),
         error=StoreClosedError, message="readers are closed", stage="closed"),
    Case(id="list-after-close", act=lambda env: env.store.list_threads(),
         error=StoreClosedError, message="readers are closed", stage="closed"),
    # Cursors.
    Case(id="cursor-tampered",
         act=lambda env: env.store.list_threads(limit=1, cursor=_flip(env.cursor)),
         error=InvalidCursorError, message=TAMPERED),
    Case(id="cursor-truncated",
         act=lambda env: env.store.list_threads(limit=1, cursor=env.cursor[:-4]),
         error=InvalidCursorError, message=TAMPERED),
    Case(id="cursor-foreign",
         act=lambda env: env.store.list_threads(limit=1, cursor=env.foreign_cursor),
         error=InvalidCursorError, message=TAMPERED),
    Case(id="cursor-other-query",
         act=lambda env: env.store.list_threads(limit=1, cursor=env.cursor, archived=True),
         error=InvalidCursorError, message="was made for a different query"),
    Case(id="cursor-other-order",
         act=lambda env: env.store.list_threads(limit=1, cursor=env.cursor,
                                                order_by="created_at"),
         error=InvalidCursorError, message="was made for a different query"),
    Case(id="cursor-garbage",
         act=lambda env: env.store.list_threads(cursor="not a cursor!"),
         error=InvalidCursorError, message="malformed cursor 'not a cursor!'"),
    Case(id="cursor-empty", act=lambda env: env.store.list_threads(cursor=""),
         error=InvalidCursorError, message="malformed cursor ''"),
    Case(id="cursor-not-a-str",
         act=lambda env: env.store.list_threads(cursor=123),  # type: ignore[arg-type]
         error=InvalidCursorError, message="expected a str, got 123 of type int"),
    # Limits and ranges.
    Case(id="list-limit-0", act=lambda env: env.store.list_threads(limit=0),
         error=InvalidItemError, message=f"{LIMIT}, not 0"),
    Case(id="list-limit-negative", act=lambda env: env.store.list_threads(limit=-5),
         error=InvalidItemError, message=f"{LIMIT}, not -5"),
    Case(id="list-limit-1001", act=lambda env: env.store.list_threads(limit=1001),
         error=InvalidItemError, message=f"{LIMIT}, not 1001"),
    Case(id="list-limit-str",
         act=lambda env: env.store.list_threads(limit="5"),  # type: ignore[arg-type]
         error=InvalidItemError, message=f"{LIMIT}, not '5'"),
    Case(id="list-limit-float",
         act=lambda env: env.store.list_threads(limit=2.5),  # type: ignore[arg-type]
         error=InvalidItemError, message=f"{LIMIT}, not 2.5"),
    Case(id="list-limit-bool", act=lambda env: env.store.list_threads(limit=True),
         error=InvalidItemError, message=f"{LIMIT}, not True"),
    Case(id="list-order-by-unknown",
         act=lambda env: env.store.list_threads(order_by="title"),  # type: ignore[arg-type]
         error=InvalidItemError, message="order_by must be one of"),
    Case(id="list-search-not-a-str",
         act=lambda env: env.store.list_threads(search=5),  # type: ignore[arg-type]
         error=InvalidItemError, message="search must be a str or None, not 5"),
    Case(id="read-limit-0", act=lambda env: env.store.read_items(env.tid, limit=0),
         error=InvalidItemError, message=f"{READ_LIMIT}, not 0"),
    Case(id="read-limit-100001",
         act=lambda env: env.store.read_items(env.tid, limit=100_001),
         error=InvalidItemError, message=f"{READ_LIMIT}, not 100001"),
    Case(id="read-limit-str",
         act=lambda env: env.store.read_items(env.tid, limit="3"),  # type: ignore[arg-type]
         error=InvalidItemError, message=f"{READ_LIMIT}, not '3'"),
    Case(id="read-after-seq-negative",
         act=lambda env: env.store.read_items(env.tid, after_seq=-1),
         error=InvalidItemError, message="after_seq must be an int >= 0, not -1"),
    Case(id="read-after-seq-float",
         act=lambda env: env.store.read_items(env.tid, after_seq=1.0),  # type: ignore[arg-type]
         error=InvalidItemError, message="after_seq must be an int >= 0, not 1.0"),
    Case(id="flush-seq-beyond-last", act=lambda env: env.store.flush(env.tid, 4),
         error=InvalidItemError, message="seq must be an int in 0..3, not 4"),
    Case(id="flush-seq-negative", act=lambda env: env.store.flush(env.tid, -1),
         error=InvalidItemError, message="seq must be an int in 0..3, not -1"),
    Case(id="flush-seq-bool", act=lambda env: env.store.flush(env.tid, True),
         error=InvalidItemError, message="seq must be an int in 0..3, not True"),
    Case(id="flush-seq-str",
         act=lambda env: env.store.flush(env.tid, "2"),  # type: ignore[arg-type]
         error=InvalidItemError, message="seq must be an int in 0..3, not '2'"),
    # Text that cannot be encoded.
    Case(id="text-lone-surrogate", act=_append(Item.user_message("bad \ud800 text")),
         error=InvalidItemError,
         message="data['text'] is 'bad \\ud800 text', which cannot be encoded as UTF-8"),
    Case(id="key-lone-surrogate", act=_append(_note({"\udc80": 1})),
         error=InvalidItemError, message="key is '\\udc80', which cannot be encoded as UTF-8"),
    Case(id="nested-lone-surrogate", act=_append_nowait(_note({"a": ["ok", "\udfff"]})),
         error=InvalidItemError, message="data['a'][1] is '\\udfff', which cannot be encoded"),
    Case(id="create-title-lone-surrogate",
         act=lambda env: env.store.create_thread(title="\ud83d"),
         error=InvalidItemError, message="cannot be encoded as UTF-8"),
    Case(id="create-goal-lone-surrogate",
         act=lambda env: env.store.create_thread(goal="half an emoji \ud83d"),
         error=InvalidItemError, message="goal item: data['text'] is 'half an emoji \\ud83d'"),
    Case(id="update-title-lone-surrogate",
         act=lambda env: env.store.update_thread(env.tid, title="x\udcff"),
         error=InvalidItemError, message="title item: data['text'] is 'x\\udcff'"),
    Case(id="update-extra-key-lone-surrogate",
         act=lambda env: env.store.update_thread(env.tid, extra={"\ud800": 1}),
         error=InvalidItemError, message="key is '\\ud800', which cannot be encoded as UTF-8"),
    # Shape of the call.
    Case(id="append-no-items", act=_append(), error=InvalidItemError,
         message="append needs at least one item"),
    Case(id="append-nowait-no-items", act=_append_nowait(), error=InvalidItemError,
         message="append needs at least one item"),
    Case(id="append-not-an-item", act=_append(OK, {"kind": "user_message"}),
         error=InvalidItemError, message="expected threadstore.Item, got {'kind': "),
    Case(id="append-nowait-not-an-item", act=_append_nowait("hello"), error=InvalidItemError,
         message="expected threadstore.Item, got 'hello'"),
    Case(id="append-item-list-not-unpacked", act=_append([OK, OK]), error=InvalidItemError,
         message="expected threadstore.Item, got [Item("),
    Case(id="create-goal-not-a-str",
         act=lambda env: env.store.create_thread(goal=5),  # type: ignore[arg-type]
         error=InvalidItemError, message="goal must be a str, not 5"),
    Case(id="create-title-not-a-str",
         act=lambda env: env.store.create_thread(title=["t"]),  # type: ignore[arg-type]
         error=InvalidItemError, message="title must be a str, not ['t']"),
    Case(id="create-extra-not-a-mapping",
         act=lambda env: env.store.create_thread(extra=[1]),  # type: ignore[arg-type]
         error=InvalidItemError, message="extra must be a mapping, not [1]"),
    Case(id="create-extra-not-json",
         act=lambda env: env.store.create_thread(goal="g", extra={"when": object()}),
         error=InvalidItemError, message="data['extra']['when'] is <object object at"),
    Case(id="create-extra-int-key",
         act=lambda env: env.store.create_thread(goal="g", extra={1: "one"}),  # type: ignore[dict-item]
         error=InvalidItemError, message=f"data['extra'] has a key 1 of type int; {STR_KEYS}"),
    Case(id="update-nothing", act=lambda env: env.store.update_thread(env.tid),
         error=InvalidItemError, message="update_thread needs title= or extra="),
    Case(id="update-title-none",
         act=lambda env: env.store.update_thread(env.tid, title=None),  # type: ignore[arg-type]
         error=InvalidItemError, message="title must be a str, not None"),
    Case(id="update-extra-not-a-mapping",
         act=lambda env: env.store.update_thread(env.tid, extra="x=1"),  # type: ignore[arg-type]
         error=InvalidItemError, message="extra must be a mapping, not 'x=1'"),
    Case(id="update-extra-nan",
         act=lambda env: env.store.update_thread(env.tid, title="x", extra={"n": math.inf}),
         error=InvalidItemError, message=f"data['extra']['n'] is inf, {NO_NAN}"),
    # History edits (DESIGN 3.2): bad seqs, missing threads, the store's own kinds.
    Case(id="rewind-to-seq-beyond-last", act=lambda env: env.store.rewind(env.tid, 4),
         error=InvalidItemError, message="to_seq must be an int in 0..3, not 4"),
    Case(id="rewind-to-seq-negative", act=lambda env: env.store.rewind(env.tid, -1),
         error=InvalidItemError, message="to_seq must be an int in 0..3, not -1"),
    Case(id="rewind-to-seq-bool", act=lambda env: env.store.rewind(env.tid, True),
         error=InvalidItemError, message="to_seq must be an int in 0..3, not True"),
    Case(id="rewind-to-seq-str",
         act=lambda env: env.store.rewind(env.tid, "1"),  # type: ignore[arg-type]
         error=InvalidItemError, message="to_seq must be an int in 0..3, not '1'"),
    Case(id="rewind-unknown-thread", act=lambda env: env.store.rewind("nope", 0),
         error=ThreadNotFoundError, message=f"{NOT_FOUND} 'nope'"),
    Case(id="rewind-deleted-thread", act=lambda env: env.store.rewind("gone", 0),
         error=ThreadNotFoundError, message=f"{NOT_FOUND} 'gone'"),
    Case(id="fork-at-seq-beyond-last", act=lambda env: env.store.fork(env.tid, at_seq=4),
         error=InvalidItemError, message="at_seq must be an int in 0..3, not 4"),
    Case(id="fork-at-seq-float",
         act=lambda env: env.store.fork(env.tid, at_seq=1.0),  # type: ignore[arg-type]
         error=InvalidItemError, message="at_seq must be an int in 0..3, not 1.0"),
    Case(id="fork-unknown-thread", act=lambda env: env.store.fork("nope"),
         error=ThreadNotFoundError, message=f"{NOT_FOUND} 'nope'"),
    Case(id="fork-deleted-thread", act=lambda env: env.store.fork("gone"),
         error=ThreadNotFoundError, message=f"{NOT_FOUND} 'gone'"),
    Case(id="fork-thread-id-taken",
         act=lambda env: env.store.fork(env.tid, thread_id="listed-1"),
         error=ThreadExistsError, message="'listed-1'"),
    Case(id="fork-thread-id-whitespace",
         act=lambda env: env.store.fork(env.tid, thread_id=" b"),
         error=InvalidItemError, message="has whitespace at an end"),
    Case(id="fork-title-not-a-str",
         act=lambda env: env.store.fork(env.tid, title=5),  # type: ignore[arg-type]
         error=InvalidItemError, message="title must be a str, not 5"),
    Case(id="read-context-deleted-thread", act=lambda env: env.store.read_context("gone"),
         error=ThreadNotFoundError, message=f"{NOT_FOUND} 'gone'"),
    Case(id="read-context-limit-0", act=lambda env: env.store.read_context(env.tid, limit=0),
         error=InvalidItemError, message="limit must be None or an int in 1.."),
    Case(id="append-rewind-kind", act=_append(Item(kind="rewind", data={"to_seq": 0})),
         error=InvalidItemError, message="'rewind' items are the store's own"),
    Case(id="append-nowait-fork-kind",
         act=_append_nowait(Item(kind="fork", data={"from": "t", "at_seq": 0})),
         error=InvalidItemError, message="'fork' items are the store's own"),
    Case(id="compaction-without-summary", act=_append(Item(kind="compaction", data={})),
         error=InvalidItemError, message="compaction item: data['summary'] is missing"),
    Case(id="rewind-after-close", act=lambda env: env.store.rewind(env.tid, 0),
         error=StoreClosedError, message=CLOSED, stage="closed"),
    Case(id="fork-after-close", act=lambda env: env.store.fork(env.tid),
         error=StoreClosedError, message=CLOSED, stage="closed"),
    # Namespaces (DESIGN 3.1): bad values; another tenant's thread is a missing one.
    Case(id="create-namespace-whitespace",
         act=lambda env: env.store.create_thread(goal="g", namespace=" acme"),
         error=InvalidItemError, message="namespace ' acme' must be ''"),
    Case(id="create-namespace-not-a-str",
         act=lambda env: env.store.create_thread(goal="g", namespace=7),  # type: ignore[arg-type]
         error=InvalidItemError, message="namespace must be a str, got 7"),
    Case(id="list-namespace-too-long",
         act=lambda env: env.store.list_threads(namespace="n" * 129),
         error=InvalidItemError, message="must be '' or 1-128 printable characters"),
    Case(id="view-append-other-namespace",
         act=lambda env: env.store.scoped("other").append(env.tid, OK),
         error=ThreadNotFoundError, message=f"{NOT_FOUND} 't'"),
    Case(id="view-rewind-other-namespace",
         act=lambda env: env.store.scoped("other").rewind(env.tid, 0),
         error=ThreadNotFoundError, message=f"{NOT_FOUND} 't'"),
    Case(id="view-fork-other-namespace",
         act=lambda env: env.store.scoped("other").fork(env.tid),
         error=ThreadNotFoundError, message=f"{NOT_FOUND} 't'"),
    Case(id="view-delete-other-namespace",
         act=lambda env: env.store.scoped("other").delete_thread(env.tid),
         error=ThreadNotFoundError, message=f"{NOT_FOUND} 't'"),
    Case(id="view-read-context-other-namespace",
         act=lambda env: env.store.scoped("other").read_context(env.tid),
         error=ThreadNotFoundError, message=f"{NOT_FOUND} 't'"),
]  # fmt: skip


# -- files that are not a usable store ------------------------------------------------------


async def _text_file(path: Path) -> None:
    await trio.Path(path).write_text("these are my notes, not a database\n" * 200)


async def _random_bytes(path: Path) -> None:
    await trio.Path(path).write_bytes(random.Random(6).randbytes(8192))


async def _empty_file(path: Path) -> None:
    await trio.Path(path).write_bytes(b"")


def _make_foreign_database(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
            conn.executemany("INSERT INTO invoices (total) VALUES (?)", [(9.5,), (12.0,)])
    finally:
        conn.close()


async def _foreign_database(path: Path) -> None:
    await trio.to_thread.run_sync(_make_foreign_database, path)


def _bump_schema_version(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    finally:
        conn.close()


async def _newer_schema(path: Path) -> None:
    """A real store with data, as a future threadstore (a newer schema version) would leave it."""
    async with open_store(path) as store:
        await store.create_thread(thread_id="t", goal="written by the future")
    await trio.to_thread.run_sync(_bump_schema_version, path)


async def _open(env: Env, *, read_only: bool) -> None:
    async with open_store(env.path, read_only=read_only):
        pytest.fail(f"opened {env.path} (read_only={read_only})")


NOT_A_STORE = f"{PATH} is not a threadstore database"
FILES: list[tuple[str, Callable[[Path], Awaitable[None]], str, bool]] = [
    ("text-file", _text_file, f"{NOT_A_STORE}: file is not a database", False),
    ("text-file", _text_file, f"{NOT_A_STORE}: file is not a database", True),
    ("random-bytes", _random_bytes, f"{NOT_A_STORE}: file is not a database", False),
    ("random-bytes", _random_bytes, f"{NOT_A_STORE}: file is not a database", True),
    ("foreign-sqlite-database", _foreign_database, f"{NOT_A_STORE} (application_id 0x0", False),
    ("foreign-sqlite-database", _foreign_database, f"{NOT_A_STORE} (application_id 0x0", True),
    (
        "newer-schema",
        _newer_schema,
        f"was created by a newer threadstore (schema {SCHEMA_VERSION + 1} > {SCHEMA_VERSION})",
        False,
    ),
    (
        "newer-schema",
        _newer_schema,
        f"was created by a newer threadstore (schema {SCHEMA_VERSION + 1} > {SCHEMA_VERSION})",
        True,
    ),
    ("empty-file", _empty_file, f"{PATH} is empty: no threadstore schema", True),
]

FILE_CASES = [
    Case(
        id=f"file-{name}-{'read-only' if read_only else 'writer'}",
        act=partial(_open, read_only=read_only),
        error=StoreFormatError,
        message=message,
        stage="file",
        make=make,
    )
    for name, make, message, read_only in FILES
]


# -- the populated store and its snapshots --------------------------------------------------

_foreign_cursors: list[str] = []


async def _foreign_cursor(path: Path) -> str:
    """A valid cursor of another store (made once per test session)."""
    if not _foreign_cursors:
        async with open_store(path) as other:
            for n in range(2):
                await other.create_thread(thread_id=f"listed-{n}", title=f"listed {n}")
            cursor = (await other.list_threads(limit=1)).next_cursor
        assert cursor is not None
        _foreign_cursors.append(cursor)
    await trio.lowlevel.checkpoint()
    return _foreign_cursors[0]


async def _populate(store: Store, path: Path | str, foreign_cursor: str) -> Env:
    tid = (await store.create_thread(thread_id="t", goal="the goal")).id
    await store.append(tid, Item.user_message("hello"), Item.assistant_message("hi"))
    for n in range(3):
        await store.create_thread(thread_id=f"listed-{n}", title=f"listed {n}")
    await store.create_thread(thread_id="gone", goal="deleted")
    await store.append(
        "gone", Item.user_message("accepted before the delete"), Item.error("also gone")
    )
    await store.delete_thread("gone")
    with trio.fail_after(GUARD_S):
        await store.flush_all()
    cursor = (await store.list_threads(limit=1)).next_cursor
    assert cursor is not None
    return Env(path=path, opened=store, cursor=cursor, foreign_cursor=foreign_cursor)


Visible = tuple[
    tuple[ThreadMeta, ...], tuple[ThreadMeta, ...], dict[str, list[StoredItem]], ThreadMeta
]


async def _visible(store: Store) -> Visible:
    """What a user can see: both listings, every thread's items, ``t``'s metadata."""
    active = (await store.list_threads(limit=1000, include_empty=True)).threads
    archived = (await store.list_threads(limit=1000, include_empty=True, archived=True)).threads
    items = {meta.id: await store.read_items(meta.id) for meta in active + archived}
    return active, archived, items, await store.get_thread("t")


def _read_bytes(path: Path) -> tuple[bytes | None, bytes]:
    """The database file's bytes (None: missing) and its -wal's (missing: empty)."""
    wal = path.with_name(path.name + "-wal")
    return (
        path.read_bytes() if path.exists() else None,
        wal.read_bytes() if wal.exists() else b"",
    )


Dump = tuple[tuple[int, int], dict[str, list[tuple[Any, ...]]]]


def _read_dump(path: Path) -> Dump:
    """Header pragmas and every row of every table, through a read-only connection."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (app_id,) = conn.execute("PRAGMA application_id").fetchone()
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        rows = {t: sorted(conn.execute(f'SELECT * FROM "{t}"'), key=repr) for t in tables}
    finally:
        conn.close()
    return (app_id, version), rows


async def _raw(path: Path) -> tuple[bytes | None, bytes]:
    return await trio.to_thread.run_sync(_read_bytes, path)


async def _dump(path: Path) -> Dump:
    return await trio.to_thread.run_sync(_read_dump, path)


async def _expect_error(case: Case, env: Env) -> None:
    message = re.escape(case.message).replace(re.escape(PATH), re.escape(repr(str(env.path))))
    with trio.fail_after(GUARD_S), pytest.raises(case.error, match=message) as info:
        await case.act(env)
    assert len(str(info.value)) <= 300 + len(str(env.path))  # quoted values are shortened


@pytest.mark.parametrize("case", FILE_CASES, ids=[case.id for case in FILE_CASES])
async def test_bad_store_file_gets_a_clear_error_and_changes_nothing(
    tmp_path: Path, case: Case
) -> None:
    path = tmp_path / "store.db"
    assert case.make is not None
    await case.make(path)
    before = await _raw(path)
    await _expect_error(case, Env(path=path))
    assert await _raw(path) == before


@pytest.mark.parametrize("case", API_CASES, ids=[case.id for case in API_CASES])
async def test_bad_input_gets_a_clear_error_and_changes_nothing(
    tmp_path: Path, store_target: str, engine: str, case: Case
) -> None:
    """On every engine; with a store file, also byte for byte (and seen by a reader)."""
    path = Path(store_target)
    on_file = engine == "sqlite"
    foreign_cursor = await _foreign_cursor(tmp_path / "other.db")
    async with open_store(
        store_target, max_item_bytes=MAX_ITEM_BYTES, retry_interval=None
    ) as store:
        env = await _populate(store, path if on_file else store_target, foreign_cursor)
        visible = await _visible(store)
        assert {tid: len(items) for tid, items in visible[2].items()} == {
            "t": 3, "listed-0": 1, "listed-1": 1, "listed-2": 1,
        }  # fmt: skip
        if on_file:
            dump = await _dump(path)
            raw = await _raw(path)
        stats = store.statistics()
        if case.stage == "open":
            await _expect_error(case, env)
            with trio.fail_after(GUARD_S):
                await store.flush_all()  # let anything the call queued settle
            if on_file:
                assert await _raw(path) == raw, "the rejected call wrote to the database"
            assert await _visible(store) == visible
            after = store.statistics()
            assert (after.appends, after.items_appended) == (stats.appends, stats.items_appended)
    if case.stage == "closed":
        if on_file:
            raw = await _raw(path)
        await _expect_error(case, env)
        if on_file:
            assert await _raw(path) == raw, "the rejected call wrote to the database"
    if not on_file:
        return
    assert await _dump(path) == dump

    async with open_store(path, read_only=True) as reader:
        assert await _visible(reader) == visible
        with pytest.raises(ThreadNotFoundError):
            await reader.read_items("gone")


# -- text that can be encoded is stored verbatim ---------------------------------------------

VERBATIM = [
    'it\'s "quoted" `three` ways',
    "Robert'); DROP TABLE items;--",
    "1; DELETE FROM threads WHERE 1=1",
    "nul\x00inside\x00",
    "emoji 🧵🎉 and a family 👩‍👩‍👧 and a flag 🇳🇴",
    "back\\slash \\n not a newline",
    "newline\nand\ttab\rand\x1bescape",
    "100% _wildcards_ of LIKE",
    "right-to-left \u202e mark, zero\u200bwidth, line\u2028separator",
    "ünïcödé \u2014 \u2018typographic\u2019 \u201cquotes\u201d",
    "",
    " leading and trailing spaces ",
    '{"json": ["in", "a", "string"]}',
    "x" * 5000,
]


async def test_text_is_stored_verbatim(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    odd_id = 'Robert\'); DROP TABLE threads;-- "😀"'
    data = {text[:40] or "empty": text for text in VERBATIM[:-1]}
    appended = [Item.user_message(text) for text in VERBATIM]
    appended.append(Item.tool_call("sql", {"query": VERBATIM[1], "nested": [VERBATIM[3]]}, "c"))
    appended.append(Item(kind="note", data=data))
    async with open_store(path) as store:
        meta = await store.create_thread(thread_id=odd_id, goal=VERBATIM[4], title=VERBATIM[0])
        assert (meta.id, meta.goal, meta.title) == (odd_id, VERBATIM[4], VERBATIM[0])
        await store.append_and_flush(odd_id, *appended)
        updated = await store.update_thread(
            odd_id, title=VERBATIM[3], extra={VERBATIM[1]: VERBATIM[2]}
        )
        assert updated.title == VERBATIM[3]
        assert dict(updated.extra) == {VERBATIM[1]: VERBATIM[2]}
        meta = await store.get_thread(odd_id)
        assert meta.preview == VERBATIM[0]  # the first user message
        # Searching with quotes, SQL and LIKE wildcards finds the text literally.
        for search, found in [
            ('"QUOTED"', [odd_id]),  # in the preview
            ("👩‍👩‍👧 and", [odd_id]),  # in the goal
            ("DROP TABLE threads", []),  # only in the id, which is not searched
            ("%", []),  # a LIKE wildcard matches itself only
            ("_", []),
        ]:
            page = await store.list_threads(search=search)
            assert [m.id for m in page.threads] == found, search

    expected = [(item.kind, dict(item.data)) for item in [Item.goal(VERBATIM[4]),
                                                            Item.title(VERBATIM[0]),
                                                            *appended]]  # fmt: skip
    async with open_store(path, read_only=True) as reader:
        items = await reader.read_items(odd_id)
        assert [(i.kind, dict(i.data)) for i in items][: len(expected)] == expected
        assert [i.kind for i in items][len(expected) :] == ["title", "metadata"]
        assert items[-2].data["text"] == VERBATIM[3]
        assert (await reader.get_thread(odd_id)).title == VERBATIM[3]

    # And in the file itself: the JSON text decodes to exactly what was appended.
    _, rows = await _dump(path)
    stored = sorted(rows["items"], key=lambda row: row[1])
    assert {row[0] for row in stored} == {odd_id}
    decoded = [(row[3], json.loads(row[4])) for row in stored]
    assert decoded[: len(expected)] == expected
