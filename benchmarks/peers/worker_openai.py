"""OpenAI Agents SDK ``SQLiteSession``, on asyncio, in ``.venv/openai`` (run by the runner).

- a thread is a session (``SQLiteSession(session_id, db_path)``, one per conversation, as the
  SDK is used); an append is ``await session.add_items([item])``;
- the thread list is the SDK's ``agent_sessions`` table ordered by ``updated_at`` (it has no
  list API), read with ``sqlite3`` on a connection of our own, in a worker thread;
- "shipped": the SDK's own connection set-up; "matched": the same plus
  ``synchronous=FULL`` and ``busy_timeout=5000`` on each of its connections (a subclass
  extending its ``_configure_connection``).

The SDK is imported inside functions only: this file is type-checked in the project's
environment, where the SDK is not installed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from typing import Any

from . import common

DISTRIBUTIONS = ("openai-agents", "openai")

_LIST_SQL = "SELECT session_id FROM agent_sessions ORDER BY updated_at DESC LIMIT ?"


def _session_class(settings: str) -> Any:
    from agents.memory import SQLiteSession  # type: ignore[import-not-found, unused-ignore]

    if settings == "shipped":
        return SQLiteSession

    class MatchedSQLiteSession(SQLiteSession):  # type: ignore[misc, unused-ignore]
        @staticmethod
        def _configure_connection(conn: sqlite3.Connection) -> None:
            SQLiteSession._configure_connection(conn)
            common.apply_matched(conn)

    return MatchedSQLiteSession


def _read_session_settings(session: Any) -> dict[str, Any]:
    with session._locked_connection() as conn:
        return common.read_pragmas(conn)


def _connect_reader(path: str, settings: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False)
    if settings == "matched":
        conn.execute("PRAGMA busy_timeout = 5000")
    return conn


def _list(conn: sqlite3.Connection, limit: int) -> list[str]:
    return [str(row[0]) for row in conn.execute(_LIST_SQL, (limit,)).fetchall()]


def _close(conn: sqlite3.Connection) -> None:
    conn.close()


class OpenAIAdapter:
    def __init__(self, request: common.Request) -> None:
        self.request = request
        self.session_class = _session_class(request.settings)
        self.sessions: dict[str, Any] = {}
        self.reader: sqlite3.Connection | None = None

    async def open(self) -> dict[str, Any]:
        probe = self.session_class(f"probe-{uuid.uuid4()}", self.request.db)
        try:
            settings = await asyncio.to_thread(_read_session_settings, probe)
        finally:
            probe.close()
        self.reader = await asyncio.to_thread(
            _connect_reader, self.request.db, self.request.settings
        )
        return settings

    async def new_thread(self, goal: str | None) -> str:
        session_id = str(uuid.uuid4())
        # Blocking on the loop, as the SDK's constructor is (it connects and creates the schema).
        self.sessions[session_id] = self.session_class(session_id, self.request.db)
        if goal is not None:
            await self.append(session_id, goal)
        else:
            await asyncio.sleep(0)
        return session_id

    async def append(self, thread_id: str, text: str) -> None:
        await self.sessions[thread_id].add_items([{"role": "user", "content": text}])

    async def list_top(self, limit: int) -> list[str]:
        assert self.reader is not None
        return await asyncio.to_thread(_list, self.reader, limit)

    async def release(self, thread_id: str) -> None:
        session = self.sessions.pop(thread_id, None)
        if session is not None:
            await asyncio.to_thread(session.close)
        else:
            await asyncio.sleep(0)

    async def close(self) -> None:
        for session in self.sessions.values():
            await asyncio.to_thread(session.close)
        self.sessions.clear()
        if self.reader is not None:
            await asyncio.to_thread(_close, self.reader)
            self.reader = None
        await asyncio.sleep(0)

    def extra(self) -> dict[str, Any]:
        return {}


async def _main(request: common.Request) -> dict[str, Any]:
    return await common.run_workload(request, OpenAIAdapter(request), common.asyncio_gather)


def main() -> None:
    common.install_commit_counter()
    request = common.read_request()
    result = asyncio.run(_main(request))
    common.emit(request, result, DISTRIBUTIONS)


if __name__ == "__main__":
    main()
