"""The error hierarchy: every error the store raises on purpose is a ``ThreadStoreError``."""

from __future__ import annotations

__all__ = [
    "AppendFailedError",
    "ImportFormatError",
    "InvalidCursorError",
    "InvalidItemError",
    "ProjectionFailedError",
    "ReadOnlyStoreError",
    "StoreClosedError",
    "StoreFormatError",
    "StoreLockedError",
    "StoreOverloadedError",
    "StoreUnavailableError",
    "ThreadDiscardedError",
    "ThreadExistsError",
    "ThreadNotFoundError",
    "ThreadStoreError",
    "WriteFailedError",
    "shorten",
]


def shorten(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages that quote input."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


class ThreadStoreError(Exception):
    """Base class of every error threadstore raises on purpose."""


class StoreClosedError(ThreadStoreError):
    """The store is closing or closed: no new work is accepted."""


class StoreLockedError(ThreadStoreError):
    """Another process (or another open in this one) owns the store for writing."""

    def __init__(self, path: str, holder: str) -> None:
        super().__init__(f"store {path!r} is locked for writing by {holder}")
        self.path = path
        self.holder = holder


class StoreFormatError(ThreadStoreError):
    """The file is not a threadstore database, is damaged, or is from a newer version."""


class StoreUnavailableError(ThreadStoreError, ConnectionError):
    """The store's database server could not be reached (PostgreSQL): the message names
    the host and database, never the password."""


class ReadOnlyStoreError(ThreadStoreError):
    """A write was attempted on a store opened with ``read_only=True``."""


class StoreOverloadedError(ThreadStoreError):
    """``append_nowait`` found the store over its memory bound; ``append`` would wait."""


class ThreadNotFoundError(ThreadStoreError, LookupError):
    """No thread with that id exists (or it was deleted)."""

    def __init__(self, thread_id: str) -> None:
        super().__init__(f"no thread with id {shorten(thread_id)}")
        self.thread_id = thread_id


class ThreadExistsError(ThreadStoreError):
    """``create_thread`` was given an id that is already taken."""

    def __init__(self, thread_id: str) -> None:
        super().__init__(f"a thread with id {shorten(thread_id)} already exists")
        self.thread_id = thread_id


class InvalidItemError(ThreadStoreError, ValueError):
    """An item, thread id or argument was rejected before anything was written."""


class ImportFormatError(InvalidItemError):
    """A line of an export (JSON Lines, see ``threadstore.read_records``) is malformed.

    ``line`` is its number (from 1), ``reason`` what is wrong with it."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


class InvalidCursorError(ThreadStoreError, ValueError):
    """A listing cursor was tampered with, truncated, or made by another store or query."""


class ProjectionFailedError(ThreadStoreError):
    """The projection attempt that covered a barrier's seq failed for good.

    The items are safe in the log and the work is kept: a later append, flush or the
    store's periodic retry tries again. The underlying error is ``__cause__``.
    """

    def __init__(self, thread_id: str, seq: int, attempts: int) -> None:
        super().__init__(
            f"projection of thread {shorten(thread_id)} through seq {seq} "
            f"failed after {attempts} attempt(s)"
        )
        self.thread_id = thread_id
        self.seq = seq
        self.attempts = attempts


class ThreadDiscardedError(ThreadStoreError):
    """The projection work a barrier waited for was dropped by ``discard``/``delete_thread``."""

    def __init__(self, thread_id: str, seq: int) -> None:
        super().__init__(f"projection of thread {shorten(thread_id)} through seq {seq} discarded")
        self.thread_id = thread_id
        self.seq = seq


class WriteFailedError(ThreadStoreError):
    """A write to the store did not commit (disk full, I/O error, …): nothing of it was
    stored. The SQLite error is the ``__cause__``. Raised as is by ``archive_thread``,
    ``unarchive_thread`` and ``delete_thread``; appends raise :class:`AppendFailedError`."""

    def __init__(self, thread_id: str, operation: str, reason: str) -> None:
        super().__init__(f"{operation} of thread {shorten(thread_id)} failed: {reason}")
        self.thread_id = thread_id
        self.operation = operation


class AppendFailedError(WriteFailedError):
    """The log commit holding these items failed: none of them were stored."""

    def __init__(self, thread_id: str, seq: int, reason: str) -> None:
        ThreadStoreError.__init__(
            self, f"append to thread {shorten(thread_id)} (seq {seq}) failed: {reason}"
        )
        self.thread_id = thread_id
        self.operation = "append"
        self.seq = seq
