"""The PostgreSQL engine: :class:`threadstore._engine.Engine` over one PostgreSQL database.

The store's operations become writer jobs (sync functions of the write connection, run on
the writer thread inside a group transaction, :mod:`._writer`) and reader functions (run on
a reader thread, :mod:`._readers`); this module holds both, and
:func:`open_postgres_engine`, which connects, creates or checks the schema, loads the thread
index and starts the writer and the readers.

Phase 1 of the engine: one process writes a store at a time, as with SQLite (the store
allocates seqs in memory), enforced by a session advisory lock on the write connection
(:class:`~threadstore.StoreLockedError` names the holder); read-only stores may read it
alongside, from any process. See ``docs/postgres.md``.

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
from ..sqlite._engine import ChangeCounter, ListedMetas, RowCache
from ..sqlite._rows import meta_from_values, projection_from_row, projection_to_row
from . import _sql as sql
from ._config import DEFAULTS, PostgresConfig
from ._faults import PostgresFaults
from ._readers import ReaderPool
from ._url import redact
from ._writer import Job, LogAppend, Writer

__all__ = ["PostgresEngine", "open_postgres_engine"]

Connection = psycopg.Connection[Any]
log = workers.get_logger(__name__)


class PostgresEngine(ChangePublisher):
    """The PostgreSQL engine of one open store (see :func:`open_postgres_engine`).

    Every method runs on the trio thread and only queues work for the writer or reader
    threads: no driver call is made on the trio thread.
    """

    def __init__(
        self,
        *,
        target: str,
        readers: ReaderPool,
        secret: bytes,
        writer: Writer | None = None,
        row_cache: RowCache | None = None,
        counter: ChangeCounter | None = None,
        index: Sequence[IndexEntry] = (),
        config: PostgresConfig = DEFAULTS,
    ) -> None:
        self._target = target
        self.readers = readers
        #: The write side (None when read-only).
        self.writer = writer
        self._secret = secret
        self.config = config
        self._row_cache = row_cache or RowCache(config.row_cache_size)
        self._listed = ListedMetas(config.listed_cache_size)
        self._index = index
        self._counter = counter or ChangeCounter()

    @property
    def target(self) -> str:
        """The store's URL without its password."""
        return self._target

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
        # Phase 1: one writer per database, which numbers every change itself; a
        # read-only store follows it by polling the change index.
        return self.writer is None

    def _writer(self) -> Writer:
        assert self.writer is not None
        return self.writer

    # -- writes ---------------------------------------------------------------------------

    def append(
        self, op: AppendItems, on_done: Callable[[Completion[None]], None]
    ) -> Completion[None]:
        job = LogAppend(op.thread_id, op.rows, on_done=on_done, size=op.size)
        self._writer().submit_now(job)
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
        self._writer().submit(job, first=True)
        return job

    def rewind(
        self, op: RewindThread, on_done: Callable[[Completion[None]], None]
    ) -> Completion[None]:
        job: Job[None] = Job(
            partial(_rewind_job, op),
            on_done=on_done,
            size=op.append.size,
            log=True,
            target="log",
        )
        self._writer().submit_now(job)
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
        except psycopg.Error as exc:
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
        return await self.readers.run(sql.lagging_threads)

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
            await trio.sleep_forever()  # the one writer: every change is committed here
        # A poll of the index (LISTEN/NOTIFY joins with several writers per database).
        interval = self.config.feed_poll_interval
        while await self.readers.run(sql.last_change) <= after:  # noqa: ASYNC110
            await trio.sleep(interval)

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


def _rewind_job(op: RewindThread, conn: Connection) -> None:
    thread_id, rows, _size = op.append
    sql.append_items(conn, thread_id, rows, expected_last=rows[0][0] - 1)
    sql.hide_items(conn, thread_id, op.to_seq, rows[0][0])


def _fork_job(counter: ChangeCounter, op: ForkThread, conn: Connection) -> ThreadMeta:
    """Copy the source's context as it stood at ``op.through`` (the pure rule over its log)."""
    if sql.thread_last_seq(conn, op.source_id) is None:
        raise ThreadNotFoundError(op.source_id)
    log_rows = sql.read_items(conn, op.source_id, 0, op.through)
    rows = fork_rows(op, log_rows)
    projection = Projection.new(op.thread_id, op.created_us, op.namespace)
    projection = projection.apply(fold_log_rows(rows)).with_change(counter.next())
    if not sql.insert_thread(conn, projection_to_row(projection)):
        raise ThreadExistsError(op.thread_id)
    sql.append_items(conn, op.thread_id, rows, expected_last=0)
    sql.insert_hidden(conn, op.thread_id, rows[:1])
    return projection.meta


def _create_job(counter: ChangeCounter, op: CreateThread, conn: Connection) -> ThreadMeta:
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
    if not sql.insert_thread(conn, projection_to_row(projection)):
        raise ThreadExistsError(op.thread_id)
    sql.append_items(conn, op.thread_id, op.rows, expected_last=0)
    return projection.meta


def _project_job(
    cache: RowCache, counter: ChangeCounter, op: ProjectionWrite, conn: Connection
) -> tuple[ThreadMeta, bool] | None:
    """Fold the pending items (or, if they do not follow the row, the log itself) into the
    row; the metadata and whether the row changed (then it has a new change number)."""
    thread_id = op.thread_id
    cached = cache.get(thread_id)
    if cached is not None:
        # The writer's copy: the row exists (a delete, by this writer, drops it first).
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
    if not sql.update_projection(conn, row, new_row, exists=cached is not None):
        cache.drop(thread_id)
        return None  # deleted meanwhile
    cache.put(thread_id, new_row, folded)
    return folded.meta, changed


def _archive_job(
    cache: RowCache, counter: ChangeCounter, op: SetArchived, conn: Connection
) -> ThreadMeta | None:
    cache.drop(op.thread_id)
    row = sql.set_archived(conn, op.thread_id, op.archived_at_us, counter.next())
    return None if row is None else projection_from_row(row).meta


def _delete_job(
    cache: RowCache, counter: ChangeCounter, op: DeleteThread, conn: Connection
) -> ThreadMeta | None:
    """Delete the thread, leaving a tombstone, and prune tombstones past their retention;
    its metadata as it was, with the deletion's change (None if it was gone already)."""
    cache.drop(op.thread_id)
    row = sql.delete_thread(conn, op.thread_id)
    if row is None:
        return None
    meta = projection_from_row(row).with_change(counter.next()).meta
    sql.insert_tombstone(conn, op.thread_id, meta.namespace, meta.change, op.deleted_us)
    sql.prune_tombstones(conn, op.prune_before_us)
    return meta


def _rebuild_job(
    cache: RowCache, counter: ChangeCounter, op: RebuildThread, conn: Connection
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


def _import_job(counter: ChangeCounter, op: ImportThread, conn: Connection) -> ThreadMeta:
    projection = op.projection.with_change(counter.next())
    thread_id = projection.meta.id
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
    """The change index after ``after``: threads and tombstones merged in change order."""
    threads, tombstones = sql.changes_since(conn, after, limit, namespace)
    return change_page(
        map(meta_from_values, threads),
        tombstones,
        limit=limit,
        floor=sql.feed_floor(conn),
        last=sql.last_change(conn),
    )


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


def _connect_writer(url: str, config: PostgresConfig, patience: float = 0.0) -> Connection:
    """A write connection holding the store's writer lock (also after a reconnect: a
    writer that lost its session lost the lock with it; ``patience``: see
    :func:`sql.take_writer_lock`)."""
    conn = sql.connect(url, durability=config.durability, connect_timeout=config.connect_timeout)
    try:
        sql.take_writer_lock(conn, redact(url), patience)
    except BaseException:
        conn.close()
        raise
    return conn


def _open_writer_connection(url: str, config: PostgresConfig) -> Connection:
    """The first write connection: connect and lock, then create or check the schema."""
    conn = _connect_writer(url, config)
    try:
        sql.ensure_schema(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _load_index(counter: ChangeCounter, conn: Connection) -> tuple[list[IndexEntry], bytes]:
    counter.last = sql.last_change(conn)
    return sql.thread_index(conn), sql.cursor_secret(conn)


#: Seconds a reconnecting writer waits for its old session to let go of the writer lock.
_RECONNECT_PATIENCE: Final = 2.0


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
    (:class:`~threadstore.StoreFormatError`), loads the thread index, and starts up to
    ``config.reader_connections`` reader threads. Read-only: the readers only, after a
    schema check. A server that cannot be reached raises
    :class:`~threadstore.StoreUnavailableError` naming host and database. Leaving the
    block closes the readers, commits what is queued and stops the writer, also on
    cancellation. ``faults`` (:class:`PostgresFaults`) injects server failures into the
    writer's transactions (a test seam).
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
            yield PostgresEngine(target=target, readers=readers, secret=secret, config=config)
        return
    row_cache = RowCache(config.row_cache_size)
    counter = ChangeCounter()
    first = [True]

    def connect() -> Connection:
        if first[0]:
            first[0] = False
            return _open_writer_connection(url, config)
        return _connect_writer(url, config, patience=_RECONNECT_PATIENCE)

    def xact_status(xid: str) -> str | None:
        conn = connect_reader()
        try:
            return sql.transaction_status(conn, xid)
        finally:
            conn.close()

    writer = Writer(
        connect,
        on_rollback=row_cache.clear,
        xact_status=xact_status,
        release=sql.release_writer_lock,
        faults=faults,
        lanes=lanes,
    )
    await writer.start()
    try:
        index, secret = await writer.run(partial(_load_index, counter))
        async with ReaderPool(target, connect_reader, config.reader_connections) as readers:
            yield PostgresEngine(
                target=target,
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
