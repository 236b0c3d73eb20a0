"""Small public values returned by the store: pages, statistics, and the projector protocol."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Final, Protocol, runtime_checkable

import attrs

from ._items import StoredItem
from ._meta import ThreadMeta

__all__ = ["UNSET", "Projector", "StoreStatistics", "ThreadPage"]

#: The default of an optional argument whose ``None`` means something (``update_thread``'s
#: ``title``/``extra``): "not given". One object, shared by the store, its views and the
#: access layers, which pass it through as is.
UNSET: Final[Any] = object()


@attrs.frozen(kw_only=True)
class ThreadPage:
    """One page of a thread list; pass ``next_cursor`` back for the next (None: last page)."""

    threads: tuple[ThreadMeta, ...]
    next_cursor: str | None


@attrs.frozen(kw_only=True)
class StoreStatistics:
    """Counters since the store was opened, plus a snapshot of the projection backlog.

    ``appends``/``items_appended`` count accepted append calls and their items;
    ``log_commits`` committed group transactions that appended log items (so
    ``log_commits / items_appended`` is the group-commit ratio); ``projection_writes``
    metadata writes;
    ``patches_coalesced`` appends whose patch merged into one already queued;
    ``lagging_threads``/``max_lag`` threads whose metadata is behind their log, and by how
    many items at most; ``subscribers`` open change-feed subscriptions, ``feed_events``
    changes published to them, ``feed_catch_ups`` reads of the change index by
    subscriptions catching up (behind, resuming, or following another process; the feed
    drops nothing, so there is no drop counter); ``checkpoints``/``checkpoint_failures`` WAL
    checkpoints run off the commit path that succeeded and failed (a failed one loses
    nothing: it is tried again).
    """

    appends: int
    items_appended: int
    log_commits: int
    projection_writes: int
    patches_coalesced: int
    retries: int
    projection_failures: int
    live_actors: int
    lagging_threads: int
    max_lag: int
    subscribers: int
    feed_events: int
    feed_catch_ups: int
    checkpoints: int
    checkpoint_failures: int


@runtime_checkable
class Projector(Protocol):
    """Custom metadata derived in the thread's projection actor, never on the append path.

    ``project(meta, items)`` gets the thread's metadata before the batch and the batch's
    items in seq order; it returns a mapping (or an awaitable of one) shallow-merged into
    ``meta.extra[name]``, or ``None`` for no change. A projector that raises is retried like
    a failed write.
    """

    @property
    def name(self) -> str: ...

    def project(
        self, meta: ThreadMeta, items: Sequence[StoredItem]
    ) -> Mapping[str, Any] | Awaitable[Mapping[str, Any] | None] | None: ...
