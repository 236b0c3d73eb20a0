"""threadstore for asyncio: the whole trio :class:`threadstore.Store` API, awaitable.

.. code-block:: python

    from threadstore import Item, aio

    async with aio.open_store("threads.db") as store:
        meta = await store.create_thread(goal="Plan a trip")
        receipt = await store.append(meta.id, Item.user_message("hi"))
        await receipt.visible()

The trio store runs on a thread the handle owns (:mod:`threadstore._portal`); each method
here has the trio method's arguments, results and errors. A handle is bound to no event
loop: call it from the loop that opened it, from other loops in other OS threads, at once.
Cancelling an asyncio caller (``task.cancel()``, ``asyncio.timeout``) cancels the call on
the store's thread exactly as cancelling a trio caller would: an append whose items were
accepted is still committed and projected, nothing is half-applied; the caller's
``CancelledError`` is raised once the store's side has settled. Leaving the block drains
the store as the trio store does (``shutdown_timeout``) without blocking the loop.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import Any, TypeVar

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


@asynccontextmanager
async def open_store(target: Any, **options: Any) -> AsyncIterator[Store]:
    """Open the store at ``target`` on a thread of its own; yield an asyncio handle.

    Takes exactly :func:`threadstore.open_store`'s arguments and raises its errors.
    Opening and closing run on the store's thread: the loop keeps running meanwhile.
    Leaving the block drains the store; if the task leaving it is cancelled, the drain
    still completes before the cancellation propagates.
    """
    portal = Portal(target, options)
    loop = asyncio.get_running_loop()
    opened: asyncio.Future[None] = loop.create_future()
    portal.start(_resolver(loop, opened))
    await _settled(opened)  # opening is not abandoned half-way
    try:
        yield Store(portal)
    finally:
        closed: asyncio.Future[None] = loop.create_future()
        portal.request_close(_resolver(loop, closed))
        await _settled(closed)


def _resolver(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]
) -> Callable[[BaseException | None], None]:
    def resolve(error: BaseException | None) -> None:
        result = outcome.Value(None) if error is None else outcome.Error(error)
        _results_for(loop).post(_Waiter(future), result)

    return resolve


async def _settled(future: asyncio.Future[T]) -> T:
    """Await ``future`` to its end even if cancelled meanwhile; then raise the cancellation.

    For work on the store's thread that must not be abandoned half-way (opening, closing,
    a call being cancelled): the caller's cancellation is raised once it has settled."""
    cancelled: asyncio.CancelledError | None = None
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError as exc:
            if not future.done():
                cancelled = exc
        except BaseException:
            break  # its outcome is raised below
    if cancelled is not None:
        raise cancelled
    return future.result()  # noqa: ASYNC910 - the loop awaited it (done futures only)


class _Waiter:
    """An asyncio caller waiting for a call's outcome: ``future`` carries it to the caller;
    once the caller was cancelled, ``settled`` tells it that the store's side has ended."""

    __slots__ = ("future", "result", "settled")

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self.future = future
        self.result: outcome.Outcome[Any] | None = None
        self.settled: asyncio.Future[Any] | None = None

    def deliver(self, result: outcome.Outcome[Any]) -> None:
        """On the caller's loop: hand ``result`` over (or tell a cancelled caller it ended)."""
        self.result = result
        for future in (self.future, self.settled):
            if future is None or future.done():
                continue  # the caller was cancelled (it waits on ``settled``)
            if isinstance(result, outcome.Error):
                future.set_exception(result.error)
            elif isinstance(result, outcome.Value):
                future.set_result(result.value)


class _Results:
    """Outcomes bound for one event loop, handed over in batches: one wake-up of the loop per
    batch, however many calls finish meanwhile (the queue is appended to before the flag is
    read, and delivery clears the flag before it empties the queue)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._results: deque[tuple[_Waiter, outcome.Outcome[Any]]] = deque()
        self._scheduled = False

    def post(self, waiter: _Waiter, result: outcome.Outcome[Any]) -> None:
        """Deliver ``result`` to ``waiter`` on its loop. Any thread; never blocks."""
        self._results.append((waiter, result))
        if not self._scheduled:
            self._scheduled = True
            with suppress(RuntimeError):  # a closed loop has no one left to tell
                self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        self._scheduled = False
        results = self._results
        while results:
            waiter, result = results.popleft()
            waiter.deliver(result)


_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Results] = weakref.WeakKeyDictionary()
_loops_lock = threading.Lock()


def _results_for(loop: asyncio.AbstractEventLoop) -> _Results:
    results = _loops.get(loop)
    if results is None:
        with _loops_lock:
            results = _loops.setdefault(loop, _Results(loop))
    return results


@attrs.frozen(kw_only=True, eq=False)
class Receipt:
    """What an append returns: ``thread_id``, ``seq``, and awaitable barriers.

    ``await durable()``/``await visible()`` as on :class:`threadstore.Receipt`.
    """

    thread_id: str
    _store: _Handle = attrs.field(alias="store", repr=False)
    _receipt: trio_store.Receipt = attrs.field(alias="receipt", repr=False)

    @property
    def seq(self) -> int:
        """The seq of the last item (on a store several processes write, known once
        :meth:`durable` returned: see :attr:`threadstore.Receipt.seq`)."""
        return self._receipt.seq

    async def durable(self) -> None:
        """Block until the items are in the log; raise AppendFailedError if they never are."""
        receipt = self._receipt
        await self._store._call(lambda _: receipt.durable())

    async def visible(self) -> None:
        """Block until the metadata reflects these items (``flush(thread_id, seq)``)."""
        receipt = self._receipt
        await self._store._call(lambda _: receipt.visible())


class _Handle:
    """What an asyncio store handle and its namespace views share: the portal crossing and
    every method that takes a thread id (on the store, or on the view, see ``_on``)."""

    #: The trio view calls go to (None: the store itself).
    _view: ScopedStoreView | None = None

    def __init__(self, portal: Portal) -> None:
        self._portal = portal

    def _on(self, store: trio_store.Store) -> trio_store.Store | ScopedStoreView:
        return store if self._view is None else self._view

    async def _call(self, fn: Callable[[trio_store.Store], Awaitable[T]]) -> T:
        return await self._wait(partial(self._portal.submit, fn))

    async def _wait(self, submit: Callable[[Done], Call]) -> T:
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future())
        call = submit(partial(_results_for(loop).post, waiter))
        try:
            result: T = await waiter.future
        except asyncio.CancelledError:
            if waiter.result is not None:
                raise  # cancelled after the result arrived
            call.cancel()
            waiter.settled = loop.create_future()
            await _settled(waiter.settled)
            raise
        return result

    def _receipt(self, receipt: trio_store.Receipt) -> Receipt:
        return Receipt(thread_id=receipt.thread_id, store=self, receipt=receipt)

    def append_nowait(self, thread_id: str, *items: Item) -> Receipt:
        return self._receipt(
            self._portal.run_sync(lambda s: self._on(s).append_nowait(thread_id, *items))
        )

    async def append(self, thread_id: str, *items: Item) -> Receipt:
        receipt: trio_store.Receipt = await self._wait(
            partial(self._portal.append, thread_id, items, view=self._view)
        )
        return self._receipt(receipt)

    async def append_and_flush(self, thread_id: str, *items: Item) -> Receipt:
        return self._receipt(
            await self._call(lambda s: self._on(s).append_and_flush(thread_id, *items))
        )

    async def flush(self, thread_id: str, seq: int | None = None) -> None:
        await self._call(lambda s: self._on(s).flush(thread_id, seq))

    async def flush_all(self) -> None:
        await self._call(lambda s: self._on(s).flush_all())

    async def discard(self, thread_id: str) -> None:
        await self._call(lambda s: self._on(s).discard(thread_id))

    async def update_thread(
        self, thread_id: str, *, title: str = _UNSET, extra: Mapping[str, Any] = _UNSET
    ) -> ThreadMeta:
        return await self._call(
            lambda s: self._on(s).update_thread(thread_id, title=title, extra=extra)
        )

    async def archive_thread(self, thread_id: str) -> ThreadMeta:
        return await self._call(lambda s: self._on(s).archive_thread(thread_id))

    async def unarchive_thread(self, thread_id: str) -> ThreadMeta:
        return await self._call(lambda s: self._on(s).unarchive_thread(thread_id))

    async def delete_thread(self, thread_id: str) -> None:
        await self._call(lambda s: self._on(s).delete_thread(thread_id))

    async def rewind(self, thread_id: str, to_seq: int) -> ThreadMeta:
        return await self._call(lambda s: self._on(s).rewind(thread_id, to_seq))

    async def fork(
        self,
        source_id: str,
        /,
        at_seq: int | None = None,
        thread_id: str | None = None,
        title: str | None = None,
    ) -> ThreadMeta:
        return await self._call(lambda s: self._on(s).fork(source_id, at_seq, thread_id, title))

    @asynccontextmanager
    async def subscribe(
        self, since: int | None = None, *, buffer: int = _LIMITS.feed_buffer
    ) -> AsyncIterator[AsyncIterator[ThreadEvent]]:
        subscription = await self._call(
            Subscription.opener(self._portal, lambda s: self._on(s).subscribe(since, buffer=buffer))
        )
        try:
            yield _Events(self, subscription)
        finally:
            with suppress(StoreClosedError):  # the store closed: the subscription ended
                await self._call(subscription.close)

    async def get_thread(self, thread_id: str) -> ThreadMeta:
        return await self._call(lambda s: self._on(s).get_thread(thread_id))

    async def read_items(
        self, thread_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[StoredItem]:
        return await self._call(lambda s: self._on(s).read_items(thread_id, after_seq, limit))

    async def read_context(self, thread_id: str, limit: int | None = None) -> list[StoredItem]:
        return await self._call(lambda s: self._on(s).read_context(thread_id, limit))


class Store(_Handle):
    """An asyncio handle on a trio :class:`threadstore.Store`; see :func:`open_store`.

    Every method mirrors the trio store's (same arguments, results and errors; receipts
    are :class:`Receipt`, views are :class:`ScopedStore`). Safe to call from any loop in
    any thread, concurrently.
    """

    @property
    def path(self) -> str:
        """The store's file path."""
        return self._portal.path

    @property
    def read_only(self) -> bool:
        """Whether the store was opened with ``read_only=True``."""
        return self._portal.read_only

    async def create_thread(
        self,
        goal: str | None = None,
        title: str | None = None,
        thread_id: str | None = None,
        extra: Mapping[str, Any] | None = None,
        namespace: str = "",
    ) -> ThreadMeta:
        return await self._call(lambda s: s.create_thread(goal, title, thread_id, extra, namespace))

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
        return await self._call(
            lambda s: s.list_threads(
                limit, cursor, order_by, descending, archived, search, include_empty, namespace
            )
        )

    def scoped(self, namespace: str) -> ScopedStore:
        return ScopedStore(self._portal, self._portal.view(namespace))

    def statistics(self) -> StoreStatistics:
        return self._portal.run_sync(lambda s: s.statistics())

    # -- maintenance (the store only) ------------------------------------------------------

    async def summary(self) -> StoreSummary:
        return await self._call(lambda s: s.summary())

    async def check(self, *, progress: Progress | None = None) -> StoreCheck:
        return await self._call(lambda s: s.check(progress=progress))

    async def reproject(
        self, thread_id: str | None = None, *, progress: Progress | None = None
    ) -> int:
        return await self._call(lambda s: s.reproject(thread_id, progress=progress))

    async def export_thread(self, thread_id: str) -> ThreadRecord:
        return await self._call(lambda s: s.export_thread(thread_id))

    async def import_thread(
        self, record: ThreadRecord, *, skip_existing: bool = False
    ) -> ThreadMeta | None:
        return await self._call(lambda s: s.import_thread(record, skip_existing=skip_existing))

    async def backup(self, dest: str | os.PathLike[str]) -> None:
        await self._call(lambda s: s.backup(dest))


class ScopedStore(_Handle):
    """An asyncio handle on a trio :class:`threadstore.ScopedStore` (``Store.scoped``)."""

    _view: ScopedStoreView

    def __init__(self, portal: Portal, view: ScopedStoreView) -> None:
        super().__init__(portal)
        self._view = view
        #: The namespace this view is confined to.
        self.namespace = view.namespace

    async def create_thread(
        self,
        goal: str | None = None,
        title: str | None = None,
        thread_id: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ThreadMeta:
        return await self._call(lambda _: self._view.create_thread(goal, title, thread_id, extra))

    async def list_threads(
        self,
        limit: int = 50,
        cursor: str | None = None,
        order_by: OrderBy = "updated_at",
        descending: bool = True,
        archived: bool = False,
        search: str | None = None,
        include_empty: bool = False,
    ) -> ThreadPage:
        return await self._call(
            lambda _: self._view.list_threads(
                limit, cursor, order_by, descending, archived, search, include_empty
            )
        )


class _Events:
    """A subscription's events, one portal call each; ends when the subscription does."""

    def __init__(self, store: _Handle, subscription: Subscription) -> None:
        self._store = store
        self._subscription = subscription

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> ThreadEvent:
        try:
            return await self._store._call(self._subscription.next)
        except StoreClosedError:
            raise StopAsyncIteration from None  # the store closed: a normal end


mirror_docs(Store, "On asyncio: awaitable from any loop in any thread.")
mirror_docs(ScopedStore, "On asyncio: awaitable from any loop in any thread.", view=True)
