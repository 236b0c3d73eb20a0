"""The single writer: one OS thread owns the write connection and group-commits jobs.

Jobs are plain sync functions of a ``sqlite3.Connection``, or :class:`LogAppend` jobs the
writer runs itself. Whatever is queued when the writer thread is free goes into one
``BEGIN IMMEDIATE … COMMIT``: consecutive log appends are inserted with one statement for
their items and one for their threads' ``last_seq``. If any job fails, the batch is redone
with a savepoint per job, so the failing job rolls back alone while the others commit. A
failed COMMIT fails every job of the batch. Results come back to trio once per transaction
(one thread hop), and wake their waiters in groups of ``Lanes.wake_group`` jobs (one
``trio.Event`` per group, not per job), one scheduler round after another. Which queued job
goes in which transaction is the write lanes' policy (:mod:`threadstore._lanes`), which the
writer thread drives under its lock.
"""

from __future__ import annotations

import collections
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import trio

import workers

from .._config import Lanes
from .._errors import StoreClosedError
from .._lanes import LaneName, WriteLanes
from . import _sql as sql
from ._config import DEFAULTS
from ._faults import Faults, Target
from ._wal_checkpointer import WalCheckpointer

__all__ = ["Batch", "Job", "LogAppend", "Writer"]

T = TypeVar("T")
log = workers.get_logger(__name__)


class Batch:
    """Jobs committed (or failed) together; ``done`` is set once their results are in."""

    __slots__ = ("done", "error", "hooked")

    def __init__(self) -> None:
        self.done = trio.Event()
        #: The COMMIT error, if the whole batch failed.
        self.error: BaseException | None = None
        #: Whether a job of the batch has a ``when_committed`` hook (the writer looks then).
        self.hooked = False


class Job(Generic[T]):
    """One unit of writer work: ``fn(conn)`` inside a savepoint of a group transaction.

    ``on_done`` runs on the trio thread after the batch commits or fails, in queue order,
    before anyone waiting on the batch wakes. ``log`` marks a job that appends log items:
    only transactions in which one succeeded count as ``Writer.log_commits``. ``target``
    names the job for fault injection (:mod:`._faults`); None is never injected.
    """

    __slots__ = (
        "batch",
        "committed_hook",
        "error",
        "fn",
        "injected",
        "log",
        "on_done",
        "result",
        "size",
        "target",
    )

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], T],
        on_done: Callable[[Job[T]], None] | None = None,
        size: int = 0,
        log: bool = False,
        target: Target | None = None,
    ) -> None:
        self.fn = fn
        self.target = target
        #: A fault injected into this job: it fails the same way if the batch is redone.
        self.injected: Exception | None = None
        self.on_done = on_done
        self.size = size
        self.log = log
        self.result: T | None = None
        self.error: BaseException | None = None
        self.batch: Batch | None = None
        self.committed_hook: Callable[[], None] | None = None

    def when_committed(self, hook: Callable[[], None]) -> None:
        """Have the writer thread call ``hook`` right after the transaction holding this job
        commits (after handing the results to trio), unless the job failed. Best effort: a
        hook set after the writer looked is not called (the completion arrives as usual)."""
        self.committed_hook = hook
        batch = self.batch
        if batch is not None:
            batch.hooked = True

    @property
    def done(self) -> bool:
        """Whether the write has committed or failed: ``error`` and ``result`` are final."""
        return self.batch is not None and self.batch.done.is_set()

    async def wait(self) -> T:
        """Block until the job's batch is done; return its result or raise its error.

        Cancelling the waiter does not cancel the job: it still commits (or fails) whole.
        """
        batch = self.batch
        assert batch is not None
        await batch.done.wait()
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]

    def run(self, conn: sqlite3.Connection) -> T:
        """The job's statements (writer thread, inside the group transaction)."""
        return self.fn(conn)


def _no_fn(conn: sqlite3.Connection) -> None:  # pragma: no cover - LogAppend overrides run()
    raise AssertionError("LogAppend jobs run through LogAppend.run")


class LogAppend(Job[None]):
    """Append ``rows`` (``(seq, created_at_us, kind, data_json)``, dense, in seq order) to
    ``thread_id``'s log, whose last seq must be ``rows[0][0] - 1`` (else ``SeqGapError``)."""

    __slots__ = ("rows", "thread_id")

    def __init__(
        self,
        thread_id: str,
        rows: list[sql.ItemRow],
        on_done: Callable[[Any], None] | None = None,
        size: int = 0,
    ) -> None:
        # Job.__init__'s fields, set here directly: one of these is made per append.
        self.fn = _no_fn
        self.target = "log"
        self.injected = None
        self.on_done = on_done
        self.size = size
        self.log = True
        self.result = None
        self.error = None
        self.batch = None
        self.thread_id = thread_id
        self.rows = rows

    def run(self, conn: sqlite3.Connection) -> None:
        sql.append_items(conn, self.thread_id, self.rows, expected_last=self.rows[0][0] - 1)


class Writer:
    """Owns the write connection on a dedicated OS thread.

    ``submit`` is sync and never blocks the trio thread on SQLite: it appends to a list the
    writer thread swaps out under a lock. Construct and :meth:`start` inside ``trio.run``.
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        *,
        faults: Faults | None = None,
        on_rollback: Callable[[], None] | None = None,
        checkpointer: WalCheckpointer | None = None,
        lanes: Lanes | None = None,
        backstop_pages: int = DEFAULTS.backstop_pages,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect = connect
        #: With a checkpointer: the WAL pages past which a commit checkpoints after all
        #: (see :attr:`threadstore.sqlite.SqliteConfig.backstop_pages`).
        self._backstop_pages = backstop_pages
        #: Runs the WAL checkpoints off the commit path (None: SQLite's automatic ones).
        self.checkpointer = checkpointer
        self._faults = faults
        #: Called on the writer thread whenever a transaction is rolled back (caches of
        #: what jobs wrote must forget it).
        self._on_rollback = on_rollback
        self._lock = threading.Lock()  # (``with self._lock`` is cheaper than the Condition's)
        self._cond = threading.Condition(self._lock)
        #: The queued jobs, by lane (guarded by ``_lock``).
        self._lanes: WriteLanes[Batch, Job[Any]] = WriteLanes(lanes or Lanes(), Batch, clock)
        self._closed = False
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._conn: sqlite3.Connection | None = None
        #: Committed transactions; ``log_commits`` those that appended log items.
        self.commits = 0
        self.log_commits = 0
        self.failed_commits = 0
        self.queued_bytes = 0
        self._room = trio.Event()
        #: Results waiting to be delivered, in commit order (trio thread only).
        self._arrivals: collections.deque[tuple[Batch, list[Job[Any]]]] = collections.deque()
        self._delivering = False

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the write connection on the writer thread and start its loop.

        Raises whatever opening the connection raised (e.g. ``StoreFormatError``).
        """
        self._token = trio.lowlevel.current_trio_token()
        opened = trio.Event()
        failure: list[BaseException] = []

        def report(error: BaseException | None) -> None:
            if error is not None:
                failure.append(error)
            opened.set()

        self._thread = threading.Thread(
            target=self._main, args=(report,), name="threadstore-writer", daemon=True
        )
        self._thread.start()
        with trio.CancelScope(shield=True):
            await opened.wait()
        if failure:
            await trio.to_thread.run_sync(self._thread.join)
            raise failure[0]

    async def aclose(self) -> None:
        """Commit everything queued, then stop the thread and close the connection.

        Shielded: completes even if the caller is cancelled. Idempotent.
        """
        with trio.CancelScope(shield=True):
            if self._closed or self._thread is None:
                await trio.lowlevel.checkpoint()
                return
            self._closed = True
            with self._cond:
                self._lanes.stop()
                self._cond.notify()
            await trio.to_thread.run_sync(self._thread.join)

    # -- feeding ------------------------------------------------------------------------

    def submit(
        self, job: Job[Any], *, defer: bool = False, soon: bool = False, first: bool = False
    ) -> Batch:
        """Queue ``job`` for the next group commit. Sync; never blocks on SQLite.

        With ``defer``, the job goes to the deferred lane, with ``soon`` to the soon lane,
        with ``first`` ahead of the jobs queued so far (same transaction or an earlier one,
        woken in the first group); see :mod:`threadstore._lanes` for when each commits and
        which jobs may use them.
        """
        if self._closed:
            raise StoreClosedError("the store is closed")
        lane: LaneName = "soon" if soon else "deferred" if defer else "first" if first else "now"
        with self._lock:
            batch, wake = self._lanes.submit(job, lane)
            job.batch = batch
            if wake:
                self._cond.notify()
            if not (soon or defer):
                self.queued_bytes += job.size
        return batch

    def submit_now(self, job: Job[Any]) -> Batch:
        """:meth:`submit` in the ordinary lane (the log appends' path, kept short)."""
        if self._closed:
            raise StoreClosedError("the store is closed")
        with self._lock:
            batch, wake = self._lanes.submit_now(job)
            job.batch = batch
            if wake:
                self._cond.notify()
            self.queued_bytes += job.size
        return batch

    async def run(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        target: Target | None = None,
        defer: bool = False,
        soon: bool = False,
    ) -> T:
        """Run ``fn`` in the next group transaction (``defer``, ``soon``: see :meth:`submit`).

        Returns its result or raises its error. If the caller is cancelled the job still
        runs (and commits); the result is lost.
        """
        job: Job[T] = Job(fn, target=target)
        self.submit(job, defer=defer, soon=soon)
        return await job.wait()

    def expedite(self) -> None:
        """Commit the deferred and soon lanes with the next transaction (someone waits)."""
        with self._lock:
            if self._lanes.expedite():
                self._cond.notify()

    async def wait_for_room(self, limit: int) -> None:
        """Block until the bytes queued for commit drop below ``limit``."""
        while self.queued_bytes >= limit:
            await self._room.wait()
        await trio.lowlevel.checkpoint()

    async def drain(self) -> None:
        """Block until everything submitted before the call is committed (or failed) and
        its results delivered.

        Never raises for those failures: they belong to the jobs that failed (a failed
        COMMIT of the transaction the drain's own marker job joined is one of them).
        """
        with self._lock:
            # The newest batch of each lane: results are delivered in commit order, and all
            # three go in the marker's transaction (expedited), so once they are all done
            # everything submitted before is.
            lanes = self._lanes.newest_batches()
        self.expedite()
        marker: Job[None] = Job(_nothing)
        for batch in [self.submit(marker), *lanes]:
            await batch.done.wait()

    # -- the writer thread --------------------------------------------------------------

    def _main(self, report: Callable[[BaseException | None], None]) -> None:
        assert self._token is not None
        token = self._token
        checkpointer = self.checkpointer
        try:
            self._conn = self._connect()
            if checkpointer is not None:
                try:
                    checkpointer.start()
                    # From now on the checkpointer copies the WAL; a commit checkpoints only
                    # as a backstop (see SqliteConfig.backstop_pages).
                    self._conn.execute(f"PRAGMA wal_autocheckpoint = {int(self._backstop_pages)}")
                except BaseException:
                    checkpointer.close()
                    self._conn.close()
                    raise
        except BaseException as exc:  # reported to start(), which re-raises it
            token.run_sync_soon(report, exc)
            return
        token.run_sync_soon(report, None)
        conn = self._conn
        try:
            while True:
                groups = self._next_transaction()
                if not groups:
                    return
                jobs = [job for _, group in groups for job in group]
                committed = self._commit(conn, jobs, [batch for batch, _ in groups])
                if checkpointer is not None and committed:
                    checkpointer.committed(sum(job.size for job in jobs))
                try:
                    token.run_sync_soon(self._arrived, groups)
                except trio.RunFinishedError:  # pragma: no cover - trio run already over
                    return
                if committed:
                    _call_hooks(groups)
        finally:
            if checkpointer is not None:
                checkpointer.close()  # first: closing the connection checkpoints (unless busy)
            conn.close()

    def _next_transaction(self) -> list[tuple[Batch, list[Job[Any]]]]:
        """Block until there is work; return the batches of the next transaction (as the
        write lanes choose them). Empty: stop."""
        lanes = self._lanes
        with self._cond:
            while not lanes.ready():
                if lanes.stopping:
                    return []
                self._cond.wait(lanes.timeout())
            return lanes.take()

    def _commit(self, conn: sqlite3.Connection, jobs: list[Job[Any]], batches: list[Batch]) -> bool:
        """One transaction for ``jobs``; True if it committed. Never raises (failures are
        recorded on the jobs and batches).

        A job that raises rolls back to its savepoint alone. If SQLite itself rolled the
        whole transaction back (it may on SQLITE_FULL, SQLITE_IOERR, SQLITE_BUSY), or the
        COMMIT fails, every job of the batch fails: nothing of it is stored.
        """
        try:
            if not self._transaction(conn, jobs, savepoints=False):
                # A job failed: redo the batch with a savepoint per job so it fails alone.
                # (Jobs are pure functions of the database, so running them again is safe.)
                conn.execute("ROLLBACK")
                self._rolled_back()
                for job in jobs:
                    job.result = job.error = None
                self._transaction(conn, jobs, savepoints=True)
        except Exception as exc:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error as rollback_error:  # pragma: no cover - a broken connection
                log.error("writer.rollback_failed", error=repr(rollback_error))
            self._rolled_back()
            for batch in batches:
                batch.error = exc
            for job in jobs:
                job.result = None
                if job.error is None:
                    job.error = exc
            self.failed_commits += 1
            log.error("writer.commit_failed", jobs=len(jobs), error=repr(exc))
            return False
        self.commits += 1
        if any(job.log and job.error is None for job in jobs):
            self.log_commits += 1
            self._lanes.log_committed()
        return True

    def _rolled_back(self) -> None:
        if self._on_rollback is not None:
            self._on_rollback()

    def _transaction(
        self, conn: sqlite3.Connection, jobs: list[Job[Any]], *, savepoints: bool
    ) -> bool:
        """Run ``jobs`` in one transaction and commit it; False (not committed, still open)
        if a job failed without ``savepoints``. Raises if the transaction itself failed."""
        faults = self._faults
        if faults is not None:
            faults.before_transaction(conn)
        conn.execute("BEGIN IMMEDIATE")
        if savepoints:
            for job in jobs:
                conn.execute("SAVEPOINT job")
                if self._run_job(conn, job):
                    conn.execute("RELEASE job")
                else:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
        else:
            start, count = 0, len(jobs)
            while start < count:
                end = start + 1
                if isinstance(jobs[start], LogAppend):  # take the run of log appends
                    while end < count and isinstance(jobs[end], LogAppend):
                        end += 1
                if not (
                    self._run_appends(conn, jobs[start:end])
                    if end - start > 1
                    else self._run_job(conn, jobs[start])
                ):
                    return False
                start = end
        if faults is not None:
            faults.before_commit({job.target for job in jobs if job.target is not None})
        conn.execute("COMMIT")
        return True

    def _run_job(self, conn: sqlite3.Connection, job: Job[Any]) -> bool:
        """Run one job; False if it failed (its error recorded). Raises if SQLite rolled
        back the whole transaction."""
        try:
            if job.injected is not None:
                raise job.injected
            self._inject(job)
            job.result = job.run(conn)
        except Exception as exc:
            job.error = exc
            if not conn.in_transaction:
                raise  # SQLite rolled back the whole transaction
            return False
        return True

    def _run_appends(self, conn: sqlite3.Connection, jobs: list[Job[Any]]) -> bool:
        """Run consecutive log appends with one statement per table; False if any of them
        failed (which one is found by the per-job redo). Raises as :meth:`_run_job`."""
        appends: list[LogAppend] = jobs  # type: ignore[assignment]
        try:
            for job in appends:
                if job.injected is not None:
                    raise job.injected
                self._inject(job)
            sql.append_runs(conn, [(job.thread_id, job.rows) for job in appends])
        except Exception:
            if not conn.in_transaction:
                raise
            return False
        return True

    def _inject(self, job: Job[Any]) -> None:
        faults = self._faults
        if faults is not None and job.target is not None:
            try:
                faults.before_job(job.target)
            except sqlite3.Error as exc:
                job.injected = exc  # a redo of the batch fails this job the same way
                raise

    def _arrived(self, groups: list[tuple[Batch, list[Job[Any]]]]) -> None:
        """On the trio thread: a transaction's results, queued behind those of earlier
        transactions (deliveries never overtake each other: on_done order is commit order)."""
        self._arrivals.extend(groups)
        if not self._delivering:
            self._delivering = True
            self._deliver()

    def _deliver(self) -> None:
        """On the trio thread: run the oldest group's callbacks in order, then wake its
        waiters; the next group follows in a later scheduler round (see ``Lanes.wake_group``)."""
        batch, jobs = self._arrivals.popleft()
        freed = 0
        for job in jobs:
            freed += job.size
            if job.on_done is not None:
                job.on_done(job)
        if freed:
            self.queued_bytes -= freed
            self._room.set()
            self._room = trio.Event()
        batch.done.set()
        if self._arrivals:
            assert self._token is not None
            self._token.run_sync_soon(self._deliver)
        else:
            self._delivering = False


def _call_hooks(groups: list[tuple[Batch, list[Job[Any]]]]) -> None:
    """Writer thread, after a commit: the jobs' ``when_committed`` hooks (for callers on
    other threads, who need not wait for the trio thread to hear of the commit first)."""
    for batch, jobs in groups:
        if batch.hooked:
            for job in jobs:
                hook = job.committed_hook
                if hook is not None and job.error is None:
                    job.committed_hook = None
                    hook()


def _nothing(conn: sqlite3.Connection) -> None:
    return None
