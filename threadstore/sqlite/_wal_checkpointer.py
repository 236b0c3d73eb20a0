"""WAL checkpoints on a thread of their own, so no commit waits for one.

SQLite's automatic checkpoint runs inside the commit that takes the WAL past 1000 pages:
that commit copies the WAL into the database file and syncs both, disk work that whichever
appends or creations share that transaction wait for (it shows in the tail of S3's
create -> listed). This thread checkpoints instead, with a connection of its own,
while the writer goes on committing (a ``PASSIVE`` checkpoint takes no lock a writer or
reader needs); the writer keeps the automatic checkpoint only as a backstop for a WAL that
a ceaseless write load never lets this thread catch up with
(:attr:`SqliteConfig.backstop_pages <threadstore.sqlite.SqliteConfig.backstop_pages>`).

When: ``interval`` seconds (``SqliteConfig.checkpoint_interval``) after the first commit
since the last checkpoint began (so at most one checkpoint per interval, however many
commits), and at once when ``eager_bytes`` (``SqliteConfig.checkpoint_eager_bytes``) of
item data were committed since the last one (a bound on the WAL's
growth under a heavy write load). A failed checkpoint loses nothing (the WAL keeps every
committed transaction): it is logged as ``checkpoint.failed`` and tried again after the
next interval.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from typing import final

import workers

from . import _sql
from ._config import DEFAULTS

__all__ = ["WalCheckpointer"]

log = workers.get_logger(__name__)


@final
class WalCheckpointer:
    """Runs ``PASSIVE`` WAL checkpoints on a daemon thread when commits have happened.

    Thread-safe. :meth:`committed` is called by the writer thread after each commit and
    never blocks on SQLite. ``checkpoints`` and ``failures`` count attempts that succeeded
    and failed (read without a lock: a snapshot for statistics).
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        *,
        interval: float = DEFAULTS.checkpoint_interval,
        eager_bytes: int = DEFAULTS.checkpoint_eager_bytes,
    ) -> None:
        self._connect = connect
        self._interval = interval
        self._eager_bytes = eager_bytes
        self._cond = threading.Condition()
        self._dirty = False  # commits since the last checkpoint began
        self._dirty_since = 0.0  # when the first of them committed
        self._bytes = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self.checkpoints = 0
        self.failures = 0

    def start(self) -> None:
        """Open the checkpoint connection (raises what opening raises), start the thread.

        Sync: blocks on SQLite, so call it from the writer thread.
        """
        self._conn = self._connect()
        self._thread = threading.Thread(
            target=self._main, name="threadstore-checkpointer", daemon=True
        )
        try:
            self._thread.start()
        except BaseException:
            self._conn.close()
            self._thread = None
            raise

    def committed(self, nbytes: int) -> None:
        """A transaction committed ``nbytes`` of item data. Writer thread; never blocks."""
        with self._cond:
            if not self._dirty:
                self._dirty = True
                self._dirty_since = time.monotonic()
                self._cond.notify()  # the thread starts its interval
            self._bytes += nbytes
            if self._bytes >= self._eager_bytes:
                self._cond.notify()

    def request(self) -> None:
        """Checkpoint as soon as the thread is free, whatever the interval says."""
        with self._cond:
            self._dirty = True
            self._bytes = max(self._bytes, self._eager_bytes)
            self._cond.notify()

    def close(self) -> None:
        """Stop the thread (after the checkpoint it is running, if any) and close its
        connection. Sync, blocks; idempotent."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def wait_for(self, count: int, timeout: float) -> bool:
        """Block until ``checkpoints + failures >= count``, at most ``timeout`` seconds;
        whether it happened. Sync (tests and tools run it in a thread)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.checkpoints + self.failures >= count, timeout)

    def _main(self) -> None:
        conn = self._conn
        assert conn is not None
        try:
            while True:
                with self._cond:
                    while not self._stopping:
                        if self._bytes >= self._eager_bytes:
                            break
                        if not self._dirty:
                            self._cond.wait()
                            continue
                        wait = self._dirty_since + self._interval - time.monotonic()
                        if wait <= 0:
                            break
                        self._cond.wait(wait)
                    if self._stopping:
                        return
                    self._dirty = False
                    self._bytes = 0
                self._checkpoint(conn)
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            busy, frames, copied = _sql.checkpoint(conn)
        except sqlite3.Error as exc:
            with self._cond:
                self.failures += 1
                if not self._dirty:  # try again after the interval
                    self._dirty = True
                    self._dirty_since = time.monotonic()
                self._cond.notify_all()
            log.warning("checkpoint.failed", error=repr(exc))
            return
        with self._cond:
            self.checkpoints += 1
            self._cond.notify_all()
        log.debug("checkpoint.done", busy=bool(busy), wal_frames=frames, copied=copied)
