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

import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from functools import partial
from typing import Any, Generic, TypeVar

import attrs
import outcome

from . import _store as trio_store
from ._errors import StoreClosedError
from ._feed import ThreadEvent
from ._items import Item, StoredItem
from ._meta import ThreadMeta
from ._portal import Call, Done, Portal, Subscription, mirror_docs
from ._store import OrderBy
from ._values import StoreStatistics, ThreadPage

__all__ = ["Receipt", "Store", "open_store"]

T = TypeVar("T")
_UNSET: Any = trio_store._UNSET  # update_thread's "not given" (the trio store's own sentinel)


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
    seq: int
    _store: Store = attrs.field(alias="store", repr=False)
    _receipt: trio_store.Receipt = attrs.field(alias="receipt", repr=False)

    def durable(self) -> None:
        """Block until the items are in the log; raise AppendFailedError if they never are."""
        receipt = self._receipt
        self._store._call(lambda _: receipt.durable())

    def visible(self) -> None:
        """Block until the metadata reflects these items (``flush(thread_id, seq)``)."""
        receipt = self._receipt
        self._store._call(lambda _: receipt.visible())


class Store:
    """A blocking handle on a trio :class:`threadstore.Store`; see :func:`open_store`.

    Every method mirrors the trio store's (same arguments, results and errors; receipts
    are :class:`Receipt`). Safe to call from any thread, concurrently.
    """

    def __init__(self, portal: Portal) -> None:
        self._portal = portal

    @property
    def path(self) -> str:
        """The store's file path."""
        return self._portal.path

    @property
    def read_only(self) -> bool:
        """Whether the store was opened with ``read_only=True``."""
        return self._portal.read_only

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
        return Receipt(thread_id=receipt.thread_id, seq=receipt.seq, store=self, receipt=receipt)

    def create_thread(
        self,
        goal: str | None = None,
        title: str | None = None,
        thread_id: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ThreadMeta:
        return self._call(lambda s: s.create_thread(goal, title, thread_id, extra))

    def append_nowait(self, thread_id: str, *items: Item) -> Receipt:
        return self._receipt(self._portal.run_sync(lambda s: s.append_nowait(thread_id, *items)))

    def append(self, thread_id: str, *items: Item) -> Receipt:
        receipt: trio_store.Receipt = self._wait(partial(self._portal.append, thread_id, items))
        return self._receipt(receipt)

    def append_and_flush(self, thread_id: str, *items: Item) -> Receipt:
        return self._receipt(self._call(lambda s: s.append_and_flush(thread_id, *items)))

    def flush(self, thread_id: str, seq: int | None = None) -> None:
        self._call(lambda s: s.flush(thread_id, seq))

    def flush_all(self) -> None:
        self._call(lambda s: s.flush_all())

    def discard(self, thread_id: str) -> None:
        self._call(lambda s: s.discard(thread_id))

    def update_thread(
        self, thread_id: str, *, title: str = _UNSET, extra: Mapping[str, Any] = _UNSET
    ) -> ThreadMeta:
        return self._call(lambda s: s.update_thread(thread_id, title=title, extra=extra))

    def archive_thread(self, thread_id: str) -> ThreadMeta:
        return self._call(lambda s: s.archive_thread(thread_id))

    def unarchive_thread(self, thread_id: str) -> ThreadMeta:
        return self._call(lambda s: s.unarchive_thread(thread_id))

    def delete_thread(self, thread_id: str) -> None:
        self._call(lambda s: s.delete_thread(thread_id))

    @contextmanager
    def subscribe(self, buffer: int = 256) -> Iterator[Iterator[ThreadEvent]]:
        subscription = self._call(Subscription.opener(self._portal, (buffer,), {}))
        try:
            yield _Events(self, subscription)
        finally:
            with suppress(StoreClosedError):  # the store closed: the subscription ended
                self._call(subscription.close)

    def get_thread(self, thread_id: str) -> ThreadMeta:
        return self._call(lambda s: s.get_thread(thread_id))

    def read_items(
        self, thread_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[StoredItem]:
        return self._call(lambda s: s.read_items(thread_id, after_seq, limit))

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
            lambda s: s.list_threads(
                limit, cursor, order_by, descending, archived, search, include_empty
            )
        )

    def statistics(self) -> StoreStatistics:
        return self._portal.run_sync(lambda s: s.statistics())


class _Events:
    """A subscription's events, one portal call each; ends when the subscription does."""

    def __init__(self, store: Store, subscription: Subscription) -> None:
        self._store = store
        self._subscription = subscription

    def __iter__(self) -> _Events:
        return self

    def __next__(self) -> ThreadEvent:
        try:
            return self._store._call(self._subscription.next)
        except (StopAsyncIteration, StoreClosedError):
            raise StopIteration from None  # ended, or the store closed: a normal end


mirror_docs(Store, "From threads: blocks the calling thread until the trio method returns.")
