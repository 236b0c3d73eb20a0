"""The SQLite engine: :class:`threadstore._engine.Engine` over one WAL database file.

The store's operations become writer jobs (sync functions of the write connection, run on
the writer thread inside a group transaction) and reader functions (run on a reader thread
inside one read transaction); this module holds both, the caches they share, the mapping
of SQLite's errors to threadstore's, and :func:`open_sqlite_engine`, which takes the file
lock, starts the writer (schema, WAL checkpointer) and the reader pool, and stops them.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Final

import trio

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
    OwnsEveryThread,
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
from .._errors import StoreFormatError, ThreadExistsError, ThreadNotFoundError, WriteFailedError
from .._feed import EventType
from .._items import StoredItem
from .._meta import Patch, Projection, ThreadMeta, fold_log_rows
from . import _sql as sql
from ._config import DEFAULTS, Durability, SqliteConfig
from ._faults import Faults
from ._lock import StoreLock
from ._readers import ReaderPool
from ._rows import meta_from_values, projection_from_row, projection_to_row
from ._wal_checkpointer import WalCheckpointer
from ._writer import Job, LogAppend, Writer

__all__ = ["ChangeCounter", "ListedMetas", "RowCache", "SqliteEngine", "open_sqlite_engine"]


class ChangeCounter:
    """The store-wide change numbers, handed out by writer jobs in commit order. Writer
    thread only. A number given in a transaction that rolled back is never reused (a gap is
    harmless: the numbers only have to increase)."""

    def __init__(self, last: int = 0) -> None:
        self.last = last

    def next(self) -> int:
        self.last += 1
        return self.last


class RowCache:
    """The writer's copy of the metadata rows it wrote last, so a projection write need not
    read and decode its row first. Writer thread only; bounded (least recently written
    rows are forgotten). The writer clears it when a transaction rolls back, and jobs that
    change a row otherwise (archive, delete) drop that row, so an entry always equals the
    committed (or, inside a transaction, the current) row.
    """

    def __init__(self, size: int = DEFAULTS.row_cache_size) -> None:
        self._size = size
        self._rows: dict[str, tuple[dict[str, object], Projection]] = {}

    def get(self, thread_id: str) -> tuple[dict[str, object], Projection] | None:
        return self._rows.get(thread_id)

    def put(self, thread_id: str, row: dict[str, object], projection: Projection) -> None:
        rows = self._rows
        rows.pop(thread_id, None)
        if len(rows) >= self._size:
            del rows[next(iter(rows))]
        rows[thread_id] = (row, projection)

    def drop(self, thread_id: str) -> None:
        self._rows.pop(thread_id, None)

    def clear(self) -> None:
        self._rows.clear()


class ListedMetas:
    """``ThreadMeta`` decoded from listed rows, reused while a row's values are unchanged.

    A thread picker lists the same page again and again, and most of its rows have not
    changed since the last time; decoding a row (three datetimes, a 16-field value) costs
    more than fetching it, so a row whose values equal one decoded before gets the same
    (immutable) ``ThreadMeta``. Keyed by the whole row, so a changed column is a new
    entry: the result is always what decoding the row gives. Shared by the reader threads
    (a lock per page); bounded (oldest entries are forgotten first).
    """

    def __init__(self, size: int = DEFAULTS.listed_cache_size) -> None:
        self._size = size
        self._metas: dict[tuple[Any, ...], ThreadMeta] = {}
        self._lock = threading.Lock()

    def decode(self, rows: Sequence[tuple[Any, ...]]) -> tuple[ThreadMeta, ...]:
        """The rows' metadata in order. Sync; reader threads."""
        decode = meta_from_values
        out = []
        with self._lock:
            metas = self._metas
            for row in rows:
                meta = metas.get(row)
                if meta is None:
                    meta = decode(row)
                    if len(metas) >= self._size:
                        del metas[next(iter(metas))]
                    metas[row] = meta
                out.append(meta)
        return tuple(out)


class SqliteEngine(ChangePublisher, OwnsEveryThread):
    """The SQLite engine of one open store (see :func:`open_sqlite_engine`)."""

    def __init__(
        self,
        *,
        path: str,
        readers: ReaderPool,
        secret: bytes,
        writer: Writer | None = None,
        row_cache: RowCache | None = None,
        counter: ChangeCounter | None = None,
        index: Sequence[IndexEntry] = (),
        config: SqliteConfig = DEFAULTS,
    ) -> None:
        self.path = path
        self.readers = readers
        #: The write side (None when read-only); tests reach its WAL checkpointer here.
        self.writer = writer
        if writer is not None:
            self._submit_now = writer.submit_now
        self._secret = secret
        self.config = config
        self._row_cache = row_cache or RowCache(config.row_cache_size)
        self._listed = ListedMetas(config.listed_cache_size)
        self._index = index
        self._counter = counter or ChangeCounter()

    @property
    def target(self) -> str:
        return self.path

    @property
    def writable(self) -> bool:
        return self.writer is not None

    @property
    def cursor_secret(self) -> bytes:
        return self._secret

    @property
    def queued_bytes(self) -> int:
        writer = self.writer
        return writer.queued_bytes if writer is not None else 0

    @property
    def external_changes(self) -> bool:
        return self.writer is None  # read-only: the writer is another process

    def _writer(self) -> Writer:
        assert self.writer is not None
        return self.writer

    # -- writes ---------------------------------------------------------------------------

    def append(
        self, op: AppendItems, on_done: Callable[[Completion[None]], None]
    ) -> Completion[None]:
        job = LogAppend(op.thread_id, op.rows, on_done=on_done, size=op.size)
        self._submit_now(job)
        return job

    def create(
        self, op: CreateThread, on_done: Callable[[Completion[ThreadMeta]], None]
    ) -> Completion[ThreadMeta]:
        job: Job[ThreadMeta] = Job(
            partial(_create_job, self._counter, op),
            on_done=self._publishing("created", on_done),
            size=op.size,
            log=bool(op.rows),
            target="log",
        )
        self._writer().submit(job, first=True)  # a goal-first thread is listed without queueing
        return job

    def rewind(
        self, op: RewindThread, on_done: Callable[[Completion[None]], None]
    ) -> Completion[None]:
        # A job of its own (not the log appends' batched path): rare, and it also updates.
        job: Job[None] = Job(
            partial(_rewind_job, op), on_done=on_done, size=op.append.size, log=True, target="log"
        )
        self._submit_now(job)
        return job

    def fork(
        self, op: ForkThread, on_done: Callable[[Completion[ThreadMeta]], None]
    ) -> Completion[ThreadMeta]:
        job: Job[ThreadMeta] = Job(
            partial(_fork_job, self._counter, op),
            on_done=self._publishing("created", on_done),
            log=True,
            target="log",
        )
        self._writer().submit(job, first=True)  # listed without queueing, like a creation
        return job

    def delete(
        self, op: DeleteThread, on_done: Callable[[Completion[ThreadMeta | None]], None]
    ) -> Completion[ThreadMeta | None]:
        def failed(job: Job[ThreadMeta | None]) -> None:
            if isinstance(job.error, sqlite3.Error):
                job.error = _write_failed(op.thread_id, "delete", job.error)
            on_done(job)

        job: Job[ThreadMeta | None] = Job(
            partial(_delete_job, self._row_cache, self._counter, op),
            on_done=self._publishing("deleted", failed),
        )
        self._writer().submit(job)
        return job

    async def set_archived(self, op: SetArchived) -> ThreadMeta | None:
        type: EventType = "unarchived" if op.archived_at_us is None else "archived"
        job: Job[ThreadMeta | None] = Job(
            partial(_archive_job, self._row_cache, self._counter, op),
            on_done=self._publishing(type),
        )
        self._writer().submit(job)
        try:
            return await job.wait()
        except sqlite3.Error as exc:
            raise _write_failed(op.thread_id, type.removesuffix("d"), exc) from exc

    async def project(self, op: ProjectionWrite) -> ThreadMeta | None:
        lane = op.lane
        job: Job[tuple[ThreadMeta, bool] | None] = Job(
            partial(_project_job, self._row_cache, self._counter, op),
            on_done=self._publishing("updated"),
            target="projection",
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
        return self._index

    async def lagging_threads(self) -> list[tuple[str, int, int]]:
        return await self._writer().run(sql.lagging_threads)

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
        if self.writer is not None:
            await trio.sleep_forever()  # every change of this store is committed here
        # A poll: another process's commits cannot set a trio.Event here.
        interval = self.config.feed_poll_interval
        while await self.readers.run(sql.last_change) <= after:  # noqa: ASYNC110
            await trio.sleep(interval)

    # -- errors and statistics ------------------------------------------------------------

    def retryable(self, error: BaseException) -> bool:
        if isinstance(error, sqlite3.Error):
            return sql.is_transient(error)
        return True

    def statistics(self) -> EngineStatistics:
        writer = self.writer
        if writer is None:
            return EngineStatistics()
        checkpointer = writer.checkpointer
        return EngineStatistics(
            log_commits=writer.log_commits,
            checkpoints=checkpointer.checkpoints if checkpointer else 0,
            checkpoint_failures=checkpointer.failures if checkpointer else 0,
        )

    # -- maintenance (doctor, reproject, export and import, backup) -----------------------

    async def summary(self) -> StoreSummary:
        threads, items, lagging, version = await self.readers.run(sql.store_summary)
        return StoreSummary(
            engine="sqlite",
            threads=threads,
            items=items,
            lagging_threads=lagging,
            schema_version=version,
        )

    async def integrity_check(self) -> list[str]:
        return await self.readers.run(sql.integrity_check)

    async def thread_ids(self) -> list[str]:
        return await self.readers.run(sql.thread_ids)

    async def dump_thread(self, thread_id: str) -> ThreadDump | None:
        return await self.readers.run(partial(_dump_thread, thread_id))

    async def rebuild_thread(self, op: RebuildThread) -> ThreadMeta | None:
        job: Job[ThreadMeta | None] = Job(
            partial(_rebuild_job, self._row_cache, self._counter, op),
            on_done=self._publishing("updated"),
        )
        self._writer().submit(job)
        return await job.wait()

    async def import_thread(self, op: ImportThread) -> ThreadMeta:
        job: Job[ThreadMeta] = Job(
            partial(_import_job, self._counter, op),
            on_done=self._publishing("created"),
            log=True,
            target="log",
        )
        self._writer().submit(job)
        return await job.wait()

    async def backup(self, dest: str) -> None:
        await self.readers.run(partial(_backup, dest))


def _write_failed(thread_id: str, operation: str, error: BaseException) -> WriteFailedError:
    failed = WriteFailedError(thread_id, operation, str(error))
    failed.__cause__ = error
    return failed


# -- writer jobs (sync; writer thread only) ---------------------------------------------


def _rewind_job(op: RewindThread, conn: sqlite3.Connection) -> None:
    thread_id, rows, _size = op.append
    sql.append_items(conn, thread_id, rows, expected_last=rows[0][0] - 1)
    sql.hide_items(conn, thread_id, op.to_seq, rows[0][0])


def _fork_job(counter: ChangeCounter, op: ForkThread, conn: sqlite3.Connection) -> ThreadMeta:
    """Copy the source's context as it stood at ``op.through`` (the pure rule over its log,
    not the ``hidden`` marks, which later rewinds may have changed)."""
    if sql.thread_last_seq(conn, op.source_id) is None:
        raise ThreadNotFoundError(op.source_id)
    log = sql.read_items(conn, op.source_id, 0, op.through)
    rows = fork_rows(op, log)
    projection = Projection.new(op.thread_id, op.created_us, op.namespace)
    projection = projection.apply(fold_log_rows(rows)).with_change(counter.next())
    try:
        sql.insert_thread(conn, projection_to_row(projection))
    except sqlite3.IntegrityError as exc:
        raise ThreadExistsError(op.thread_id) from exc
    sql.append_items(conn, op.thread_id, rows, expected_last=0)
    sql.insert_hidden(conn, op.thread_id, rows[:1])
    return projection.meta


def _create_job(counter: ChangeCounter, op: CreateThread, conn: sqlite3.Connection) -> ThreadMeta:
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
    projection = projection.with_change(counter.next())
    try:
        sql.insert_thread(conn, projection_to_row(projection))
    except sqlite3.IntegrityError as exc:
        raise ThreadExistsError(op.thread_id) from exc
    sql.append_items(conn, op.thread_id, op.rows, expected_last=0)
    return projection.meta


def _project_job(
    cache: RowCache, counter: ChangeCounter, op: ProjectionWrite, conn: sqlite3.Connection
) -> tuple[ThreadMeta, bool] | None:
    """Fold the pending items (or, if they do not follow the row, the log itself) into the
    row; the metadata and whether the row changed (then it has a new change number)."""
    thread_id = op.thread_id
    cached = cache.get(thread_id)
    if cached is not None:
        row, projection = cached
    else:
        read = sql.read_projection_row(conn, thread_id)
        if read is None:
            return None  # deleted meanwhile
        row, projection = read, projection_from_row(read)
    folded = fold_for_write(
        projection, op, lambda after, limit: sql.read_items(conn, thread_id, after, limit)
    )
    if folded is None:
        return projection.meta, False
    new_row = projection_to_row(folded)
    changed = bool(sql.changed_columns(row, new_row))
    if changed:
        folded = folded.with_change(counter.next())
        new_row["change"] = folded.meta.change
    if not sql.update_projection(conn, row, new_row):
        cache.drop(thread_id)
        return None  # deleted meanwhile
    cache.put(thread_id, new_row, folded)
    return folded.meta, changed


def _archive_job(
    cache: RowCache, counter: ChangeCounter, op: SetArchived, conn: sqlite3.Connection
) -> ThreadMeta | None:
    cache.drop(op.thread_id)
    row = sql.set_archived(conn, op.thread_id, op.archived_at_us, counter.next())
    return None if row is None else projection_from_row(row).meta


def _delete_job(
    cache: RowCache, counter: ChangeCounter, op: DeleteThread, conn: sqlite3.Connection
) -> ThreadMeta | None:
    """Delete the thread, leaving a tombstone, and prune tombstones past their retention;
    return its metadata as it was, with the deletion's change (None if it was gone)."""
    thread_id = op.thread_id
    cache.drop(thread_id)
    row = sql.read_projection_row(conn, thread_id)
    if row is None:
        return None
    sql.delete_thread(conn, thread_id)
    meta = projection_from_row(row).with_change(counter.next()).meta
    sql.insert_tombstone(conn, thread_id, meta.namespace, meta.change, op.deleted_us)
    sql.prune_tombstones(conn, op.prune_before_us)
    return meta


# -- reader functions (sync; reader threads only) ---------------------------------------


def _projector_input(
    thread_id: str, target: int, conn: sqlite3.Connection
) -> tuple[ThreadMeta | None, list[StoredItem]]:
    row = sql.read_projection_row(conn, thread_id)
    if row is None:
        return None, []
    meta = projection_from_row(row).meta
    rows = sql.read_items(conn, thread_id, meta.seq, max(0, target - meta.seq))
    return meta, [stored_item(r) for r in rows]


def _list_page(
    metas_of: ListedMetas, page: PageQuery, conn: sqlite3.Connection
) -> tuple[tuple[ThreadMeta, ...], tuple[int, str] | None]:
    """One page of metadata, decoded here (not on the trio thread), and the cursor key of
    its last row if more rows follow."""
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
    return metas, (int(last[_COLUMN[query.order_by]]), str(last[0]))  # type: ignore[call-overload]


#: A column's index in the rows ``sql.list_threads`` returns.
_COLUMN: Final = {name: index for index, name in enumerate(sql.THREAD_COLUMNS)}


def _changes(after: int, limit: int, namespace: str | None, conn: sqlite3.Connection) -> ChangePage:
    """The change index after ``after``: threads and tombstones merged in change order."""
    threads, tombstones = sql.changes_since(conn, after, limit, namespace)
    return change_page(
        map(meta_from_values, threads),
        tombstones,
        limit=limit,
        floor=sql.feed_floor(conn),
        last=sql.last_change(conn),
    )


def _get_meta(thread_id: str, conn: sqlite3.Connection) -> ThreadMeta | None:
    row = sql.read_projection_row(conn, thread_id)
    return None if row is None else projection_from_row(row).meta


def _read_items(
    thread_id: str, after_seq: int, limit: int | None, conn: sqlite3.Connection
) -> list[StoredItem] | None:
    """The items, decoded here (not on the trio thread) and checked against the thread's
    ``last_seq``: a log with a hole or cut short (a damaged file) raises
    :class:`StoreFormatError` instead of reading as shorter."""
    last = sql.thread_last_seq(conn, thread_id)
    if last is None:
        return None
    rows = sql.read_items(conn, thread_id, after_seq, limit)
    expected = max(0, min(last - after_seq, last if limit is None else limit))
    if len(rows) != expected or any(r[0] != after_seq + 1 + i for i, r in enumerate(rows)):
        raise StoreFormatError(
            f"the log of thread {thread_id!r} is damaged: expected seqs "
            f"{after_seq + 1}..{after_seq + expected}, read {len(rows)} items"
        )
    return [stored_item(row) for row in rows]


def _read_context(
    thread_id: str, limit: int | None, conn: sqlite3.Connection
) -> list[StoredItem] | None:
    if not sql.thread_exists(conn, thread_id):
        return None
    return [stored_item(row) for row in sql.read_context(conn, thread_id, limit)]


# -- maintenance jobs (sync; writer or reader threads) ------------------------------------


def _dump_thread(thread_id: str, conn: sqlite3.Connection) -> ThreadDump | None:
    row = sql.read_projection_row(conn, thread_id)
    if row is None:
        return None
    return ThreadDump(
        projection=projection_from_row(row),
        last_seq=int(row["last_seq"]),  # type: ignore[call-overload]
        rows=tuple(sql.read_items(conn, thread_id, 0, None)),
        hidden=sql.hidden_seqs(conn, thread_id),
    )


def _rebuild_job(
    cache: RowCache, counter: ChangeCounter, op: RebuildThread, conn: sqlite3.Connection
) -> ThreadMeta | None:
    """Refold the thread's row from its log (as committed: this job's transaction sees
    every earlier write) and mark its context again."""
    cache.drop(op.thread_id)
    row = sql.read_projection_row(conn, op.thread_id)
    if row is None:
        return None
    meta = projection_from_row(row).meta
    rows = sql.read_items(conn, op.thread_id, 0, None)
    base = Projection.new(meta.id, int(row["created_at"]), meta.namespace)  # type: ignore[call-overload]
    base = base.with_archived_at(row["archived_at"])  # type: ignore[arg-type]
    projection = refold(base, [r for r in rows if r[0] <= op.through], op.extra)
    projection = projection.with_change(counter.next())
    sql.replace_projection(conn, projection_to_row(projection))
    sql.set_hidden(conn, op.thread_id, context_marks(rows))
    return projection.meta


def _import_job(counter: ChangeCounter, op: ImportThread, conn: sqlite3.Connection) -> ThreadMeta:
    thread_id = op.projection.meta.id
    projection = op.projection.with_change(counter.next())
    try:
        sql.insert_thread(conn, projection_to_row(projection))
    except sqlite3.IntegrityError as exc:
        raise ThreadExistsError(thread_id) from exc
    sql.append_items(conn, thread_id, op.rows, expected_last=0)
    sql.set_hidden(conn, thread_id, context_marks(op.rows))
    return projection.meta


def _backup(dest: str, conn: sqlite3.Connection) -> None:
    sql.backup_to(conn, dest)


# -- opening ----------------------------------------------------------------------------


def _connect_writer(path: str, durability: Durability, busy_ms: int) -> sqlite3.Connection:
    conn = sql.connect(path, durability=durability, busy_timeout_ms=busy_ms)
    try:
        sql.ensure_schema(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _load_index(counter: ChangeCounter, conn: sqlite3.Connection) -> tuple[list[IndexEntry], bytes]:
    counter.last = sql.last_change(conn)
    return sql.thread_index(conn), sql.cursor_secret(conn)


def _check_read_only(conn: sqlite3.Connection) -> bytes:
    sql.check_schema(conn)
    return sql.cursor_secret(conn)


@asynccontextmanager
async def open_sqlite_engine(
    path: str,
    *,
    config: SqliteConfig = DEFAULTS,
    lanes: Lanes | None = None,
    read_only: bool = False,
    faults: Faults | None = None,
) -> AsyncIterator[SqliteEngine]:
    """Open the SQLite engine of the store file at ``path`` for the block.

    Writable: takes the single-writer file lock (:class:`~threadstore.StoreLockedError`
    names the holder), starts the writer thread (WAL, ``config.durability``, schema creation
    or check: :class:`~threadstore.StoreFormatError`) with its WAL checkpointer and the
    write ``lanes``, and up to ``config.reader_connections`` reader threads. Read-only: the
    readers only. Leaving the block closes the readers, commits what is queued, stops the
    writer and releases the lock, also on cancellation.
    """
    if read_only:
        async with ReaderPool(path, config.reader_connections) as readers:
            secret = await readers.run(_check_read_only)
            yield SqliteEngine(path=path, readers=readers, secret=secret, config=config)
        return
    lock = await StoreLock.acquire_async(path)
    try:
        durability, busy_ms = config.durability, config.busy_timeout_ms
        row_cache = RowCache(config.row_cache_size)
        counter = ChangeCounter()
        checkpointer = WalCheckpointer(
            partial(sql.connect, path, durability=durability, busy_timeout_ms=busy_ms),
            interval=config.checkpoint_interval,
            eager_bytes=config.checkpoint_eager_bytes,
        )
        writer = Writer(
            partial(_connect_writer, path, durability, busy_ms),
            faults=faults,
            on_rollback=row_cache.clear,
            checkpointer=checkpointer,
            lanes=lanes,
            backstop_pages=config.backstop_pages,
        )
        await writer.start()
        try:
            index, secret = await writer.run(partial(_load_index, counter))
            async with ReaderPool(
                path, config.reader_connections, config.busy_timeout_ms
            ) as readers:
                yield SqliteEngine(
                    path=path,
                    readers=readers,
                    secret=secret,
                    writer=writer,
                    row_cache=row_cache,
                    counter=counter,
                    index=index,
                    config=config,
                )
        finally:
            await writer.aclose()
    finally:
        lock.release()
