"""The writer: one OS thread owns the write connection and group-commits jobs.

As in the SQLite engine (:mod:`threadstore.sqlite._writer`), jobs are sync functions of the
connection, or :class:`LogAppend` jobs the writer runs itself, and whatever is queued when
the writer is free goes into one transaction, chosen by the write lanes
(:mod:`threadstore._lanes`), through a :class:`~._transaction.Transaction` (rows locked
in id order up front, seqs allocated in the database, change numbers stamped last). A
transaction is sent in pipeline mode: the row locks and its transaction id first (one round
trip), then each run of consecutive log appends as one statement (``threadstore_allocate``),
the metadata writes, the stamp and the COMMIT, whose results are read after it (a second);
a job that must read (a log fold after another process's items) adds one. A transaction of
more than 1 MB of items goes statement by statement. If a job fails, the batch is redone
unpipelined with a savepoint per job, so the failing job rolls back alone while the others
commit; a transaction that lost a deadlock or a serialization conflict to another process's
is run again, whole. If the transaction itself fails (a lost connection, a failed COMMIT)
every job of it fails and nothing of it is stored — unless the connection was lost after the
COMMIT went out: then the server is asked (on a new connection, by the transaction's id)
whether it committed, and if it did the jobs succeed as if the answer had come, with the
seqs and change numbers read back.

A lost connection fails the transaction that found it out; the writer connects again before
the next one (failing that transaction's jobs if the server is still unreachable), so later
appends work once the server is back. Results reach trio once per transaction, in commit
order, exactly as in the SQLite writer.
"""

from __future__ import annotations

import collections
import contextlib
import math
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar, Final, Generic, TypeVar

import psycopg
import trio

import workers

from .._config import Lanes
from .._errors import StoreClosedError, ThreadNotFoundError
from .._lanes import LaneName, WriteLanes
from . import _sql as sql
from ._faults import FaultKind, PostgresFaults, Target, inject, lose_connection
from ._transaction import Transaction

__all__ = ["Batch", "Job", "LogAppend", "Writer"]

T = TypeVar("T")
Connection = psycopg.Connection[Any]
log = workers.get_logger(__name__)


class Batch:
    """Jobs committed (or failed) together; ``done`` is set once their results are in."""

    __slots__ = ("done", "error", "hooked")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: BaseException | None = None
        self.hooked = False


class Job(Generic[T]):
    """One unit of writer work: ``fn(conn)`` inside a group transaction.

    ``on_done`` runs on the trio thread after the transaction commits or fails, in queue
    order, before anyone waiting on the batch wakes. ``log`` marks a job that appends log
    items (counted in ``Writer.log_commits``); ``target`` names it for fault injection.
    """

    __slots__ = (
        "batch",
        "committed_hook",
        "error",
        "fn",
        "injected",
        "lock",
        "log",
        "on_done",
        "result",
        "size",
        "target",
    )

    def __init__(
        self,
        fn: Callable[[Connection], T],
        on_done: Callable[[Job[T]], None] | None = None,
        size: int = 0,
        log: bool = False,
        target: Target | None = None,
        lock: str | None = None,
    ) -> None:
        self.fn = fn
        #: The thread whose row the job writes: locked (and read) at the transaction's
        #: start, with every other job's, in id order (see :class:`Transaction`).
        self.lock = lock
        #: What fault injection calls the job (:mod:`._faults`); None is never injected.
        self.target = target
        #: A fault injected into this job: injected again if the batch is redone.
        self.injected: FaultKind | None = None
        self.on_done = on_done
        self.size = size
        self.log = log
        self.result: T | None = None
        self.error: BaseException | None = None
        self.batch: Batch | None = None
        self.committed_hook: Callable[[], None] | None = None

    #: Whether the job's statement allocates seqs, locking its thread's row itself (it is
    #: not locked up front with the others, see :class:`Transaction`).
    allocates: ClassVar[bool] = False

    def when_committed(self, hook: Callable[[], None]) -> None:
        """Have the writer thread call ``hook`` right after the transaction holding this job
        commits, unless the job failed. Best effort (see the SQLite writer's)."""
        self.committed_hook = hook
        batch = self.batch
        if batch is not None:
            batch.hooked = True

    @property
    def done(self) -> bool:
        """Whether the write has committed or failed: ``error`` and ``result`` are final."""
        return self.batch is not None and self.batch.done.is_set()

    async def wait(self) -> T:
        """Block until the job's transaction is done; return its result or raise its error.

        Cancelling the waiter does not cancel the job: it still commits (or fails) whole.
        """
        batch = self.batch
        assert batch is not None
        await batch.done.wait()
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]

    def run(self, conn: Connection) -> T:
        """The job's statements (writer thread, inside the group transaction)."""
        return self.fn(conn)


def _no_fn(conn: Connection) -> int:  # pragma: no cover - LogAppend overrides run()
    raise AssertionError("LogAppend jobs run through LogAppend.run")


class LogAppend(Job[int]):
    """Append ``rows`` (in order) to ``thread_id``'s log after its end, wherever another
    process left it: the database allocates the seqs (the rows' own are ignored). The
    result is the seq of the last row."""

    __slots__ = ("rows", "thread_id")

    allocates: ClassVar[bool] = True

    def __init__(
        self,
        thread_id: str,
        rows: list[sql.ItemRow],
        on_done: Callable[[Any], None] | None = None,
        size: int = 0,
    ) -> None:
        self.fn = _no_fn
        self.target = "log"
        self.injected = None
        self.on_done = on_done
        self.size = size
        self.log = True
        self.result = None
        self.error = None
        self.batch = None
        self.committed_hook = None
        self.thread_id = thread_id
        self.rows = rows
        self.lock = thread_id

    def run(self, conn: Connection) -> int:
        """Alone (a redo with savepoints): allocate, read back the last seq at once.
        Raises :class:`~threadstore.ThreadNotFoundError` if the thread is gone."""
        try:
            row = sql.allocate(conn, [(self.thread_id, self.rows)]).fetchone()
        except psycopg.Error as exc:
            if sql.is_missing(exc):
                raise ThreadNotFoundError(self.thread_id) from None
            raise
        assert row is not None
        return int(row[1])


#: How many times (a second apart) closing cancels the writer's blocked statement before
#: it leaves the writer thread behind.
_CANCEL_ATTEMPTS: Final = 10

#: Transactions with more item bytes than this are sent statement by statement, not in
#: pipeline mode (see :meth:`Writer._transaction`).
_PIPELINE_BYTES: Final = 1 << 20

#: Seconds the writer keeps trying to reach the server to learn whether a transaction
#: whose COMMIT got no answer committed (until then its appends' outcome is unknown).
_RESOLVE_PATIENCE: Final = 15.0


#: How many times a transaction that lost a deadlock (or a serialization conflict) to
#: another process's is run again, whole, before its jobs are run one by one.
_CONFLICT_ATTEMPTS: Final = 4


class _Conflicted(Exception):
    """A job lost a deadlock or a serialization conflict: run the transaction again."""


def _conflicted(error: BaseException | None) -> bool:
    return isinstance(error, psycopg.Error) and error.sqlstate in ("40P01", "40001")


class _JobFailed(Exception):
    """A job failed inside a transaction without savepoints (the batch is redone)."""


class Writer:
    """Owns the write connection on a dedicated OS thread.

    ``submit`` is sync and never blocks the trio thread on the server: it appends to the
    lanes the writer thread takes from under a lock. Construct and :meth:`start` inside
    ``trio.run``.
    """

    def __init__(
        self,
        connect: Callable[[], Connection],
        *,
        on_rollback: Callable[[], None] | None = None,
        connect_aside: Callable[[], Connection] | None = None,
        faults: PostgresFaults | None = None,
        lanes: Lanes | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect = connect
        #: A connection of its own, to ask the server what became of a transaction whose
        #: COMMIT got no answer (see :meth:`_committed_after_all`).
        self._connect_aside = connect_aside
        #: What the transaction in progress shares among its jobs.
        self._txn = Transaction()
        #: The deadlock or serialization failure that failed the pipelined attempt.
        self._conflict: psycopg.Error | None = None
        self._faults = faults
        #: The id of the transaction in progress (writer thread only).
        self._xid: str | None = None
        #: A test seam: called on the writer thread with ``"before_commit"`` or
        #: ``"after_commit"`` and the connection around each COMMIT (it may close the
        #: connection and raise, as a lost connection would).
        self.fault: Callable[[str, Connection], None] | None = None
        self._on_rollback = on_rollback
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._lanes: WriteLanes[Batch, Job[Any]] = WriteLanes(lanes or Lanes(), Batch, clock)
        self._closed = False
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._conn: Connection | None = None
        #: Committed transactions; ``log_commits`` those that appended log items.
        self.commits = 0
        self.log_commits = 0
        self.failed_commits = 0
        self.reconnects = 0
        self.queued_bytes = 0
        self._room = trio.Event()
        self._arrivals: collections.deque[tuple[Batch, list[Job[Any]]]] = collections.deque()
        self._delivering = False

    @property
    def transaction(self) -> Transaction:
        """The transaction in progress (its jobs use it: writer thread only)."""
        return self._txn

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect on the writer thread and start its loop. Raises whatever connecting (and
        the schema check in ``connect``) raised."""
        self._token = trio.lowlevel.current_trio_token()
        opened = trio.Event()
        failure: list[BaseException] = []

        def report(error: BaseException | None) -> None:
            if error is not None:
                failure.append(error)
            opened.set()

        self._thread = threading.Thread(
            target=self._main, args=(report,), name="threadstore-pg-writer", daemon=True
        )
        self._thread.start()
        with trio.CancelScope(shield=True):
            await opened.wait()
        if failure:
            await trio.to_thread.run_sync(self._thread.join)
            raise failure[0]

    async def aclose(self, patience: float = math.inf) -> None:
        """Commit everything queued, then stop the thread and close the connection.
        Shielded; idempotent.

        If the thread is still at it after ``patience`` seconds (a statement blocked, e.g.
        on a row another process's transaction holds), its statement is cancelled (the
        server's cancel request), as often as needed: that transaction fails (its appends
        with :class:`~threadstore.AppendFailedError`: nothing of them stored)."""
        with trio.CancelScope(shield=True):
            thread = self._thread
            if self._closed or thread is None:
                await trio.lowlevel.checkpoint()
                return
            self._closed = True
            with self._cond:
                self._lanes.stop()
                self._cond.notify()
            wait = patience
            for _ in range(_CANCEL_ATTEMPTS):
                with trio.move_on_after(wait):
                    await trio.to_thread.run_sync(thread.join, abandon_on_cancel=True)
                if not thread.is_alive():
                    return
                conn = self._conn
                log.warning("postgres.statement_cancelled", after_s=patience)
                if conn is not None and not conn.closed:
                    with contextlib.suppress(Exception):
                        await trio.to_thread.run_sync(conn.cancel_safe)
                wait = 1.0
            # Not the server's doing (a cancel would have ended it): leave the thread.
            log.error("postgres.writer_abandoned", after_s=patience + _CANCEL_ATTEMPTS)
            await trio.lowlevel.checkpoint()

    # -- feeding ------------------------------------------------------------------------

    def submit(
        self, job: Job[Any], *, defer: bool = False, soon: bool = False, first: bool = False
    ) -> Batch:
        """Queue ``job`` for the next group commit (lanes as in the SQLite writer). Sync;
        never blocks on the server."""
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
        """:meth:`submit` in the ordinary lane (the log appends' path)."""
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
        fn: Callable[[Connection], T],
        *,
        target: Target | None = None,
        defer: bool = False,
        soon: bool = False,
    ) -> T:
        """Run ``fn`` in the next group transaction; its result or error. A cancelled
        caller's job still runs (and commits)."""
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
        its results delivered. Never raises for those failures."""
        with self._lock:
            lanes = self._lanes.newest_batches()
        self.expedite()
        marker: Job[None] = Job(_nothing)
        for batch in [self.submit(marker), *lanes]:
            await batch.done.wait()

    # -- the writer thread --------------------------------------------------------------

    def _main(self, report: Callable[[BaseException | None], None]) -> None:
        assert self._token is not None
        token = self._token
        try:
            self._conn = self._connect()
        except BaseException as exc:  # reported to start(), which re-raises it
            token.run_sync_soon(report, exc)
            return
        token.run_sync_soon(report, None)
        try:
            while True:
                groups = self._next_transaction()
                if not groups:
                    return
                jobs = [job for _, group in groups for job in group]
                batches = [batch for batch, _ in groups]
                conn = self._connection(jobs, batches)
                committed = conn is not None and self._commit(conn, jobs, batches)
                try:
                    token.run_sync_soon(self._arrived, groups)
                except trio.RunFinishedError:  # pragma: no cover - trio run already over
                    return
                if committed:
                    _call_hooks(groups)
        finally:
            conn = self._conn
            if conn is not None:
                conn.close()

    def _connection(self, jobs: list[Job[Any]], batches: list[Batch]) -> Connection | None:
        """The write connection, connecting again if it was lost; None (every job failed
        with the reason) if the server cannot be reached."""
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if conn is not None:
            conn.close()
            self._conn = None
        try:
            self._conn = self._connect()
        except Exception as exc:
            self._fail(jobs, batches, exc)
            log.error("postgres.reconnect_failed", jobs=len(jobs), error=repr(exc))
            return None
        self.reconnects += 1
        log.warning("postgres.reconnected", reconnects=self.reconnects)
        return self._conn

    def _next_transaction(self) -> list[tuple[Batch, list[Job[Any]]]]:
        lanes = self._lanes
        with self._cond:
            while not lanes.ready():
                if lanes.stopping:
                    return []
                self._cond.wait(lanes.timeout())
            return lanes.take()

    def _commit(self, conn: Connection, jobs: list[Job[Any]], batches: list[Batch]) -> bool:
        """One transaction for ``jobs``; True if it committed. Never raises (failures are
        recorded on the jobs and batches)."""
        try:
            for attempt in range(1, _CONFLICT_ATTEMPTS + 1):
                try:
                    if not self._transaction(conn, jobs, savepoints=False):
                        # A job failed: redo the batch with a savepoint per job so it fails
                        # alone, unless the transaction lost a deadlock or a serialization
                        # conflict: then the whole of it again. (Jobs are pure functions of
                        # the database, so running them again is safe.)
                        conflict = (
                            self._conflict is not None
                            or any(_conflicted(job.error) for job in jobs)
                        ) and not any(job.injected for job in jobs)  # (a test's fault: as is)
                        self._start_over(conn, jobs)
                        if conflict and attempt < _CONFLICT_ATTEMPTS:
                            log.info("postgres.transaction_retried", attempt=attempt)
                            continue
                        self._transaction(conn, jobs, savepoints=True)
                    break
                except _Conflicted:  # in the redo with savepoints
                    self._start_over(conn, jobs)
                    log.info("postgres.transaction_retried", attempt=attempt)
                    if attempt == _CONFLICT_ATTEMPTS:
                        raise
        except Exception as exc:
            if not self._committed_after_all(conn, jobs, exc):
                try:
                    if not conn.closed and not conn.broken:
                        conn.rollback()
                except psycopg.Error as rollback_error:  # pragma: no cover - a broken connection
                    # A session that cannot even roll back (a pipeline left busy when the
                    # server went away, say) is not reported broken: drop it, so the next
                    # transaction connects again instead of failing on it for good.
                    log.error("postgres.rollback_failed", error=repr(rollback_error))
                    conn.close()
                self._rolled_back()
                self._fail(jobs, batches, exc)
                log.error("postgres.commit_failed", jobs=len(jobs), error=repr(exc))
                return False
        self.commits += 1
        if any(job.log and job.error is None for job in jobs):
            self.log_commits += 1
            self._lanes.log_committed()
        return True

    def _start_over(self, conn: Connection, jobs: list[Job[Any]]) -> None:
        """Roll back the transaction in progress and clear its jobs' outcomes."""
        conn.rollback()
        self._rolled_back()
        self._conflict = None
        for job in jobs:
            job.result = job.error = None

    def _committed_after_all(self, conn: Connection, jobs: list[Job[Any]], exc: Exception) -> bool:
        """Whether the transaction that failed with ``exc`` committed all the same: its
        connection was lost after the COMMIT was sent (the server committed, the answer
        never came). Asked of the server by transaction id on a new connection, which
        then reads back the seqs and change numbers the transaction gave; anything but a
        clear ``committed`` counts as not committed."""
        xid, self._xid = self._xid, None
        if xid is None or not (conn.broken or conn.closed) or self._connect_aside is None:
            return False
        try:
            aside = self._connect_patiently()
            try:
                status = sql.transaction_status(aside, xid)
                if status == "committed":
                    self._txn.read_back(aside, xid, jobs)
            finally:
                aside.close()
        except Exception as error:
            log.error("postgres.commit_unknown", xid=xid, error=repr(error), cause=repr(exc))
            return False
        if status == "committed":
            log.warning("postgres.commit_confirmed", xid=xid, error=repr(exc))
            return True
        return False

    def _connect_patiently(self) -> Connection:
        """A connection of its own, trying for up to :data:`_RESOLVE_PATIENCE` seconds (a
        COMMIT whose answer was lost to a server restart is resolved once it is back)."""
        assert self._connect_aside is not None
        deadline = time.monotonic() + _RESOLVE_PATIENCE
        delay = 0.02
        while True:
            try:
                return self._connect_aside()
            except Exception:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(delay)  # (the writer thread waits for the server to come back)
            delay = min(delay * 2, 0.5)

    def _fail(self, jobs: list[Job[Any]], batches: list[Batch], exc: BaseException) -> None:
        for batch in batches:
            batch.error = exc
        for job in jobs:
            job.result = None
            if job.error is None:
                job.error = exc
        self.failed_commits += 1

    def _rolled_back(self) -> None:
        if self._on_rollback is not None:
            self._on_rollback()

    def _transaction(self, conn: Connection, jobs: list[Job[Any]], *, savepoints: bool) -> bool:
        """Run ``jobs`` in one transaction and commit it; False (rolled back or to be) if a
        job failed without ``savepoints``. Raises if the transaction itself failed."""
        self._xid = None  # (not a previous transaction's, if this one fails before it has one)
        txn = self._txn
        if savepoints:
            locked = txn.begin(conn, jobs)
            self._xid = _current_xid(conn)
            txn.locked(locked)
            for job in jobs:
                conn.execute("SAVEPOINT job")
                if self._run_job(conn, job):
                    conn.execute("RELEASE SAVEPOINT job")
                elif _conflicted(job.error) and job.injected is None:
                    raise _Conflicted from job.error  # a deadlock: the whole again
                else:
                    conn.execute("ROLLBACK TO SAVEPOINT job")
                    conn.execute("RELEASE SAVEPOINT job")
                    txn.forget(job.lock)
            self._commit_now(conn, jobs)
            return True
        # Pipelined: statements whose results no job reads are sent without waiting, and
        # the COMMIT with them. An error may surface at a later job's read or at the end
        # (not at the job that caused it): any error redoes the batch with savepoints,
        # unpipelined, where each job's error is its own.
        # A large transaction goes unpipelined: sending megabytes in pipeline mode can
        # leave the client and the server each waiting for the other (psycopg's pipeline
        # stops flushing; seen at ~4 MB), and at that size the round trips cost nothing.
        large = sum(job.size for job in jobs) > _PIPELINE_BYTES
        try:
            with contextlib.nullcontext() if large else conn.pipeline():
                locked = txn.begin(conn, jobs)
                self._xid = _current_xid(conn)  # (the pipeline's first sync: rows arrive too)
                txn.locked(locked)
                if not self._run_jobs(conn, jobs):
                    return False
                self._commit_now(conn, jobs)
        except psycopg.Error as exc:
            if conn.broken or conn.closed:
                raise
            if _conflicted(exc):
                self._conflict = exc
            return False
        return True

    def _commit_now(self, conn: Connection, jobs: list[Job[Any]]) -> None:
        fault = self.fault
        faults = self._faults
        point = None
        if faults is not None:
            point = faults.around_commit({job.target for job in jobs if job.target is not None})
        if fault is not None:
            fault("before_commit", conn)
        if point == "before":
            lose_connection(conn)
        self._txn.end(conn)
        conn.commit()
        if fault is not None:
            fault("after_commit", conn)
        if point == "after":
            conn.close()
            raise psycopg.OperationalError("the answer to COMMIT was lost (injected)")
        self._txn.committed(jobs)

    def _inject(self, conn: Connection, job: Job[Any]) -> None:
        """Fault injection before a job's statements (again the same, in a redo)."""
        faults = self._faults
        if faults is None or job.target is None:
            return
        if job.injected is not None:
            inject(job.injected, conn)
        else:
            job.injected = faults.before_job(job.target, conn)

    def _run_jobs(self, conn: Connection, jobs: list[Job[Any]]) -> bool:
        """Every job, runs of log appends as one statement; False at the first failure."""
        start, count = 0, len(jobs)
        while start < count:
            end = start + 1
            if type(jobs[start]) is LogAppend:  # take the run of log appends
                while end < count and type(jobs[end]) is LogAppend:
                    end += 1
            if not (
                self._run_appends(conn, jobs[start:end])  # type: ignore[arg-type]
                if type(jobs[start]) is LogAppend
                else self._run_job(conn, jobs[start])
            ):
                return False
            start = end
        return True

    def _run_job(self, conn: Connection, job: Job[Any]) -> bool:
        """Run one job; False if it failed (its error recorded). Raises if the connection
        or the transaction itself failed."""
        try:
            self._inject(conn, job)
            job.result = job.run(conn)
        except Exception as exc:
            job.error = exc
            if conn.broken or conn.closed:
                raise
            return False
        return True

    def _run_appends(self, conn: Connection, jobs: list[LogAppend]) -> bool:
        """Consecutive log appends in one statement; False if any of them failed (which
        one is found by the per-job redo)."""
        try:
            for job in jobs:
                self._inject(conn, job)
            self._txn.allocate(conn, jobs)
        except Exception:
            if conn.broken or conn.closed:
                raise
            return False
        return True

    def _arrived(self, groups: list[tuple[Batch, list[Job[Any]]]]) -> None:
        """On the trio thread: a transaction's results, queued behind earlier ones."""
        self._arrivals.extend(groups)
        if not self._delivering:
            self._delivering = True
            self._deliver()

    def _deliver(self) -> None:
        """On the trio thread: the oldest group's callbacks in order, then its waiters."""
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
    """Writer thread, after a commit: the jobs' ``when_committed`` hooks."""
    for batch, jobs in groups:
        if batch.hooked:
            for job in jobs:
                hook = job.committed_hook
                if hook is not None and job.error is None:
                    job.committed_hook = None
                    hook()


def _current_xid(conn: Connection) -> str:
    """The id of the transaction ``conn`` is in (assigning one): the first statement of
    each group commit, so that a lost answer to its COMMIT can be resolved. (In pipeline
    mode reading it costs the transaction its second round trip.)"""
    row = conn.execute("SELECT pg_current_xact_id()::text").fetchone()
    assert row is not None
    return str(row[0])


def _nothing(conn: Connection) -> None:
    return None
