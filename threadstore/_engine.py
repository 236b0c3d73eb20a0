r"""The engine seam: everything engine-specific, behind one narrow interface.

The store, the projection driver and the access layers know an engine only through
:class:`Engine`; they send it plain frozen operation values (:class:`AppendItems`,
:class:`CreateThread`, :class:`ProjectionWrite`, :class:`SetArchived`,
:class:`DeleteThread`, :class:`PageQuery`) and get threadstore values back. An engine
(``threadstore.sqlite``, ``threadstore.memory``) owns its connections, SQL, transactions,
threads and locks, and maps its own errors to threadstore's at its edge (a duplicate thread
id becomes :class:`~threadstore.ThreadExistsError`, a failed archive or delete
:class:`~threadstore.WriteFailedError` with the driver's error as ``__cause__``), and it
says which of its errors are transient (:meth:`Engine.retryable`). No module outside an
engine package imports a database driver.

Every write that changes a thread's listed state (a creation or fork, a projection write
that changed the row, an archive flag, a deletion) gets the next store-wide change number,
in commit order, stored with the thread (a deletion leaves a tombstone): :meth:`Engine.changes`
reads "what changed after N" from that index, and the engine hands each of its own commits to
the store's change listener (:meth:`Engine.set_change_listener`) on the trio thread, in change
order. An engine whose store other processes write says so (:attr:`Engine.external_changes`)
and wakes subscribers with :meth:`Engine.wait_for_changes` instead.

A **shared** engine (:attr:`Engine.shared`: PostgreSQL, where several processes write one
database) allocates seqs itself, in the database (an append's completion result is the
seq of its last row; the rows' own seqs are placeholders), lets the store look up threads
other processes made (:meth:`Engine.lookup_thread`), and lets one process at a time project
a thread: the projection driver :meth:`Engine.claim`\ s a thread before each write, and a
process that does not own it waits for the owner (:meth:`Engine.wait_projected`);
:meth:`Engine.projection_requests` hands the store the threads other processes asked it to
project and those it took over from a dead process. An embedded engine
(:class:`OwnsEveryThread`) owns every thread of its store.

Writes are queued with a callback that runs on the trio thread, in commit order, before
anyone waiting on the write wakes: the store advances its watermarks there. Appends are
group-committed: whatever is queued when the engine is free commits in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, NamedTuple, Protocol, TypeAlias, TypeVar

import attrs
import trio

from ._feed import EventType, ThreadEvent
from ._history import context_rows
from ._items import Item, StoredItem, decode_data, us_to_datetime
from ._meta import Patch, Pending, Projection, ThreadMeta, fold_log_rows
from ._page_token import CursorQuery

__all__ = [
    "AppendItems",
    "Change",
    "ChangePage",
    "ChangePublisher",
    "OwnsEveryThread",
    "change_page",
    "Completion",
    "CreateThread",
    "DeleteThread",
    "Engine",
    "ForkThread",
    "EngineStatistics",
    "ImportThread",
    "RebuildThread",
    "ThreadDump",
    "context_marks",
    "refold",
    "IndexEntry",
    "Lane",
    "LogRow",
    "PageQuery",
    "ProjectionWrite",
    "RewindThread",
    "SetArchived",
    "StoreSummary",
    "fold_for_write",
    "fork_rows",
    "stored_item",
    "tombstone_meta",
]

T = TypeVar("T")

#: One log row as the store hands it to an engine: ``(seq, created_at_us, kind, data_json)``.
LogRow: TypeAlias = tuple[int, int, str, str]
#: What an engine knows of each thread at open:
#: ``(id, last_seq, projected_seq, has_user, namespace)``.
IndexEntry: TypeAlias = tuple[str, int, int, int, str]
#: When a projection write commits: ``"now"`` (with the next transaction: someone waits),
#: ``"soon"`` (urgent: spread over the next few transactions), ``"deferred"`` (coalesces
#: while appends stream in; see :mod:`threadstore._lanes`).
Lane = Literal["now", "soon", "deferred"]


class AppendItems(NamedTuple):
    """Append ``rows`` (dense, in seq order) to the thread's log, whose last seq must be
    ``rows[0][0] - 1``. ``size`` is the bytes of item data (flow control).

    A named tuple rather than an attrs class like the other operations: one is made per
    append, on the trio thread, and a tuple costs half as much to make.
    """

    thread_id: str
    rows: list[LogRow]
    size: int


@attrs.frozen(kw_only=True, slots=True)
class CreateThread:
    """Create the thread with ``rows`` (its first items, possibly none) already projected."""

    thread_id: str
    created_us: int
    rows: list[LogRow]
    items: tuple[Item, ...]
    size: int
    namespace: str = ""


@attrs.frozen(kw_only=True, slots=True)
class RewindThread:
    """Append ``append``'s one ``rewind`` row and take every item then in the context with a
    seq above ``to_seq`` out of it (see :mod:`threadstore._history`)."""

    append: AppendItems
    to_seq: int


@attrs.frozen(kw_only=True, slots=True)
class ForkThread:
    """Create ``thread_id`` in ``namespace`` whose log is ``marker`` (its ``fork`` item, seq
    1), copies of the source's context through ``at_seq`` as its log stood at seq
    ``through`` (kinds, data and times; new seqs), then ``tail`` (``(created_at_us, kind,
    data_json)``: a ``title`` item if given, last so that it is the latest title). All or
    nothing: one transaction. Fails with :class:`~threadstore.ThreadExistsError` if the id
    is taken.
    """

    thread_id: str
    source_id: str
    through: int
    at_seq: int
    created_us: int
    marker: LogRow
    tail: list[tuple[int, str, str]]
    namespace: str


@attrs.frozen(kw_only=True, slots=True)
class ProjectionWrite:
    """Fold ``pending`` (or, if it does not follow the metadata, the log itself) and
    ``extra`` (custom projectors' output) into the thread's metadata, through ``target``."""

    thread_id: str
    pending: Pending
    extra: Patch
    target: int
    lane: Lane


@attrs.frozen(kw_only=True, slots=True)
class SetArchived:
    """Set (a time in microseconds) or clear (None) the thread's ``archived_at``."""

    thread_id: str
    archived_at_us: int | None


@attrs.frozen(kw_only=True, slots=True)
class DeleteThread:
    """Delete the thread's items and metadata, leaving a tombstone stamped ``deleted_us``;
    prune the tombstones of deletions before ``prune_before_us`` (the feed's retention)."""

    thread_id: str
    deleted_us: int = 0
    prune_before_us: int = 0


@attrs.frozen(kw_only=True, slots=True)
class Change:
    """One entry of the change index: a thread as it is now (``deleted``: a tombstone, whose
    ``thread`` has only id, namespace, the deletion time as ``updated_at``, and ``change``)."""

    change: int
    thread: ThreadMeta
    deleted: bool = False


@attrs.frozen(kw_only=True, slots=True)
class ChangePage:
    """What :meth:`Engine.changes` read, from one snapshot.

    ``floor``: tombstones of changes up to it were pruned, so a cursor below it cannot be
    replayed; ``last``: the newest change number of the store (at least ``floor``).
    """

    changes: tuple[Change, ...]
    floor: int
    last: int


@attrs.frozen(kw_only=True, slots=True)
class PageQuery:
    """One page of ``list_threads``: ``limit`` rows after the keyset position ``after``."""

    query: CursorQuery
    after: tuple[int, str] | None
    limit: int


@attrs.frozen(kw_only=True)
class EngineStatistics:
    """The engine's share of :class:`~threadstore.StoreStatistics`."""

    log_commits: int = 0
    checkpoints: int = 0
    checkpoint_failures: int = 0


class Completion(Protocol[T]):
    """A queued write: its outcome once committed (or failed).

    ``error`` may be replaced by the write's ``on_done`` callback (the store turns a failed
    commit into :class:`~threadstore.AppendFailedError`); waiters then see the replacement.
    """

    error: BaseException | None
    result: T | None

    @property
    def done(self) -> bool:
        """Whether the write has committed or failed: ``error`` and ``result`` are final."""
        ...

    def when_committed(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` (from any thread) as soon as the write has committed, if it does;
        best effort (an engine may not, e.g. when it commits on the trio thread anyway):
        the completion still arrives as usual. For callers on other threads, whom the
        commit can wake without a hop through the trio thread."""
        ...

    async def wait(self) -> T:
        """Block until the write is done; return its result or raise its error.

        Cancelling the waiter does not cancel the write: it still commits (or fails) whole.
        """
        ...


class Engine(Protocol):
    """What the store needs from a storage engine. See the module docstring.

    Methods run on the trio thread and never block it on a driver call. ``writable`` is
    False for a read-only open: then only the reads and :meth:`statistics` are used.
    """

    @property
    def target(self) -> str:
        """The store's path or URL, for messages."""
        ...

    @property
    def writable(self) -> bool: ...

    @property
    def cursor_secret(self) -> bytes:
        """The store's own secret that authenticates page tokens."""
        ...

    @property
    def queued_bytes(self) -> int:
        """Item bytes queued and not committed yet (the store bounds it)."""
        ...

    @property
    def external_changes(self) -> bool:
        """Whether other processes commit to this store (then this engine does not see
        every change itself: subscribers use :meth:`wait_for_changes`)."""
        ...

    @property
    def shared(self) -> bool:
        """Whether other processes write this store too (see the module docstring)."""
        ...

    async def lookup_thread(self, thread_id: str) -> IndexEntry | None:
        """The thread's index entry as the store has it now, None if there is no such
        thread (shared engines: a thread this process has not met yet)."""
        ...

    async def claim(self, thread_id: str) -> bool:
        """Own the thread's projection if no other process does; whether this process
        owns it (embedded engines: always)."""
        ...

    async def wait_projected(self, thread_id: str, target: int) -> tuple[bool, ThreadMeta | None]:
        """For a thread another process owns: ask the owner to project it, then block
        until its metadata reaches ``target`` (``(True, meta)``), the thread is gone
        (``(True, None)``), or the owner seems not to answer (``(False, None)``: claim it
        again, the owner may have died)."""
        ...

    async def projection_requests(self) -> list[IndexEntry]:
        """Block until there are threads this process should project that its own appends
        did not announce (asked by another process, or taken over from a dead one); their
        entries. An embedded engine never returns."""
        ...

    def set_change_listener(self, listener: Callable[[ThreadEvent], None]) -> None:
        """Have ``listener`` called with the event of each listed-state change this engine
        commits, on the trio thread, in change order, before the write's waiters wake."""
        ...

    # -- writes (writable engines only) -------------------------------------------------

    def append(
        self, op: AppendItems, on_done: Callable[[Completion[Any]], None]
    ) -> Completion[Any]:
        """Queue a log append for the next group commit. Sync; never blocks. The result:
        the seq of the last row if the engine allocated the seqs (:attr:`shared`), else
        None (the rows' own seqs stand)."""
        ...

    def create(
        self, op: CreateThread, on_done: Callable[[Completion[ThreadMeta]], None]
    ) -> Completion[ThreadMeta]:
        """Queue a thread's creation ahead of queued appends; the result is its metadata.

        Fails with :class:`~threadstore.ThreadExistsError` if the id is taken."""
        ...

    def rewind(
        self, op: RewindThread, on_done: Callable[[Completion[Any]], None]
    ) -> Completion[Any]:
        """Queue a rewind: a log append (in order with the thread's appends) that also takes
        items out of the context. Sync; never blocks. The result is as :meth:`append`'s."""
        ...

    def fork(
        self, op: ForkThread, on_done: Callable[[Completion[ThreadMeta]], None]
    ) -> Completion[ThreadMeta]:
        """Queue a fork (a creation); the result is the new thread's metadata."""
        ...

    def delete(
        self, op: DeleteThread, on_done: Callable[[Completion[ThreadMeta | None]], None]
    ) -> Completion[ThreadMeta | None]:
        """Queue a deletion; the result is the metadata as it was (None: already gone).

        Fails with :class:`~threadstore.WriteFailedError` if the commit failed."""
        ...

    async def set_archived(self, op: SetArchived) -> ThreadMeta | None:
        """Archive or unarchive; the new metadata, None if the thread is gone.

        Raises :class:`~threadstore.WriteFailedError` if the commit failed."""
        ...

    async def project(self, op: ProjectionWrite) -> ThreadMeta | None:
        """Write a thread's metadata in ``op.lane``; the new metadata, None if the thread
        is gone. Raises the engine's error on failure (see :meth:`retryable`)."""
        ...

    async def wait_for_room(self, limit: int) -> None:
        """Block until :attr:`queued_bytes` drops below ``limit``."""
        ...

    def expedite(self) -> None:
        """Commit queued projection writes with the next transaction (someone waits)."""
        ...

    async def drain(self) -> None:
        """Block until everything queued before the call is committed (or failed)."""
        ...

    def thread_index(self) -> Sequence[IndexEntry]:
        """Every thread of the store as it was at open (writable engines)."""
        ...

    async def lagging_threads(self) -> list[tuple[str, int, int]]:
        """The recovery scan: ``(id, projected_seq, last_seq)`` of each thread whose
        metadata lags its log."""
        ...

    # -- reads ----------------------------------------------------------------------------

    async def get_thread(self, thread_id: str) -> ThreadMeta | None: ...

    async def read_items(
        self, thread_id: str, after_seq: int, limit: int | None
    ) -> list[StoredItem] | None:
        """Committed items after ``after_seq`` (None: no such thread). Raises
        :class:`~threadstore.StoreFormatError` for a damaged log."""
        ...

    async def read_context(self, thread_id: str, limit: int | None) -> list[StoredItem] | None:
        """Committed items of the thread's context from its latest compaction on (the
        newest ``limit``), through an index (None: no such thread)."""
        ...

    async def list_threads(
        self, page: PageQuery
    ) -> tuple[tuple[ThreadMeta, ...], tuple[int, str] | None]:
        """One page of metadata and, if more rows follow, the keyset position of its last."""
        ...

    async def projector_input(
        self, thread_id: str, target: int
    ) -> tuple[ThreadMeta | None, list[StoredItem]]:
        """The thread's metadata and its items after it through ``target`` (custom
        projectors' input when it is not in memory)."""
        ...

    async def changes(self, after: int, limit: int, namespace: str | None) -> ChangePage:
        """The first ``limit`` entries of the change index after change ``after`` (in
        ``namespace`` only, unless None), in change order: threads by their latest change,
        tombstones by their deletion."""
        ...

    async def wait_for_changes(self, after: int) -> None:
        """Block until the store may hold a change after ``after`` committed by another
        process (an engine without :attr:`external_changes` never returns). Cheap: a poll
        or a notification; cancel to stop waiting."""
        ...

    # -- errors and statistics ------------------------------------------------------------

    def retryable(self, error: BaseException) -> bool:
        """Whether a projection attempt that failed with ``error`` is worth another: the
        engine's transient errors and errors not its own (a projector's) are."""
        ...

    def statistics(self) -> EngineStatistics: ...

    # -- maintenance (doctor, reproject, export and import, backup) -----------------------

    async def summary(self) -> StoreSummary:
        """Counts over the whole store, read in one snapshot (a scan of the thread rows)."""
        ...

    async def integrity_check(self) -> list[str]:
        """The engine's own consistency check of its storage; an empty list: no problem."""
        ...

    async def thread_ids(self) -> list[str]:
        """Every thread's id, in id order (a scan)."""
        ...

    async def dump_thread(self, thread_id: str) -> ThreadDump | None:
        """The thread as stored, in one snapshot (None: no such thread)."""
        ...

    async def rebuild_thread(self, op: RebuildThread) -> ThreadMeta | None:
        """Replace the thread's metadata by :func:`refold` of its log through ``op.through``
        and its context marks by those of its whole log, in one transaction (writable
        engines; None: the thread is gone)."""
        ...

    async def import_thread(self, op: ImportThread) -> ThreadMeta:
        """Create the thread with its log written verbatim and ``op.projection`` as its
        metadata, in one transaction (writable engines). Fails with
        :class:`~threadstore.ThreadExistsError` if the id is taken."""
        ...

    async def backup(self, dest: str) -> None:
        """Write a consistent copy of the store to the new file ``dest`` that opens as a
        store (the copy is taken while writers go on)."""
        ...


def stored_item(row: LogRow) -> StoredItem:
    """The :class:`StoredItem` of a log row (decodes its JSON)."""
    seq, at, kind, data = row
    return StoredItem(kind=kind, data=decode_data(data), seq=seq, created_at=us_to_datetime(at))


class ChangePublisher:
    """What engines share to publish their commits: the store's change listener and
    completion callbacks that hand it each committed change (trio thread, commit order)."""

    _listener: Callable[[ThreadEvent], None] | None = None

    def set_change_listener(self, listener: Callable[[ThreadEvent], None]) -> None:
        self._listener = listener

    def _changed(self, type: EventType, meta: ThreadMeta) -> None:
        listener = self._listener
        if listener is not None:
            listener(ThreadEvent(type=type, thread=meta, change=meta.change))

    def _publishing(
        self, type: EventType, on_done: Callable[[Any], None] | None = None
    ) -> Callable[[Any], None]:
        """An ``on_done`` that publishes the write's change, then calls ``on_done``. The
        write's result is its metadata, or ``(metadata, changed)`` for a write that may
        change nothing (a projection), or None (nothing changed: the thread was gone)."""

        def done(job: Any) -> None:
            result = job.result
            if job.error is None and result is not None:
                meta, changed = result if isinstance(result, tuple) else (result, True)
                if changed:
                    self._changed(type, meta)
            if on_done is not None:
                on_done(job)

        return done


class OwnsEveryThread:
    """What an embedded engine (one process writes its store) says of the shared
    engines' methods: it allocates no seqs, owns every thread, and is asked nothing."""

    @property
    def shared(self) -> bool:
        return False

    async def lookup_thread(self, thread_id: str) -> IndexEntry | None:
        raise NotImplementedError("an embedded store knows every thread from its index")

    async def claim(self, thread_id: str) -> bool:
        await trio.lowlevel.checkpoint()
        return True

    async def wait_projected(self, thread_id: str, target: int) -> tuple[bool, ThreadMeta | None]:
        raise NotImplementedError("an embedded store owns every thread")

    async def projection_requests(self) -> list[IndexEntry]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")


def change_page(
    threads: Iterable[ThreadMeta],
    tombstones: Iterable[tuple[str, str, int, int]],
    *,
    limit: int,
    floor: int,
    last: int,
) -> ChangePage:
    """The first ``limit`` entries of the change index from an engine's read of its threads
    and tombstones ``(id, namespace, change, deleted_us)``, merged in change order."""
    entries = [Change(change=meta.change, thread=meta) for meta in threads]
    entries += [
        Change(change=change, thread=tombstone_meta(tid, ns, change, at), deleted=True)
        for tid, ns, change, at in tombstones
    ]
    entries.sort(key=lambda entry: entry.change)
    return ChangePage(changes=tuple(entries[:limit]), floor=floor, last=last)


def tombstone_meta(thread_id: str, namespace: str, change: int, deleted_us: int) -> ThreadMeta:
    """What a tombstone tells of a deleted thread, as metadata: its id and namespace, the
    deletion time (as every time field) and change; nothing else."""
    return Projection.new(thread_id, deleted_us, namespace).with_change(change).meta


def fold_for_write(
    projection: Projection, op: ProjectionWrite, read_log: Callable[[int, int], list[LogRow]]
) -> Projection | None:
    """The metadata after ``op``, or None if it has nothing to change (already through
    ``op.target`` and no projector output). Engine-neutral: engines call it inside their
    write with the metadata as stored and ``read_log(after_seq, limit)`` reading the log.

    The pending items are folded if they follow the stored metadata; after a gap (discarded
    work, recovery) or an overlap, the log itself is folded instead.
    """
    seq = projection.meta.seq
    pending, extra, target = op.pending, op.extra, op.target
    if seq >= target and not extra.extra_nested:
        return None
    if pending.first_seq == seq + 1 and pending.last_seq >= target:
        patch = pending.fold()
    else:
        items = [stored_item(row) for row in read_log(seq, target - seq)]
        patch = Patch.from_items(items) if items else Patch.empty()
    projection = projection.apply(patch.merge(extra))
    if patch.rewound:  # a rewind: the context statistics are folded again, from the log
        visible = context_rows(read_log(0, projection.meta.seq))
        projection = projection.with_context(fold_log_rows(visible))
    return projection


def fork_rows(op: ForkThread, log: Sequence[LogRow]) -> list[LogRow]:
    """The new thread's log for ``op``: its ``fork`` item, the source's context through
    ``op.at_seq`` (``log``: the source's rows through ``op.through``), renumbered, each with
    its time and the very JSON the source holds, then ``op.tail``."""
    copied = [entry for entry in context_rows(log) if entry.seq <= op.at_seq]
    rows: list[LogRow] = [op.marker]
    rows += [(2 + i, e.at, e.kind, e.text) for i, e in enumerate(copied)]
    rows += [(len(rows) + 1 + i, at, kind, text) for i, (at, kind, text) in enumerate(op.tail)]
    return rows


# -- maintenance (doctor, reproject, export and import, backup) ---------------------------


@attrs.frozen(kw_only=True)
class StoreSummary:
    """Counts over a whole store (``Store.summary()``): its engine (``"sqlite"``,
    ``"memory"``), threads, log items, threads whose metadata lags their log, and the
    storage schema version (None: the engine has none)."""

    engine: str
    threads: int
    items: int
    lagging_threads: int
    schema_version: int | None


@attrs.frozen(kw_only=True)
class ThreadDump:
    """One thread as stored, read in one snapshot: its metadata with the fold state, the
    seq its log ends at as the thread row says, every log row, and the seqs the engine
    marks as out of the context."""

    projection: Projection
    last_seq: int
    rows: tuple[LogRow, ...]
    hidden: frozenset[int]


@attrs.frozen(kw_only=True, slots=True)
class RebuildThread:
    """Refold the thread's metadata from its log through ``through`` with ``extra`` (the
    custom projectors' output over those items), and its context marks from its log."""

    thread_id: str
    through: int
    extra: Patch


@attrs.frozen(kw_only=True, slots=True)
class ImportThread:
    """Create ``projection.meta.id`` with ``rows`` (dense from seq 1) as its log, verbatim,
    and ``projection`` (their :func:`refold`) as its metadata."""

    projection: Projection
    rows: tuple[LogRow, ...]


def refold(base: Projection, rows: Sequence[LogRow], extra: Patch | None = None) -> Projection:
    """The metadata of a thread whose log is ``rows`` (dense from seq 1), folded from
    scratch onto ``base`` (``Projection.new`` with the thread's id, creation time,
    namespace and archived state), with ``extra`` (projectors' output) merged in.

    What incremental projection reaches batch by batch (the fold is associative, and after
    a rewind the context statistics are those of the context)."""
    patch = fold_log_rows(rows)
    if extra is not None:
        patch = patch.merge(extra)
    projection = base.apply(patch)
    if patch.rewound:
        projection = projection.with_context(fold_log_rows(context_rows(rows)))
    return projection


def context_marks(rows: Sequence[LogRow]) -> frozenset[int]:
    """The seqs of ``rows`` (a thread's whole log) that are out of its context: history
    edits themselves and every item a rewind took out."""
    visible = {entry.seq for entry in context_rows(rows)}
    return frozenset(row[0] for row in rows if row[0] not in visible)
