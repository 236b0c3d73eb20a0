"""Opening a store: :func:`open_store`'s arguments become configuration values, the engine
is opened, and the store is wired to its projection actors."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Final

import trio

import workers

from ._config import Lanes, StoreConfig
from ._engine import Engine
from ._errors import StoreFormatError
from ._store import Store
from ._thread_state import ThreadState
from ._values import Projector
from .memory import MEMORY_TARGET, open_memory_engine
from .sqlite import DEFAULTS as SQLITE
from .sqlite import Durability, Faults, SqliteConfig, open_sqlite_engine

if TYPE_CHECKING:
    from .postgres import PostgresFaults

__all__ = ["open_store"]

log = workers.get_logger(__name__)

#: URL schemes that select the PostgreSQL engine (checked here without importing it: its
#: driver is an optional extra).
_POSTGRES_SCHEMES: Final = ("postgresql://", "postgres://")

#: The defaults of ``open_store``'s arguments (defined in the configuration values).
_DEFAULT: Final = StoreConfig()


@asynccontextmanager
async def open_store(
    path: str | os.PathLike[str],
    *,
    durability: Durability = SQLITE.durability,
    projectors: Sequence[Projector] = (),
    projection_delay: float = _DEFAULT.projection_delay,
    read_only: bool = False,
    shutdown_timeout: float = _DEFAULT.timeouts.shutdown,
    max_item_bytes: int = _DEFAULT.limits.max_item_bytes,
    max_pending_bytes: int = _DEFAULT.limits.max_pending_bytes,
    retry: workers.RetryPolicy | None = None,
    retry_interval: float | None = _DEFAULT.timeouts.retry_interval,
    reader_connections: int = SQLITE.reader_connections,
    feed_poll_interval: float = SQLITE.feed_poll_interval,
    tombstone_retention: float = _DEFAULT.timeouts.tombstone_retention,
    faults: Faults | PostgresFaults | None = None,
) -> AsyncIterator[Store]:
    """Open (creating if needed) the store at ``path`` for the duration of the block.

    ``path`` is a store file (the SQLite engine) or ``":memory:"`` (the in-memory engine: no
    threads, no files, same semantics, nothing kept after the block; ``durability`` and
    ``reader_connections`` do not apply, ``read_only`` and ``faults`` are refused), or a
    ``postgresql://`` URL (the PostgreSQL engine, with the ``threadstore[postgres]`` extra;
    ``faults`` takes :class:`threadstore.postgres.PostgresFaults`; see ``docs/postgres.md``).

    Takes the single-writer file lock (:class:`StoreLockedError` names the holder), sets WAL
    and the ``durability`` level, creates or checks the schema (:class:`StoreFormatError`),
    and re-projects every thread whose metadata lags its log before yielding. Leaving the
    block refuses new appends, commits everything accepted, drains projection for up to
    ``shutdown_timeout`` seconds (the rest is recovered at the next open), and releases the
    lock — also on cancellation and KeyboardInterrupt.

    ``reader_connections`` bounds the reader threads, each with one read-only connection
    (reads beyond it wait their turn, in order). ``feed_poll_interval``: how often a
    read-only store's change-feed subscribers look for the writer's commits (seconds);
    ``tombstone_retention``: how long a deleted thread's tombstone is kept for subscribers
    resuming with ``subscribe(since=...)`` (seconds). ``faults`` is a test seam
    (:class:`threadstore.testing.Faults`): it injects SQLite errors into log commits and
    projection writes.
    """
    path = os.fspath(path)
    engine_config = SqliteConfig(
        durability=durability,
        reader_connections=reader_connections,
        feed_poll_interval=feed_poll_interval,
    )
    config = StoreConfig.from_options(
        projectors=projectors,
        projection_delay=projection_delay,
        shutdown_timeout=shutdown_timeout,
        max_item_bytes=max_item_bytes,
        max_pending_bytes=max_pending_bytes,
        retry=retry,
        retry_interval=retry_interval,
        tombstone_retention=tombstone_retention,
    )
    engines: AbstractAsyncContextManager[Engine]
    if path == MEMORY_TARGET:
        if read_only or faults is not None:
            raise ValueError("a ':memory:' store takes neither read_only=True nor faults=")
        engines = open_memory_engine(lanes=config.lanes)
    elif path.startswith(_POSTGRES_SCHEMES):
        if faults is not None and isinstance(faults, Faults):
            raise ValueError("a PostgreSQL store takes threadstore.postgres.PostgresFaults")
        engines = _open_postgres(
            path,
            durability=durability,
            reader_connections=reader_connections,
            feed_poll_interval=feed_poll_interval,
            lanes=config.lanes,
            read_only=read_only,
            faults=faults,
            close_patience=config.timeouts.shutdown,
        )
    else:
        if faults is not None and not isinstance(faults, Faults):
            raise ValueError("an SQLite store takes threadstore.testing.Faults")
        engines = open_sqlite_engine(
            path, config=engine_config, lanes=config.lanes, read_only=read_only, faults=faults
        )
    async with engines as engine, _running(engine.target, engine, config) as store:
        yield store


def _open_postgres(
    url: str,
    *,
    durability: Durability,
    reader_connections: int,
    feed_poll_interval: float,
    lanes: Lanes,
    read_only: bool,
    faults: PostgresFaults | None,
    close_patience: float,
) -> AbstractAsyncContextManager[Engine]:
    """The PostgreSQL engine, imported only now (psycopg is an optional extra)."""
    try:
        from .postgres import PostgresConfig, open_postgres_engine
    except ModuleNotFoundError as exc:
        if exc.name is None or not exc.name.startswith("psycopg"):
            raise
        raise ModuleNotFoundError(
            "PostgreSQL stores need psycopg 3: pip install 'threadstore[postgres]'",
            name=exc.name,
        ) from exc
    config = PostgresConfig(
        durability=durability,
        reader_connections=reader_connections,
        feed_poll_interval=feed_poll_interval,
        close_patience=close_patience,
    )
    return open_postgres_engine(url, config=config, lanes=lanes, read_only=read_only, faults=faults)


@asynccontextmanager
async def _running(path: str, engine: Engine, config: StoreConfig) -> AsyncIterator[Store]:
    """The store on an open ``engine``: its threads loaded, its projection actors running
    and recovery done; drained on the way out."""
    store = Store(path=path, engine=engine, config=config)
    store._feed.last = (await engine.changes(0, 0, None)).last  # the feed starts here
    if not engine.writable:
        try:
            yield store
        finally:
            store._feed.close()
        return
    index = engine.thread_index()
    for tid, last_seq, seq, has_user, namespace in index:
        if seq > last_seq:  # metadata ahead of its log: only a damaged file shows this
            raise StoreFormatError(
                f"{path!r} is damaged: thread {tid!r} has metadata through seq {seq} "
                f"but its log ends at seq {last_seq}"
            )
        store._threads[tid] = ThreadState(tid, last_seq, seq, bool(has_user), namespace)
    timeouts = config.timeouts
    async with workers.open_pool(
        store._driver.project,
        delay=config.projection_delay,
        retry=config.retry or workers.RetryPolicy(retryable=engine.retryable),
        shutdown_timeout=timeouts.shutdown,
        retry_interval=timeouts.retry_interval,
        applied_floor=lambda tid: store._threads[tid].projected if tid in store._threads else 0,
    ) as pool:
        store._pool = store._driver.pool = pool
        recovered = await store._driver.recover()
        log.info("store.opened", path=path, threads=len(index), recovered=recovered)
        try:
            async with _serving(store, engine):
                yield store
        finally:
            await store._shutdown(timeouts.shutdown)


@asynccontextmanager
async def _serving(store: Store, engine: Engine) -> AsyncIterator[None]:
    """A shared store's projection requests served for the block (see
    ``Store._serve_projection_requests``); the body's own error comes out as itself."""
    if not engine.shared:
        yield
        return
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store._serve_projection_requests)
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:  # the body's (the server only ends cancelled)
            raise group.exceptions[0] from None
        raise
