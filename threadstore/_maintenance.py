"""Maintenance: check a store against its log, rebuild metadata, export, import, back up.

Every thread's metadata is a fold of its log (:func:`threadstore._engine.refold`), so it
can be checked (:meth:`Maintenance.check`) and rebuilt (:meth:`Maintenance.reproject`)
from the log alone, and a thread moves between stores as its log
(:class:`~threadstore.ThreadRecord`). The comparisons are pure functions over
:class:`~threadstore._engine.ThreadDump` values; :class:`Maintenance` (a base of
:class:`~threadstore.Store`) only drives the engine.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs
import trio

import workers

from ._engine import (
    ImportThread,
    LogRow,
    RebuildThread,
    StoreSummary,
    ThreadDump,
    context_marks,
    refold,
    stored_item,
)
from ._errors import InvalidItemError, ThreadExistsError, ThreadNotFoundError, shorten
from ._items import (
    Item,
    datetime_to_us,
    encode_item,
    validate_namespace,
    validate_thread_id,
)
from ._meta import Patch, Projection, ThreadMeta
from ._thread_state import ThreadState
from ._transfer import ThreadRecord, check_edit

if TYPE_CHECKING:
    from ._config import StoreConfig
    from ._engine import Engine
    from ._values import Projector

__all__ = [
    "LaggingThread",
    "Maintenance",
    "Progress",
    "StoreCheck",
    "ThreadMismatch",
    "check_dump",
    "import_op",
]

log = workers.get_logger(__name__)

#: A progress callback: ``progress(done, total)`` after each thread (sync, trio thread).
Progress: TypeAlias = Callable[[int, int], None]


@attrs.frozen(kw_only=True)
class ThreadMismatch:
    """A thread whose stored state is not what its log folds to.

    ``fields`` names what differs: :class:`~threadstore.ThreadMeta` fields,
    ``"has_user_message"`` (fold state), ``"context"`` (the items marked out of the
    context), ``"seq"`` past the log's end or ``"log"`` (seqs missing: a damaged log).
    """

    thread_id: str
    fields: tuple[str, ...]


@attrs.frozen(kw_only=True)
class LaggingThread:
    """A thread whose metadata reflects its log through ``seq`` of ``last_seq`` (normal
    while a writer runs; recovered when a store opens for writing)."""

    thread_id: str
    seq: int
    last_seq: int


@attrs.frozen(kw_only=True)
class StoreCheck:
    """What :meth:`Maintenance.check` found: the engine's integrity problems, each thread
    whose metadata differs from the fold of its log, and the lagging threads.

    ``ok`` is False when something is wrong (lag alone is not wrong)."""

    threads: int
    items: int
    integrity: tuple[str, ...]
    mismatched: tuple[ThreadMismatch, ...]
    lagging: tuple[LaggingThread, ...]

    @property
    def ok(self) -> bool:
        return not self.integrity and not self.mismatched


# -- pure ---------------------------------------------------------------------------------


def base_projection(meta: ThreadMeta) -> Projection:
    """The projection of ``meta``'s thread before any item: its id, creation time,
    namespace and archived state (what the fold does not derive)."""
    base = Projection.new(meta.id, datetime_to_us(meta.created_at), meta.namespace)
    archived = meta.archived_at
    return base.with_archived_at(None if archived is None else datetime_to_us(archived))


def carried_extra(stored: ThreadMeta, folded: ThreadMeta) -> dict[str, Mapping[str, Any]]:
    """The keys of ``stored.extra`` that its log does not produce (``folded``: the fold of
    the log): custom projectors' output, a mapping under each projector's name.

    It is not a fold of the log alone (projectors see items in whatever batches
    coalesced, and not the items a thread was created or forked with), so a check takes
    it as stored, and a rebuild, an export and an import keep it as it is."""
    return {
        key: value
        for key, value in stored.extra.items()
        if key not in folded.extra and isinstance(value, Mapping)
    }


def extra_patch(carried: Mapping[str, Mapping[str, Any]], then: Patch | None = None) -> Patch:
    """The patch that sets each of ``carried``'s keys, then applies ``then``."""
    patch = Patch.empty()
    for name, mapping in carried.items():
        patch = patch.merge(Patch.extra_update(name, mapping))
    return patch if then is None else patch.merge(then)


def rebuilt_extra(meta: ThreadMeta, rows: Sequence[LogRow]) -> Patch:
    """What a rebuild of ``meta``'s thread from ``rows`` merges into the fold: the custom
    projectors' output as stored (see :func:`carried_extra`)."""
    folded = refold(base_projection(meta), rows)
    return extra_patch(carried_extra(meta, folded.meta))


def check_dump(dump: ThreadDump) -> ThreadMismatch | None:
    """Compare a stored thread with the fold of its log through the seq its metadata
    claims (custom projectors' output is taken as stored, see :func:`carried_extra`)."""
    meta = dump.projection.meta
    rows = dump.rows
    if [row[0] for row in rows] != list(range(1, dump.last_seq + 1)):
        return ThreadMismatch(thread_id=meta.id, fields=("log",))
    if meta.seq > dump.last_seq:
        return ThreadMismatch(thread_id=meta.id, fields=("seq",))
    through = rows[: meta.seq]
    expected = refold(base_projection(meta), through, rebuilt_extra(meta, through))
    fields = [  # (fields outside a ThreadMeta's equality are store state, not folded)
        field.name
        for field in attrs.fields(ThreadMeta)
        if field.eq and getattr(expected.meta, field.name) != getattr(meta, field.name)
    ]
    if expected.has_user_message != dump.projection.has_user_message:
        fields.append("has_user_message")
    if context_marks(rows) != dump.hidden:
        fields.append("context")
    return ThreadMismatch(thread_id=meta.id, fields=tuple(fields)) if fields else None


def import_op(record: ThreadRecord, *, max_item_bytes: int) -> ImportThread:
    """The engine operation that recreates ``record``: its log verbatim (each item
    validated and encoded as an append would) and its metadata folded from it.

    Raises :class:`InvalidItemError` for anything invalid: a bad id or namespace, naive
    times, seqs that do not run 1, 2, 3…, an invalid item, or a history edit that no store
    could have written (a ``rewind`` past its own seq, a ``fork`` item after seq 1)."""
    if not isinstance(record, ThreadRecord):
        raise InvalidItemError(f"expected threadstore.ThreadRecord, got {shorten(record)}")
    thread_id = validate_thread_id(record.id)
    namespace = validate_namespace(record.namespace)
    where = f"thread {thread_id!r}"
    rows: list[LogRow] = []
    for seq, item in enumerate(record.items, 1):
        where = f"thread {thread_id!r}, seq {seq}"
        if item.seq != seq:
            raise InvalidItemError(f"{where}: item has seq {shorten(item.seq)}; seqs run 1, 2, …")
        text = encode_item(item, max_item_bytes=max_item_bytes)
        check_edit(where, item.kind, item.data, seq)
        rows.append((seq, _us(where, item.created_at), item.kind, text))
    where = f"thread {thread_id!r}"
    created = _us(where, record.created_at)
    archived = None if record.archived_at is None else _us(where, record.archived_at)
    base = Projection.new(thread_id, created, namespace).with_archived_at(archived)
    carried = extra_patch(_extra(where, record.extra))
    return ImportThread(projection=refold(base, rows, carried), rows=tuple(rows))


def _extra(where: str, extra: object) -> dict[str, Mapping[str, Any]]:
    if not isinstance(extra, Mapping) or not all(
        isinstance(key, str) and isinstance(value, Mapping) for key, value in extra.items()
    ):
        raise InvalidItemError(f"{where}: extra must map projector names to mappings")
    encode_item(Item(kind="metadata", data={"extra": dict(extra)}), max_item_bytes=1 << 62)
    return dict(extra)


def _us(where: str, value: object) -> int:
    if not hasattr(value, "tzinfo") or getattr(value, "tzinfo", None) is None:
        raise InvalidItemError(f"{where}: times must be aware datetimes, not {shorten(value)}")
    return datetime_to_us(value)  # type: ignore[arg-type]


# -- the store's maintenance operations ---------------------------------------------------


class Maintenance:
    """The maintenance operations of :class:`~threadstore.Store` (a base class of it).

    They read through the engine's read path (as ``get_thread`` does) and write through
    its writer, so they run beside appends; they hold no lock across an ``await``.
    """

    if TYPE_CHECKING:
        path: str
        _engine: Engine
        _config: StoreConfig
        _projectors: tuple[Projector, ...]
        _threads: dict[str, ThreadState]

        def _writable(self) -> Engine: ...

        def _live(self, thread_id: object) -> ThreadState: ...

    async def summary(self) -> StoreSummary:
        """Counts over the whole store, read in one snapshot: threads, log items, lagging
        threads, the engine and its schema version. Works read-only; one scan of the
        thread rows (not of the items)."""
        return await self._engine.summary()

    async def check(self, *, progress: Progress | None = None) -> StoreCheck:
        """Check the store: the engine's integrity check, then every thread's metadata
        against the fold of its log through the seq it claims (custom projectors' output
        is taken as stored: it is not a fold of the log alone), its context marks against
        its rewinds, and its lag.

        Works read-only beside a writer (each thread is read in one snapshot; a thread
        deleted meanwhile is skipped). Reads every item: O(store). ``progress(done,
        total)`` is called after each thread. Cancelling it abandons the check.
        """
        engine = self._engine
        integrity = tuple(await engine.integrity_check())
        ids = await engine.thread_ids()
        mismatched: list[ThreadMismatch] = []
        lagging: list[LaggingThread] = []
        threads = items = 0
        for done, thread_id in enumerate(ids, 1):
            dump = await engine.dump_thread(thread_id)
            if dump is not None:
                threads += 1
                items += len(dump.rows)
                meta = dump.projection.meta
                mismatch = check_dump(dump)
                if mismatch is not None:
                    mismatched.append(mismatch)
                elif meta.seq < dump.last_seq:
                    lagging.append(
                        LaggingThread(thread_id=meta.id, seq=meta.seq, last_seq=dump.last_seq)
                    )
            if progress is not None:
                progress(done, len(ids))
        result = StoreCheck(
            threads=threads,
            items=items,
            integrity=integrity,
            mismatched=tuple(mismatched),
            lagging=tuple(lagging),
        )
        log.info(
            "store.checked",
            path=self.path,
            threads=threads,
            ok=result.ok,
            mismatched=len(mismatched),
            lagging=len(lagging),
        )
        return result

    async def reproject(
        self, thread_id: str | None = None, *, progress: Progress | None = None
    ) -> int:
        """Rebuild metadata from the log: ``thread_id``'s, or with None every thread's.
        Returns how many threads were rebuilt.

        Each thread's metadata becomes the fold of its log as committed (custom
        projectors' output is kept as it is) and its context marks those of its rewinds,
        in one transaction per thread, in order with appends: projection of items
        appended meanwhile continues from it. Explicit state (archived, namespace,
        creation time) is kept.
        ``progress(done, total)`` is called after each thread. Raises
        :class:`ReadOnlyStoreError`, :class:`StoreClosedError`,
        :class:`ThreadNotFoundError`. Cancelled, the threads rebuilt so far stay rebuilt.
        """
        engine = self._writable()
        if thread_id is None:
            ids = await engine.thread_ids()
        else:
            ids = [self._live(thread_id).id]
            await trio.lowlevel.checkpoint()
        rebuilt = 0
        for done, tid in enumerate(ids, 1):
            dump = await engine.dump_thread(tid)
            if dump is not None:
                extra = rebuilt_extra(dump.projection.meta, dump.rows)
                meta = await engine.rebuild_thread(
                    RebuildThread(thread_id=tid, through=len(dump.rows), extra=extra)
                )
                live = self._threads.get(tid)
                if meta is not None:
                    rebuilt += 1
                    if live is not None:
                        live.projected = max(live.projected, meta.seq)
                        live.meta = None  # projectors read it again
            if progress is not None:
                progress(done, len(ids))
        log.info("store.reprojected", path=self.path, threads=rebuilt)
        return rebuilt

    async def export_thread(self, thread_id: str) -> ThreadRecord:
        """The whole thread as a :class:`ThreadRecord` (its id, namespace, creation and
        archive times and every log item, history edits included), read in one snapshot.

        Works read-only. Raises :class:`ThreadNotFoundError`, :class:`InvalidItemError`.
        """
        tid = validate_thread_id(thread_id)
        dump = await self._engine.dump_thread(tid)
        if dump is None:
            raise ThreadNotFoundError(tid)
        meta = dump.projection.meta
        folded = refold(base_projection(meta), dump.rows[: meta.seq])
        return ThreadRecord(
            extra=carried_extra(meta, folded.meta),
            id=meta.id,
            namespace=meta.namespace,
            created_at=meta.created_at,
            archived_at=meta.archived_at,
            items=tuple(stored_item(row) for row in dump.rows),
        )

    async def import_thread(
        self, record: ThreadRecord, *, skip_existing: bool = False
    ) -> ThreadMeta | None:
        """Recreate an exported thread: its log written verbatim (ids, seqs, times, kinds
        and data, history edits included), its metadata and context folded from it, its
        namespace, archived state and custom projectors' output (``record.extra``) kept;
        like a creation, it is not run through this store's projectors. Returns its
        metadata once it is durable and listed (None: skipped).

        Raises :class:`ThreadExistsError` if the id is taken (with ``skip_existing``,
        returns None instead), :class:`InvalidItemError` for an invalid record,
        :class:`ReadOnlyStoreError`, :class:`StoreClosedError`; nothing is written then.
        If the caller is cancelled the import still commits.
        """
        engine = self._writable()
        op = import_op(record, max_item_bytes=self._config.limits.max_item_bytes)
        meta = op.projection.meta
        if meta.id in self._threads:
            await trio.lowlevel.checkpoint()
            if skip_existing:
                return None
            raise ThreadExistsError(meta.id)
        last = len(op.rows)
        state = ThreadState(meta.id, last, last, op.projection.has_user_message, meta.namespace)
        self._threads[meta.id] = state
        try:
            with trio.CancelScope(shield=True):  # bounded: one transaction
                imported = await engine.import_thread(op)
        except BaseException:
            if self._threads.get(meta.id) is state:
                del self._threads[meta.id]
            raise
        if self._projectors:
            state.meta = imported  # (the projectors' next input)
        log.info("thread.imported", thread_id=meta.id, items=last)
        return imported

    async def backup(self, dest: str | os.PathLike[str]) -> None:
        """Write a consistent copy of the store to the new file ``dest``: one snapshot,
        taken while writers go on (SQLite's online backup, on a reader thread), that opens
        as a store. Works read-only beside a writer.

        Raises :class:`FileExistsError` if ``dest`` exists (nothing is overwritten),
        ``OSError`` if it cannot be written (no partial file is left),
        :class:`ThreadStoreError` on the ``":memory:"`` engine. If the caller is cancelled
        the copy still completes.
        """
        if not isinstance(dest, str | os.PathLike):
            raise InvalidItemError(f"dest must be a path, not {shorten(dest)}")
        target = os.fspath(dest)
        await self._engine.backup(target)
        log.info("store.backed_up", path=self.path, dest=target)
