"""A small pool of read-only SQLite connections driven from trio.

Reads run on worker threads (``trio.to_thread.run_sync``), never on the trio thread, each on
a connection reused from the pool: at most ``size`` connections are ever opened, lazily, and
at most ``size`` reads run at once (a :class:`trio.CapacityLimiter`); further reads wait their
turn in FIFO order.

Connections are opened with :func:`threadstore._sqlite.connect` and ``read_only=True``:
URI ``file:...?mode=ro`` plus ``PRAGMA query_only=1``. Such a connection never creates or
writes the database, and it reads a WAL database correctly whether the writer is in this
process or another one, including a file the writer created moments before (tested). The same
pool therefore serves both a writable store (beside its writer) and a ``read_only=True`` store.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Final, TypeVar, final

import trio

from threadstore import _sqlite
from threadstore._errors import StoreClosedError

__all__ = ["ReaderPool"]

T = TypeVar("T")

_DEFAULT_SIZE: Final = 2


@final
class ReaderPool:
    """Runs read functions on pooled read-only connections in worker threads.

    Every :meth:`run` is one read transaction (``BEGIN DEFERRED`` … ``COMMIT``), so all the
    statements ``fn`` issues see one snapshot, and no transaction outlives the call: the whole
    result must be materialised by ``fn`` before it returns.
    """

    def __init__(self, path: str, size: int = _DEFAULT_SIZE) -> None:
        """Prepare a pool for the store file at ``path``; no connection is opened yet."""
        if size < 1:
            raise ValueError(f"size must be >= 1, not {size!r}")
        self.path = path
        self.size = size
        self._limiter = trio.CapacityLimiter(size)
        self._idle: list[sqlite3.Connection] = []
        self._opened = 0
        self._closed = False

    @property
    def connections(self) -> int:
        """How many connections are open (at most ``size``)."""
        return self._opened

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` inside one read transaction on a worker thread; return its result.

        Waits for a free connection first. The worker thread is never abandoned: if the caller
        is cancelled while ``fn`` runs, cancellation takes effect once ``fn`` returns.
        Raises :class:`StoreClosedError` after :meth:`aclose`, :class:`StoreFormatError`
        for errors that show a damaged file; other exceptions from ``fn`` (and ``sqlite3``
        errors) propagate unchanged.
        """
        if self._closed:
            await trio.lowlevel.checkpoint()
            raise StoreClosedError(f"store {self.path!r} is closed: its readers are closed")
        async with self._limiter:
            if self._closed:
                raise StoreClosedError(f"store {self.path!r} is closed: its readers are closed")
            if self._idle:
                conn = self._idle.pop()
            else:
                conn = await trio.to_thread.run_sync(self._open, abandon_on_cancel=False)
                self._opened += 1
            try:
                return await trio.to_thread.run_sync(_read, conn, fn, abandon_on_cancel=False)
            except (sqlite3.DatabaseError, OverflowError, UnicodeDecodeError, ValueError) as exc:
                damaged = _sqlite.damage_error(self.path, exc)
                if damaged is None:
                    raise
                raise damaged from exc
            finally:
                self._idle.append(conn)

    def _open(self) -> sqlite3.Connection:
        return _sqlite.connect(self.path, durability="normal", read_only=True)

    async def aclose(self) -> None:
        """Refuse new reads, wait for running ones, then close every connection. Idempotent.

        Runs shielded from cancellation (reads are short and never abandoned), so connections
        are always closed; a caller that needs a deadline puts one around the store's shutdown.
        """
        self._closed = True
        await trio.lowlevel.cancel_shielded_checkpoint()  # always a schedule point
        with trio.CancelScope(shield=True):
            tokens = [object() for _ in range(self.size)]
            for token in tokens:
                await self._limiter.acquire_on_behalf_of(token)
            try:
                idle, self._idle = self._idle, []
                if idle:
                    await trio.to_thread.run_sync(_close_all, idle, abandon_on_cancel=False)
                self._opened -= len(idle)
            finally:
                for token in tokens:
                    self._limiter.release_on_behalf_of(token)

    async def __aenter__(self) -> ReaderPool:
        await trio.lowlevel.checkpoint()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


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


def _close_all(conns: list[sqlite3.Connection]) -> None:
    """Close connections. Sync; reader thread only."""
    for conn in conns:
        conn.close()
