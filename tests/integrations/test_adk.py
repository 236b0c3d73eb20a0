"""ThreadstoreSessionService against ADK's documented session contract.

Each contract test runs against ours and against ADK's own services (``InMemorySessionService``
and, where it persists, ``SqliteSessionService``), so a test that passes on ADK's services
shows the contract is read right. The tests are plain functions running ``asyncio.run``
(ADK is asyncio; the suite runs in trio mode).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from _process import child_env
from google.adk.errors._invocation_not_found_error import InvocationNotFoundError
from google.adk.errors._stale_session_error import StaleSessionError
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.sessions import InMemorySessionService
from google.adk.sessions._rewind_utils import rewind_session
from google.adk.sessions.base_session_service import BaseSessionService, GetSessionConfig
from google.adk.sessions.sqlite_session_service import SqliteSessionService
from google.genai import types

from threadstore import InvalidItemError, aio
from threadstore.integrations import adk
from threadstore.integrations.adk import ThreadstoreSessionService

Body = Callable[[BaseSessionService], Awaitable[None]]
ALL = ["threadstore", "adk-in-memory", "adk-sqlite"]
PERSISTENT = ["threadstore", "adk-sqlite"]


def make(kind: str, tmp_path: Path) -> BaseSessionService:
    if kind == "threadstore":
        return ThreadstoreSessionService(str(tmp_path / "threads.db"))
    if kind == "adk-sqlite":
        return SqliteSessionService(str(tmp_path / "adk.db"))
    return InMemorySessionService()


async def close(service: BaseSessionService) -> None:  # noqa: ASYNC910 - ADK's in-memory service has no close
    closer = getattr(service, "close", None)
    if closer is not None:
        await closer()


def run(kind: str, tmp_path: Path, body: Body) -> None:
    async def main() -> None:
        service = make(kind, tmp_path)
        try:
            await body(service)
        finally:
            await close(service)

    asyncio.run(main())


def text_event(
    author: str,
    text: str,
    delta: dict[str, Any] | None = None,
    invocation_id: str = "inv-1",
    **kw: Any,
) -> Event:
    role = "user" if author == "user" else "model"
    return Event(
        author=author,
        invocation_id=invocation_id,
        content=types.Content(role=role, parts=[types.Part(text=text)]),
        actions=EventActions(state_delta=delta or {}),
        **kw,
    )


def state_event(delta: dict[str, Any], **kw: Any) -> Event:
    return Event(
        author="agent", invocation_id="inv-1", actions=EventActions(state_delta=delta), **kw
    )


@pytest.mark.parametrize("kind", ALL)
def test_create_generates_an_id_and_splits_state(kind: str, tmp_path: Path) -> None:
    async def body(service: BaseSessionService) -> None:
        state = {"k": 1, "app:a": 2, "user:u": 3, "temp:t": 4}
        session = await service.create_session(app_name="app", user_id="alice", state=state)
        assert session.id
        assert session.events == []
        assert session.state == {"k": 1, "app:a": 2, "user:u": 3}
        got = await service.get_session(app_name="app", user_id="alice", session_id=session.id)
        assert got is not None
        assert got.state == {"k": 1, "app:a": 2, "user:u": 3}
        assert got.last_update_time == session.last_update_time
        other = await service.create_session(app_name="app", user_id="alice")
        assert other.id != session.id

    run(kind, tmp_path, body)


@pytest.mark.parametrize("kind", ALL)
def test_given_id_duplicate_raises_already_exists(kind: str, tmp_path: Path) -> None:
    async def body(service: BaseSessionService) -> None:
        session = await service.create_session(app_name="app", user_id="u", session_id="s1")
        assert session.id == "s1"
        with pytest.raises(AlreadyExistsError, match=r"^Session with id s1 already exists\.$"):
            await service.create_session(app_name="app", user_id="u", session_id="s1")
        # The same id for another user or app is another session.
        await service.create_session(app_name="app", user_id="v", session_id="s1")
        await service.create_session(app_name="app2", user_id="u", session_id="s1")
        # Ids are stripped.
        padded = await service.create_session(app_name="app", user_id="u", session_id=" s2 ")
        assert padded.id == "s2"
        assert await service.get_session(app_name="app", user_id="u", session_id=" s2 ")

    run(kind, tmp_path, body)


@pytest.mark.parametrize("kind", ALL)
def test_missing_session_is_none(kind: str, tmp_path: Path) -> None:
    async def body(service: BaseSessionService) -> None:
        assert await service.get_session(app_name="a", user_id="u", session_id="nope") is None
        await service.create_session(app_name="a", user_id="u", session_id="s")
        assert await service.get_session(app_name="a", user_id="other", session_id="s") is None
        assert await service.get_session(app_name="b", user_id="u", session_id="s") is None

    run(kind, tmp_path, body)


@pytest.mark.parametrize("kind", ALL)
def test_events_round_trip_and_partial_ones_are_not_stored(kind: str, tmp_path: Path) -> None:
    async def body(service: BaseSessionService) -> None:
        session = await service.create_session(app_name="a", user_id="u")
        events = [
            text_event("user", "Plan a trip to Kyoto"),
            Event(
                author="planner",
                invocation_id="inv-1",
                content=types.Content(
                    role="model",
                    parts=[
                        types.Part(
                            function_call=types.FunctionCall(
                                id="c1", name="search", args={"q": "Kyoto", "n": 3}
                            )
                        )
                    ],
                ),
            ),
            text_event("planner", "Here is a plan.", {"plan": ["day 1", "day 2"]}),
        ]
        for event in events:
            await service.append_event(session, event)
            assert session.last_update_time == event.timestamp
        partial = text_event("planner", "Here", partial=True)
        assert await service.append_event(session, partial) is partial
        assert len(session.events) == 3
        got = await service.get_session(app_name="a", user_id="u", session_id=session.id)
        assert got is not None
        assert got.events == events
        assert [e.model_dump(mode="json") for e in got.events] == [
            e.model_dump(mode="json") for e in events
        ]
        assert got.last_update_time == events[-1].timestamp
        assert got.state == {"plan": ["day 1", "day 2"]}

    run(kind, tmp_path, body)


@pytest.mark.parametrize("kind", ALL)
def test_state_scopes(kind: str, tmp_path: Path) -> None:
    async def body(service: BaseSessionService) -> None:
        s1 = await service.create_session(app_name="a", user_id="alice")
        s2 = await service.create_session(app_name="a", user_id="alice")
        s3 = await service.create_session(app_name="a", user_id="bob")
        s4 = await service.create_session(app_name="b", user_id="alice")
        delta = {"own": 1, "app:shared": "x", "user:pref": "dark", "temp:scratch": 9}
        await service.append_event(s1, state_event(delta))
        assert s1.state["temp:scratch"] == 9  # in the live session object only
        assert s1.events[-1].actions.state_delta == {
            "own": 1,
            "app:shared": "x",
            "user:pref": "dark",
        }

        async def state(s: Any) -> dict[str, Any]:
            got = await service.get_session(app_name=s.app_name, user_id=s.user_id, session_id=s.id)
            assert got is not None
            return got.state

        assert await state(s1) == {"own": 1, "app:shared": "x", "user:pref": "dark"}
        assert await state(s2) == {"app:shared": "x", "user:pref": "dark"}
        assert await state(s3) == {"app:shared": "x"}
        assert await state(s4) == {}
        stored = await service.get_session(app_name="a", user_id="alice", session_id=s1.id)
        assert stored is not None
        assert "temp:scratch" not in stored.events[-1].actions.state_delta
        # Later deltas overwrite key by key (None is a value, not a deletion).
        await service.append_event(s2, state_event({"app:shared": None, "user:n": 2}))
        assert await state(s1) == {"own": 1, "app:shared": None, "user:pref": "dark", "user:n": 2}
        assert await state(s3) == {"app:shared": None}

    run(kind, tmp_path, body)


@pytest.mark.parametrize("kind", ALL)
def test_get_user_state(kind: str, tmp_path: Path) -> None:
    async def body(service: BaseSessionService) -> None:
        assert await service.get_user_state(app_name="a", user_id="u") == {}
        s = await service.create_session(app_name="a", user_id="u", state={"user:lang": "fr"})
        await service.append_event(s, state_event({"user:tz": "CET", "app:x": 1, "own": 2}))
        assert await service.get_user_state(app_name="a", user_id="u") == {
            "lang": "fr",
            "tz": "CET",
        }
        assert await service.get_user_state(app_name="a", user_id="v") == {}

    run(kind, tmp_path, body)


@pytest.mark.parametrize("kind", ALL)
def test_get_session_config(kind: str, tmp_path: Path) -> None:
    async def body(service: BaseSessionService) -> None:
        session = await service.create_session(app_name="a", user_id="u")
        base = session.last_update_time + 1
        events = [text_event("user", f"m{n}", timestamp=base + n) for n in range(6)]
        for event in events:
            await service.append_event(session, event)

        async def get(**config: Any) -> list[Event]:
            got = await service.get_session(
                app_name="a", user_id="u", session_id=session.id, config=GetSessionConfig(**config)
            )
            assert got is not None
            return got.events

        assert await get(num_recent_events=0) == []
        assert await get(num_recent_events=2) == events[-2:]
        assert await get(num_recent_events=100) == events
        assert await get(after_timestamp=base + 3) == events[3:]
        assert await get(after_timestamp=base + 3, num_recent_events=2) == events[4:]
        assert await get() == events
        with pytest.raises(ValueError, match="num_recent_events"):
            GetSessionConfig(num_recent_events=-1)

    run(kind, tmp_path, body)


@pytest.mark.parametrize("kind", ALL)
def test_list_sessions(kind: str, tmp_path: Path) -> None:
    async def body(service: BaseSessionService) -> None:
        assert (await service.list_sessions(app_name="a")).sessions == []
        made = []
        for user, sid in [("alice", "s1"), ("bob", "s2"), ("alice", "s3")]:
            s = await service.create_session(
                app_name="a", user_id=user, session_id=sid, state={"n": sid}
            )
            made.append(s)
        await service.create_session(app_name="other", user_id="alice", session_id="x")
        await service.append_event(made[0], text_event("user", "hi", {"user:u": 1, "app:p": 2}))
        alice = (await service.list_sessions(app_name="a", user_id="alice")).sessions
        assert [s.id for s in alice] == ["s3", "s1"]  # oldest update first
        assert all(s.events == [] for s in alice)
        assert alice[1].state == {"n": "s1", "user:u": 1, "app:p": 2}
        assert alice[1].last_update_time == made[0].last_update_time
        everyone = (await service.list_sessions(app_name="a")).sessions
        assert [(s.user_id, s.id) for s in everyone] == [
            ("bob", "s2"),
            ("alice", "s3"),
            ("alice", "s1"),
        ]
        assert everyone[0].state == {"n": "s2", "app:p": 2}
        assert (await service.list_sessions(app_name="a", user_id="carol")).sessions == []

    run(kind, tmp_path, body)


@pytest.mark.parametrize("kind", ALL)
def test_delete_session(kind: str, tmp_path: Path) -> None:
    async def body(service: BaseSessionService) -> None:
        s = await service.create_session(app_name="a", user_id="u", state={"user:k": 1})
        await service.append_event(s, text_event("user", "hi"))
        await service.delete_session(app_name="a", user_id="u", session_id=s.id)
        assert await service.get_session(app_name="a", user_id="u", session_id=s.id) is None
        assert (await service.list_sessions(app_name="a")).sessions == []
        await service.delete_session(app_name="a", user_id="u", session_id=s.id)  # no error
        with pytest.raises(SessionNotFoundError, match=rf"^Session {s.id} not found\.$"):
            await service.append_event(s, text_event("user", "again"))
        # User state outlives the session; the id can be used again.
        assert await service.get_user_state(app_name="a", user_id="u") == {"k": 1}
        again = await service.create_session(app_name="a", user_id="u", session_id=s.id)
        got = await service.get_session(app_name="a", user_id="u", session_id=again.id)
        assert got is not None
        assert got.events == []

    run(kind, tmp_path, body)


@pytest.mark.parametrize("kind", PERSISTENT)
def test_stale_session(kind: str, tmp_path: Path) -> None:
    async def body(service: BaseSessionService) -> None:
        s = await service.create_session(app_name="a", user_id="u")
        copy = await service.get_session(app_name="a", user_id="u", session_id=s.id)
        assert copy is not None
        await service.append_event(s, text_event("user", "first"))
        with pytest.raises(StaleSessionError, match="stale session"):
            await service.append_event(copy, text_event("user", "second"))
        got = await service.get_session(app_name="a", user_id="u", session_id=s.id)
        assert got is not None
        assert [e.content.parts[0].text for e in got.events if e.content and e.content.parts] == [
            "first"
        ]
        await service.append_event(got, text_event("user", "third"))  # a fresh copy may

    run(kind, tmp_path, body)


# -- ours only --------------------------------------------------------------------------------


def test_sessions_survive_a_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "threads.db")

    async def main() -> None:
        service = ThreadstoreSessionService(path)
        s = await service.create_session(app_name="a", user_id="u", state={"app:x": 1, "k": 2})
        event = text_event("user", "hi", {"user:y": 3})
        await service.append_event(s, event)
        await service.close()
        service = ThreadstoreSessionService(path)
        try:
            got = await service.get_session(app_name="a", user_id="u", session_id=s.id)
            assert got is not None
            assert got.events == [event]
            assert got.state == {"k": 2, "app:x": 1, "user:y": 3}
        finally:
            await service.close()

    asyncio.run(main())


def test_threads_list_with_preview_in_namespaces(tmp_path: Path) -> None:
    async def main() -> str:
        async with aio.open_store(tmp_path / "t.db", projectors=[adk.projector()]) as store:
            service = ThreadstoreSessionService("unused", store=store)
            s = await service.create_session(app_name="my/app", user_id="al ice")
            await service.append_event(s, text_event("user", "Plan a trip"))
            await service.append_event(s, text_event("planner", "Sure."))
            await service.append_event(s, state_event({"k": 1}))
            namespace = adk.session_namespace("my/app", "al ice")
            assert namespace == "adk/my%2Fapp/al%20ice"
            page = await store.list_threads(namespace=namespace)
            (meta,) = page.threads
            assert meta.preview == "Plan a trip"
            assert meta.last_message == "Sure."
            assert meta.id == adk.session_thread_id("my/app", "al ice", s.id)
            kinds = [i.kind for i in await store.read_items(meta.id)]
            assert kinds[-3:] == ["user_message", "assistant_message", "adk.event"]
            await service.close()  # leaves a store= handle open
            assert (await store.get_thread(meta.id)).id == meta.id
            return meta.id

    thread_id = asyncio.run(main())
    # The command lists the session in its namespace too (read-only, another process).
    command = ["list", "--db", str(tmp_path / "t.db"), "--namespace", "adk/my%2Fapp/al%20ice"]
    listed = subprocess.run(
        [sys.executable, "-m", "threadstore", *command, "--json"],
        capture_output=True,
        text=True,
        env=child_env(),
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (row["id"], row["preview"], row["last_message"]) == (thread_id, "Plan a trip", "Sure.")


def test_store_without_projector_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        async with aio.open_store(tmp_path / "t.db") as store:
            service = ThreadstoreSessionService("unused", store=store)
            s = await service.create_session(app_name="a", user_id="u")
            with pytest.raises(RuntimeError, match=r"projectors=\[threadstore"):
                await service.append_event(s, text_event("user", "hi"))

    asyncio.run(main())


def test_list_sessions_page_newest_first(tmp_path: Path) -> None:
    async def main() -> None:
        service = ThreadstoreSessionService(str(tmp_path / "t.db"))
        try:
            ids = []
            for n in range(5):
                s = await service.create_session(app_name="a", user_id="u", state={"n": n})
                ids.append(s.id)
            seen: list[str] = []
            cursor = None
            while True:
                page = await service.list_sessions_page(
                    app_name="a", user_id="u", limit=2, cursor=cursor
                )
                seen += [s.id for s in page.sessions]
                cursor = page.next_cursor
                if cursor is None:
                    break
            assert seen == ids[::-1]
        finally:
            await service.close()

    asyncio.run(main())


def test_memory_store_is_removed_on_close() -> None:
    async def main() -> None:
        service = ThreadstoreSessionService(":memory:")
        await service.create_session(app_name="a", user_id="u", session_id="s")
        tempdir = service._tempdir
        assert tempdir is not None
        assert os.path.exists(tempdir)  # noqa: ASYNC240 - a test's check
        await service.close()
        assert not os.path.exists(tempdir)  # noqa: ASYNC240 - a test's check

    asyncio.run(main())


def test_importing_threadstore_does_not_import_adk() -> None:
    code = "import sys, threadstore, threadstore.integrations; print('google.adk' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("kind", ALL)
def test_adk_rewind_events_round_trip(kind: str, tmp_path: Path) -> None:
    """ADK's own rewind (``Runner.rewind_async``) appends a reverting event: it works
    on any service that stores events and deltas faithfully."""

    async def body(service: BaseSessionService) -> None:
        s = await service.create_session(app_name="a", user_id="u", state={"k": 0})
        await service.append_event(s, text_event("user", "one", {"k": 1}, invocation_id="i1"))
        await service.append_event(s, text_event("user", "two", {"k": 2, "j": 1}, "i2"))
        got = await service.get_session(app_name="a", user_id="u", session_id=s.id)
        assert got is not None
        await rewind_session(session_service=service, session=got, rewind_before_invocation_id="i1")
        after = await service.get_session(app_name="a", user_id="u", session_id=s.id)
        assert after is not None
        # ADK folds only events: state given to create_session is not restored.
        assert after.state == {"k": None, "j": None}
        assert len(after.events) == 3

    run(kind, tmp_path, body)


def test_rewind_session_is_a_history_edit(tmp_path: Path) -> None:
    async def main() -> None:
        async with aio.open_store(tmp_path / "t.db", projectors=[adk.projector()]) as store:
            service = ThreadstoreSessionService("unused", store=store)
            s = await service.create_session(app_name="a", user_id="u", state={"k": 0})
            first = text_event("user", "one", {"k": 1, "user:x": 1}, invocation_id="i1")
            await service.append_event(s, first)
            await service.append_event(s, text_event("user", "two", {"k": 2, "j": 3}, "i2"))
            await service.append_event(s, text_event("planner", "ok", {"j": 4}, invocation_id="i2"))
            with pytest.raises(InvocationNotFoundError):
                await service.rewind_session(
                    app_name="a", user_id="u", session_id=s.id, before_invocation_id="nope"
                )
            with pytest.raises(SessionNotFoundError):
                await service.rewind_session(
                    app_name="a", user_id="u", session_id="nope", before_invocation_id="i1"
                )
            rewound = await service.rewind_session(
                app_name="a", user_id="u", session_id=s.id, before_invocation_id="i2"
            )
            assert rewound.events == [first]
            assert rewound.state == {"k": 1, "user:x": 1}  # user state is not rewound
            with pytest.raises(StaleSessionError):
                await service.append_event(s, text_event("user", "late"))
            await service.append_event(rewound, text_event("user", "three", {"k": 5}))
            got = await service.get_session(app_name="a", user_id="u", session_id=s.id)
            assert got is not None
            assert [
                e.content.parts[0].text for e in got.events if e.content and e.content.parts
            ] == [
                "one",
                "three",
            ]
            assert got.state == {"k": 5, "user:x": 1}
            # Nothing was lost: the log still holds every event.
            tid = adk.session_thread_id("a", "u", s.id)
            logged = [i for i in await store.read_items(tid) if "adk_event" in i.data]
            assert len(logged) == 4
            await service.close()

    asyncio.run(main())


def test_fork_session(tmp_path: Path) -> None:
    async def main() -> None:
        service = ThreadstoreSessionService(str(tmp_path / "t.db"))
        try:
            s = await service.create_session(app_name="a", user_id="u", state={"k": 0})
            await service.append_event(s, text_event("user", "one", {"k": 1}))
            fork = await service.fork_session(
                app_name="a", user_id="u", session_id=s.id, new_session_id="branch"
            )
            assert fork.id == "branch"
            assert fork.events == s.events
            assert fork.state == {"k": 1}
            await service.append_event(fork, text_event("user", "two", {"k": 2}))
            source = await service.get_session(app_name="a", user_id="u", session_id=s.id)
            assert source is not None
            assert len(source.events) == 1
            assert source.state == {"k": 1}
            forked = await service.get_session(app_name="a", user_id="u", session_id="branch")
            assert forked is not None
            assert forked.state == {"k": 2}
            assert len(forked.events) == 2
            ids = {x.id for x in (await service.list_sessions(app_name="a")).sessions}
            assert ids == {s.id, "branch"}
            with pytest.raises(AlreadyExistsError):
                await service.fork_session(
                    app_name="a", user_id="u", session_id=s.id, new_session_id="branch"
                )
            with pytest.raises(SessionNotFoundError):
                await service.fork_session(app_name="a", user_id="u", session_id="nope")
        finally:
            await service.close()

    asyncio.run(main())


@pytest.mark.parametrize("kind", ALL)
def test_sessions_read_back_equal(kind: str, tmp_path: Path) -> None:
    """``get_session`` returns a session equal to the one created and appended to, events
    with bytes, sets and nested metadata included."""

    async def body(service: BaseSessionService) -> None:
        session = await service.create_session(app_name="a", user_id="u", state={"k": "v"})
        got = await service.get_session(app_name="a", user_id="u", session_id=session.id)
        assert got == session
        content = types.Content(
            role="user",
            parts=[
                types.Part(text="look"),
                types.Part.from_bytes(data=b"\x89PNG\x00\xff", mime_type="image/png"),
            ],
        )
        event = Event(
            invocation_id="inv",
            author="user",
            content=content,
            turn_complete=True,
            actions=EventActions(artifact_delta={"file": 0}, transfer_to_agent="x", escalate=True),
            long_running_tool_ids={"tool1", "tool2"},
            error_code="code",
            interrupted=True,
            grounding_metadata=types.GroundingMetadata(
                web_search_queries=["q"],
                search_entry_point=types.SearchEntryPoint(sdk_blob=b"blob\x00"),
            ),
            usage_metadata=types.GenerateContentResponseUsageMetadata(
                prompt_token_count=1, candidates_token_count=1, total_token_count=2
            ),
            custom_metadata={"nested": {"list": [1, 2.5, None, "s"]}},
        )
        await service.append_event(session, event)
        got = await service.get_session(app_name="a", user_id="u", session_id=session.id)
        assert got == session
        assert got is not None
        assert got.events[0].content == content
        assert got.events[0].long_running_tool_ids == {"tool1", "tool2"}

    run(kind, tmp_path, body)


@pytest.mark.parametrize("kind", ALL)
def test_events_with_earlier_timestamps(kind: str, tmp_path: Path) -> None:
    """Events may carry any timestamp; the session's update time follows the last one."""

    async def body(service: BaseSessionService) -> None:
        session = await service.create_session(app_name="a", user_id="u")
        for t in range(1, 6):
            await service.append_event(session, Event(author="user", timestamp=float(t)))
        assert session.last_update_time == 5.0
        got = await service.get_session(
            app_name="a",
            user_id="u",
            session_id=session.id,
            config=GetSessionConfig(num_recent_events=3, after_timestamp=4.0),
        )
        assert got is not None
        assert [e.timestamp for e in got.events] == [4.0, 5.0]
        assert got.last_update_time == 5.0

    run(kind, tmp_path, body)


def test_an_event_too_big_writes_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        service = ThreadstoreSessionService(str(tmp_path / "t.db"))
        try:
            s = await service.create_session(app_name="a", user_id="u")
            big = state_event({"app:blob": "x" * (1 << 20), "user:k": 1, "k": 2})
            with pytest.raises(InvalidItemError, match="max_item_bytes"):
                await service.append_event(s, big)
            got = await service.get_session(app_name="a", user_id="u", session_id=s.id)
            assert got is not None
            assert got.events == []
            assert got.state == {}
            assert await service.get_user_state(app_name="a", user_id="u") == {}
        finally:
            await service.close()

    asyncio.run(main())


def test_a_state_too_big_creates_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        service = ThreadstoreSessionService(str(tmp_path / "t.db"))
        try:
            with pytest.raises(InvalidItemError, match="max_item_bytes"):
                await service.create_session(
                    app_name="a", user_id="u", session_id="s", state={"app:x": "x" * (1 << 20)}
                )
            assert await service.get_session(app_name="a", user_id="u", session_id="s") is None
            await service.create_session(app_name="a", user_id="u", session_id="s")
        finally:
            await service.close()

    asyncio.run(main())


def test_two_servers_share_one_postgres_store(postgres_url: str) -> None:
    """Two services (two servers behind a load balancer) on one PostgreSQL database: a
    session made on one takes events from both, in order, with app and user state, and
    each reads what the other wrote."""

    async def main() -> None:
        one = ThreadstoreSessionService(postgres_url)
        two = ThreadstoreSessionService(postgres_url)
        try:
            session = await one.create_session(app_name="a", user_id="u", state={"app:n": 0})
            events = []
            for n in range(6):
                service = (one, two)[n % 2]
                current = await service.get_session(
                    app_name="a", user_id="u", session_id=session.id
                )
                assert current is not None
                event = text_event("user", f"turn {n}", {"app:n": n + 1, "user:last": n})
                await service.append_event(current, event)
                events.append(event)
            for service in (one, two):
                got = await service.get_session(app_name="a", user_id="u", session_id=session.id)
                assert got is not None
                assert [e.content.parts[0].text for e in got.events] == [  # type: ignore[union-attr,index]
                    f"turn {n}" for n in range(6)
                ]
                assert got.state["app:n"] == 6
                assert got.state["user:last"] == 5
        finally:
            await one.close()
            await two.close()

    asyncio.run(main())
