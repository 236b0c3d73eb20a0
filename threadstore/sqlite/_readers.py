"""A small set of read-only SQLite connections, each on its own reader thread, driven from trio.

Reads never run on the trio thread. The pool owns up to ``size`` daemon threads, started
lazily (a new one only when every started thread is busy), each with one connection opened
on first use and kept until :meth:`ReaderPool.aclose`. Reads are queued in one FIFO queue
that any free thread takes from, so at most ``size`` run at once and the rest wait their
turn in order. A finished read is handed back to its task with ``run_sync_soon``, the way
the writer delivers commits: no ``trio.to_thread`` machinery (thread cache, capacity
limiter, context copy) on the path, which is most of a read at idle.

Connections are opened with :func:`threadstore.sqlite._sql.connect` and ``read_only=True``:
URI ``file:...?mode=ro`` plus ``PRAGMA query_only=1``. Such a connection never creates or
writes the database, and it reads a WAL database correctly whether the writer is in this
process or another one, including a file the writer created moments before (tested). The same
pool therefore serves both a writable store (beside its writer) and a ``read_only=True`` store.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar, final

import outcome
import trio

from .._errors import StoreClosedError
from . import _sql
from ._config import DEFAULTS

__all__ = ["ReaderPool"]

T = TypeVar("T")


#: A queued read: the function, and the task its outcome is handed back to.
_Read = tuple[Callable[[sqlite3.Connection], Any], trio.lowlevel.Task]


@final
class ReaderPool:
    """Runs read functions on read-only connections in dedicated reader threads.

    Every :meth:`run` is one read transaction (``BEGIN DEFERRED`` … ``COMMIT``), so all the
    statements ``fn`` issues see one snapshot, and no transaction outlives the call: the whole
    result must be materialised by ``fn`` before it returns. Construct anywhere; call
    :meth:`run` and :meth:`aclose` inside one ``trio.run``. A pool must be closed
    (:meth:`aclose`, or ``async with``) to end its threads.
    """

    def __init__(
        self,
        path: str,
        size: int = DEFAULTS.reader_connections,
        busy_timeout_ms: int = DEFAULTS.busy_timeout_ms,
    ) -> None:
        """Prepare a pool for the store file at ``path``; no thread or connection yet."""
        if size < 1:
            raise ValueError(f"size must be >= 1, not {size!r}")
        self.path = path
        self.size = size
        self._busy_timeout_ms = busy_timeout_ms
        self._reads: queue.SimpleQueue[_Read | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._busy = 0
        self._open_count = 0
        self._count_lock = threading.Lock()
        self._running_threads = 0
        self._all_ended = trio.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._closed = False

    @property
    def connections(self) -> int:
        """How many connections are open (at most ``size``)."""
        return self._open_count

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` inside one read transaction on a reader thread; return its result.

        Waits its turn behind earlier reads when all ``size`` threads are busy. A read is
        never abandoned: a caller cancelled once ``fn`` is queued still gets its result, and
        the cancellation lands at the caller's next checkpoint (like
        ``trio.to_thread.run_sync(..., abandon_on_cancel=False)``); a caller already
        cancelled queues nothing.
        Raises :class:`StoreClosedError` after :meth:`aclose`, :class:`StoreFormatError`
        for errors that show a damaged file; other exceptions from ``fn`` (and ``sqlite3``
        errors) propagate unchanged.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            raise StoreClosedError(f"store {self.path!r} is closed: its readers are closed")
        if self._token is None:
            self._token = trio.lowlevel.current_trio_token()
        task = trio.lowlevel.current_task()
        if self._busy >= len(self._threads) and len(self._threads) < self.size:
            self._start_thread()  # every started thread is busy
        self._busy += 1
        self._reads.put((fn, task))
        try:
            # Unwraps the outcome the reader thread handed back: fn's value, or its error.
            result: T = await trio.lowlevel.wait_task_rescheduled(_never_abort)
        except (sqlite3.DatabaseError, OverflowError, UnicodeDecodeError, ValueError) as exc:
            damaged = _sql.damage_error(self.path, exc)
            if damaged is None:
                raise
            raise damaged from exc
        finally:
            self._busy -= 1
        return result

    def _start_thread(self) -> None:
        assert self._token is not None
        thread = threading.Thread(
            target=self._main,
            args=(self._token,),
            name=f"threadstore-reader-{len(self._threads)}",
            daemon=True,
        )
        thread.start()  # (if this raises, nothing was counted)
        self._threads.append(thread)
        self._running_threads += 1

    def _main(self, token: trio.lowlevel.TrioToken) -> None:
        """A reader thread: take reads until the stop marker, then close the connection."""
        conn: sqlite3.Connection | None = None
        try:
            while (read := self._reads.get()) is not None:
                fn, task = read
                try:
                    if conn is None:
                        conn = _sql.connect(
                            self.path,
                            durability="normal",
                            read_only=True,
                            busy_timeout_ms=self._busy_timeout_ms,
                        )
                        with self._count_lock:
                            self._open_count += 1
                    result: outcome.Outcome[Any] = outcome.Value(_read(conn, fn))
                except BaseException as exc:  # delivered to the caller, which re-raises it
                    result = outcome.Error(exc)
                try:
                    token.run_sync_soon(trio.lowlevel.reschedule, task, result)
                except trio.RunFinishedError:  # pragma: no cover - the trio run is already over
                    return
        finally:
            if conn is not None:
                conn.close()
                with self._count_lock:
                    self._open_count -= 1
            with contextlib.suppress(trio.RunFinishedError):  # the trio run may be over
                token.run_sync_soon(self._thread_ended)

    def _thread_ended(self) -> None:
        self._running_threads -= 1
        if self._running_threads == 0:
            self._all_ended.set()

    async def aclose(self) -> None:
        """Refuse new reads, let queued ones finish, then end the threads and close every
        connection. Idempotent.

        Runs shielded from cancellation (reads are short and never abandoned), so connections
        are always closed; a caller that needs a deadline puts one around the store's shutdown.
        """
        await trio.lowlevel.cancel_shielded_checkpoint()  # always a schedule point
        if not self._closed:
            self._closed = True
            for _ in self._threads:
                self._reads.put(None)  # after every queued read: FIFO
        if self._threads:
            with trio.CancelScope(shield=True):
                await self._all_ended.wait()

    async def __aenter__(self) -> ReaderPool:
        await trio.lowlevel.checkpoint()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _never_abort(_: Any) -> trio.lowlevel.Abort:
    """A queued read is never abandoned: cancellation waits for its result."""
    return trio.lowlevel.Abort.FAILED


def _read(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn`` in one read transaction. Sync; reader thread only."""
    conn.execute("BEGIN DEFERRED")
    try:
        result = fn(conn)
    finally:
        # Ends the read transaction whatever happened (even if ``fn`` ended it itself).
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    return result
