"""The in-memory engine: :class:`threadstore._engine.Engine` over Python dicts.

No threads, no files: a trio task commits the queued writes, choosing each transaction with
the same write lanes (:mod:`threadstore._lanes`) as the SQLite writer but on trio's clock,
so a test under ``trio.testing.MockClock`` runs deterministically. Semantics are the
SQLite engine's (group commit, callbacks in commit order before waiters wake, a failing
write fails alone, reads see committed state only), except that nothing outlives the
store: every ``open_store(":memory:")`` starts empty.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, Generic, TypeVar

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
    LogRow,
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
from .._errors import StoreClosedError, ThreadExistsError, ThreadNotFoundError, ThreadStoreError
from .._feed import EventType
from .._history import context, context_start
from .._items import StoredItem, datetime_to_us
from .._lanes import LaneName, WriteLanes
from .._meta import Patch, Projection, ThreadMeta, fold_log_rows

__all__ = ["MEMORY_TARGET", "MemoryEngine", "open_memory_engine"]

T = TypeVar("T")

#: The ``open_store`` target that selects this engine.
MEMORY_TARGET: Final = ":memory:"

#: SQLite's ``LIKE`` folds ASCII letters only; so does the search here.
_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class SeqGapError(Exception):
    """An append whose first seq does not follow the thread's log (an earlier one failed)."""


class _Batch:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = trio.Event()


class _Job(Generic[T]):
    """One queued write: ``fn()`` applied at commit (it must change nothing if it raises)."""

    __slots__ = ("batch", "error", "fn", "log", "on_done", "result", "size")

    def __init__(
        self,
        fn: Callable[[], T],
        on_done: Callable[[Any], None] | None = None,
        *,
        size: int = 0,
        log: bool = False,
    ) -> None:
        self.fn = fn
        self.on_done = on_done
        self.size = size
        self.log = log
        self.result: T | None = None
        self.error: BaseException | None = None
        self.batch: _Batch | None = None

    def when_committed(self, hook: Callable[[], None]) -> None:
        """Nothing to do: this engine commits on the trio thread, which delivers at once."""

    @property
    def done(self) -> bool:
        """Whether the write has committed or failed: ``error`` and ``result`` are final."""
        return self.batch is not None and self.batch.done.is_set()

    async def wait(self) -> T:
        batch = self.batch
        assert batch is not None
        await batch.done.wait()
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


class _StoredThread:
    """A thread as stored: its metadata (with the fold state) and its log."""

    __slots__ = ("log", "projection")

    def __init__(self, projection: Projection, log: list[LogRow]) -> None:
        self.projection = projection
        self.log = log

    @property
    def last_seq(self) -> int:
        return self.log[-1][0] if self.log else 0


class MemoryEngine(ChangePublisher, OwnsEveryThread):
    """The in-memory engine of one open store (see :func:`open_memory_engine`)."""

    def __init__(self, lanes: Lanes) -> None:
        self._threads: dict[str, _StoredThread] = {}
        self._secret = secrets.token_bytes(32)
        self._lanes: WriteLanes[_Batch, _Job[Any]] = WriteLanes(lanes, _Batch, trio.current_time)
        self._wake = trio.Event()
        self._room = trio.Event()
        self._queued_bytes = 0
        self._closed = False
        self.log_commits = 0
        #: The change index: the last change number given, deleted threads' tombstones
        #: ``(namespace, change, deleted_us)`` and the newest change pruned from them.
        self._last_change = 0
        self._tombstones: dict[str, tuple[str, int, int]] = {}
        self._floor = 0

    @property
    def target(self) -> str:
        return MEMORY_TARGET

    @property
    def writable(self) -> bool:
        return True

    @property
    def cursor_secret(self) -> bytes:
        return self._secret

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    @property
    def external_changes(self) -> bool:
        return False

    def _next_change(self) -> int:
        self._last_change += 1
        return self._last_change

    # -- queueing -----------------------------------------------------------------------

    def _submit(self, job: _Job[Any], lane: LaneName) -> _Batch:
        if self._closed:
            raise StoreClosedError("the store is closed")
        batch, wake = self._lanes.submit(job, lane)
        job.batch = batch
        if lane in ("now", "first"):
            self._queued_bytes += job.size
        if wake:
            self._wake.set()
        return batch

    async def _run(self) -> None:
        """The committer: one transaction after another until stopped and drained."""
        lanes = self._lanes
        while True:
            while not lanes.ready():
                if lanes.stopping:
                    return
                timeout = lanes.timeout()
                with trio.move_on_after(math.inf if timeout is None else timeout):
                    await self._wake.wait()
                self._wake = trio.Event()
            self._commit(lanes.take())
            await trio.lowlevel.checkpoint()

    def _commit(self, groups: list[tuple[_Batch, list[_Job[Any]]]]) -> None:
        """Apply one transaction's jobs in order, then run their callbacks in order and
        wake their waiters."""
        logged = False
        for _, jobs in groups:
            for job in jobs:
                try:
                    job.result = job.fn()
                except Exception as exc:
                    job.error = exc
                else:
                    logged = logged or job.log
        if logged:
            self.log_commits += 1
            self._lanes.log_committed()
        freed = 0
        for batch, jobs in groups:
            for job in jobs:
                freed += job.size
                if job.on_done is not None:
                    job.on_done(job)
            batch.done.set()
        if freed:
            self._queued_bytes -= freed
            self._room.set()
            self._room = trio.Event()

    # -- writes ---------------------------------------------------------------------------

    def append(
        self, op: AppendItems, on_done: Callable[[Completion[None]], None]
    ) -> Completion[None]:
        job: _Job[None] = _Job(partial_call(self._append, op), on_done, size=op.size, log=True)
        self._submit(job, "now")
        return job

    def _append(self, op: AppendItems) -> None:
        stored = self._threads.get(op.thread_id)
        if stored is None:
            raise ThreadNotFoundError(op.thread_id)
        if stored.last_seq != op.rows[0][0] - 1:
            raise SeqGapError(
                f"thread {op.thread_id!r} ends at seq {stored.last_seq}, not {op.rows[0][0] - 1}"
            )
        stored.log.extend(op.rows)

    def rewind(
        self, op: RewindThread, on_done: Callable[[Completion[None]], None]
    ) -> Completion[None]:
        # The context is computed from the log when read (``_history.context``): a rewind
        # is a plain append here.
        return self.append(op.append, on_done)

    def fork(
        self, op: ForkThread, on_done: Callable[[Completion[ThreadMeta]], None]
    ) -> Completion[ThreadMeta]:
        job: _Job[ThreadMeta] = _Job(
            partial_call(self._fork, op), self._publishing("created", on_done), log=True
        )
        self._submit(job, "first")
        return job

    def _fork(self, op: ForkThread) -> ThreadMeta:
        source = self._threads.get(op.source_id)
        if source is None:
            raise ThreadNotFoundError(op.source_id)
        if op.thread_id in self._threads:
            raise ThreadExistsError(op.thread_id)
        log = source.log[: op.through]
        rows = fork_rows(op, log)
        projection = Projection.new(op.thread_id, op.created_us, op.namespace)
        projection = projection.apply(fold_log_rows(rows)).with_change(self._next_change())
        self._threads[op.thread_id] = _StoredThread(projection, rows)
        return projection.meta

    def create(
        self, op: CreateThread, on_done: Callable[[Completion[ThreadMeta]], None]
    ) -> Completion[ThreadMeta]:
        job: _Job[ThreadMeta] = _Job(
            partial_call(self._create, op),
            self._publishing("created", on_done),
            size=op.size,
            log=bool(op.rows),
        )
        self._submit(job, "first")
        return job

    def _create(self, op: CreateThread) -> ThreadMeta:
        if op.thread_id in self._threads:
            raise ThreadExistsError(op.thread_id)
        projection = Projection.new(op.thread_id, op.created_us, op.namespace)
        if op.items:
            projection = projection.apply(
                Patch.from_rows(
                    [
                        (seq, at, item.kind, item.data)
                        for (seq, at, _k, _d), item in zip(op.rows, op.items, strict=True)
                    ]
                )
            )
        projection = projection.with_change(self._next_change())
        self._threads[op.thread_id] = _StoredThread(projection, list(op.rows))
        return projection.meta

    def delete(
        self, op: DeleteThread, on_done: Callable[[Completion[ThreadMeta | None]], None]
    ) -> Completion[ThreadMeta | None]:
        job: _Job[ThreadMeta | None] = _Job(
            partial_call(self._delete, op), self._publishing("deleted", on_done)
        )
        self._submit(job, "now")
        return job

    def _delete(self, op: DeleteThread) -> ThreadMeta | None:
        stored = self._threads.pop(op.thread_id, None)
        if stored is None:
            return None
        meta = stored.projection.with_change(self._next_change()).meta
        self._tombstones[op.thread_id] = (meta.namespace, meta.change, op.deleted_us)
        pruned = [
            (tid, change)
            for tid, (_ns, change, at) in self._tombstones.items()
            if at < op.prune_before_us
        ]
        for tid, change in pruned:
            del self._tombstones[tid]
            self._floor = max(self._floor, change)
        return meta

    async def set_archived(self, op: SetArchived) -> ThreadMeta | None:
        type: EventType = "unarchived" if op.archived_at_us is None else "archived"
        job: _Job[ThreadMeta | None] = _Job(
            partial_call(self._set_archived, op), self._publishing(type)
        )
        self._submit(job, "now")
        return await job.wait()

    def _set_archived(self, op: SetArchived) -> ThreadMeta | None:
        stored = self._threads.get(op.thread_id)
        if stored is None:
            return None
        projection = stored.projection.with_archived_at(op.archived_at_us)
        stored.projection = projection.with_change(self._next_change())
        return stored.projection.meta

    async def project(self, op: ProjectionWrite) -> ThreadMeta | None:
        job: _Job[tuple[ThreadMeta, bool] | None] = _Job(
            partial_call(self._project, op), self._publishing("updated")
        )
        self._submit(job, op.lane)
        result = await job.wait()
        return None if result is None else result[0]

    def _project(self, op: ProjectionWrite) -> tuple[ThreadMeta, bool] | None:
        stored = self._threads.get(op.thread_id)
        if stored is None:
            return None  # deleted meanwhile
        folded = fold_for_write(
            stored.projection, op, lambda after, limit: stored.log[after : after + limit]
        )
        if folded is None:
            return stored.projection.meta, False
        if folded == stored.projection:  # nothing listed changed: no change number
            return stored.projection.meta, False
        stored.projection = folded.with_change(self._next_change())
        return stored.projection.meta, True

    async def wait_for_room(self, limit: int) -> None:
        while self._queued_bytes >= limit:
            await self._room.wait()
        await trio.lowlevel.checkpoint()

    def expedite(self) -> None:
        if self._lanes.expedite():
            self._wake.set()

    async def drain(self) -> None:
        newest = self._lanes.newest_batches()
        self.expedite()
        marker: _Job[None] = _Job(_nothing)
        for batch in [self._submit(marker, "now"), *newest]:
            await batch.done.wait()

    def thread_index(self) -> Sequence[IndexEntry]:
        return [
            (
                tid,
                stored.last_seq,
                stored.projection.meta.seq,
                int(stored.projection.has_user_message),
                stored.projection.meta.namespace,
            )
            for tid, stored in self._threads.items()
        ]

    async def lagging_threads(self) -> list[tuple[str, int, int]]:
        await trio.lowlevel.checkpoint()
        return sorted(
            (tid, stored.projection.meta.seq, stored.last_seq)
            for tid, stored in self._threads.items()
            if stored.projection.meta.seq < stored.last_seq
        )

    # -- reads (committed state; no waiting) ----------------------------------------------

    async def _readable(self) -> None:
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise StoreClosedError(f"store {MEMORY_TARGET!r} is closed: its readers are closed")

    async def get_thread(self, thread_id: str) -> ThreadMeta | None:
        await self._readable()
        stored = self._threads.get(thread_id)
        return None if stored is None else stored.projection.meta

    async def read_items(
        self, thread_id: str, after_seq: int, limit: int | None
    ) -> list[StoredItem] | None:
        await self._readable()
        stored = self._threads.get(thread_id)
        if stored is None:
            return None
        end = None if limit is None else after_seq + limit
        return [stored_item(row) for row in stored.log[after_seq:end]]

    async def read_context(self, thread_id: str, limit: int | None) -> list[StoredItem] | None:
        """The context from the log by the pure rule: O(thread), not through an index."""
        await self._readable()
        stored = self._threads.get(thread_id)
        if stored is None:
            return None
        visible = context(map(stored_item, stored.log))
        start = context_start(visible)
        items = [item for item in visible if item.seq >= start]
        return items if limit is None else items[max(0, len(items) - limit) :]

    async def list_threads(
        self, page: PageQuery
    ) -> tuple[tuple[ThreadMeta, ...], tuple[int, str] | None]:
        """One page, like the SQLite engine's, but by a scan and a sort: O(threads)."""
        await self._readable()
        query = page.query
        column = query.order_by
        needle = query.search.translate(_ASCII_LOWER) if query.search else None
        keyed: list[tuple[tuple[int, str], ThreadMeta]] = []
        for tid, stored in self._threads.items():
            meta = stored.projection.meta
            if (meta.archived_at is not None) != query.archived:
                continue
            if query.namespace is not None and meta.namespace != query.namespace:
                continue
            if not query.include_empty and meta.preview is None and meta.title is None:
                continue
            if needle is not None and not any(
                text is not None and needle in text.translate(_ASCII_LOWER)
                for text in (meta.title, meta.preview, meta.goal)
            ):
                continue
            key = (datetime_to_us(getattr(meta, column)), tid)
            after = page.after
            if after is not None and (key >= after if query.descending else key <= after):
                continue
            keyed.append((key, meta))
        keyed.sort(key=lambda pair: pair[0], reverse=query.descending)
        limit = page.limit
        metas = tuple(meta for _, meta in keyed[:limit])
        if len(keyed) <= limit:
            return metas, None
        return metas, keyed[limit - 1][0]

    async def projector_input(
        self, thread_id: str, target: int
    ) -> tuple[ThreadMeta | None, list[StoredItem]]:
        await self._readable()
        stored = self._threads.get(thread_id)
        if stored is None:
            return None, []
        meta = stored.projection.meta
        return meta, [stored_item(row) for row in stored.log[meta.seq : max(meta.seq, target)]]

    async def changes(self, after: int, limit: int, namespace: str | None) -> ChangePage:
        """The change index by a scan and a sort: O(threads)."""
        await self._readable()
        metas = (stored.projection.meta for stored in self._threads.values())
        return change_page(
            (meta for meta in metas if meta.change > after and namespace in (None, meta.namespace)),
            [
                (tid, ns, change, at)
                for tid, (ns, change, at) in self._tombstones.items()
                if change > after and namespace in (None, ns)
            ],
            limit=limit,
            floor=self._floor,
            last=max(self._last_change, self._floor),
        )

    async def wait_for_changes(self, after: int) -> None:
        await trio.sleep_forever()  # every change of this store is committed here

    # -- errors and statistics ------------------------------------------------------------

    def retryable(self, error: BaseException) -> bool:
        return True  # nothing here fails transiently; a projector's errors are retried

    def statistics(self) -> EngineStatistics:
        return EngineStatistics(log_commits=self.log_commits)

    # -- maintenance (doctor, reproject, export and import, backup) -----------------------

    async def summary(self) -> StoreSummary:
        await self._readable()
        threads = self._threads.values()
        return StoreSummary(
            engine="memory",
            threads=len(self._threads),
            items=sum(stored.last_seq for stored in threads),
            lagging_threads=sum(stored.projection.meta.seq < stored.last_seq for stored in threads),
            schema_version=None,
        )

    async def integrity_check(self) -> list[str]:
        await self._readable()
        return []  # nothing here can be damaged on disk

    async def thread_ids(self) -> list[str]:
        await self._readable()
        return sorted(self._threads)

    async def dump_thread(self, thread_id: str) -> ThreadDump | None:
        await self._readable()
        stored = self._threads.get(thread_id)
        if stored is None:
            return None
        rows = tuple(stored.log)
        # The context is computed from the log when read: the marks are always its own.
        return ThreadDump(
            projection=stored.projection,
            last_seq=stored.last_seq,
            rows=rows,
            hidden=context_marks(rows),
        )

    async def rebuild_thread(self, op: RebuildThread) -> ThreadMeta | None:
        job: _Job[ThreadMeta | None] = _Job(
            partial_call(self._rebuild, op), self._publishing("updated")
        )
        self._submit(job, "now")
        return await job.wait()

    def _rebuild(self, op: RebuildThread) -> ThreadMeta | None:
        stored = self._threads.get(op.thread_id)
        if stored is None:
            return None
        meta = stored.projection.meta
        base = Projection.new(meta.id, datetime_to_us(meta.created_at), meta.namespace)
        archived = meta.archived_at
        base = base.with_archived_at(None if archived is None else datetime_to_us(archived))
        projection = refold(base, stored.log[: op.through], op.extra)
        stored.projection = projection.with_change(self._next_change())
        return stored.projection.meta

    async def import_thread(self, op: ImportThread) -> ThreadMeta:
        job: _Job[ThreadMeta] = _Job(
            partial_call(self._import, op), self._publishing("created"), log=True
        )
        self._submit(job, "first")
        return await job.wait()

    def _import(self, op: ImportThread) -> ThreadMeta:
        meta = op.projection.meta
        if meta.id in self._threads:
            raise ThreadExistsError(meta.id)
        projection = op.projection.with_change(self._next_change())
        self._threads[meta.id] = _StoredThread(projection, list(op.rows))
        return projection.meta

    async def backup(self, dest: str) -> None:
        await self._readable()
        raise ThreadStoreError(
            f"a {MEMORY_TARGET!r} store has no file to back up; export its threads instead"
        )


def partial_call(fn: Callable[[Any], T], op: Any) -> Callable[[], T]:
    """``fn(op)`` later (a closure is cheaper to call than a ``functools.partial``)."""
    return lambda: fn(op)


def _nothing() -> None:
    return None


@asynccontextmanager
async def open_memory_engine(*, lanes: Lanes | None = None) -> AsyncIterator[MemoryEngine]:
    """A fresh, empty in-memory engine for the block, its committer task running.

    Leaving the block commits everything queued and stops the task (shielded: like the
    SQLite writer thread, the committer is not cancelled with its caller)."""
    engine = MemoryEngine(lanes or Lanes())
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_shielded, engine._run)
            try:
                yield engine
            finally:
                engine._closed = True
                engine._lanes.stop()
                engine._wake.set()
    except BaseExceptionGroup as group:
        # Only the body can fail here (the committer does not raise): re-raise the error
        # itself so ``except SomeError`` around the block works.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise  # pragma: no cover - the committer raised too


async def _shielded(fn: Callable[[], Any]) -> None:
    with trio.CancelScope(shield=True):
        await fn()
