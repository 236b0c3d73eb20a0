"""LangGraph ``AsyncSqliteSaver`` + ``AsyncSqliteStore``, on asyncio, in ``.venv/langgraph``.

How a LangGraph app keeps threads and a thread list in one SQLite file:

- the conversation is checkpointed: each append is one ``AsyncSqliteSaver.aput`` of a
  checkpoint whose ``messages`` channel holds the thread's messages so far (as a graph with
  an ``add_messages`` state does after each step; the saver stores channel values in full);
- the thread list is an ``AsyncSqliteStore`` index: each append also ``aput``s
  ``("threads",) / thread_id`` with the update time, and listing is
  ``asearch(("threads",), limit=50)`` (ordered by the store's ``updated_at`` column);
- both are opened with their ``from_conn_string`` on the same file; "shipped" keeps their
  connection settings, "matched" sets WAL, ``synchronous=FULL`` and ``busy_timeout=5000`` on
  both connections after ``setup()``.

The packages are imported inside functions only: this file is type-checked in the project's
environment, where they are not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import uuid
from typing import Any

from . import common

DISTRIBUTIONS = (
    "langgraph-checkpoint-sqlite",
    "langgraph-checkpoint",
    "langchain-core",
    "aiosqlite",
)

_NAMESPACE = ("threads",)


async def _pragmas(conn: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in ("journal_mode", "synchronous", "busy_timeout"):
        cursor = await conn.execute(f"PRAGMA {name}")
        row = await cursor.fetchone()
        await cursor.close()
        values[name] = row[0]
    sync = int(values["synchronous"])
    return {
        "journal_mode": str(values["journal_mode"]).lower(),
        "synchronous": common.SYNCHRONOUS_NAMES.get(sync, str(sync)),
        "busy_timeout_ms": int(values["busy_timeout"]),
    }


class _Thread:
    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.checkpoint: Any = None
        self.config: dict[str, Any] | None = None
        self.version: Any = None
        self.preview: str | None = None


async def put_message(saver: Any, thread_id: str, thread: _Thread, text: str) -> None:
    """Checkpoint ``thread`` with one more user message, as a graph step would: one
    ``aput`` of a checkpoint whose ``messages`` channel holds every message so far (shared
    with the PostgreSQL worker)."""
    from langchain_core.messages import HumanMessage  # type: ignore[import-not-found]
    from langgraph.checkpoint.base import (  # type: ignore[import-not-found]
        create_checkpoint,
        empty_checkpoint,
    )

    thread.messages.append(HumanMessage(content=text, id=str(uuid.uuid4())))
    step = len(thread.messages) - 1
    thread.version = saver.get_next_version(thread.version, None)
    base = thread.checkpoint if thread.checkpoint is not None else empty_checkpoint()
    base["channel_values"] = {"messages": list(thread.messages)}
    base["channel_versions"] = {"messages": thread.version}
    checkpoint = create_checkpoint(base, None, step)
    config = thread.config or {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    metadata = {"source": "loop", "step": step, "parents": {}}
    thread.config = await saver.aput(config, checkpoint, metadata, {"messages": thread.version})
    thread.checkpoint = checkpoint


class LangGraphAdapter:
    def __init__(self, request: common.Request) -> None:
        self.request = request
        self.stack = contextlib.AsyncExitStack()
        self.saver: Any = None
        self.store: Any = None
        self.threads: dict[str, _Thread] = {}

    async def open(self) -> dict[str, Any]:
        from langgraph.checkpoint.sqlite.aio import (  # type: ignore[import-not-found]
            AsyncSqliteSaver,
        )
        from langgraph.store.sqlite.aio import (  # type: ignore[import-not-found]
            AsyncSqliteStore,
        )

        path = self.request.db
        self.saver = await self.stack.enter_async_context(AsyncSqliteSaver.from_conn_string(path))
        await self.saver.setup()
        self.store = await self.stack.enter_async_context(AsyncSqliteStore.from_conn_string(path))
        await self.store.setup()
        if self.request.settings == "matched":
            for conn in (self.saver.conn, self.store.conn):
                for pragma in common.MATCHED_PRAGMAS:
                    cursor = await conn.execute(pragma)
                    await cursor.close()
        saver_settings = await _pragmas(self.saver.conn)
        store_settings = await _pragmas(self.store.conn)
        return {**saver_settings, "store_connection": store_settings}

    async def new_thread(self, goal: str | None) -> str:
        thread_id = str(uuid.uuid4())
        self.threads[thread_id] = _Thread()
        if goal is not None:
            await self.append(thread_id, goal)
        else:
            await asyncio.sleep(0)
        return thread_id

    async def append(self, thread_id: str, text: str) -> None:
        thread = self.threads[thread_id]
        await put_message(self.saver, thread_id, thread, text)
        if thread.preview is None:
            thread.preview = text[:100]
        now = datetime.datetime.now(datetime.UTC).isoformat()
        await self.store.aput(
            _NAMESPACE,
            thread_id,
            {"thread_id": thread_id, "updated_at": now, "preview": thread.preview},
        )

    async def list_top(self, limit: int) -> list[str]:
        items = await self.store.asearch(_NAMESPACE, limit=limit)
        return [str(item.key) for item in items]

    async def release(self, thread_id: str) -> None:
        self.threads.pop(thread_id, None)
        await asyncio.sleep(0)

    async def close(self) -> None:
        await self.stack.aclose()

    def extra(self) -> dict[str, Any]:
        return {"commits_per_append": "checkpoint aput + thread-index aput"}


async def _main(request: common.Request) -> dict[str, Any]:
    return await common.run_workload(request, LangGraphAdapter(request), common.asyncio_gather)


def main() -> None:
    common.install_commit_counter()
    request = common.read_request()
    result = asyncio.run(_main(request))
    common.emit(request, result, DISTRIBUTIONS)


if __name__ == "__main__":
    main()
