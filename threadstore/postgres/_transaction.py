"""What one group transaction's jobs share, when several processes write one database.

The writer (:mod:`._writer`) runs every transaction through a :class:`Transaction`:

- **begin**: the rows of every thread the transaction's jobs write are locked in id order
  and read in one statement (``SELECT ... ORDER BY id FOR UPDATE``). Two processes'
  transactions then never wait for each other in a cycle, and the jobs find each row read
  (:meth:`Transaction.row`): a projection write costs no read of its own.
- **appends**: runs of log appends go to ``threadstore_allocate``, which places each
  thread's items after its log's end as the database has it (another process may have
  appended since) under the row lock; the seqs given are read back after the commit and
  become the appends' results (:meth:`Transaction.allocated`).
- **change numbers**: a job that changes a thread's listed state marks it
  (:meth:`Transaction.mark`) and writes ``change = -k`` (k = 1, 2, ... in this
  transaction); the transaction's last statement before COMMIT (``threadstore_stamp``)
  advances the store's clock row by the count and turns each ``-k`` into clock + k. The
  clock's row lock is held only from there to the commit, so change numbers follow commit
  order across processes; the results the jobs return are restamped after the commit.

If the answer to COMMIT is lost but the server did commit, :meth:`Transaction.read_back`
asks the server, on another connection, for the seqs and change numbers the transaction
left (by its transaction id).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import psycopg

from .._meta import ThreadMeta
from . import _sql as sql

if TYPE_CHECKING:
    from ._writer import Job, LogAppend

__all__ = ["Transaction", "restamp"]

Connection = psycopg.Connection[Any]


class Transaction:
    """The state of the writer's transaction in progress. Writer thread only."""

    def __init__(self) -> None:
        self._rows: dict[str, dict[str, object] | None] = {}
        self._marked: list[str] = []
        self._tombs: list[str] = []
        self._stamp: psycopg.Cursor[Any] | None = None
        self._allocations: list[tuple[list[LogAppend], psycopg.Cursor[Any]]] = []

    @property
    def marks(self) -> int:
        """How many changes the transaction has marked so far."""
        return len(self._marked) + len(self._tombs)

    def begin(self, conn: Connection, jobs: Sequence[Job[Any]]) -> psycopg.Cursor[Any] | None:
        """Start over for ``jobs``: lock their threads' rows in id order. The cursor of
        rows is read by :meth:`locked` (after the pipeline's next sync)."""
        self._rows.clear()
        self._marked.clear()
        self._tombs.clear()
        self._stamp = None
        self._allocations.clear()
        # (Appends' rows are locked by their allocation, not here: the row lock is paid
        # once. A deadlock that this allows with another process's transaction is
        # detected by the server and the writer runs the loser again.)
        ids = sorted({job.lock for job in jobs if job.lock is not None and not job.allocates})
        return sql.lock_threads(conn, ids) if ids else None

    def locked(self, cursor: psycopg.Cursor[Any] | None) -> None:
        """Keep the rows :meth:`begin` locked (a thread that is gone reads as None)."""
        if cursor is None:
            return
        for raw in cursor.fetchall():
            row = sql.row_of(raw)
            self._rows[str(row["id"])] = row

    def row(self, conn: Connection, thread_id: str) -> dict[str, object] | None:
        """The thread's row as this transaction has it (None: no such thread)."""
        if thread_id in self._rows:
            return self._rows[thread_id]
        row = sql.read_projection_row(conn, thread_id)
        self._rows[thread_id] = row
        return row

    def put(self, thread_id: str, row: dict[str, object] | None) -> None:
        """The thread's row as a job left it (None: deleted)."""
        self._rows[thread_id] = row

    def forget(self, thread_id: str | None) -> None:
        """Read the thread's row again when next asked (a job's savepoint rolled back)."""
        if thread_id is not None:
            self._rows.pop(thread_id, None)

    def mark(self, thread_id: str, *, tombstone: bool = False) -> int:
        """A change of the thread (or, ``tombstone``, its deletion's tombstone): the
        provisional change number ``-k`` to write."""
        (self._tombs if tombstone else self._marked).append(thread_id)
        return -self.marks

    def allocate(self, conn: Connection, jobs: list[LogAppend]) -> None:
        """Append ``jobs``' rows in one statement; their seqs are read after the commit."""
        cursor = sql.allocate(conn, [(job.thread_id, job.rows) for job in jobs])
        self._allocations.append((jobs, cursor))

    def end(self, conn: Connection) -> None:
        """The last statement before COMMIT: stamp the marked changes."""
        if self.marks:
            self._stamp = sql.stamp(conn, self.marks, self._marked, self._tombs)

    def committed(self, jobs: Iterable[Job[Any]]) -> None:
        """After the commit: the appends' seqs and the jobs' change numbers."""
        for appends, cursor in self._allocations:
            _give_seqs(appends, {str(tid): int(last) for tid, last in cursor.fetchall()})
        if self._stamp is not None:
            row = self._stamp.fetchone()
            assert row is not None
            base = int(row[0])
            for job in jobs:
                job.result = restamp(job.result, lambda change: base - change)

    def read_back(self, conn: Connection, xid: str, jobs: Sequence[Job[Any]]) -> None:
        """The transaction ``xid`` committed though its answer was lost: read what it gave
        (on ``conn``, a new connection) as :meth:`committed` would have had it."""
        low = int(xid) & 0xFFFF_FFFF  # the 32-bit xid rows carry as xmin
        for appends, _cursor in self._allocations:
            ids = sorted({job.thread_id for job in appends})
            cur = conn.execute(
                "SELECT thread_id, max(seq) FROM threadstore_items WHERE thread_id = "
                "ANY(%s::text[]) AND xmin::text::bigint = %s GROUP BY thread_id",
                (ids, low),
            )
            _give_seqs(appends, {str(tid): int(last) for tid, last in cur})
        if self.marks:
            changes = dict(
                conn.execute(
                    "SELECT id, change FROM threadstore_threads WHERE id = ANY(%s::text[]) "
                    "UNION ALL SELECT id, change FROM threadstore_tombstones "
                    "WHERE id = ANY(%s::text[])",
                    (self._marked, self._tombs),
                ).fetchall()
            )
            for job in jobs:
                job.result = restamp(
                    job.result,
                    lambda change, job=job: _current(changes, job.result, change),
                )


def _give_seqs(appends: list[LogAppend], heads: dict[str, int]) -> None:
    """Each append's last seq, from each thread's new end (the last append ends there)."""
    for job in reversed(appends):
        last = heads[job.thread_id]
        job.result = last
        heads[job.thread_id] = last - len(job.rows)


def _current(changes: dict[Any, Any], result: object, change: int) -> int:
    meta = result[0] if isinstance(result, tuple) else result
    assert isinstance(meta, ThreadMeta)
    return int(changes.get(meta.id, 0))


def restamp(result: Any, final: Any) -> Any:
    """``result`` (a job's: metadata, ``(metadata, changed)``, or anything else) with a
    provisional (negative) change number replaced by ``final(change)``."""
    if isinstance(result, ThreadMeta):
        return attrs.evolve(result, change=final(result.change)) if result.change < 0 else result
    if isinstance(result, tuple) and result and isinstance(result[0], ThreadMeta):
        return (restamp(result[0], final), *result[1:])
    return result
