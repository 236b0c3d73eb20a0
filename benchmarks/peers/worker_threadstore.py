"""threadstore through the same workloads, on trio, with the project's Python.

``append`` is ``store.append(tid, Item.user_message(text))``; a goal-first thread is
``store.create_thread(goal=...)``; the list is ``store.list_threads(limit=50)``. The
settings are ``durability="full"`` (WAL + ``synchronous=FULL``: the matched comparison) or
``"normal"`` (WAL + ``synchronous=NORMAL``, the default), and ``pg-full`` / ``pg-normal``:
the same on the PostgreSQL engine, at the request's ``url`` (``synchronous_commit`` on, as
the PostgreSQL peers commit, or off).

Logging is set to warnings on stderr, as an application would run it (structlog's default
configuration prints every debug event to stdout, which would dominate the timings).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

import structlog
import trio

import threadstore
from threadstore import Item

from . import common

DISTRIBUTIONS = ("threadstore", "trio")


def _writer_settings() -> dict[str, Any]:
    """Read the settings on the store's own write connection (the first one it opened)."""
    with common.COMMITS.lock:
        connections = list(common.COMMITS.connections)
    for conn in connections:
        try:
            if conn.execute("PRAGMA query_only").fetchone()[0]:
                continue
            return common.read_pragmas(conn)
        except sqlite3.Error:
            continue
    return {}


class ThreadstoreAdapter:
    def __init__(self, request: common.Request) -> None:
        self.request = request
        self.stack = contextlib.AsyncExitStack()
        self.store: threadstore.Store | None = None

    def _durability(self) -> Literal["normal", "full"]:
        return "full" if self.request.settings in ("full", "pg-full") else "normal"

    async def open(self) -> dict[str, Any]:
        on_postgres = self.request.settings.startswith("pg-")
        if on_postgres and self.request.url is None:
            raise ValueError(f"settings {self.request.settings!r} need the request's url")
        target = self.request.url if on_postgres and self.request.url else self.request.db
        self.store = await self.stack.enter_async_context(
            threadstore.open_store(target, durability=self._durability())
        )
        if on_postgres:
            return {"engine": "postgresql", "durability": self._durability()}
        return await trio.to_thread.run_sync(_writer_settings)

    def _store(self) -> threadstore.Store:
        assert self.store is not None
        return self.store

    async def new_thread(self, goal: str | None) -> str:
        meta = await self._store().create_thread(goal=goal)
        return meta.id

    async def append(self, thread_id: str, text: str) -> None:
        await self._store().append(thread_id, Item.user_message(text))

    async def list_top(self, limit: int) -> list[str]:
        page = await self._store().list_threads(limit=limit)
        return [meta.id for meta in page.threads]

    async def release(self, thread_id: str) -> None:
        await trio.lowlevel.checkpoint()

    async def close(self) -> None:
        await self.stack.aclose()
        self.store = None

    def extra(self) -> dict[str, Any]:
        store = self.store
        if store is None:
            return {}
        stats = store.statistics()
        return {
            "appends": stats.appends,
            "log_commits": stats.log_commits,
            "projection_writes": stats.projection_writes,
            "patches_coalesced": stats.patches_coalesced,
        }


async def _gather(fns: Sequence[Callable[[], Awaitable[None]]]) -> None:
    async with trio.open_nursery() as nursery:
        for fn in fns:
            nursery.start_soon(fn)


async def _main(request: common.Request) -> dict[str, Any]:
    return await common.run_workload(request, ThreadstoreAdapter(request), _gather)


def main() -> None:
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    common.install_commit_counter()
    request = common.read_request()
    result = trio.run(_main, request)
    common.emit(request, result, DISTRIBUTIONS, {"threadstore": "source tree (not installed)"})


if __name__ == "__main__":
    main()
