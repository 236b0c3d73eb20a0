"""threadstore for plain threads: the whole trio :class:`threadstore.Store` API, blocking.

.. code-block:: python

    from threadstore import Item, blocking

    with blocking.open_store("threads.db") as store:
        meta = store.create_thread(goal="Plan a trip")
        receipt = store.append(meta.id, Item.user_message("hi"))
        receipt.visible()

The trio store runs on a thread the handle owns (:mod:`threadstore._portal`); each method
here has the trio method's arguments, results and errors and blocks its calling thread
until the trio method returns. Any number of threads may call one handle at once. A caller
interrupted by ``KeyboardInterrupt`` cancels its call on the store's thread exactly as
cancelling a trio caller would (an append whose items were accepted is still committed and
projected) and raises ``KeyboardInterrupt`` once that has settled. Leaving the block drains
the store as the trio store does (``shutdown_timeout``). Calling a handle from the store's
own thread (e.g. from a custom projector) raises ``RuntimeError`` instead of deadlocking.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from functools import partial
from typing import Any, Generic, TypeVar

import attrs
import outcome

from . import _store as trio_store
from ._config import Limits
from ._engine import StoreSummary
from ._errors import StoreClosedError
from ._feed import ThreadEvent
from ._items import Item, StoredItem
from ._maintenance import Progress, StoreCheck
from ._meta import ThreadMeta
from ._portal import Call, Done, Portal, Subscription, mirror_docs
from ._scoped import ScopedStore as ScopedStoreView
from ._store import OrderBy
from ._transfer import ThreadRecord
from ._values import UNSET, StoreStatistics, ThreadPage

__all__ = ["Receipt", "ScopedStore", "Store", "open_store"]

T = TypeVar("T")
_UNSET: Any = UNSET  # update_thread's "not given", passed through as is
_LIMITS = Limits()


@contextmanager
def open_store(target: Any, **options: Any) -> Iterator[Store]:
    """Open the store at ``target`` on a thread of its own; yield a blocking handle.

    Takes exactly :func:`threadstore.open_store`'s arguments and raises its errors.
    Leaving the block blocks until the store has drained (also on ``KeyboardInterrupt``).
    """
    portal = Portal(target, options)
    opened: _Waiter[None] = _Waiter()
    portal.start(lambda error: opened.resolve(_outcome(error)))
    try:
        opened.wait()
    except KeyboardInterrupt:
        portal.request_close(lambda _error: None)  # it closes once open; nothing is lost
        raise
    try:
        yield Store(portal)
    finally:
        portal.close()


def _outcome(error: BaseException | None) -> outcome.Outcome[None]:
    return outcome.Value(None) if error is None else outcome.Error(error)


class _Waiter(Generic[T]):
    """One result handed from the store's thread to a blocked caller."""

    __slots__ = ("_lock", "_result")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._result: outcome.Outcome[T] | None = None

    def resolve(self, result: outcome.Outcome[T]) -> None:
        self._result = result
        self._lock.release()

    def wait(self) -> T:
        """Block until resolved; then return or raise the result. Interruptible (Ctrl-C)."""
        self._lock.acquire()
        self._lock.release()  # later waits return at once
        assert self._result is not None
        return self._result.unwrap()


@attrs.frozen(kw_only=True, eq=False)
class Receipt:
    """What an append returns: ``thread_id``, ``seq``, and blocking barriers.

    ``durable()``/``visible()`` as on :class:`threadstore.Receipt`, blocking the caller.
    """

    thread_id: str
    _store: _Handle = attrs.field(alias="store", repr=False)
    _receipt: trio_store.Receipt = attrs.field(alias="receipt", repr=False)

    @property
    def seq(self) -> int:
        """The seq of the last item (on a store several processes write, known once
        :meth:`durable` returned: see :attr:`threadstore.Receipt.seq`)."""
        return self._receipt.seq

    def durable(self) -> None:
        """Block until the items are in the log; raise AppendFailedError if they never are."""
        receipt = self._receipt
        self._store._call(lambda _: receipt.durable())

    def visible(self) -> None:
        """Block until the metadata reflects these items (``flush(thread_id, seq)``)."""
        receipt = self._receipt
        self._store._call(lambda _: receipt.visible())


class _Handle:
    """What a blocking store handle and its namespace views share: the portal crossing and
    every method that takes a thread id (on the store, or on the view, see ``_on``)."""

    #: The trio view calls go to (None: the store itself).
    _view: ScopedStoreView | None = None

    def __init__(self, portal: Portal) -> None:
        self._portal = portal

    def _on(self, store: trio_store.Store) -> trio_store.Store | ScopedStoreView:
        return store if self._view is None else self._view

    def _call(self, fn: Callable[[trio_store.Store], Awaitable[T]]) -> T:
        return self._wait(partial(self._portal.submit, fn))

    def _wait(self, submit: Callable[[Done], Call]) -> T:  # type: ignore[type-var]
        self._portal._not_on_own_thread()
        waiter: _Waiter[T] = _Waiter()
        call = submit(waiter.resolve)
        try:
            return waiter.wait()
        except KeyboardInterrupt:
            call.cancel()
            with suppress(Exception):  # the caller is told of the interrupt, not of the end
                waiter.wait()  # settle (a second Ctrl-C stops waiting)
            raise

    def _receipt(self, receipt: trio_store.Receipt) -> Receipt:
        return Receipt(thread_id=receipt.thread_id, store=self, receipt=receipt)

    def append_nowait(self, thread_id: str, *items: Item) -> Receipt:
        return self._receipt(
            self._portal.run_sync(lambda s: self._on(s).append_nowait(thread_id, *items))
        )

    def append(self, thread_id: str, *items: Item) -> Receipt:
        receipt: trio_store.Receipt = self._wait(
            partial(self._portal.append, thread_id, items, view=self._view)
        )
        return self._receipt(receipt)

    def append_and_flush(self, thread_id: str, *items: Item) -> Receipt:
        return self._receipt(self._call(lambda s: self._on(s).append_and_flush(thread_id, *items)))

    def flush(self, thread_id: str, seq: int | None = None) -> None:
        self._call(lambda s: self._on(s).flush(thread_id, seq))

    def flush_all(self) -> None:
        self._call(lambda s: self._on(s).flush_all())

    def discard(self, thread_id: str) -> None:
        self._call(lambda s: self._on(s).discard(thread_id))

    def update_thread(
        self, thread_id: str, *, title: str = _UNSET, extra: Mapping[str, Any] = _UNSET
    ) -> ThreadMeta:
        return self._call(lambda s: self._on(s).update_thread(thread_id, title=title, extra=extra))

    def archive_thread(self, thread_id: str) -> ThreadMeta:
        return self._call(lambda s: self._on(s).archive_thread(thread_id))

    def unarchive_thread(self, thread_id: str) -> ThreadMeta:
        return self._call(lambda s: self._on(s).unarchive_thread(thread_id))

    def delete_thread(self, thread_id: str) -> None:
        self._call(lambda s: self._on(s).delete_thread(thread_id))

    def rewind(self, thread_id: str, to_seq: int) -> ThreadMeta:
        return self._call(lambda s: self._on(s).rewind(thread_id, to_seq))

    def fork(
        self,
        source_id: str,
        /,
        at_seq: int | None = None,
        thread_id: str | None = None,
        title: str | None = None,
    ) -> ThreadMeta:
        return self._call(lambda s: self._on(s).fork(source_id, at_seq, thread_id, title))

    @contextmanager
    def subscribe(
        self, since: int | None = None, *, buffer: int = _LIMITS.feed_buffer
    ) -> Iterator[Iterator[ThreadEvent]]:
        subscription = self._call(
            Subscription.opener(self._portal, lambda s: self._on(s).subscribe(since, buffer=buffer))
        )
        try:
            yield _Events(self, subscription)
        finally:
            with suppress(StoreClosedError):  # the store closed: the subscription ended
                self._call(subscription.close)

    def get_thread(self, thread_id: str) -> ThreadMeta:
        return self._call(lambda s: self._on(s).get_thread(thread_id))

    def read_items(
        self, thread_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[StoredItem]:
        return self._call(lambda s: self._on(s).read_items(thread_id, after_seq, limit))

    def read_context(self, thread_id: str, limit: int | None = None) -> list[StoredItem]:
        return self._call(lambda s: self._on(s).read_context(thread_id, limit))


class Store(_Handle):
    """A blocking handle on a trio :class:`threadstore.Store`; see :func:`open_store`.

    Every method mirrors the trio store's (same arguments, results and errors; receipts
    are :class:`Receipt`, views are :class:`ScopedStore`). Safe to call from any thread,
    concurrently.
    """

    @property
    def path(self) -> str:
        """The store's file path."""
        return self._portal.path

    @property
    def read_only(self) -> bool:
        """Whether the store was opened with ``read_only=True``."""
        return self._portal.read_only

    def create_thread(
        self,
        goal: str | None = None,
        title: str | None = None,
        thread_id: str | None = None,
        extra: Mapping[str, Any] | None = None,
        namespace: str = "",
    ) -> ThreadMeta:
        return self._call(lambda s: s.create_thread(goal, title, thread_id, extra, namespace))

    def list_threads(
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
        return self._call(
            lambda s: s.list_threads(
                limit, cursor, order_by, descending, archived, search, include_empty, namespace
            )
        )

    def scoped(self, namespace: str) -> ScopedStore:
        return ScopedStore(self._portal, self._portal.view(namespace))

    def statistics(self) -> StoreStatistics:
        return self._portal.run_sync(lambda s: s.statistics())

    # -- maintenance (the store only) ------------------------------------------------------

    def summary(self) -> StoreSummary:
        return self._call(lambda s: s.summary())

    def check(self, *, progress: Progress | None = None) -> StoreCheck:
        return self._call(lambda s: s.check(progress=progress))

    def reproject(self, thread_id: str | None = None, *, progress: Progress | None = None) -> int:
        return self._call(lambda s: s.reproject(thread_id, progress=progress))

    def export_thread(self, thread_id: str) -> ThreadRecord:
        return self._call(lambda s: s.export_thread(thread_id))

    def import_thread(
        self, record: ThreadRecord, *, skip_existing: bool = False
    ) -> ThreadMeta | None:
        return self._call(lambda s: s.import_thread(record, skip_existing=skip_existing))

    def backup(self, dest: str | os.PathLike[str]) -> None:
        self._call(lambda s: s.backup(dest))


class ScopedStore(_Handle):
    """A blocking handle on a trio :class:`threadstore.ScopedStore` (``Store.scoped``)."""

    _view: ScopedStoreView

    def __init__(self, portal: Portal, view: ScopedStoreView) -> None:
        super().__init__(portal)
        self._view = view
        #: The namespace this view is confined to.
        self.namespace = view.namespace

    def create_thread(
        self,
        goal: str | None = None,
        title: str | None = None,
        thread_id: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ThreadMeta:
        return self._call(lambda _: self._view.create_thread(goal, title, thread_id, extra))

    def list_threads(
        self,
        limit: int = 50,
        cursor: str | None = None,
        order_by: OrderBy = "updated_at",
        descending: bool = True,
        archived: bool = False,
        search: str | None = None,
        include_empty: bool = False,
    ) -> ThreadPage:
        return self._call(
            lambda _: self._view.list_threads(
                limit, cursor, order_by, descending, archived, search, include_empty
            )
        )


class _Events:
    """A subscription's events, one portal call each; ends when the subscription does."""

    def __init__(self, store: _Handle, subscription: Subscription) -> None:
        self._store = store
        self._subscription = subscription

    def __iter__(self) -> _Events:
        return self

    def __next__(self) -> ThreadEvent:
        try:
            return self._store._call(self._subscription.next)
        except (StopAsyncIteration, StoreClosedError):
            raise StopIteration from None  # ended, or the store closed: a normal end


_WORLD = "From threads: blocks the calling thread until the trio method returns."
mirror_docs(Store, _WORLD)
mirror_docs(ScopedStore, _WORLD, view=True)
