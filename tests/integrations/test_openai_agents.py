"""ThreadstoreSession: the OpenAI Agents SDK's Session protocol on threadstore.

The SDK's own session tests run against it through ``make test-integrations``; these are
the adapter's own: SQLiteSession's semantics, the mapping onto threadstore's kinds, shared
and private stores, threads with loops of their own, cancellation, history edits, listing,
and a run of the SDK's Runner with its scripted model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from _process import child_env
from agents import Agent, RunConfig, Runner, SessionSettings, TResponseInputItem
from agents.memory import Session
from agents.testing import ScriptedModel, assistant_message

from threadstore import Item, aio, blocking
from threadstore.integrations import openai_agents
from threadstore.integrations.openai_agents import (
    DEFAULT_NAMESPACE,
    SESSION_ID_KEY,
    ThreadstoreSession,
)

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def items_of(*texts: str) -> list[TResponseInputItem]:
    return [
        cast(TResponseInputItem, {"role": "user" if i % 2 == 0 else "assistant", "content": t})
        for i, t in enumerate(texts)
    ]


def contents(items: list[Any]) -> list[Any]:
    return [item.get("content") for item in items]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "sessions.db"


SDK_ITEMS: list[Any] = [
    {"role": "user", "content": "Plan a trip to Kyōto 😊"},
    {"role": "system", "content": "be brief"},
    {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "hmm"}]},
    {
        "type": "function_call",
        "call_id": "call_1",
        "name": "weather",
        "arguments": '{"city": "Kyoto"}',
    },
    {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
    {
        "type": "message",
        "role": "assistant",
        "id": "msg_1",
        "status": "completed",
        "content": [{"type": "output_text", "text": "Go in spring.", "annotations": []}],
    },
    {"type": "Web Search Call!", "n": 1.5, "nested": {"a": [1, None, True]}},
    {"type": "compaction", "encrypted_content": "xyz"},
    "a bare string",
]


def test_items_round_trip_exactly_in_order_under_their_kinds(db: Path) -> None:
    async def main() -> None:
        session = ThreadstoreSession("trip", db)
        try:
            assert isinstance(session, Session)
            await session.add_items(SDK_ITEMS[:4])
            await session.add_items(SDK_ITEMS[4:])
            assert await session.get_items() == SDK_ITEMS
            stored = await session.store.read_items(session.thread_id)
            assert [s.kind for s in stored] == [
                "user_message",
                "openai.system_message",
                "reasoning",
                "tool_call",
                "tool_result",
                "assistant_message",
                "openai.web_search_call_",
                "openai.compaction",
                "openai.item",
            ]
            assert stored[0].data["text"] == "Plan a trip to Kyōto 😊"
            assert stored[2].data["text"] == "hmm"
            assert stored[3].data["name"] == "weather"
            assert stored[5].data["text"] == "Go in spring."
            await session.store.flush(session.thread_id)
            meta = await session.store.get_thread(session.thread_id)
            assert meta.namespace == DEFAULT_NAMESPACE
            assert meta.preview == "Plan a trip to Kyōto 😊"
            assert meta.last_message == "Go in spring."
            assert (meta.item_count, meta.turn_count, meta.status) == (9, 0, "idle")
            assert meta.title is None
        finally:
            session.close()

    run(main())


def test_limits_follow_sqlite_session(db: Path) -> None:
    async def main() -> None:
        session = ThreadstoreSession("limits", db)
        texts = [f"m{i}" for i in range(6)]
        await session.add_items(items_of(*texts))
        assert contents(await session.get_items()) == texts
        assert contents(await session.get_items(limit=2)) == texts[-2:]
        assert contents(await session.get_items(limit=10)) == texts
        assert await session.get_items(limit=0) == []
        assert contents(await session.get_items(limit=-1)) == texts
        assert contents(await session.get_items(limit=2**31)) == texts
        session.session_settings = SessionSettings(limit=3)
        assert contents(await session.get_items()) == texts[-3:]
        assert contents(await session.get_items(limit=1)) == texts[-1:]
        session.close()

        by_dict = ThreadstoreSession("limits", db, {"limit": 2})
        assert isinstance(by_dict.session_settings, SessionSettings)
        assert contents(await by_dict.get_items()) == texts[-2:]
        by_dict.close()
        assert ThreadstoreSession("x").session_settings == SessionSettings()

    run(main())
    with pytest.raises(TypeError, match="limitt"):
        ThreadstoreSession("bad", session_settings={"limitt": 1})


def test_limit_counts_session_items_past_others(db: Path) -> None:
    """Items of the thread a session does not return (a title) do not count to the limit."""

    async def main() -> None:
        session = ThreadstoreSession("titled", db)
        await session.add_items(items_of("a", "b", "c"))
        for n in range(12):
            await session.store.update_thread(session.thread_id, title=f"t{n}")
        assert contents(await session.get_items(limit=2)) == ["b", "c"]
        assert contents(await session.get_items(limit=5)) == ["a", "b", "c"]
        assert contents(await session.get_items()) == ["a", "b", "c"]
        assert contents([await session.pop_item()]) == ["c"]
        meta = await session.store.get_thread(session.thread_id)
        assert meta.title == "t11"  # a rewind never undoes a rename
        session.close()

    run(main())


def test_items_appended_through_the_store_read_as_messages(db: Path) -> None:
    async def main() -> None:
        session = ThreadstoreSession("mixed", db)
        await session.add_items(items_of("hi"))
        store = session.store
        await store.append(
            session.thread_id,
            Item.assistant_message("hello"),
            Item.title("Greeting"),
            Item.compaction("they greeted"),
            Item.user_message("again"),
        )
        assert await session.get_items() == [
            {"role": "system", "content": "they greeted"},
            {"role": "user", "content": "again"},
        ]
        session.close()

    run(main())


def test_pop_and_clear_are_rewinds(db: Path) -> None:
    async def main() -> None:
        session = ThreadstoreSession("edits", db)
        assert await session.pop_item() is None
        await session.clear_session()  # nothing to clear: nothing written
        await session.add_items(items_of("q1", "a1", "q2"))
        assert await session.pop_item() == {"role": "user", "content": "q2"}
        assert contents(await session.get_items()) == ["q1", "a1"]
        meta = await session.store.get_thread(session.thread_id)
        assert (meta.item_count, meta.preview, meta.last_message) == (2, "q1", "a1")

        await session.clear_session()
        assert await session.get_items() == []
        assert await session.pop_item() is None
        meta = await session.store.get_thread(session.thread_id)
        assert (meta.item_count, meta.preview) == (0, None)
        log = await session.store.read_items(session.thread_id)
        kinds = [s.kind for s in log if s.kind != "rewind"]
        assert kinds == ["user_message", "assistant_message", "user_message"]  # all kept

        await session.add_items(items_of("fresh"))
        assert contents(await session.get_items()) == ["fresh"]
        session.close()

    run(main())


def test_sessions_on_one_path_share_one_store_and_are_isolated(db: Path) -> None:
    async def main() -> None:
        one, two = ThreadstoreSession("one", db), ThreadstoreSession("two", str(db))
        assert one._portal is two._portal
        await one.add_items(items_of("for one"))
        await two.add_items(items_of("for two", "reply"))
        assert await two.pop_item() == {"role": "assistant", "content": "reply"}
        assert contents(await one.get_items()) == ["for one"]
        assert contents(await two.get_items()) == ["for two"]
        one.close()
        one.close()  # idempotent
        assert contents(await two.get_items()) == ["for two"]  # still open
        portal = two._portal
        two.close()
        assert not portal._accepting  # the last close closed it
        with pytest.raises(RuntimeError, match="ThreadstoreSession is closed"):
            await two.get_items()
        with pytest.raises(RuntimeError, match="closed"):
            await two.add_items([])
        again = ThreadstoreSession("one", db)  # reopened: durable
        assert contents(await again.get_items()) == ["for one"]
        again.close()

    run(main())


def test_memory_sessions_are_private_and_gone_on_close() -> None:
    async def main() -> None:
        a, b = ThreadstoreSession("same"), ThreadstoreSession("same")
        assert a._portal is not b._portal
        assert a._portal.target == ":memory:"
        await a.add_items(items_of("only in a"))
        assert await b.get_items() == []
        portal = a._portal
        a.close()
        assert not portal._accepting
        assert await ThreadstoreSession("same").get_items() == []
        b.close()

    run(main())


def test_on_an_open_handle_close_leaves_it_open(db: Path) -> None:
    async def main() -> None:
        async with aio.open_store(db) as store:
            session = ThreadstoreSession("handled", store=store)
            await session.add_items(items_of("x"))
            session.close()
            assert [s.kind for s in await store.read_items("handled")] == ["user_message"]
            other = ThreadstoreSession("ns", store=store, namespace="acme/alice")
            await other.add_items(items_of("y"))
            assert (await store.get_thread("ns")).namespace == "acme/alice"
            other.close()

    run(main())

    with blocking.open_store(db) as handle:
        session = ThreadstoreSession("handled", store=handle)
        assert contents(run(session.get_items())) == ["x"]
        session.close()
        assert handle.get_thread("handled").id == "handled"
    with pytest.raises(TypeError, match=r"aio\.Store or blocking\.Store"):
        ThreadstoreSession("bad", store=cast(Any, object()))


def test_non_json_items_raise_type_error(db: Path) -> None:
    async def main() -> None:
        session = ThreadstoreSession("bad", db)
        with pytest.raises(TypeError):
            await session.add_items([cast(Any, {"role": "user", "content": object()})])
        assert await session.get_items() == []
        session.close()

    run(main())


def test_session_ids_threadstore_cannot_take_are_hashed(db: Path) -> None:
    long_id = "x" * 200
    rough = " padded id "

    async def main() -> None:
        sessions = [ThreadstoreSession(long_id, db), ThreadstoreSession(rough, db)]
        for session in sessions:
            assert session.thread_id.startswith("sha256-")
            await session.add_items(items_of("hello"))
        page = await ThreadstoreSession.list_sessions(sessions[0])
        assert {info.session_id for info in page.sessions} == {long_id, rough}
        meta = await sessions[0].store.get_thread(sessions[0].thread_id)
        assert meta.extra[SESSION_ID_KEY] == long_id
        for session in sessions:
            session.close()

    run(main())


def test_list_sessions_paged_newest_first(db: Path) -> None:
    async def main() -> None:
        names = [f"s{i}" for i in range(5)]
        sessions = [ThreadstoreSession(name, db) for name in names]
        for session in sessions:
            await session.add_items(items_of(f"first of {session.session_id}"))
        await sessions[1].clear_session()  # empty sessions are listed too
        await sessions[2].add_items(items_of("again"))  # now the newest
        store = sessions[0].store
        await store.flush_all()
        seen: list[str] = []
        cursor = None
        while True:
            page = await ThreadstoreSession.list_sessions(store, limit=2, cursor=cursor)
            seen += [info.session_id for info in page.sessions]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == ["s2", "s1", "s4", "s3", "s0"]
        with blocking.open_store(":memory:") as other:
            assert (await ThreadstoreSession.list_sessions(other)).sessions == ()
        page = await ThreadstoreSession.list_sessions(store, limit=1)
        assert page.sessions[0].meta.preview == "first of s2"
        for session in sessions:
            session.close()

    run(main())


def test_threads_with_loops_of_their_own(db: Path) -> None:
    session = ThreadstoreSession("threads", db)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for batch in range(5):
                batch_items = items_of(*(f"w{n}-b{batch}-{i}" for i in range(3)))
                asyncio.run(session.add_items(batch_items))
                asyncio.run(session.get_items(limit=2))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    assert errors == []
    stored = contents(run(session.get_items()))
    assert len(stored) == 6 * 5 * 3
    for start in range(0, len(stored), 3):  # each batch is stored whole, together
        prefix = stored[start].rsplit("-", 1)[0]
        assert [c.rsplit("-", 1)[0] for c in stored[start : start + 3]] == [prefix] * 3
    session.close()


def test_concurrent_pops_never_pop_one_item_twice(db: Path) -> None:
    texts = [f"m{i}" for i in range(40)]
    session = ThreadstoreSession("pops", db)
    run(session.add_items(items_of(*texts)))
    other = ThreadstoreSession("pops", db)  # another instance on the same session
    popped: list[Any] = []
    lock = threading.Lock()

    def worker(target: ThreadstoreSession) -> None:
        async def pops() -> list[Any]:
            return await asyncio.gather(*(target.pop_item() for _ in range(5)))

        got = asyncio.run(pops())
        with lock:
            popped.extend(got)

    workers = [threading.Thread(target=worker, args=(s,)) for s in [session, other] * 3]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    assert sorted(contents(popped)) == sorted(texts[-30:])
    assert contents(run(session.get_items())) == texts[:10]
    session.close()
    other.close()


def test_cancelling_add_items_mid_write_stores_all_or_nothing(db: Path) -> None:
    async def main() -> None:
        session = ThreadstoreSession("cancel", db)
        big = items_of(*(f"item {i}" for i in range(500)))

        not_started = asyncio.create_task(session.add_items(big))
        not_started.cancel()  # before it ran: nothing is written
        with pytest.raises(asyncio.CancelledError):
            await not_started
        assert await session.get_items() == []

        for delay in (0, 0.001, 0.005):
            task = asyncio.create_task(session.add_items(big))
            await asyncio.sleep(delay)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            stored = await session.get_items()
            assert len(stored) % len(big) == 0  # never half a batch
            if task.cancelled():
                await session.clear_session()
        # Cancelled while the write runs: raised once settled, every item stored.
        task = asyncio.create_task(session.add_items(big))
        while not session._lock.locked():  # noqa: ASYNC110 - a thread's lock, no event
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert contents(await session.get_items())[-500:] == contents(big)
        session.close()

    run(main())


def test_a_failing_validation_leaves_the_item(db: Path) -> None:
    async def main() -> None:
        session = ThreadstoreSession("validated", db)
        await session.add_items(items_of("keep"))

        def refuse(item: Any) -> None:
            raise ValueError("no")

        with pytest.raises(ValueError, match="no"):
            await session._pop_item_with_validation(refuse)
        assert contents(await session.get_items()) == ["keep"]
        session.close()

    run(main())


def test_compaction_snapshot_replaces_the_suffix_unless_it_changed(db: Path) -> None:
    async def main() -> None:
        session = ThreadstoreSession("compact", db)
        await session.add_items(items_of("a", "b", "c", "d"))
        snapshot = await session._get_compaction_snapshot(3)
        assert snapshot is not None
        assert (contents(snapshot.items), snapshot.complete) == (["b", "c", "d"], False)
        summary = cast(TResponseInputItem, {"type": "compaction", "encrypted_content": "s"})
        assert not await snapshot.replace_suffix(3, [summary])  # an empty suffix
        assert await snapshot.replace_suffix(1, [summary])
        assert await session.get_items() == [*items_of("a", "b"), summary]
        assert not await snapshot.replace_suffix(1, [summary])  # changed meanwhile

        full = await session._get_compaction_snapshot(10)
        assert full is not None
        assert full.complete
        assert (
            await full.replace_suffix(
                2,
                [],
            )
            is True
        )
        assert contents(await session.get_items()) == ["a", "b"]

        await session.add_items(items_of("c", "d"))
        pruned = await session._get_compaction_snapshot(1)
        assert pruned is not None
        done = await pruned.replace_suffix(0, [summary])
        assert done
        assert await session.get_items() == [*items_of("a", "b", "c"), summary]
        snap = await session._get_compaction_snapshot(1, prune_prefix=lambda i: i["content"] < "c")
        assert snap is not None
        assert await snap.replace_suffix(0, items_of("z"))
        assert contents(await session.get_items()) == ["c", "z"]

        class Sub(ThreadstoreSession):
            pass

        sub = Sub("compact", db)
        assert await sub._get_compaction_snapshot(1) is None  # subclasses bring their own
        sub.close()
        await session.store.delete_thread(session.thread_id)
        assert not await snap.replace_suffix(0, [])
        session.close()

    run(main())


def test_a_session_deleted_through_the_store_starts_anew(db: Path) -> None:
    async def main() -> None:
        session = ThreadstoreSession("deleted", db)
        await session.add_items(items_of("old"))
        await session.store.delete_thread(session.thread_id)
        assert await session.get_items() == []
        assert await session.pop_item() is None
        await session.clear_session()
        await session.add_items(items_of("new"))
        assert contents(await session.get_items()) == ["new"]
        session.close()

    run(main())


def test_fork_and_rewind_through_the_store(db: Path) -> None:
    async def main() -> None:
        session = ThreadstoreSession("main", db)
        await session.add_items(items_of("q1", "a1", "q2", "a2"))
        store = session.store
        context = await store.read_context(session.thread_id)
        await store.fork(session.thread_id, at_seq=context[1].seq, thread_id="branch")
        branch = ThreadstoreSession("branch", db)
        assert contents(await branch.get_items()) == ["q1", "a1"]
        await branch.add_items(items_of("q2 (other)"))
        await store.rewind(session.thread_id, context[0].seq)
        assert contents(await session.get_items()) == ["q1"]
        assert contents(await branch.get_items()) == ["q1", "a1", "q2 (other)"]
        meta = await store.get_thread("branch")
        assert meta.forked_from == "main"
        branch.close()
        session.close()

    run(main())


def test_runner_with_the_scripted_model_lists_the_thread(db: Path) -> None:
    async def main() -> None:
        session = ThreadstoreSession("conversation", db)
        model = ScriptedModel()
        agent = Agent(name="assistant", model=model)
        model.enqueue([assistant_message("Kyoto, in spring.")])
        config = RunConfig(tracing_disabled=True)  # nothing is exported anywhere
        first = await Runner.run(
            agent, "Where should I go in Japan?", session=session, run_config=config
        )
        assert first.final_output == "Kyoto, in spring."
        model.enqueue([assistant_message("About a week.")])
        second = await Runner.run(agent, "For how long?", session=session, run_config=config)
        assert second.final_output == "About a week."
        assert len(model.calls[-1].input) == 3  # the first turn came from the session

        store = session.store
        await store.flush_all()
        page = await store.list_threads()
        (meta,) = [m for m in page.threads if m.id == "conversation"]
        assert meta.preview == "Where should I go in Japan?"
        assert meta.last_message == "About a week."
        assert (meta.item_count, meta.status, meta.title) == (4, "idle", None)
        sessions = await ThreadstoreSession.list_sessions(store)
        assert [info.session_id for info in sessions.sessions] == ["conversation"]
        expected = f"ThreadstoreSession('conversation', {str(db)!r}, namespace='openai-agents')"
        assert repr(session) == expected
        session.close()

    run(main())
    # The command lists it too (read-only, in another process), as the store does.
    command = ["list", "--db", str(db), "--namespace", "openai-agents", "--json"]
    listed = subprocess.run(
        [sys.executable, "-m", "threadstore", *command],
        capture_output=True,
        text=True,
        env=child_env(),
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (row["id"], row["preview"], row["item_count"]) == (
        "conversation",
        "Where should I go in Japan?",
        4,
    )


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)


def test_threadstore_never_imports_the_sdk() -> None:
    done = _python(
        "import sys, threadstore, threadstore.integrations, threadstore.aio\n"
        "assert 'agents' not in sys.modules, 'the SDK was imported'\n"
    )
    assert done.returncode == 0, done.stderr


def test_without_the_sdk_the_error_names_the_extra() -> None:
    done = _python(
        "import sys\nsys.modules['agents'] = None\nimport threadstore.integrations.openai_agents\n"
    )
    assert done.returncode != 0
    assert "pip install 'threadstore[openai-agents]'" in done.stderr


def test_kind_names_stay_valid() -> None:
    make: Callable[[Any], Item] = openai_agents.to_item
    assert make({"type": "", "x": 1}).kind == "openai.item"
    assert make({"type": "T" * 100}).kind == "openai." + "t" * 57
    assert make({"type": "function_call", "name": 1}).kind == "openai.function_call"
    assert (
        make({"role": "developer", "content": [{"text": "a"}, "b", {"text": 2}]}).data["text"]
        == "a"
    )
    assert make({"role": "user", "content": None}).data["text"] == ""
