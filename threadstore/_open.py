"""Opening a store: the arguments of :func:`open_store`, the engine, the actor pool."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Literal

import structlog

import workers

from ._store import Store, is_int
from ._thread_state import ThreadState
from ._values import Projector
from .sqlite import Faults, open_sqlite_engine

__all__ = ["Durability", "open_store"]

log = structlog.get_logger(__name__)

Durability = Literal["normal", "full"]


@asynccontextmanager
async def open_store(
    path: str | os.PathLike[str],
    *,
    durability: Durability = "normal",
    projectors: Sequence[Projector] = (),
    projection_delay: float = 0.0,
    read_only: bool = False,
    shutdown_timeout: float = 5.0,
    max_item_bytes: int = 1 << 20,
    max_pending_bytes: int = 64 << 20,
    retry: workers.RetryPolicy | None = None,
    retry_interval: float | None = 30.0,
    reader_connections: int = 2,
    faults: Faults | None = None,
) -> AsyncIterator[Store]:
    """Open (creating if needed) the store at ``path`` for the duration of the block.

    Takes the single-writer file lock (:class:`StoreLockedError` names the holder), sets WAL
    and the ``durability`` level, creates or checks the schema (:class:`StoreFormatError`),
    and re-projects every thread whose metadata lags its log before yielding. Leaving the
    block refuses new appends, commits everything accepted, drains projection for up to
    ``shutdown_timeout`` seconds (the rest is recovered at the next open), and releases the
    lock — also on cancellation and KeyboardInterrupt.

    ``reader_connections`` bounds the reader threads, each with one read-only connection
    (reads beyond it wait their turn, in order). ``faults`` is a test seam
    (:class:`threadstore.testing.Faults`): it injects SQLite errors into log commits and
    projection writes.
    """
    path = os.fspath(path)
    if durability not in ("normal", "full"):
        raise ValueError(f"durability must be 'normal' or 'full', not {durability!r}")
    if projection_delay < 0 or shutdown_timeout < 0:
        raise ValueError("projection_delay and shutdown_timeout must be >= 0")
    if max_item_bytes < 1 or max_pending_bytes < 1:
        raise ValueError("max_item_bytes and max_pending_bytes must be >= 1")
    if not is_int(reader_connections) or reader_connections < 1:
        raise ValueError(f"reader_connections must be an int >= 1, not {reader_connections!r}")
    for projector in projectors:
        if not isinstance(projector, Projector):
            raise TypeError(f"projector {projector!r} has no name/project()")
    engines = open_sqlite_engine(
        path,
        durability=durability,
        read_only=read_only,
        reader_connections=reader_connections,
        faults=faults,
    )
    async with engines as engine:
        store = Store(
            path=path,
            engine=engine,
            projectors=projectors,
            max_item_bytes=max_item_bytes,
            max_pending_bytes=max_pending_bytes,
        )
        if read_only:
            yield store
            return
        index = engine.thread_index()
        for tid, last_seq, seq, has_user in index:
            store._threads[tid] = ThreadState(tid, last_seq, seq, bool(has_user))
        policy = retry or workers.RetryPolicy(retryable=engine.retryable)
        async with workers.open_pool(
            store._driver.project,
            delay=projection_delay,
            retry=policy,
            shutdown_timeout=shutdown_timeout,
            retry_interval=retry_interval,
            applied_floor=lambda tid: store._threads[tid].projected if tid in store._threads else 0,
        ) as pool:
            store._pool = store._driver.pool = pool
            recovered = await store._driver.recover()
            log.info("store.opened", path=path, threads=len(index), recovered=recovered)
            try:
                yield store
            finally:
                await store._shutdown(shutdown_timeout)
