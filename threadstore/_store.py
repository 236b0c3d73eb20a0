"""The public store: durable log appends, barriers, explicit mutations, reads, the feed.

:class:`Store` validates and orders input on the trio thread and hands plain operations
to its engine (:mod:`threadstore._engine`); per-thread projection runs in actors whose
body is :class:`threadstore._projection_driver.ProjectionDriver`; :func:`open_store`
(:mod:`threadstore._open`) opens the engine and wires the pieces together.
"""

from __future__ import annotations

import types
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import Any, Final, Literal

import attrs
import structlog
import trio

import workers

from ._config import Limits, StoreConfig, is_int
from ._engine import (
    AppendItems,
    Completion,
    CreateThread,
    DeleteThread,
    Engine,
    ForkThread,
    IndexEntry,
    PageQuery,
    RewindThread,
    SetArchived,
)
from ._errors import (
    AppendFailedError,
    InvalidItemError,
    ProjectionFailedError,
    ReadOnlyStoreError,
    StoreClosedError,
    StoreOverloadedError,
    ThreadDiscardedError,
    ThreadExistsError,
    ThreadNotFoundError,
    ThreadStoreError,
    WriteFailedError,
    shorten,
)
from ._feed import Feed, ThreadEvent
from ._history import CONTROL_KINDS, FORK_KIND, REWIND_KIND
from ._items import (
    Item,
    StoredItem,
    Timestamps,
    encode_item,
    metadata_item,
    new_thread_id,
    validate_namespace,
    validate_thread_id,
)
from ._maintenance import Maintenance
from ._meta import Pending, ThreadMeta
from ._page_token import CursorQuery, decode_cursor, encode_cursor
from ._projection_driver import ProjectionDriver
from ._scoped import ScopedStore
from ._thread_state import ThreadState
from ._values import UNSET, StoreStatistics, ThreadPage

__all__ = ["Receipt", "Store", "ThreadNotMetError"]

log = workers.get_logger(__name__)

OrderBy = Literal["updated_at", "created_at", "recency_at"]
ORDERS: Final = ("updated_at", "created_at", "recency_at")
_UNSET: Final[Any] = UNSET
_LIMITS: Final = Limits()  # the defaults of public arguments
_NO_CONTEXT: Final[Mapping[str, Any]] = types.MappingProxyType({})  # no structlog bindings


@attrs.frozen(kw_only=True, eq=False)
class Receipt:
    """What an append returns: the thread and the last seq its items were given.

    ``await durable()`` returns once the items are committed to the log (raises
    :class:`AppendFailedError` if that commit failed: none of them were stored).
    ``await visible()`` returns once the thread's metadata reflects them (a barrier, see
    :meth:`Store.flush`). Both may be awaited any number of times; cancelling a wait does
    not affect the append.
    """

    thread_id: str
    _seq: int = attrs.field(alias="seq")
    _store: Store = attrs.field(alias="store", repr=False)
    _job: Completion[Any] = attrs.field(alias="job", repr=False)

    @property
    def seq(self) -> int:
        """The seq of the last item. On a store other processes write too (PostgreSQL)
        the database gives seqs as it commits: known once :meth:`durable` returned
        (``append`` returns then); before, this raises :class:`ThreadStoreError`."""
        if self._seq:
            return self._seq
        job = self._job
        if job.done and job.error is None and job.result:
            return int(job.result)
        raise ThreadStoreError(
            f"the seq of this append to thread {self.thread_id!r} is given at its commit: "
            "await receipt.durable() first"
        )

    async def durable(self) -> None:
        """Block until the items are in the log; raise AppendFailedError if they never are."""
        await self._job.wait()

    def _committed(self) -> bool | None:
        """Sync: True once committed, False if the commit failed, None while pending.

        For the access layers, which finish a batch of receipts without a checkpoint each."""
        job = self._job
        return job.error is None if job.done else None

    def _when_committed(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` from the engine's thread when the items commit (best effort; for
        the access layers, see ``Completion.when_committed``)."""
        self._job.when_committed(hook)

    async def visible(self) -> None:
        """Block until the metadata reflects these items (``flush(thread_id, seq)``)."""
        await self.durable()
        await self._store.flush(self.thread_id, self.seq)


class _Append:
    """One append call: its log operation, and what its completion needs on the trio thread.

    It is the operation's ``on_done`` callback itself (one object per append, not two).
    """

    __slots__ = ("context", "epoch", "explicit", "items", "op", "state", "store")

    def __init__(
        self,
        store: Store,
        state: ThreadState,
        op: AppendItems,
        items: tuple[Item, ...],
        explicit: bool,
    ) -> None:
        self.store = store
        self.state = state
        self.op = op
        self.items = items
        self.epoch = state.epoch
        #: The appender's structlog context: the projection's log events carry it. (The
        #: usual empty one is shared: it is kept until the projection write.)
        self.context = structlog.contextvars.get_contextvars() or _NO_CONTEXT
        #: update_thread: waits for visibility, never held in a coalescing window.
        self.explicit = explicit

    def __call__(self, job: Completion[Any]) -> None:
        self.store._appended(self, job)


class ThreadNotMetError(ThreadNotFoundError):
    """A sync call (``append_nowait``) named a thread this process has not met, in a
    store other processes write too: it may exist; an async call looks it up."""

    def __init__(self, thread_id: str) -> None:
        super().__init__(thread_id)
        self.args = (
            f"no thread with id {shorten(thread_id)} known to this process yet (another "
            "process may have made it: an async call such as append() looks it up)",
        )


@attrs.define
class _Counters:
    appends: int = 0
    items_appended: int = 0


class Store(Maintenance):
    """A threadstore database opened by :func:`open_store`. See the module README.

    All methods run on the trio thread; storage work happens in the engine (for SQLite, on
    its writer thread or reader threads). Methods are safe to call from many tasks at once.
    """

    def __init__(
        self,
        *,
        path: str,
        engine: Engine,
        config: StoreConfig,
    ) -> None:
        self.path = path
        self.read_only = not engine.writable
        self._engine = engine
        self._secret = engine.cursor_secret
        self._projectors = config.projectors
        self._config = config
        self._max_item_bytes = config.limits.max_item_bytes
        self._max_pending_bytes = config.limits.max_pending_bytes
        self._threads: dict[str, ThreadState] = {}
        #: Other processes write this store too: the engine allocates seqs, and threads
        #: are looked up as they are met (:meth:`_meet`).
        self._shared = engine.shared
        self._pool: workers.ActorPool[str, Pending] | None = None
        self._times = Timestamps()
        self._closing = False
        self._feed = Feed(engine)  # ``open_store`` sets where it starts
        engine.set_change_listener(self._feed.publish)
        self._n = _Counters()
        #: The body of the projection actors (the pool is opened by ``open_store``).
        self._driver = ProjectionDriver(
            engine=engine, threads=self._threads, projectors=config.projectors
        )

    # -- guards -------------------------------------------------------------------------

    def _writable(self) -> Engine:
        if self.read_only:
            raise ReadOnlyStoreError(f"store {self.path!r} was opened read-only")
        if self._closing:
            raise StoreClosedError(f"store {self.path!r} is closed")
        return self._engine

    def _live(self, thread_id: object) -> ThreadState:
        state = self._threads.get(thread_id) if isinstance(thread_id, str) else None
        if state is None or state.deleted:
            tid = validate_thread_id(thread_id)
            if self._shared and state is None:
                raise ThreadNotMetError(tid)
            raise ThreadNotFoundError(tid)
        return state

    async def _meet(self, thread_id: object) -> None:
        """In a shared store, look up a thread this process has not met (another process
        made it); raise ThreadNotFoundError if there is no such thread. (No checkpoint of
        its own on the usual path: an append's hot path checkpoints once, later.)"""
        if not self._shared or not isinstance(thread_id, str) or thread_id in self._threads:
            return  # noqa: ASYNC910 - the callers checkpoint
        tid = validate_thread_id(thread_id)
        entry = await self._engine.lookup_thread(tid)
        if entry is None:
            raise ThreadNotFoundError(tid)
        self._met(entry)

    def _met(self, entry: IndexEntry) -> ThreadState:
        """The state of a thread the engine told of: made, or brought up to date (its
        watermarks are this process's knowledge: lower bounds, raised here)."""
        tid, last_seq, seq, has_user, namespace = entry
        state = self._threads.get(tid)
        if state is None:
            state = ThreadState(tid, last_seq, seq, bool(has_user), namespace)
            self._threads[tid] = state
        else:
            state.assigned = max(state.assigned, last_seq)
            state.durable = max(state.durable, last_seq)
            state.projected = max(state.projected, seq)
        return state

    async def _refresh(self, state: ThreadState) -> None:  # noqa: ASYNC910 - callers checkpoint
        """In a shared store, learn how far the thread's log goes now (another process
        may have appended)."""
        if self._shared:
            entry = await self._engine.lookup_thread(state.id)
            if entry is not None:
                self._met(entry)

    def _project_through(self, state: ThreadState, seq: int) -> None:
        """In a shared store, have the thread projected through ``seq`` (items another
        process appended, which no local append announced)."""
        pool = self._pool
        if pool is not None and not self._closing and seq > pool.generation(state.id):
            pool.submit(state.id, Pending.empty(), urgent=True, generation=seq)

    @property
    def _actors(self) -> workers.ActorPool[str, Pending]:
        assert self._pool is not None
        return self._pool

    # -- threads ------------------------------------------------------------------------

    async def create_thread(
        self,
        goal: str | None = None,
        title: str | None = None,
        thread_id: str | None = None,
        extra: Mapping[str, Any] | None = None,
        namespace: str = "",
    ) -> ThreadMeta:
        """Create a thread; return its metadata once it is durable and projected.

        ``goal``/``title``/``extra`` are stored as the thread's first items, so a goal-first
        thread is listed (``preview == goal``) when this returns. ``thread_id`` defaults to
        a new UUIDv7; ``namespace`` (the tenant, fixed for the thread's life) to ``""``.
        Raises :class:`ThreadExistsError`, :class:`InvalidItemError` for bad input (nothing
        written). If the caller is cancelled the creation still commits.
        """
        engine = self._writable()
        tid = new_thread_id() if thread_id is None else validate_thread_id(thread_id)
        namespace = validate_namespace(namespace)
        items: list[Item] = []
        if goal is not None:
            items.append(Item.goal(_text("goal", goal)))
        if title is not None:
            items.append(Item.title(_text("title", title)))
        if extra is not None:
            items.append(metadata_item(_mapping("extra", extra)))
        encoded = [encode_item(item, max_item_bytes=self._max_item_bytes) for item in items]
        if tid in self._threads:
            raise ThreadExistsError(tid)
        state = ThreadState(tid, len(items), len(items), False, namespace)
        state.durable = state.projected = 0
        self._threads[tid] = state
        created = self._times.next_us()
        rows = [
            (i + 1, self._times.next_us(), item.kind, text)
            for i, (item, text) in enumerate(zip(items, encoded, strict=True))
        ]
        op = CreateThread(
            thread_id=tid,
            created_us=created,
            rows=rows,
            items=tuple(items),
            size=sum(len(text) for text in encoded),
            namespace=namespace,
        )
        job = engine.create(op, partial(self._created, state))
        state.last_job = job
        meta = await job.wait()
        log.info("thread.created", thread_id=tid, items=len(items))
        return meta

    def _created(self, state: ThreadState, job: Completion[ThreadMeta]) -> None:
        if state.last_job is job:
            state.last_job = None  # done: do not keep its items alive
        if job.error is None:
            state.durable = state.projected = state.assigned
            if self._projectors:
                state.meta = job.result
            return
        if self._threads.get(state.id) is state:
            del self._threads[state.id]
        job.error = _append_failed(state.id, 1, job.error)

    # -- appends ------------------------------------------------------------------------

    def _encode(self, thread_id: object, items: tuple[Item, ...]) -> tuple[ThreadState, list[str]]:
        """Check and encode an append's input (nothing is queued). Runs once per append."""
        if self.read_only or self._closing:
            self._writable()  # raises
        state = self._threads.get(thread_id) if type(thread_id) is str else None
        if state is None or state.deleted:
            state = self._live(thread_id)  # raises, or accepts a str subclass
        if not items:
            raise InvalidItemError("append needs at least one item")
        limit = self._max_item_bytes
        encoded = []
        for item in items:
            if type(item) is not Item and not isinstance(item, Item):
                raise InvalidItemError(f"expected threadstore.Item, got {shorten(item)}")
            if item.kind in CONTROL_KINDS:
                raise InvalidItemError(
                    f"{item.kind!r} items are the store's own: use Store.{item.kind}()"
                )
            encoded.append(encode_item(item, max_item_bytes=limit))
        return state, encoded

    def _enqueue(
        self,
        state: ThreadState,
        items: tuple[Item, ...],
        encoded: list[str],
        *,
        urgent: bool = False,
        rewind_to: int | None = None,
    ) -> tuple[Completion[Any], int]:
        engine = self._writable()
        if state.deleted:
            raise ThreadNotFoundError(state.id)
        # (In a shared store the engine gives the seqs: these are placeholders.)
        first = 1 if self._shared else state.assigned + 1
        next_us = self._times.next_us
        if len(items) == 1:
            rows = [(first, next_us(), items[0].kind, encoded[0])]
            size = len(encoded[0])
        else:
            rows = [
                (first + i, next_us(), item.kind, text)
                for i, (item, text) in enumerate(zip(items, encoded, strict=True))
            ]
            size = sum(map(len, encoded))
        last = first + len(rows) - 1
        op = AppendItems(state.id, rows, size)
        done = _Append(self, state, op, items, urgent)
        if rewind_to is None:
            job = engine.append(op, done)
        else:
            job = engine.rewind(RewindThread(append=op, to_seq=rewind_to), done)
        state.last_job = job
        self._n.appends += 1
        self._n.items_appended += len(rows)
        if self._shared:
            return job, 0  # known at the commit (the job's result)
        state.assigned = last
        return job, last

    def _appended(self, append: _Append, job: Completion[Any]) -> None:
        """On the trio thread, in commit order: advance watermarks and queue the projection."""
        state = append.state
        if state.last_job is job:
            state.last_job = None  # done: do not keep its items alive
        rows = append.op.rows
        if job.error is not None:
            if self._shared:
                if isinstance(job.error, ThreadNotFoundError):  # deleted by another process
                    state.deleted = True
                    if self._threads.get(state.id) is state:
                        del self._threads[state.id]
                job.error = _append_failed(state.id, state.durable + 1, job.error)
                return
            if append.epoch == state.epoch:
                # Seqs after the failed ones are refused by the engine (no gaps): rewind.
                state.epoch += 1
                state.assigned = state.durable
            job.error = _append_failed(state.id, rows[0][0], job.error)
            return
        if self._shared:  # the seqs the database gave
            last = int(job.result or 0)
            rows = [(last - len(rows) + 1 + i, *row[1:]) for i, row in enumerate(rows)]
            state.assigned = max(state.assigned, last)
        pending = Pending.of(rows, append.items)
        state.durable = max(state.durable, pending.last_seq)
        if state.deleted or self._pool is None:
            return
        if self._shared and pending.last_seq <= self._pool.generation(state.id):
            return  # already covered: projected through the log's end, which holds these
        # Explicit mutations (update_thread) wait for visibility: never hold them in the window.
        urgent = (
            append.explicit or pending.urgent or (pending.has_user_message and not state.has_user)
        )
        state.has_user = state.has_user or pending.has_user_message
        state.hurry = state.hurry or urgent
        self._pool.submit(
            state.id, pending, urgent=urgent, generation=pending.last_seq, context=append.context
        )

    def append_nowait(self, thread_id: str, *items: Item) -> Receipt:
        """Validate and order ``items`` now; they become durable shortly after. Sync.

        Two calls from one task land in call order. Never blocks: raises
        :class:`StoreOverloadedError` when the bytes waiting for commit exceed the store's
        bound (``append`` waits instead). Also raises :class:`InvalidItemError`,
        :class:`ThreadNotFoundError`, :class:`StoreClosedError`,
        :class:`ReadOnlyStoreError` — always before anything is queued.
        """
        state, encoded = self._encode(thread_id, items)
        queued = self._engine.queued_bytes
        if queued and queued + sum(map(len, encoded)) > self._max_pending_bytes:
            raise StoreOverloadedError(
                f"{queued} bytes are waiting for commit (bound "
                f"{self._max_pending_bytes}); use append() to wait for room"
            )
        job, seq = self._enqueue(state, items, encoded)
        return Receipt(thread_id=state.id, seq=seq, store=self, job=job)

    async def append(self, thread_id: str, *items: Item) -> Receipt:
        """Append ``items``; return once they are durable in the log.

        Metadata is projected asynchronously (see :meth:`flush`). Waits for room when the
        store is over its memory bound. If the caller is cancelled after the items were
        queued they are still committed and projected. Raises :class:`AppendFailedError`
        if the commit failed (nothing of this call stored), plus the errors of
        :meth:`append_nowait` except ``StoreOverloadedError``.
        """
        return await self._append(thread_id, items)

    async def _append(
        self, thread_id: str, items: tuple[Item, ...], *, urgent: bool = False
    ) -> Receipt:
        if self._shared:  # (embedded stores know every thread: nothing to await here)
            await self._meet(thread_id)
        state, encoded = self._encode(thread_id, items)
        engine = self._engine
        if engine.queued_bytes >= self._max_pending_bytes:
            await engine.wait_for_room(self._max_pending_bytes)
        job, seq = self._enqueue(state, items, encoded, urgent=urgent)
        last = await job.wait()
        return Receipt(thread_id=state.id, seq=seq or last, store=self, job=job)

    async def append_and_flush(self, thread_id: str, *items: Item) -> Receipt:
        """Append ``items`` and return once they are durable *and* the metadata shows them."""
        receipt = await self.append(thread_id, *items)
        await self.flush(thread_id, receipt.seq)
        return receipt

    # -- barriers -----------------------------------------------------------------------

    async def flush(self, thread_id: str, seq: int | None = None) -> None:
        """Block until the thread's metadata reflects its items through ``seq``.

        ``None`` means the last seq handed out at the call; later appends are not waited
        for. Raises :class:`ProjectionFailedError` (cause: the last error) if the attempt
        that covered ``seq`` failed for good, :class:`ThreadDiscardedError` if the work was
        discarded, :class:`AppendFailedError` if the items never reached the log,
        :class:`ThreadNotFoundError`, :class:`InvalidItemError` for a seq out of range.
        Cancelling a waiting flush affects nothing else.
        """
        self._writable()
        await self._meet(thread_id)
        state = self._live(thread_id)
        if self._shared and seq is not None and is_int(seq) and seq > state.assigned:
            await self._refresh(state)  # a seq another process gave
        target = state.assigned if seq is None else _seq(seq, state.assigned)
        if state.projected >= target:
            await trio.lowlevel.checkpoint()
            return
        if state.durable < target:
            if state.last_job is not None:
                with suppress(AppendFailedError):  # reported below if it covered the target
                    await state.last_job.wait()
            if state.durable < target:
                raise AppendFailedError(state.id, target, "the items were not stored")
        if self._shared:
            self._project_through(state, target)
        self._driver.barriers += 1
        self._engine.expedite()  # a write of this thread may be waiting in the deferred lane
        try:
            await self._actors.wait(state.id, target)
        except workers.WorkFailedError as exc:
            raise ProjectionFailedError(state.id, target, exc.attempts) from exc.__cause__
        except workers.WorkDiscardedError:
            raise ThreadDiscardedError(state.id, target) from None
        except workers.PoolClosedError:
            raise StoreClosedError(f"store {self.path!r} closed before the flush") from None
        finally:
            self._driver.barriers -= 1
        if state.projected < target:
            raise ThreadDiscardedError(state.id, target)

    async def flush_all(self) -> None:
        """Barrier for every thread with pending work at the call.

        Waits for all of them, then raises the first failure, if any (see :meth:`flush`).
        """
        await self._flush_all(None)

    async def _flush_all(self, namespace: str | None) -> None:
        engine = self._writable()
        await engine.drain()
        errors: list[Exception] = []
        for tid in self._actors.pending_keys():
            state = self._threads.get(tid)
            if namespace is not None and (state is None or state.namespace != namespace):
                continue
            try:
                await self.flush(tid)
            except ThreadNotFoundError:
                continue
            except (ProjectionFailedError, ThreadDiscardedError) as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    async def discard(self, thread_id: str) -> None:
        """Drop the thread's queued (not in-flight) projection work.

        Waits for a write already running; barriers waiting for dropped work raise
        :class:`ThreadDiscardedError`. The log is untouched: the next projection of the
        thread folds the skipped items from the log, so metadata still converges.
        Idempotent; takes effect even if the caller is cancelled.
        """
        self._writable()
        await self._meet(thread_id)
        state = self._live(thread_id)
        await self._actors.discard(state.id)

    # -- explicit mutations -------------------------------------------------------------

    async def update_thread(
        self, thread_id: str, *, title: str = _UNSET, extra: Mapping[str, Any] = _UNSET
    ) -> ThreadMeta:
        """Set the title and/or merge ``extra`` (a None value deletes a key); return the meta.

        Recorded in the log (as ``title``/``metadata`` items), so a rebuild keeps it, and
        returns once visible. Waits first for derived metadata pending at the call.
        """
        items: list[Item] = []
        if title is not _UNSET:
            items.append(Item.title(_text("title", title)))
        if extra is not _UNSET:
            items.append(metadata_item(_mapping("extra", extra)))
        if not items:
            raise InvalidItemError("update_thread needs title= or extra=")
        # Urgent: an explicit change is projected at once, with whatever derived metadata is
        # pending before it, even inside a ``projection_delay`` window.
        receipt = await self._append(thread_id, tuple(items), urgent=True)
        await self.flush(thread_id, receipt.seq)
        return await self.get_thread(thread_id)

    async def archive_thread(self, thread_id: str) -> ThreadMeta:
        """Archive the thread (it moves to ``list_threads(archived=True)``); return its meta.

        Waits for derived metadata pending at the call first.
        """
        return await self._set_archived(thread_id, archived=True)

    async def unarchive_thread(self, thread_id: str) -> ThreadMeta:
        """Undo :meth:`archive_thread`; return the thread's metadata."""
        return await self._set_archived(thread_id, archived=False)

    async def _set_archived(self, thread_id: str, *, archived: bool) -> ThreadMeta:
        engine = self._writable()
        await self._meet(thread_id)
        state = self._live(thread_id)
        state.archives += 1
        state.meta = None  # archived_at changes: the next projector call reads the row
        with suppress(ThreadDiscardedError):  # the pending work was dropped: nothing to wait for
            await self.flush(state.id)
        at = self._times.next_us() if archived else None
        meta = await engine.set_archived(SetArchived(thread_id=state.id, archived_at_us=at))
        if meta is None:
            raise ThreadNotFoundError(state.id)
        log.info("thread.archived" if archived else "thread.unarchived", thread_id=state.id)
        return meta

    async def delete_thread(self, thread_id: str) -> None:
        """Discard pending projection work, then delete the thread's items and metadata.

        From the call on, appends to the thread raise :class:`ThreadNotFoundError`; appends
        accepted before it are committed and then deleted with the rest. Completes even if
        the caller is cancelled. Raises :class:`WriteFailedError` if the delete's commit
        failed: then nothing changed, the thread takes appends again and the discarded
        metadata work is redone (barriers wait for it; none raises ThreadDiscardedError).
        """
        engine = self._writable()
        await self._meet(thread_id)
        state = self._live(thread_id)
        state.deleted = True
        with trio.CancelScope(shield=True):
            await self._actors.discard(state.id)
            now = self._times.next_us()
            retention = int(self._config.timeouts.tombstone_retention * 1_000_000)
            op = DeleteThread(thread_id=state.id, deleted_us=now, prune_before_us=now - retention)
            job = engine.delete(op, partial(self._deleted, state))
            await job.wait()  # WriteFailedError if the commit failed
        await trio.lowlevel.checkpoint()
        log.info("thread.deleted", thread_id=state.id)

    def _deleted(self, state: ThreadState, job: Completion[ThreadMeta | None]) -> None:
        if job.error is None and self._threads.get(state.id) is state:
            del self._threads[state.id]
        elif job.error is not None:
            # Nothing was deleted: the thread is back, and the metadata work the delete
            # discarded (and the items committed since, which were not handed on) is redone
            # by a fold from the log, as recovery does.
            state.deleted = False
            if state.projected < state.durable and self._pool is not None and not self._closing:
                self._pool.restore(state.id, Pending.empty(), state.durable, urgent=True)

    # -- history edits ------------------------------------------------------------------

    async def rewind(self, thread_id: str, to_seq: int) -> ThreadMeta:
        """Take every item after ``to_seq`` out of the thread's context; return the metadata
        once it shows the rewind.

        Recorded as a ``rewind`` item (nothing leaves the log: ``read_items`` still returns
        every item); items appended later continue the context after ``to_seq``. Rewinding
        to a seq a previous rewind hid is allowed and brings nothing back. Raises
        :class:`InvalidItemError` for a ``to_seq`` outside ``0..`` the last seq,
        :class:`ThreadNotFoundError`, and :class:`AppendFailedError` if its commit failed
        (nothing written). If the caller is cancelled the rewind still commits.
        """
        engine = self._writable()
        await self._meet(thread_id)
        state = self._live(thread_id)
        if self._shared and is_int(to_seq) and to_seq > state.assigned:
            await self._refresh(state)  # a seq another process gave
        to = _bounded("to_seq", to_seq, state.assigned)
        item = Item(kind=REWIND_KIND, data={"to_seq": to})
        encoded = [encode_item(item, max_item_bytes=self._max_item_bytes)]
        if engine.queued_bytes >= self._max_pending_bytes:
            await engine.wait_for_room(self._max_pending_bytes)
            to = _bounded("to_seq", to, state.assigned)  # a failed append may have rewound it
        job, seq = self._enqueue(state, (item,), encoded, urgent=True, rewind_to=to)
        last = await job.wait()
        await self.flush(state.id, seq or last)
        return await self.get_thread(state.id)

    async def fork(
        self,
        source_id: str,
        /,
        at_seq: int | None = None,
        thread_id: str | None = None,
        title: str | None = None,
    ) -> ThreadMeta:
        """Make a new thread whose context is ``source_id``'s context through ``at_seq``
        (default: all of it) as it is at the call; return its metadata once it is listed.

        The new thread is in the source's namespace; its log is a ``fork`` item, copies of
        the context's items, then ``title`` if given (the fork's title from then on).
        ``ThreadMeta.forked_from`` and ``forked_at`` name the source. Later appends to
        either never show in the other.
        Raises :class:`InvalidItemError` (bad ``at_seq``, ``thread_id`` or ``title``),
        :class:`ThreadNotFoundError`, :class:`ThreadExistsError`; nothing is written then.
        If the caller is cancelled the fork still commits.
        """
        engine = self._writable()
        await self._meet(source_id)
        state = self._live(source_id)
        await self._refresh(state)  # (shared: the source's log as it is at the call)
        through = state.assigned
        at = through if at_seq is None else _bounded("at_seq", at_seq, through)
        tid = new_thread_id() if thread_id is None else validate_thread_id(thread_id)
        head = [Item(kind=FORK_KIND, data={"from": state.id, "at_seq": at})]
        if title is not None:  # after the copies: the latest title is the fork's
            head.append(Item.title(_text("title", title)))
        encoded = [encode_item(item, max_item_bytes=self._max_item_bytes) for item in head]
        if tid in self._threads:
            raise ThreadExistsError(tid)
        if state.durable < through and state.last_job is not None:
            with suppress(AppendFailedError):  # the copy reads what is committed by then
                await state.last_job.wait()
        if state.durable < at:
            raise AppendFailedError(state.id, at, "the items to fork were not stored")
        created = self._times.next_us()
        timed = [
            (self._times.next_us(), item.kind, text)
            for item, text in zip(head, encoded, strict=True)
        ]
        op = ForkThread(
            thread_id=tid,
            source_id=state.id,
            through=min(through, state.durable),
            at_seq=at,
            created_us=created,
            marker=(1, *timed[0]),
            tail=timed[1:],
            namespace=state.namespace,
        )
        job = engine.fork(op, partial(self._forked, tid, state.namespace))
        meta = await job.wait()
        log.info("thread.forked", thread_id=tid, source=state.id, at_seq=at)
        return meta

    def _forked(self, thread_id: str, namespace: str, job: Completion[ThreadMeta]) -> None:
        meta = job.result
        if job.error is None and meta is not None:
            state = ThreadState(meta.id, meta.seq, meta.seq, meta.preview is not None, namespace)
            self._threads[meta.id] = state
            if self._projectors:
                state.meta = meta
        elif not isinstance(job.error, ThreadExistsError | ThreadNotFoundError):
            assert job.error is not None
            failed = WriteFailedError(thread_id, "fork", str(job.error))
            failed.__cause__ = job.error
            job.error = failed

    async def read_context(self, thread_id: str, limit: int | None = None) -> list[StoredItem]:
        """What a model should see next: the thread's context from its latest compaction
        on (that compaction first), in order; with ``limit``, the newest ``limit`` items.

        The context is every item no rewind took out (history edits themselves excluded);
        read through an index, from committed items. Raises :class:`ThreadNotFoundError`,
        :class:`InvalidItemError` for a bad ``limit``.
        """
        tid = validate_thread_id(thread_id)
        self._read_limit(limit)
        items = await self._engine.read_context(tid, limit)
        if items is None:
            raise ThreadNotFoundError(tid)
        return items

    # -- namespaces -----------------------------------------------------------------------

    def scoped(self, namespace: str) -> ScopedStore:
        """A view of this store confined to ``namespace`` (see :class:`ScopedStore`). Sync.

        Raises :class:`InvalidItemError` for an invalid namespace."""
        return ScopedStore(self, validate_namespace(namespace))

    def _owned(self, thread_id: object, namespace: str) -> ThreadState:
        """The live thread if it is in ``namespace``; else ThreadNotFoundError, as for a
        thread that does not exist (a view never tells other tenants' threads apart)."""
        self._writable()
        state = self._live(thread_id)
        if state.namespace != namespace:
            raise ThreadNotFoundError(state.id)
        return state

    async def _owned_met(self, thread_id: object, namespace: str) -> ThreadState:
        """``_owned`` for async calls: a thread another process made is looked up first."""
        await self._meet(thread_id)
        return self._owned(thread_id, namespace)

    async def _check_owned(self, thread_id: object, namespace: str) -> None:
        """``_owned`` for reads, which also serve read-only stores (no threads in memory)."""
        if not self.read_only:
            await self._owned_met(thread_id, namespace)
            await trio.lowlevel.checkpoint()
            return
        meta = await self.get_thread(validate_thread_id(thread_id))
        if meta.namespace != namespace:
            raise ThreadNotFoundError(meta.id)

    # -- change feed --------------------------------------------------------------------

    @asynccontextmanager
    async def subscribe(
        self, since: int | None = None, *, buffer: int = _LIMITS.feed_buffer
    ) -> AsyncIterator[AsyncIterator[ThreadEvent]]:
        """Follow every committed change to a thread's listed state, in change order.

        ``async with store.subscribe() as events: async for event in events: ...``. Each
        :class:`ThreadEvent` carries the thread's metadata as committed and its ``change``
        number. Apply them in order (upsert; remove on ``deleted``; clear on ``reset``) and
        the view equals ``list_threads(include_empty=True)`` over archived and unarchived
        threads. Lossless for the final state: a subscriber is never handed more than
        ``buffer`` events at a time; one that falls behind catches up from the store
        (each thread changed since, once, as it is now) and follows live again — it never
        stalls projection and costs no memory beyond its buffer.

        ``since``: None follows from now on; a change number (the last one you applied)
        replays what changed after it, e.g. after a restart; if the store pruned deletions
        that replay needs (``tombstone_retention``) or does not know the number, the first
        event is ``reset``. A read-only store follows its writer process (polled every
        ``feed_poll_interval`` seconds, without taking its lock).

        Leaving the block or cancelling the reader unsubscribes; iteration ends, after the
        buffered events, when the store closes. Raises :class:`StoreClosedError` once the
        store is closing, ``ValueError`` for a ``buffer`` below 1 or a bad ``since``.
        """
        async with self._subscribe(since, buffer, None) as events:
            yield events

    @asynccontextmanager
    async def _subscribe(
        self, since: int | None, buffer: int, namespace: str | None
    ) -> AsyncIterator[AsyncIterator[ThreadEvent]]:
        if not is_int(buffer) or buffer < 1:
            raise ValueError(f"buffer must be an int >= 1, not {shorten(buffer)}")
        if since is not None and (not is_int(since) or since < 0):
            raise ValueError(f"since must be None or an int >= 0, not {shorten(since)}")
        if self._closing or self._feed.closed:
            raise StoreClosedError(f"store {self.path!r} is closed")
        async with self._feed.subscribe(since=since, buffer=buffer, namespace=namespace) as events:
            yield events

    # -- reads --------------------------------------------------------------------------

    async def get_thread(self, thread_id: str) -> ThreadMeta:
        """The thread's visible metadata (what lists show). Raises ThreadNotFoundError.

        In a store other processes write too, it also makes the thread known to this
        process (``append_nowait`` takes it from then on)."""
        tid = validate_thread_id(thread_id)
        if self._shared and not self.read_only:
            await self._meet(tid)
        meta = await self._engine.get_thread(tid)
        if meta is None:
            raise ThreadNotFoundError(tid)
        return meta

    async def read_items(
        self, thread_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[StoredItem]:
        """The thread's items with seq > ``after_seq`` in order, at most ``limit``.

        Reads committed items only. Raises ThreadNotFoundError, InvalidItemError.
        """
        tid = validate_thread_id(thread_id)
        if not is_int(after_seq) or after_seq < 0:
            raise InvalidItemError(f"after_seq must be an int >= 0, not {shorten(after_seq)}")
        self._read_limit(limit)
        items = await self._engine.read_items(tid, after_seq, limit)
        if items is None:
            raise ThreadNotFoundError(tid)
        return items

    def _read_limit(self, limit: object) -> None:
        most = self._config.limits.max_read_limit
        if limit is not None and (not is_int(limit) or not 1 <= limit <= most):  # type: ignore[operator]
            raise InvalidItemError(
                f"limit must be None or an int in 1..{most}, not {shorten(limit)}"
            )

    async def list_threads(
        self,
        limit: int = 50,
        cursor: str | None = None,
        order_by: OrderBy = "updated_at",
        descending: bool = True,
        archived: bool = False,
        search: str | None = None,
        include_empty: bool = False,
        namespace: str | None = None,
    ) -> ThreadPage:
        """One page of threads, newest first by default; O(limit) through an index.

        A thread is listed once it has a preview or a title (``include_empty=True`` lists
        all). Ties are broken by id. ``cursor`` is the previous page's ``next_cursor``; it
        is tied to this store and these arguments (else :class:`InvalidCursorError`).
        ``search`` is a case-insensitive substring of title, preview or goal; ``namespace``
        lists that namespace only (None: every namespace).
        """
        if namespace is not None:
            namespace = validate_namespace(namespace)
        most = self._config.limits.max_list_limit
        if not is_int(limit) or not 1 <= limit <= most:
            raise InvalidItemError(f"limit must be an int in 1..{most}, not {shorten(limit)}")
        if order_by not in ORDERS:
            raise InvalidItemError(f"order_by must be one of {ORDERS}, not {shorten(order_by)}")
        if search is not None and not isinstance(search, str):
            raise InvalidItemError(f"search must be a str or None, not {shorten(search)}")
        query = CursorQuery(
            order_by=order_by,
            descending=bool(descending),
            archived=bool(archived),
            search=search or None,
            include_empty=bool(include_empty),
            namespace=namespace,
        )
        after = None if cursor is None else decode_cursor(self._secret, cursor, query)
        metas, last = await self._engine.list_threads(
            PageQuery(query=query, after=after, limit=limit)
        )
        next_cursor = None if last is None else encode_cursor(self._secret, query, *last)
        return ThreadPage(threads=metas, next_cursor=next_cursor)

    def statistics(self) -> StoreStatistics:
        """A snapshot of the counters (totals since open). Sync, O(threads with work)."""
        pool = self._pool.statistics() if self._pool is not None else None
        engine = self._engine.statistics()
        return StoreStatistics(
            appends=self._n.appends,
            items_appended=self._n.items_appended,
            log_commits=engine.log_commits,
            projection_writes=self._driver.projection_writes,
            patches_coalesced=pool.merged_submits if pool else 0,
            retries=pool.retries if pool else 0,
            projection_failures=pool.failures if pool else 0,
            live_actors=pool.live_actors if pool else 0,
            lagging_threads=pool.pending_keys if pool else 0,
            max_lag=pool.max_lag if pool else 0,
            subscribers=self._feed.subscribers,
            feed_events=self._feed.events_published,
            feed_catch_ups=self._feed.catch_ups,
            checkpoints=engine.checkpoints,
            checkpoint_failures=engine.checkpoint_failures,
        )

    # -- lifecycle ----------------------------------------------------------------------

    async def _serve_projection_requests(self) -> None:
        """Shared stores, for the store's life: project the threads the engine hands over
        (asked by another process, or taken over from a dead one)."""
        while True:
            for entry in await self._engine.projection_requests():
                state = self._met(entry)
                if not state.deleted:
                    self._project_through(state, state.durable)

    async def _shutdown(self, grace: float) -> workers.ShutdownReport:
        with trio.CancelScope(shield=True):
            self._closing = self._driver.closing = True
            # Everything accepted is committed; a write blocked longer (on a row another
            # process's transaction holds) is cancelled by the engine's close.
            with trio.move_on_after(grace):
                await self._engine.drain()
            report = await self._actors.shutdown(grace)
            self._feed.close()  # subscriptions end after the last projection's event
            log.info(
                "store.closed",
                path=self.path,
                unprojected_threads=len(report.leftover),
                timed_out=report.timed_out,
            )
        return report


# -- helpers ----------------------------------------------------------------------------


def _append_failed(thread_id: str, seq: int, error: BaseException) -> BaseException:
    if isinstance(error, ThreadNotFoundError | AppendFailedError):
        return error
    failed = AppendFailedError(thread_id, seq, str(error) or type(error).__name__)
    failed.__cause__ = error
    return failed


def _seq(seq: object, assigned: int) -> int:
    return _bounded("seq", seq, assigned)


def _bounded(name: str, seq: object, assigned: int) -> int:
    if not is_int(seq) or not 0 <= seq <= assigned:  # type: ignore[operator]
        raise InvalidItemError(f"{name} must be an int in 0..{assigned}, not {shorten(seq)}")
    return seq  # type: ignore[return-value]


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidItemError(f"{name} must be a str, not {shorten(value)}")
    return value


def _mapping(name: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidItemError(f"{name} must be a mapping, not {shorten(value)}")
    return value
