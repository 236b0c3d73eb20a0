"""A few reader connections, each on its own reader thread, driven from trio.

The SQLite engine's reader pool (:mod:`threadstore.sqlite._readers`) over PostgreSQL
connections: up to ``size`` daemon threads started lazily, each with one connection opened
on first use (read-only, autocommit: every statement sees one snapshot, and the reads of
:mod:`._sql` are single statements where their parts must agree), one FIFO queue of reads,
results handed back with ``run_sync_soon``. A read that finds its connection lost (the
server restarted, an operator ended the session) is run once more on a new connection:
reads change nothing, so that is safe.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar, final

import outcome
import psycopg
import trio

from .._errors import StoreClosedError

__all__ = ["ReaderPool"]

T = TypeVar("T")
Connection = psycopg.Connection[Any]

_Read = tuple[Callable[[Connection], Any], trio.lowlevel.Task]


@final
class ReaderPool:
    """Runs read functions on reader connections in dedicated threads.

    ``fn`` must materialise its whole result before it returns. Construct anywhere; call
    :meth:`run` and :meth:`aclose` inside one ``trio.run``.
    """

    def __init__(self, target: str, connect: Callable[[], Connection], size: int) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, not {size!r}")
        self.target = target
        self.size = size
        self._connect = connect
        self._reads: queue.SimpleQueue[_Read | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._busy = 0
        self._running_threads = 0
        self._all_ended = trio.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._closed = False

    async def run(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` on a reader thread; return its result or raise its error.

        Waits its turn behind earlier reads when all threads are busy. Never abandoned: a
        caller cancelled once ``fn`` is queued still waits for it (a short read), and the
        cancellation lands at its next checkpoint. Raises :class:`StoreClosedError` after
        :meth:`aclose`.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            raise StoreClosedError(f"store {self.target!r} is closed: its readers are closed")
        if self._token is None:
            self._token = trio.lowlevel.current_trio_token()
        task = trio.lowlevel.current_task()
        if self._busy >= len(self._threads) and len(self._threads) < self.size:
            self._start_thread()
        self._busy += 1
        self._reads.put((fn, task))
        try:
            result: T = await trio.lowlevel.wait_task_rescheduled(_never_abort)
        finally:
            self._busy -= 1
        return result

    def _start_thread(self) -> None:
        assert self._token is not None
        thread = threading.Thread(
            target=self._main,
            args=(self._token,),
            name=f"threadstore-pg-reader-{len(self._threads)}",
            daemon=True,
        )
        thread.start()
        self._threads.append(thread)
        self._running_threads += 1

    def _main(self, token: trio.lowlevel.TrioToken) -> None:
        conn: Connection | None = None
        try:
            while (read := self._reads.get()) is not None:
                fn, task = read
                result: outcome.Outcome[Any]
                try:
                    conn = self._connected(conn)
                    try:
                        result = outcome.Value(fn(conn))
                    except psycopg.OperationalError:
                        if not conn.broken:
                            raise
                        conn = self._connected(conn)  # lost: once more on a new one
                        result = outcome.Value(fn(conn))
                except BaseException as exc:  # delivered to the caller, which re-raises it
                    result = outcome.Error(exc)
                try:
                    token.run_sync_soon(trio.lowlevel.reschedule, task, result)
                except trio.RunFinishedError:  # pragma: no cover - the trio run is over
                    return
        finally:
            if conn is not None:
                conn.close()
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._thread_ended)

    def _connected(self, conn: Connection | None) -> Connection:
        """``conn`` if it is usable, else a new connection (the old one closed)."""
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if conn is not None:
            conn.close()
        return self._connect()

    def _thread_ended(self) -> None:
        self._running_threads -= 1
        if self._running_threads == 0:
            self._all_ended.set()

    async def aclose(self) -> None:
        """Refuse new reads, let queued ones finish, end the threads and close their
        connections. Shielded; idempotent."""
        await trio.lowlevel.cancel_shielded_checkpoint()
        if not self._closed:
            self._closed = True
            for _ in self._threads:
                self._reads.put(None)
        if self._threads:
            with trio.CancelScope(shield=True):
                await self._all_ended.wait()

    async def __aenter__(self) -> ReaderPool:
        await trio.lowlevel.checkpoint()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _never_abort(_: Any) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED
