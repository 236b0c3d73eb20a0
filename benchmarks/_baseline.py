"""The bare reference S2 is compared with: a trio + sqlite3 group-commit loop, nothing else.

One writer thread drains a queue into one ``BEGIN IMMEDIATE; executemany; COMMIT`` per
batch; each trio task awaits its own item's commit through one shared ``trio.Event`` per
batch. Same WAL file settings, same ``synchronous`` level, a rowid table with a unique
``(thread, seq)`` index, the same JSON payloads and the same kind of thread ids (UUIDv7) as
the store. No metadata, no validation beyond ``json.dumps``: an upper bound for a store
built on the same pieces.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Final

import attrs
import trio

from threadstore import Item

from ._stats import CpuSplit, cpu_clock

__all__ = ["BareBurst", "GroupCommitLoop", "bare_burst", "group_commit_loop"]

Row = tuple[str, int, int, str, str]

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, thread_id TEXT NOT NULL, "
    "seq INTEGER NOT NULL, created_at INTEGER NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL)",
    "CREATE UNIQUE INDEX IF NOT EXISTS items_thread_seq ON items (thread_id, seq)",
)
_INSERT: Final = "INSERT INTO items (thread_id, seq, created_at, kind, data) VALUES (?, ?, ?, ?, ?)"


class _Batch:
    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: BaseException | None = None


def _connect(path: str, durability: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    conn.execute("PRAGMA journal_mode = WAL").fetchone()
    conn.execute(f"PRAGMA synchronous = {durability.upper()}")
    for statement in _SCHEMA:
        conn.execute(statement)
    return conn


class GroupCommitLoop:
    """The writer thread and its queue. ``submit`` is sync, on the trio thread."""

    def __init__(self, conn: sqlite3.Connection, token: trio.lowlevel.TrioToken) -> None:
        self._conn = conn
        self._token = token
        self._cond = threading.Condition()
        self._rows: list[Row] = []
        self._batch: _Batch | None = None
        self._stopping = False
        self.commits = 0
        self._thread = threading.Thread(target=self._main, name="bare-writer", daemon=True)

    def submit(self, row: Row) -> _Batch:
        with self._cond:
            if self._batch is None:
                self._batch = _Batch()
                self._cond.notify()
            self._rows.append(row)
            return self._batch

    def _main(self) -> None:
        conn = self._conn
        try:
            while True:
                with self._cond:
                    while not self._rows and not self._stopping:
                        self._cond.wait()
                    if not self._rows:
                        return
                    rows, self._rows = self._rows, []
                    batch, self._batch = self._batch, None
                assert batch is not None
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.executemany(_INSERT, rows)
                    conn.execute("COMMIT")
                    self.commits += 1
                except Exception as exc:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    batch.error = exc
                self._token.run_sync_soon(batch.done.set)
        finally:
            conn.close()

    def _stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join()


@asynccontextmanager
async def group_commit_loop(path: str, durability: str) -> AsyncIterator[GroupCommitLoop]:
    conn = await trio.to_thread.run_sync(_connect, path, durability)
    loop = GroupCommitLoop(conn, trio.lowlevel.current_trio_token())
    loop._thread.start()
    try:
        yield loop
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(loop._stop)


@attrs.frozen(kw_only=True)
class BareBurst:
    items: int
    seconds: float
    commits: int
    latencies_ms: tuple[float, ...]
    #: CPU from the start until every appending task ended (see :class:`CpuSplit`).
    cpu: CpuSplit

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds


async def bare_burst(
    path: str, durability: str, thread_ids: Sequence[str], items: Sequence[Sequence[Item]]
) -> BareBurst:
    """One task per thread appending its items one await at a time; time to the last commit."""
    latencies: list[float] = []
    ends: list[float] = []

    async with group_commit_loop(path, durability) as loop:

        async def task(thread_id: str, mine: Sequence[Item]) -> None:
            for seq, item in enumerate(mine, 1):
                begin = time.perf_counter()
                text = json.dumps(dict(item.data), ensure_ascii=False, separators=(",", ":"))
                batch = loop.submit((thread_id, seq, time.time_ns() // 1000, item.kind, text))
                await batch.done.wait()
                if batch.error is not None:
                    raise batch.error
                latencies.append((time.perf_counter() - begin) * 1000)
            ends.append(time.perf_counter())
            await trio.lowlevel.checkpoint()

        start = time.perf_counter()
        cpu = cpu_clock()
        async with trio.open_nursery() as nursery:
            for thread_id, mine in zip(thread_ids, items, strict=True):
                nursery.start_soon(task, thread_id, mine)
        used = cpu()
        seconds = max(ends) - start
    return BareBurst(
        items=len(latencies),
        seconds=seconds,
        commits=loop.commits,
        latencies_ms=tuple(latencies),
        cpu=used,
    )
