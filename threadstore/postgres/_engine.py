"""The PostgreSQL engine: :class:`threadstore._engine.Engine` over one PostgreSQL database.

The store's operations become writer jobs (sync functions of the write connection, run on
the writer thread inside a group transaction, :mod:`._writer`) and reader functions (run on
a reader thread, :mod:`._readers`); this module holds both, and
:func:`open_postgres_engine`, which connects, creates or checks the schema, loads the thread
index and starts the writer and the readers.

Several processes, on any hosts, open one database for writing at once (see
``docs/postgres.md``): seqs are allocated in the database inside each group commit, change
numbers come from a clock row stamped last in each transaction (:mod:`._transaction`), one
process at a time projects a given thread (:mod:`._ownership`), and notifications from the
others arrive through a listener (:mod:`._listener`). Every store on this engine is
:attr:`~threadstore._engine.Engine.shared`: the store looks threads up as it meets them and
its feed reads the change index (woken by NOTIFY) rather than hearing its own commits.

The metadata row codec is the SQLite engine's (:mod:`threadstore.sqlite._rows`: the same
columns, integer microseconds, JSON text), as are its two decoded-row caches.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Final

import psycopg
import trio

import workers

from .._config import Lanes
from .._engine import (
    AppendItems,
    ChangePage,
    ChangePublisher,
    Completion,
    CreateThread,
    DeleteThread,
    EngineStatistics,
    ForkThread,
    ImportThread,
    IndexEntry,
    PageQuery,
    ProjectionWrite,
    RebuildThread,
    RewindThread,
    SetArchived,
    StoreSummary,
    ThreadDump,
    change_page,
    context_marks,
    fold_for_write,
    fork_rows,
    refold,
    stored_item,
)
from .._errors import (
    StoreFormatError,
    ThreadExistsError,
    ThreadNotFoundError,
    ThreadStoreError,
    WriteFailedError,
)
from .._feed import EventType
from .._items import StoredItem
from .._meta import Patch, Projection, ThreadMeta, fold_log_rows
from ..sqlite._engine import ListedMetas
from ..sqlite._rows import meta_from_values, projection_from_row, projection_to_row
from . import _sql as sql
from ._config import DEFAULTS, PostgresConfig
from ._faults import PostgresFaults
from ._listener import Listener
from ._ownership import Ownership
from ._readers import ReaderPool
from ._transaction import Transaction
from ._url import redact
from ._writer import Job, LogAppend, Writer

__all__ = ["PostgresEngine", "open_postgres_engine"]

Connection = psycopg.Connection[Any]
log = workers.get_logger(__name__)


class PostgresEngine(ChangePublisher):
    """The PostgreSQL engine of one open store (see :func:`open_postgres_engine`).

    Every method runs on the trio thread and only queues work for the writer, reader,
    ownership or listener threads: no driver call is made on the trio thread.
    """

    def __init__(
        self,
        *,
        target: str,
        readers: ReaderPool,
        secret: bytes,
        writer: Writer | None = None,
        ownership: Ownership | None = None,
        orphans: Sequence[IndexEntry] = (),
        config: PostgresConfig = DEFAULTS,
    ) -> None:
        self._target = target
        self.readers = readers
        #: The write side (None when read-only).
        self.writer = writer
        self.ownership = ownership
        self._secret = secret
        self.config = config
        self._listed = ListedMetas(config.listed_cache_size)
        #: Lagging threads nobody owned at open, owned now: recovered before the store opens.
        self._orphans = list(orphans)
        #: Set (and replaced) on each change another process (or this one) committed.
        self._change_seen = trio.Event()
        #: Threads other processes asked this one to project, and its wake-up.
        self._requests: set[str] = set()
        self._requested = trio.Event()

    @property
    def target(self) -> str:
        """The store's URL without its password."""
        return self._target

    @property
    def writable(self) -> bool:
        return self.writer is not None

    @property
    def shared(self) -> bool:
        return True

    @property
    def cursor_secret(self) -> bytes:
        return self._secret

    @property
    def queued_bytes(self) -> int:
        writer = self.writer
        return writer.queued_bytes if writer is not None else 0

    @property
    def external_changes(self) -> bool:
        # Other processes commit too: subscribers take this process's own commits live
        # only when nothing can come between (see Subscription.offer), else read the index.
        return True

    def _writer(self) -> Writer:
        assert self.writer is not None
        return self.writer

    def _txn(self) -> Transaction:
        return self._writer().transaction

    # -- notifications (listener thread -> trio thread) --------------------------------------

    def notified(self, channel: str, payload: str) -> None:
        """A notification from another process (or this one's own commit)."""
        if channel == "threadstore_changes":
            self._wake_changes()
        elif (
            channel == "threadstore_project"
            and self.ownership is not None
            and self.ownership.owns(payload)
        ):
            self._requests.add(payload)
            self._requested.set()

    def reconnected(self) -> None:
        """The listener connected again: notifications may have been missed."""
        self._wake_changes()
        self._requested.set()

    def _wake_changes(self) -> None:
        self._change_seen.set()
        self._change_seen = trio.Event()

    # -- writes ---------------------------------------------------------------------------

    def append(
        self, op: AppendItems, on_done: Callable[[Completion[Any]], None]
    ) -> Completion[Any]:
        job = LogAppend(op.thread_id, op.rows, on_done=on_done, size=op.size)
        self._writer().submit_now(job)
        return job

    def create(
        self, op: CreateThread, on_done: Callable[[Completion[ThreadMeta]], None]
    ) -> Completion[ThreadMeta]:
        job: Job[ThreadMeta] = Job(
            partial(_create_job, self._txn(), op),
            on_done=self._publishing("created", on_done),
            size=op.size,
            log=bool(op.rows),
            target="log",
        )
        self._writer().submit(job, first=True)
        return job

    def rewind(
        self, op: RewindThread, on_done: Callable[[Completion[Any]], None]
    ) -> Completion[Any]:
        job: Job[int | None] = Job(
            partial(_rewind_job, op),
            on_done=on_done,
            size=op.append.size,
            log=True,
            target="log",
            lock=op.append.thread_id,
        )
        self._writer().submit_now(job)
        return job

    def fork(
        self, op: ForkThread, on_done: Callable[[Completion[ThreadMeta]], None]
    ) -> Completion[ThreadMeta]:
        job: Job[ThreadMeta] = Job(
            partial(_fork_job, self._txn(), op),
            on_done=self._publishing("created", on_done),
            log=True,
            target="log",
        )
        self._writer().submit(job, first=True)
        return job

    def delete(
        self, op: DeleteThread, on_done: Callable[[Completion[ThreadMeta | None]], None]
    ) -> Completion[ThreadMeta | None]:
        def failed(job: Job[ThreadMeta | None]) -> None:
            if isinstance(job.error, psycopg.Error):
                job.error = _write_failed(op.thread_id, "delete", job.error)
            on_done(job)

        job: Job[ThreadMeta | None] = Job(
            partial(_delete_job, self._txn(), op),
            on_done=self._publishing("deleted", failed),
            lock=op.thread_id,
        )
        self._writer().submit(job)
        return job

    async def set_archived(self, op: SetArchived) -> ThreadMeta | None:
        type: EventType = "unarchived" if op.archived_at_us is None else "archived"
        job: Job[ThreadMeta | None] = Job(
            partial(_archive_job, self._txn(), op),
            on_done=self._publishing(type),
            lock=op.thread_id,
        )
        self._writer().submit(job)
        try:
            return await job.wait()
        except psycopg.Error as exc:
            raise _write_failed(op.thread_id, type.removesuffix("d"), exc) from exc

    async def project(self, op: ProjectionWrite) -> ThreadMeta | None:
        lane = op.lane
        job: Job[tuple[ThreadMeta, bool] | None] = Job(
            partial(_project_job, self._txn(), op),
            on_done=self._publishing("updated"),
            target="projection",
            lock=op.thread_id,
        )
        self._writer().submit(job, defer=lane == "deferred", soon=lane == "soon")
        result = await job.wait()
        return None if result is None else result[0]

    async def wait_for_room(self, limit: int) -> None:
        await self._writer().wait_for_room(limit)

    def expedite(self) -> None:
        self._writer().expedite()

    async def drain(self) -> None:
        await self._writer().drain()

    def thread_index(self) -> Sequence[IndexEntry]:
        # Threads are looked up as the store meets them (lookup_thread): the ones known at
        # open are the orphans this process took over, which it recovers now.
        return list(self._orphans)

    async def lagging_threads(self) -> list[tuple[str, int, int]]:
        orphans, self._orphans = self._orphans, []
        await trio.lowlevel.checkpoint()
        return [(tid, seq, last_seq) for tid, last_seq, seq, _user, _ns in orphans]

    # -- several processes ----------------------------------------------------------------

    async def lookup_thread(self, thread_id: str) -> IndexEntry | None:
        return await self.readers.run(partial(sql.thread_head, thread_id=thread_id))

    async def claim(self, thread_id: str) -> bool:
        assert self.ownership is not None
        return await self.ownership.claim(thread_id)

    async def wait_projected(self, thread_id: str, target: int) -> tuple[bool, ThreadMeta | None]:
        assert self.ownership is not None
        await self.ownership.ask(thread_id)
        deadline = trio.current_time() + self.config.owner_patience
        while True:
            changed = self._change_seen
            meta = await self.get_thread(thread_id)
            if meta is None or meta.seq >= target:
                return True, meta
            if trio.current_time() >= deadline:
                return False, None
            with trio.move_on_at(deadline):
                await changed.wait()

    async def projection_requests(self) -> list[IndexEntry]:
        ownership = self.ownership
        assert ownership is not None
        config = self.config
        while True:
            if self._requests:
                ids, self._requests = sorted(self._requests), set()
                heads = await self.readers.run(partial(_thread_heads, ids))
                if heads:
                    return heads
                continue
            requested = self._requested
            with trio.move_on_after(config.takeover_interval):
                await requested.wait()
            if requested.is_set():
                self._requested = trio.Event()
                if self._requests:
                    continue
            await ownership.release_idle()
            orphans = await ownership.take_orphans(config.takeover_batch)
            if orphans:
                return orphans

    # -- reads ----------------------------------------------------------------------------
    async def get_thread(self, thread_id: str) -> ThreadMeta | None:
        return await self.readers.run(partial(_get_meta, thread_id))

    async def read_items(
        self, thread_id: str, after_seq: int, limit: int | None
    ) -> list[StoredItem] | None:
        return await self.readers.run(partial(_read_items, thread_id, after_seq, limit))

    async def read_context(self, thread_id: str, limit: int | None) -> list[StoredItem] | None:
        return await self.readers.run(partial(_read_context, thread_id, limit))

    async def list_threads(
        self, page: PageQuery
    ) -> tuple[tuple[ThreadMeta, ...], tuple[int, str] | None]:
        return await self.readers.run(partial(_list_page, self._listed, page))

    async def projector_input(
        self, thread_id: str, target: int
    ) -> tuple[ThreadMeta | None, list[StoredItem]]:
        return await self.readers.run(partial(_projector_input, thread_id, target))

    async def changes(self, after: int, limit: int, namespace: str | None) -> ChangePage:
        return await self.readers.run(partial(_changes, after, limit, namespace))

    async def wait_for_changes(self, after: int) -> None:
        # Woken by the NOTIFY every change-making commit sends (this process's too), with
        # a slow poll in case a notification was lost.
        while True:
            changed = self._change_seen
            if await self.readers.run(sql.last_change) > after:
                return
            with trio.move_on_after(self.config.feed_poll_interval):
                await changed.wait()

    # -- errors and statistics ------------------------------------------------------------

    def retryable(self, error: BaseException) -> bool:
        if isinstance(error, psycopg.Error):
            return sql.is_transient(error)
        return True

    def statistics(self) -> EngineStatistics:
        writer = self.writer
        if writer is None:
            return EngineStatistics()
        return EngineStatistics(log_commits=writer.log_commits)

    # -- maintenance (doctor, reproject, export and import, backup) -----------------------

    async def summary(self) -> StoreSummary:
        threads, items, lagging = await self.readers.run(sql.store_summary)
        return StoreSummary(
            engine="postgres",
            threads=threads,
            items=items,
            lagging_threads=lagging,
            schema_version=sql.SCHEMA_VERSION,  # (checked at open: the stored one is this)
        )

    async def integrity_check(self) -> list[str]:
        return await self.readers.run(sql.integrity_check)

    async def thread_ids(self) -> list[str]:
        return await self.readers.run(sql.thread_ids)

    async def dump_thread(self, thread_id: str) -> ThreadDump | None:
        return await self.readers.run(partial(_dump_thread, thread_id))

    async def rebuild_thread(self, op: RebuildThread) -> ThreadMeta | None:
        job: Job[ThreadMeta | None] = Job(
            partial(_rebuild_job, self._txn(), op),
            on_done=self._publishing("updated"),
            lock=op.thread_id,
        )
        self._writer().submit(job)
        return await job.wait()

    async def import_thread(self, op: ImportThread) -> ThreadMeta:
        job: Job[ThreadMeta] = Job(
            partial(_import_job, self._txn(), op),
            on_done=self._publishing("created"),
            log=True,
            target="log",
        )
        self._writer().submit(job)
        return await job.wait()

    async def backup(self, dest: str) -> None:
        await trio.lowlevel.checkpoint()
        raise ThreadStoreError(
            f"{self._target} is a PostgreSQL store: back it up with the server's tools "
            "(pg_dump, or a base backup with WAL archiving); `threadstore export` copies its "
            "threads into a file"
        )


def _write_failed(thread_id: str, operation: str, error: BaseException) -> WriteFailedError:
    failed = WriteFailedError(thread_id, operation, str(error))
    failed.__cause__ = error
    return failed


# -- writer jobs (sync; writer thread only) ---------------------------------------------
#
# Each runs inside the writer's group transaction, whose rows of the threads the jobs
# write are locked and read at its start (``txn.row``); a change of listed state is
# marked (``txn.mark``: a provisional change number, stamped at the transaction's end).


def _rewind_job(op: RewindThread, conn: Connection) -> int:
    thread_id, rows, _size = op.append
    try:
        row = sql.allocate(conn, [(thread_id, rows)]).fetchone()
    except psycopg.Error as exc:
        if sql.is_missing(exc):
            raise ThreadNotFoundError(thread_id) from None
        raise
    assert row is not None
    last = int(row[1])
    sql.hide_items(conn, thread_id, op.to_seq, last)
    return last


def _fork_job(txn: Transaction, op: ForkThread, conn: Connection) -> ThreadMeta:
    """Copy the source's context as it stood at ``op.through`` (the pure rule over its log)."""
    if sql.thread_last_seq(conn, op.source_id) is None:
        raise ThreadNotFoundError(op.source_id)
    log_rows = sql.read_items(conn, op.source_id, 0, op.through)
    rows = fork_rows(op, log_rows)
    projection = Projection.new(op.thread_id, op.created_us, op.namespace)
    projection = projection.apply(fold_log_rows(rows))
    projection = projection.with_change(txn.mark(op.thread_id))
    if not sql.insert_thread(conn, projection_to_row(projection)):
        raise ThreadExistsError(op.thread_id)
    sql.append_items(conn, op.thread_id, rows, expected_last=0)
    sql.insert_hidden(conn, op.thread_id, rows[:1])
    return projection.meta


def _create_job(txn: Transaction, op: CreateThread, conn: Connection) -> ThreadMeta:
    projection = Projection.new(op.thread_id, op.created_us, op.namespace)
    if op.items:
        projection = projection.apply(
            Patch.from_rows(
                [
                    (seq, at, i.kind, i.data)
                    for (seq, at, _k, _d), i in zip(op.rows, op.items, strict=True)
                ]
            )
        )
    projection = projection.with_change(txn.mark(op.thread_id))
    if not sql.insert_thread(conn, projection_to_row(projection)):
        raise ThreadExistsError(op.thread_id)
    sql.append_items(conn, op.thread_id, op.rows, expected_last=0)
    return projection.meta


def _project_job(
    txn: Transaction, op: ProjectionWrite, conn: Connection
) -> tuple[ThreadMeta, bool] | None:
    """Fold the pending items (or, if they do not follow the row: items another process
    appended came between, the log itself) into the row, through ``op.target`` (what the
    custom projectors saw: items after it are projected by a later write). The metadata
    and whether the row changed."""
    thread_id = op.thread_id
    row = txn.row(conn, thread_id)
    if row is None:
        return None  # deleted meanwhile
    projection = projection_from_row(row)
    folded = fold_for_write(
        projection, op, lambda after, limit: sql.read_items(conn, thread_id, after, limit)
    )
    if folded is None:
        return projection.meta, False
    new_row = projection_to_row(folded)
    changed = bool(sql.changed_columns(row, new_row))
    if changed:
        folded = folded.with_change(txn.mark(thread_id))
        new_row["change"] = folded.meta.change
    sql.update_projection(conn, row, new_row, exists=True)
    new_row["last_seq"] = row["last_seq"]
    txn.put(thread_id, new_row)
    return folded.meta, changed


def _archive_job(txn: Transaction, op: SetArchived, conn: Connection) -> ThreadMeta | None:
    txn.forget(op.thread_id)
    row = sql.set_archived(conn, op.thread_id, op.archived_at_us, txn.mark(op.thread_id))
    return None if row is None else projection_from_row(row).meta


def _delete_job(txn: Transaction, op: DeleteThread, conn: Connection) -> ThreadMeta | None:
    """Delete the thread, leaving a tombstone, and prune tombstones past their retention;
    its metadata as it was, with the deletion's change (None if it was gone already)."""
    txn.put(op.thread_id, None)
    row = sql.delete_thread(conn, op.thread_id)
    if row is None:
        return None
    meta = projection_from_row(row).with_change(txn.mark(op.thread_id, tombstone=True)).meta
    sql.insert_tombstone(conn, op.thread_id, meta.namespace, meta.change, op.deleted_us)
    sql.prune_tombstones(conn, op.prune_before_us)
    return meta


def _rebuild_job(txn: Transaction, op: RebuildThread, conn: Connection) -> ThreadMeta | None:
    """Refold the thread's row from its log (as committed: this job's transaction sees
    every earlier write) and mark its context again."""
    txn.forget(op.thread_id)
    row = sql.read_projection_row(conn, op.thread_id)
    if row is None:
        return None
    meta = projection_from_row(row).meta
    rows = sql.read_items(conn, op.thread_id, 0, None)
    base = Projection.new(meta.id, int(row["created_at"]), meta.namespace)  # type: ignore[call-overload]
    base = base.with_archived_at(row["archived_at"])  # type: ignore[arg-type]
    projection = refold(base, [r for r in rows if r[0] <= op.through], op.extra)
    projection = projection.with_change(txn.mark(op.thread_id))
    sql.replace_projection(conn, projection_to_row(projection))
    sql.set_hidden(conn, op.thread_id, context_marks(rows))
    return projection.meta


def _import_job(txn: Transaction, op: ImportThread, conn: Connection) -> ThreadMeta:
    thread_id = op.projection.meta.id
    projection = op.projection.with_change(txn.mark(thread_id))
    if not sql.insert_thread(conn, projection_to_row(projection)):
        raise ThreadExistsError(thread_id)
    sql.append_items(conn, thread_id, op.rows, expected_last=0)
    sql.set_hidden(conn, thread_id, context_marks(op.rows))
    return projection.meta


# -- reader functions (sync; reader threads only) ---------------------------------------


def _dump_thread(thread_id: str, conn: Connection) -> ThreadDump | None:
    row = sql.read_projection_row(conn, thread_id)
    if row is None:
        return None
    return ThreadDump(
        projection=projection_from_row(row),
        last_seq=int(row["last_seq"]),  # type: ignore[call-overload]
        rows=tuple(sql.read_items(conn, thread_id, 0, None)),
        hidden=sql.hidden_seqs(conn, thread_id),
    )


def _projector_input(
    thread_id: str, target: int, conn: Connection
) -> tuple[ThreadMeta | None, list[StoredItem]]:
    row = sql.read_projection_row(conn, thread_id)
    if row is None:
        return None, []
    meta = projection_from_row(row).meta
    rows = sql.read_items(conn, thread_id, meta.seq, max(0, target - meta.seq))
    return meta, [stored_item(r) for r in rows]


#: A column's index in the rows ``sql.list_threads`` returns.
_COLUMN: Final = {name: index for index, name in enumerate(sql.THREAD_COLUMNS)}


def _list_page(
    metas_of: ListedMetas, page: PageQuery, conn: Connection
) -> tuple[tuple[ThreadMeta, ...], tuple[int, str] | None]:
    """One page of metadata, decoded here, and the cursor key of its last row if more
    rows follow."""
    query, limit = page.query, page.limit
    rows = sql.list_threads(
        conn,
        order_by=query.order_by,
        descending=query.descending,
        archived=query.archived,
        search=query.search,
        include_empty=query.include_empty,
        after=page.after,
        limit=limit + 1,
        namespace=query.namespace,
    )
    metas = metas_of.decode(rows[:limit])
    if len(rows) <= limit:
        return metas, None
    last = rows[limit - 1]
    return metas, (int(last[_COLUMN[query.order_by]]), str(last[0]))


def _changes(after: int, limit: int, namespace: str | None, conn: Connection) -> ChangePage:
    """The change index after ``after``: threads and tombstones merged in change order.

    The clock is read first (each statement sees its own snapshot): every change up to
    it was committed before, so the index read next holds it (or a newer change of the
    same thread); a ``last`` read after could name a change the index read missed."""
    last, floor = sql.last_change(conn), sql.feed_floor(conn)
    threads, tombstones = sql.changes_since(conn, after, limit, namespace)
    return change_page(
        map(meta_from_values, threads), tombstones, limit=limit, floor=floor, last=last
    )


def _thread_heads(ids: list[str], conn: Connection) -> list[IndexEntry]:
    heads = [sql.thread_head(conn, tid) for tid in ids]
    return [head for head in heads if head is not None]


def _get_meta(thread_id: str, conn: Connection) -> ThreadMeta | None:
    row = sql.read_projection_row(conn, thread_id)
    return None if row is None else projection_from_row(row).meta


def _read_items(
    thread_id: str, after_seq: int, limit: int | None, conn: Connection
) -> list[StoredItem] | None:
    """The items, checked against the thread's ``last_seq`` read in the same statement: a
    log with a hole raises :class:`StoreFormatError` instead of reading as shorter."""
    last, rows = sql.read_items_checked(conn, thread_id, after_seq, limit)
    if last is None:
        return None
    expected = max(0, min(last - after_seq, last if limit is None else limit))
    if len(rows) != expected or any(r[0] != after_seq + 1 + i for i, r in enumerate(rows)):
        raise StoreFormatError(
            f"the log of thread {thread_id!r} is damaged: expected seqs "
            f"{after_seq + 1}..{after_seq + expected}, read {len(rows)} items"
        )
    return [stored_item(row) for row in rows]


def _read_context(thread_id: str, limit: int | None, conn: Connection) -> list[StoredItem] | None:
    rows = sql.read_context(conn, thread_id, limit)
    return None if rows is None else [stored_item(row) for row in rows]


# -- opening ----------------------------------------------------------------------------


def _open_writer_connection(url: str, config: PostgresConfig) -> Connection:
    """The first write connection: connect, then create or check the schema."""
    conn = sql.connect(url, durability=config.durability, connect_timeout=config.connect_timeout)
    try:
        sql.ensure_schema(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _check_read_only(conn: Connection) -> bytes:
    sql.check_schema(conn)
    return sql.cursor_secret(conn)


@asynccontextmanager
async def open_postgres_engine(
    url: str,
    *,
    config: PostgresConfig = DEFAULTS,
    lanes: Lanes | None = None,
    read_only: bool = False,
    faults: PostgresFaults | None = None,
) -> AsyncIterator[PostgresEngine]:
    """Open the PostgreSQL engine of the store database at ``url`` for the block.

    Writable: connects the writer thread (``synchronous_commit`` for
    ``config.durability``), creates or checks the schema
    (:class:`~threadstore.StoreFormatError`), starts up to ``config.reader_connections``
    reader threads, the ownership session and the listener, and takes over the lagging
    threads no process owns (the store recovers them before it opens). Other processes
    may write the same database meanwhile. Read-only: the readers and the listener only,
    after a schema check. A server that cannot be reached raises
    :class:`~threadstore.StoreUnavailableError` naming host and database. Leaving the
    block commits what is queued, stops the writer and closes every connection (which
    releases this process's threads to the others), also on cancellation. ``faults``
    (:class:`PostgresFaults`) injects server failures into the writer's transactions (a
    test seam).
    """
    target = redact(url)
    connect_reader = partial(
        sql.connect,
        url,
        durability=config.durability,
        read_only=True,
        connect_timeout=config.connect_timeout,
    )
    if read_only:
        async with ReaderPool(target, connect_reader, config.reader_connections) as readers:
            secret = await readers.run(_check_read_only)
            engine = PostgresEngine(target=target, readers=readers, secret=secret, config=config)
            async with _listening(connect_reader, engine, readers):
                yield engine
        return
    first = [True]

    def connect() -> Connection:
        if first[0]:
            first[0] = False
            return _open_writer_connection(url, config)
        return sql.connect(
            url, durability=config.durability, connect_timeout=config.connect_timeout
        )

    writer = Writer(connect, connect_aside=connect_reader, faults=faults, lanes=lanes)
    await writer.start()
    try:
        secret = await writer.run(sql.cursor_secret)
        async with (
            ReaderPool(target, connect_reader, config.reader_connections) as readers,
            ReaderPool(target, connect_reader, 1) as session,
        ):
            ownership = Ownership(session, idle=config.ownership_idle, bound=config.ownership_bound)
            orphans = await ownership.take_orphans(config.takeover_batch)
            engine = PostgresEngine(
                target=target,
                readers=readers,
                secret=secret,
                writer=writer,
                ownership=ownership,
                orphans=orphans,
                config=config,
            )
            async with _listening(connect_reader, engine, session):
                yield engine
    finally:
        await writer.aclose(config.close_patience)


@asynccontextmanager
async def _listening(
    connect: Callable[[], Connection], engine: PostgresEngine, sender: ReaderPool
) -> AsyncIterator[None]:
    """The engine's listener for the block (``sender`` sends the wake-up that stops it)."""
    listener = Listener(connect, engine.notified, engine.reconnected)
    await listener.start()

    async def wake(payload: str) -> None:
        await sender.run(partial(_notify_wake, payload))

    try:
        yield
    finally:
        await listener.aclose(wake)


def _notify_wake(payload: str, conn: Connection) -> None:
    conn.execute("SELECT pg_notify('threadstore_wake', %s)", (payload,)).fetchall()
