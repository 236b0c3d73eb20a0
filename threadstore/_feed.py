"""The change feed: lossless for the final state, bounded in memory, resumable.

Every committed change to a thread's listed state has a store-wide change number, strictly
increasing in commit order, stored with the thread (deleted threads leave a tombstone). The
engine hands this store's own commits to :meth:`Feed.publish` on the trio thread, in change
order. Each :class:`Subscription` has a cursor (the change of the last event it took) and a
buffer of at most ``buffer`` events:

- **live**: published events go into the buffer;
- **behind**: when the buffer is full, the feed stops pushing to the subscription (nothing
  is dropped that matters: the store still has it) and the subscription, once its reader
  has emptied the buffer, **catches up** by reading the change index from its cursor, a
  buffer's worth at a time — each thread changed since then once, with its metadata as it
  is now, in change order — and goes live again when it has read up to what was published.

So a subscriber that applies events in order (upsert, or remove on ``deleted``) always
converges to what ``list_threads`` shows, costs the store no memory beyond its buffer, and
never stalls projection. A cursor from an earlier run (``since=``) starts behind; if the
store pruned tombstones it would need, or does not know the cursor, the first event is a
``reset`` (clear the view: the events that follow list every thread again).

On an engine whose store other processes write (a read-only SQLite store beside its writer),
commits are not published here: an idle subscription waits on the engine's cheap wake-up
(:meth:`~threadstore._engine.Engine.wait_for_changes`) and then catches up the same way.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Literal

import attrs
import trio

from ._meta import ThreadMeta

if TYPE_CHECKING:
    from ._engine import Change, Engine

__all__ = ["EventType", "Feed", "Subscription", "ThreadEvent"]

EventType = Literal["created", "updated", "archived", "unarchived", "deleted", "reset"]


@attrs.frozen(kw_only=True)
class ThreadEvent:
    """A committed change to a thread's listed state, or a ``reset``.

    ``thread`` is the metadata as committed by the change (for ``deleted``: as it was; when
    caught up from the store, only ``id``, ``namespace`` and ``updated_at`` — the deletion
    time — are meaningful). ``change`` is the change number: keep the last one to resume with
    ``subscribe(since=...)``. Events caught up from the store (a subscriber that fell behind,
    a resumed one, another process's changes) are ``updated`` or ``deleted``: apply them as
    upserts and removals. ``reset`` (``thread`` None, ``change`` 0): forget every thread
    you hold; the events that follow list them all again.
    """

    type: EventType
    thread: ThreadMeta | None
    change: int


def caught_up_event(change: Change) -> ThreadEvent:
    """The event a catch-up read hands out for one row of the change index."""
    return ThreadEvent(
        type="deleted" if change.deleted else "updated", thread=change.thread, change=change.change
    )


class Subscription:
    """One subscriber's cursor and bounded buffer; iterate it for events (trio thread)."""

    def __init__(
        self, feed: Feed, *, buffer: int, namespace: str | None, cursor: int, behind: bool
    ) -> None:
        self._feed = feed
        self._size = buffer
        self._namespace = namespace
        self._buffer: collections.deque[ThreadEvent] = collections.deque()
        #: The change of the last event taken into the buffer (or the starting point).
        self._cursor = cursor
        self._behind = behind
        #: Re-listing after a reset: tombstones below the floor no longer matter.
        self._fresh = False
        self._closed = False
        self._wake: trio.Event | None = None
        self._waiting: trio.CancelScope | None = None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> ThreadEvent:
        """The next event; blocks until there is one. Ends (StopAsyncIteration) when the
        store closes, after the events already buffered."""
        while True:
            if self._buffer:
                await trio.lowlevel.checkpoint()
                return self._buffer.popleft()
            if self._closed:
                raise StopAsyncIteration
            if self._behind:
                await self._catch_up()
            else:
                await self._idle()

    # -- driven by the feed (trio thread, sync) ---------------------------------------------

    def offer(self, event: ThreadEvent) -> None:
        """Take a published event, or fall behind if the buffer is full.

        In a store other processes write too, an event is taken only if it is the very
        next change after the cursor (then nothing can come between); any other means a
        read of the store."""
        if self._behind or self._closed or event.change <= self._cursor:
            return
        external = self._feed.external
        if external and event.change != self._cursor + 1:
            self.poke()
            return
        namespace, thread = self._namespace, event.thread
        if namespace is not None and thread is not None and thread.namespace != namespace:
            if external:
                self._cursor = event.change  # the next change, and none of this view's
            return
        if len(self._buffer) >= self._size:
            self._behind = True  # stop pushing: the rest comes from the store
        else:
            self._buffer.append(event)
            self._cursor = event.change
        self._notify()

    def poke(self) -> None:
        """Something was committed that this subscription may not have: read the store."""
        if not self._closed:
            self._behind = True
            self._notify()

    def close(self) -> None:
        self._closed = True
        self._notify()

    def _notify(self) -> None:
        if self._wake is not None:
            self._wake.set()
        if self._waiting is not None:
            self._waiting.cancel()

    # -- the reader's side ------------------------------------------------------------------

    async def _idle(self) -> None:
        """Wait for a published event, a poke, or (another process's store) a commit."""
        feed = self._feed
        if not feed.external:
            self._wake = trio.Event()
            try:
                await self._wake.wait()
            finally:
                self._wake = None
            return
        with trio.CancelScope() as self._waiting:
            await feed.engine.wait_for_changes(self._cursor)
            self._behind = True
        self._waiting = None

    async def _catch_up(self) -> None:
        """Read up to a buffer's worth of changes after the cursor from the store."""
        feed = self._feed
        feed.catch_ups += 1
        try:
            page = await feed.engine.changes(self._cursor, self._size, self._namespace)
        except Exception:
            if self._closed:  # the store closed under the read: end like a closed feed
                return  # noqa: ASYNC910 - the read checkpointed or the store is gone
            raise
        if self._closed:
            return
        if not self._fresh and not page.floor <= self._cursor <= page.last:
            # Tombstones this cursor needs were pruned, or the cursor is not this store's.
            self._buffer.append(ThreadEvent(type="reset", thread=None, change=0))
            self._cursor, self._fresh = 0, True
            return
        for change in page.changes:
            self._buffer.append(caught_up_event(change))
            self._cursor = change.change
        if len(page.changes) < self._size:
            # Everything up to ``page.last`` that this subscription follows was read (other
            # namespaces' changes too are behind it now).
            self._cursor = max(self._cursor, page.last)
            if feed.external or feed.last <= self._cursor:
                self._behind = self._fresh = False  # up to what was published: live again


class Feed:
    """The store's subscriptions: fans its own commits out, in change order."""

    def __init__(self, engine: Engine, *, last: int = 0) -> None:
        self.engine = engine
        #: Whether other processes commit to this store (see the module docstring).
        self.external = engine.external_changes
        self._subscriptions: dict[Subscription, None] = {}
        #: The newest change published (or, for a new feed, stored at open).
        self.last = last
        self.events_published = 0
        #: Reads of the change index by subscriptions catching up.
        self.catch_ups = 0
        self.closed = False

    @property
    def subscribers(self) -> int:
        """How many subscriptions are open."""
        return len(self._subscriptions)

    def publish(self, event: ThreadEvent) -> None:
        """Hand a committed change to every subscription. Sync; trio thread, change order
        (the engine's listener)."""
        if event.change <= self.last:
            return
        self.last = event.change
        self.events_published += 1
        for subscription in self._subscriptions:
            subscription.offer(event)

    @asynccontextmanager
    async def subscribe(
        self, *, since: int | None, buffer: int, namespace: str | None
    ) -> AsyncIterator[Subscription]:
        """A subscription for the block, from ``since`` (None: from now on)."""
        if since is None:
            if self.external:  # the newest change committed by anyone, not just here
                since = (await self.engine.changes(0, 0, namespace)).last
            else:
                await trio.lowlevel.checkpoint()
                since = self.last
            behind = False
        else:
            await trio.lowlevel.checkpoint()
            behind = True  # replay: read the store (and check the cursor) first
        subscription = Subscription(
            self, buffer=buffer, namespace=namespace, cursor=since, behind=behind
        )
        if self.closed:
            subscription.close()
        else:
            self._subscriptions[subscription] = None
        try:
            yield subscription
        finally:
            self._subscriptions.pop(subscription, None)
            subscription.close()

    def close(self) -> None:
        """End every subscription (each after the events it has buffered)."""
        self.closed = True
        for subscription in self._subscriptions:
            subscription.close()
        self._subscriptions.clear()
