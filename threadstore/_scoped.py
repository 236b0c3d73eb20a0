"""A view of a store confined to one namespace: what ``Store.scoped(namespace)`` returns."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

from ._config import Limits
from ._errors import ThreadNotFoundError
from ._feed import ThreadEvent
from ._items import Item, StoredItem
from ._meta import ThreadMeta
from ._values import UNSET, ThreadPage

if TYPE_CHECKING:
    from ._store import OrderBy, Receipt, Store

__all__ = ["ScopedStore"]

_LIMITS: Final = Limits()
_UNSET: Final[Any] = UNSET


class ScopedStore:
    """The store's methods confined to one namespace (one tenant).

    Threads are created in the view's namespace; every method that takes a thread id raises
    :class:`~threadstore.ThreadNotFoundError` for a thread of another namespace, with the
    message a missing thread gets, before anything is queued or written; listing, barriers
    over every thread and the change feed see the namespace's threads only. Each method
    otherwise behaves exactly as the :class:`~threadstore.Store` method of the same name
    (same concurrency contract, same errors). A view is cheap: make one per request.
    """

    __slots__ = ("_store", "namespace")

    def __init__(self, store: Store, namespace: str) -> None:
        self._store = store
        #: The namespace this view is confined to.
        self.namespace = namespace

    def __repr__(self) -> str:
        return f"<ScopedStore {self.namespace!r} of {self._store.path!r}>"

    async def create_thread(
        self,
        goal: str | None = None,
        title: str | None = None,
        thread_id: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ThreadMeta:
        """:meth:`Store.create_thread <threadstore.Store.create_thread>` in this namespace."""
        return await self._store.create_thread(goal, title, thread_id, extra, self.namespace)

    def append_nowait(self, thread_id: str, *items: Item) -> Receipt:
        """:meth:`Store.append_nowait <threadstore.Store.append_nowait>`, confined."""
        self._store._owned(thread_id, self.namespace)
        return self._store.append_nowait(thread_id, *items)

    async def append(self, thread_id: str, *items: Item) -> Receipt:
        """:meth:`Store.append <threadstore.Store.append>`, confined."""
        await self._store._owned_met(thread_id, self.namespace)
        return await self._store.append(thread_id, *items)

    async def append_and_flush(self, thread_id: str, *items: Item) -> Receipt:
        """:meth:`Store.append_and_flush <threadstore.Store.append_and_flush>`, confined."""
        await self._store._owned_met(thread_id, self.namespace)
        return await self._store.append_and_flush(thread_id, *items)

    async def flush(self, thread_id: str, seq: int | None = None) -> None:
        """:meth:`Store.flush <threadstore.Store.flush>`, confined."""
        await self._store._owned_met(thread_id, self.namespace)
        await self._store.flush(thread_id, seq)

    async def flush_all(self) -> None:
        """:meth:`Store.flush_all <threadstore.Store.flush_all>` for this namespace's threads."""
        await self._store._flush_all(self.namespace)

    async def discard(self, thread_id: str) -> None:
        """:meth:`Store.discard <threadstore.Store.discard>`, confined."""
        await self._store._owned_met(thread_id, self.namespace)
        await self._store.discard(thread_id)

    async def update_thread(
        self, thread_id: str, *, title: str = _UNSET, extra: Mapping[str, Any] = _UNSET
    ) -> ThreadMeta:
        """:meth:`Store.update_thread <threadstore.Store.update_thread>`, confined."""
        await self._store._owned_met(thread_id, self.namespace)
        changes: dict[str, Any] = {}
        if title is not _UNSET:
            changes["title"] = title
        if extra is not _UNSET:
            changes["extra"] = extra
        return await self._store.update_thread(thread_id, **changes)

    async def archive_thread(self, thread_id: str) -> ThreadMeta:
        """:meth:`Store.archive_thread <threadstore.Store.archive_thread>`, confined."""
        await self._store._owned_met(thread_id, self.namespace)
        return await self._store.archive_thread(thread_id)

    async def unarchive_thread(self, thread_id: str) -> ThreadMeta:
        """:meth:`Store.unarchive_thread <threadstore.Store.unarchive_thread>`, confined."""
        await self._store._owned_met(thread_id, self.namespace)
        return await self._store.unarchive_thread(thread_id)

    async def delete_thread(self, thread_id: str) -> None:
        """:meth:`Store.delete_thread <threadstore.Store.delete_thread>`, confined."""
        await self._store._owned_met(thread_id, self.namespace)
        await self._store.delete_thread(thread_id)

    async def rewind(self, thread_id: str, to_seq: int) -> ThreadMeta:
        """:meth:`Store.rewind <threadstore.Store.rewind>`, confined."""
        await self._store._owned_met(thread_id, self.namespace)
        return await self._store.rewind(thread_id, to_seq)

    async def fork(
        self,
        source_id: str,
        /,
        at_seq: int | None = None,
        thread_id: str | None = None,
        title: str | None = None,
    ) -> ThreadMeta:
        """:meth:`Store.fork <threadstore.Store.fork>`, confined (the fork stays here)."""
        await self._store._owned_met(source_id, self.namespace)
        return await self._store.fork(source_id, at_seq, thread_id, title)

    async def get_thread(self, thread_id: str) -> ThreadMeta:
        """:meth:`Store.get_thread <threadstore.Store.get_thread>`, confined."""
        await self._store._check_owned(thread_id, self.namespace)
        meta = await self._store.get_thread(thread_id)
        if meta.namespace != self.namespace:  # (deleted and made again meanwhile)
            raise ThreadNotFoundError(meta.id)
        return meta

    async def read_items(
        self, thread_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[StoredItem]:
        """:meth:`Store.read_items <threadstore.Store.read_items>`, confined."""
        await self._store._check_owned(thread_id, self.namespace)
        return await self._store.read_items(thread_id, after_seq, limit)

    async def read_context(self, thread_id: str, limit: int | None = None) -> list[StoredItem]:
        """:meth:`Store.read_context <threadstore.Store.read_context>`, confined."""
        await self._store._check_owned(thread_id, self.namespace)
        return await self._store.read_context(thread_id, limit)

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
        """:meth:`Store.list_threads <threadstore.Store.list_threads>` of this namespace."""
        return await self._store.list_threads(
            limit, cursor, order_by, descending, archived, search, include_empty, self.namespace
        )

    @asynccontextmanager
    async def subscribe(
        self, since: int | None = None, *, buffer: int = _LIMITS.feed_buffer
    ) -> AsyncIterator[AsyncIterator[ThreadEvent]]:
        """:meth:`Store.subscribe <threadstore.Store.subscribe>`: this namespace's events
        (change numbers are the store's: a cursor skips other namespaces' changes)."""
        async with self._store._subscribe(since, buffer, self.namespace) as events:
            yield events
