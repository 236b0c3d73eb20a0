"""Google ADK ``DatabaseSessionService`` on PostgreSQL, on asyncio, in ``.venv/adk_pg``.

As ADK's documentation shows: ``DatabaseSessionService(db_url=...)`` with an SQLAlchemy
async URL (``postgresql+asyncpg://``, the driver ADK names for PostgreSQL; the throwaway
server's Unix socket directory as ``?host=``), SQLAlchemy's default pool. A thread is a
session (``create_session``); an append is ``append_event`` of a user event on the session
object ``create_session`` returned, as an ADK ``Runner`` does; a goal-first thread is a
session whose first event is the goal. Only the burst and sequential workloads run.

The packages are imported inside functions only: they are not installed in the project's
environment.
"""

from __future__ import annotations

import asyncio
from typing import Any

from . import common

DISTRIBUTIONS = ("google-adk", "SQLAlchemy", "asyncpg", "greenlet")
APP = "bench_app"
USER = "bench_user"


def sqlalchemy_url(libpq_url: str) -> str:
    """``postgresql://user@/db?host=/dir`` as SQLAlchemy's asyncpg URL of the same server."""
    scheme, sep, rest = libpq_url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        raise ValueError(f"not a postgresql:// URL: {libpq_url!r}")
    return f"postgresql+asyncpg://{rest}"


class AdkPostgresAdapter:
    def __init__(self, request: common.Request) -> None:
        self.request = request
        self.service: Any = None
        self.sessions: dict[str, Any] = {}
        self.count = 0

    async def open(self) -> dict[str, Any]:
        from google.adk.sessions.database_session_service import DatabaseSessionService

        assert self.request.url is not None
        self.service = DatabaseSessionService(db_url=sqlalchemy_url(self.request.url))
        await self.service.prepare_tables()  # (else the first call would, timed)
        pool = self.service.db_engine.pool
        return {"driver": "asyncpg", "pool": pool.status()}

    async def new_thread(self, goal: str | None) -> str:
        session = await self.service.create_session(app_name=APP, user_id=USER)
        self.sessions[session.id] = session
        if goal is not None:
            await self.append(session.id, goal)
        return str(session.id)

    async def append(self, thread_id: str, text: str) -> None:
        from google.adk.events.event import Event
        from google.genai import types

        self.count += 1
        event = Event(
            author="user",
            invocation_id=f"inv-{self.count}",
            content=types.Content(role="user", parts=[types.Part(text=text)]),
        )
        await self.service.append_event(self.sessions[thread_id], event)

    async def list_top(self, limit: int) -> list[str]:
        raise NotImplementedError("not measured on PostgreSQL")

    async def release(self, thread_id: str) -> None:
        self.sessions.pop(thread_id, None)
        await asyncio.sleep(0)

    async def close(self) -> None:
        assert self.service is not None
        await self.service.close()

    def extra(self) -> dict[str, Any]:
        return {"writes_per_append": "append_event (session row, event row)"}


async def _main(request: common.Request) -> dict[str, Any]:
    return await common.run_workload(request, AdkPostgresAdapter(request), common.asyncio_gather)


def main() -> None:
    request = common.read_request()
    result = asyncio.run(_main(request))
    common.emit(request, result, DISTRIBUTIONS)


if __name__ == "__main__":
    main()
