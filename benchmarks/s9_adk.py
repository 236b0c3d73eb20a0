"""S9 — Google ADK sessions: ``list_sessions`` at 10,000 sessions, ours against ADK's own.

``s9_sessions`` sessions of one app, spread over ``s9_users`` users, each with two events
(a user question, an agent answer) and session and ``user:`` state deltas. Ours
(``ThreadstoreSessionService``) is filled through its ADK API. ADK's own
``SqliteSessionService`` (2.13; its ``DatabaseSessionService`` needs SQLAlchemy, which the
dev environment does not install) gets the same rows written straight into its schema,
exactly what its ``create_session``/``append_event`` would write, because filling it through
its API costs about 60 ms a session (a connection per call). Then, each timed over
``s9_calls`` calls: ``list_sessions`` of one user, of all users of the app, and (ours only,
beyond ADK) one page of 50 sessions newest first, and ``get_session`` with its newest 10
events.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final

import trio
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.sessions.base_session_service import BaseSessionService, GetSessionConfig
from google.adk.sessions.sqlite_session_service import SqliteSessionService
from google.genai import types

from threadstore.integrations.adk import ThreadstoreSessionService

from ._figures import Figure, ScenarioResult
from ._profile import Profile
from ._stats import summarize

ID: Final = "S9"
TITLE: Final = "ADK sessions: list_sessions (10,000 sessions with --full)"

APP: Final = "bench_app"
_CONCURRENCY: Final = 50  # sessions filled at once (ours)


def _sizes(profile: Profile) -> tuple[int, int, int]:
    return profile.s9_sessions, profile.s9_users, profile.s9_calls


def _events(k: int, start: float) -> list[Event]:
    question = Event(
        author="user",
        invocation_id=f"inv-{k}",
        content=types.Content(role="user", parts=[types.Part(text=f"question {k}")]),
        actions=EventActions(state_delta={"turn": 1}),
        timestamp=start + 2 * k,
    )
    answer = Event(
        author="agent",
        invocation_id=f"inv-{k}",
        content=types.Content(role="model", parts=[types.Part(text=f"answer {k}")]),
        actions=EventActions(state_delta={"user:last": k}),
        timestamp=start + 2 * k + 1,
    )
    return [question, answer]


def _user(k: int, users: int) -> str:
    return f"user{k % users}"


async def _fill_ours(service: ThreadstoreSessionService, sessions: int, users: int) -> None:  # noqa: ASYNC910 - fills nothing only for 0 sessions
    start = time.time() + 60  # event times after every creation, in session order

    async def one(k: int) -> None:
        session = await service.create_session(
            app_name=APP, user_id=_user(k, users), session_id=f"s{k}", state={"n": k}
        )
        for event in _events(k, start):
            await service.append_event(session, event)

    for first in range(0, sessions, _CONCURRENCY):
        await asyncio.gather(*(one(k) for k in range(first, min(sessions, first + _CONCURRENCY))))


def _fill_adk(path: Path, sessions: int, users: int) -> None:
    """The rows ``SqliteSessionService`` writes for the same sessions, written in one go."""
    start = time.time() + 60
    with sqlite3.connect(path) as db:
        for k in range(sessions):
            events = _events(k, start)
            db.execute(
                "INSERT INTO sessions (app_name, user_id, id, state, create_time, update_time)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (APP, _user(k, users), f"s{k}", json.dumps({"n": k, "turn": 1}), start, start),
            )
            for event in events:
                db.execute(
                    "INSERT INTO events (id, app_name, user_id, session_id, invocation_id,"
                    " timestamp, event_data) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        event.id,
                        APP,
                        _user(k, users),
                        f"s{k}",
                        event.invocation_id,
                        event.timestamp,
                        event.model_dump_json(exclude_none=True),
                    ),
                )
            db.execute(
                "UPDATE sessions SET update_time=? WHERE app_name=? AND user_id=? AND id=?",
                (events[-1].timestamp, APP, _user(k, users), f"s{k}"),
            )
        for u in range(users):
            last = max(k for k in range(sessions) if k % users == u) if sessions > u else 0
            db.execute(
                "INSERT INTO user_states (app_name, user_id, state, update_time)"
                " VALUES (?, ?, ?, ?)",
                (APP, f"user{u}", json.dumps({"last": last}), start),
            )


async def _timed(calls: int, fn: Callable[[], Coroutine[Any, Any, Any]]) -> tuple[list[float], Any]:
    timings: list[float] = []
    result: Any = None
    for _ in range(calls):
        begin = time.perf_counter()
        result = await fn()
        timings.append((time.perf_counter() - begin) * 1000)
    return timings, result  # noqa: ASYNC910 - calls >= 1


async def _measure(
    service: BaseSessionService, calls: int, *, ours: bool
) -> tuple[dict[str, list[float]], dict[str, int]]:
    timings: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    timings["list_user"], one = await _timed(
        calls, lambda: service.list_sessions(app_name=APP, user_id="user1")
    )
    timings["list_app"], every = await _timed(calls, lambda: service.list_sessions(app_name=APP))
    counts["listed_user"], counts["listed_app"] = len(one.sessions), len(every.sessions)
    timings["get_recent_10"], _ = await _timed(
        calls,
        lambda: service.get_session(
            app_name=APP,
            user_id="user1",
            session_id="s1",
            config=GetSessionConfig(num_recent_events=10),
        ),
    )
    if ours:
        assert isinstance(service, ThreadstoreSessionService)
        timings["page_50"], page = await _timed(
            calls, lambda: service.list_sessions_page(app_name=APP, user_id="user1", limit=50)
        )
        counts["page"] = len(page.sessions)
    return timings, counts


async def _ours(
    workdir: Path, sessions: int, users: int, calls: int
) -> tuple[dict[str, list[float]], dict[str, int], float]:
    service = ThreadstoreSessionService(str(workdir / "s9.db"))
    try:
        begin = time.perf_counter()
        await _fill_ours(service, sessions, users)
        fill_s = time.perf_counter() - begin
        timings, counts = await _measure(service, calls, ours=True)
    finally:
        await service.close()
    return timings, counts, fill_s


async def _adk(path: Path, calls: int, *, schema_only: bool) -> Any:
    service = SqliteSessionService(str(path))
    try:
        if schema_only:  # its schema, created by its own first call
            await service.list_sessions(app_name=APP)
            return None
        return await _measure(service, calls, ours=False)
    finally:
        await service.close()


def _both(workdir: Path, sessions: int, users: int, calls: int) -> dict[str, Any]:
    """Runs on a worker thread: each service in an asyncio loop of its own."""
    ours, ours_counts, fill_s = asyncio.run(_ours(workdir, sessions, users, calls))
    adk_path = workdir / "s9_adk.db"
    asyncio.run(_adk(adk_path, calls, schema_only=True))
    _fill_adk(adk_path, sessions, users)
    adk, adk_counts = asyncio.run(_adk(adk_path, calls, schema_only=False))
    return {
        "ours": ours,
        "adk": adk,
        "counts": ours_counts,
        "adk_counts": adk_counts,
        "fill_s": fill_s,
    }


async def run(profile: Profile, workdir: Path) -> ScenarioResult:
    sessions, users, calls = _sizes(profile)
    out = await trio.to_thread.run_sync(_both, workdir, sessions, users, calls)
    ours = {name: summarize(values) for name, values in out["ours"].items()}
    adk = {name: summarize(values) for name, values in out["adk"].items()}
    per_user = sessions // users
    labels = {
        "list_user": f"list_sessions of one user ({per_user:,} sessions)",
        "list_app": f"list_sessions of the app, all users ({sessions:,} sessions)",
        "get_recent_10": "get_session, newest 10 events",
        "page_50": "list_sessions_page(limit=50), newest first (beyond ADK)",
    }
    figures = [
        Figure(key=f"ours_{name}_p50_ms", label=f"ours: {labels[name]} p50", value=s.p50, unit="ms")
        for name, s in ours.items()
    ]
    figures += [
        Figure(
            key=f"adk_{name}_p50_ms",
            label=f"ADK SqliteSessionService: {labels[name]} p50",
            value=s.p50,
            unit="ms",
        )
        for name, s in adk.items()
    ]
    figures += [
        Figure(
            key=f"{name}_ours_over_adk",
            label=f"ours / ADK's: {labels[name]}",
            value=ours[name].p50 / adk[name].p50,
            unit="x",
        )
        for name in ("list_user", "list_app", "get_recent_10")
    ]
    figures.append(
        Figure(
            key="ours_fill_per_session_ms",
            label="ours: create_session + 2 append_event, per session (50 at once)",
            value=out["fill_s"] * 1000 / max(1, sessions),
            unit="ms",
        )
    )
    return ScenarioResult(
        id=ID,
        title=TITLE,
        figures=tuple(figures),
        params={
            "sessions": sessions,
            "users": users,
            "calls": calls,
            **{f"ours_{k}": v for k, v in out["counts"].items()},
            **{f"adk_{k}": v for k, v in out["adk_counts"].items()},
        },
        notes=(
            "ADK's SqliteSessionService was filled by writing its rows into its own schema "
            "(what its create_session/append_event write), not through its API; its "
            "list_sessions and get_session ran through its API.",
        ),
    )
