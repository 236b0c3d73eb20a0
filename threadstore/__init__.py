"""threadstore: durable conversation-thread storage for agent runtimes.

``append`` returns as soon as items are durable in the log; a per-thread actor projects the
thread's metadata asynchronously, merging whatever queued up while it was busy; barriers
(``flush``, ``append_and_flush``) wait until metadata is visible.
"""

from ._engine import StoreSummary
from ._errors import (
    AppendFailedError,
    ImportFormatError,
    InvalidCursorError,
    InvalidItemError,
    ProjectionFailedError,
    ReadOnlyStoreError,
    StoreClosedError,
    StoreFormatError,
    StoreLockedError,
    StoreOverloadedError,
    StoreUnavailableError,
    ThreadDiscardedError,
    ThreadExistsError,
    ThreadNotFoundError,
    ThreadStoreError,
    WriteFailedError,
)
from ._feed import EventType, ThreadEvent
from ._items import Item, StoredItem
from ._maintenance import LaggingThread, StoreCheck, ThreadMismatch
from ._meta import ThreadMeta
from ._open import open_store
from ._scoped import ScopedStore
from ._store import Receipt, Store
from ._transfer import ThreadRecord, read_records, record_lines
from ._values import Projector, StoreStatistics, ThreadPage

__all__ = [
    "AppendFailedError",
    "EventType",
    "ImportFormatError",
    "InvalidCursorError",
    "InvalidItemError",
    "Item",
    "LaggingThread",
    "ProjectionFailedError",
    "Projector",
    "ReadOnlyStoreError",
    "Receipt",
    "ScopedStore",
    "Store",
    "StoreCheck",
    "StoreClosedError",
    "StoreFormatError",
    "StoreLockedError",
    "StoreOverloadedError",
    "StoreStatistics",
    "StoreSummary",
    "StoreUnavailableError",
    "StoredItem",
    "ThreadDiscardedError",
    "ThreadEvent",
    "ThreadExistsError",
    "ThreadMeta",
    "ThreadMismatch",
    "ThreadNotFoundError",
    "ThreadPage",
    "ThreadRecord",
    "ThreadStoreError",
    "WriteFailedError",
    "open_store",
    "read_records",
    "record_lines",
]
