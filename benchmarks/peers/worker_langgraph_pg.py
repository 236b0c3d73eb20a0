"""LangGraph ``AsyncPostgresSaver`` on PostgreSQL, on asyncio, in ``.venv/langgraph_pg``.

Each append is one checkpoint ``aput`` whose ``messages`` channel holds the thread's messages
so far, exactly as the SQLite worker does (:func:`worker_langgraph.put_message`), but with no
thread-index write: the saver alone, as issue #19 names it (so this peer does less per append
than the SQLite LangGraph row). Settings:

- ``shipped``: ``AsyncPostgresSaver.from_conn_string(url)`` then ``setup()``, as the
  package's README shows: one connection, which every task shares;
- ``pool``: ``AsyncPostgresSaver(AsyncConnectionPool(...))`` with the connection arguments
  the README says manual connections need (``autocommit=True``, ``prepare_threshold=0``,
  ``row_factory=dict_row``), up to :data:`POOL_SIZE` connections.

Only the burst and sequential workloads (the saver keeps no list of threads). The packages
are imported inside functions only: they are not installed in the project's environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

from . import common
from .worker_langgraph import _Thread, put_message

DISTRIBUTIONS = (
    "langgraph-checkpoint-postgres",
    "langgraph-checkpoint",
    "langchain-core",
    "psycopg",
    "psycopg-pool",
)
#: Connections of the ``pool`` setting (psycopg_pool's default is 4).
POOL_SIZE = 10


class LangGraphPostgresAdapter:
    def __init__(self, request: common.Request) -> None:
        self.request = request
        self.stack = contextlib.AsyncExitStack()
        self.saver: Any = None
        self.threads: dict[str, _Thread] = {}

    async def open(self) -> dict[str, Any]:
        from langgraph.checkpoint.postgres.aio import (  # type: ignore[import-not-found]
            AsyncPostgresSaver,
        )

        url = self.request.url
        assert url is not None
        if self.request.settings == "pool":
            from psycopg.rows import dict_row
            from psycopg_pool import AsyncConnectionPool  # type: ignore[import-not-found]

            pool = AsyncConnectionPool(
                conninfo=url,
                max_size=POOL_SIZE,
                open=False,
                kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
            )
            await pool.open()
            self.stack.push_async_callback(pool.close)
            self.saver = AsyncPostgresSaver(pool)
            connections = f"pool of up to {POOL_SIZE}"
        else:
            self.saver = await self.stack.enter_async_context(
                AsyncPostgresSaver.from_conn_string(url)
            )
            connections = "1 (from_conn_string)"
        await self.saver.setup()
        return {"connections": connections, "autocommit": True}

    async def new_thread(self, goal: str | None) -> str:
        thread_id = str(uuid.uuid4())
        self.threads[thread_id] = _Thread()
        if goal is not None:
            await self.append(thread_id, goal)
        else:
            await asyncio.sleep(0)
        return thread_id

    async def append(self, thread_id: str, text: str) -> None:
        await put_message(self.saver, thread_id, self.threads[thread_id], text)

    async def list_top(self, limit: int) -> list[str]:
        raise NotImplementedError("AsyncPostgresSaver keeps no list of threads")

    async def release(self, thread_id: str) -> None:
        self.threads.pop(thread_id, None)
        await asyncio.sleep(0)

    async def close(self) -> None:
        await self.stack.aclose()

    def extra(self) -> dict[str, Any]:
        return {"writes_per_append": "checkpoint aput"}


async def _main(request: common.Request) -> dict[str, Any]:
    return await common.run_workload(
        request, LangGraphPostgresAdapter(request), common.asyncio_gather
    )


def main() -> None:
    request = common.read_request()
    result = asyncio.run(_main(request))
    common.emit(request, result, DISTRIBUTIONS)


if __name__ == "__main__":
    main()
