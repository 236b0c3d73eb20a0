"""A store file made by schema version 1 (``tests/data/store-v1.db``, written by the code of
that version) opens, migrates and works: namespaces and history edits included."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
import trio

from threadstore import StoreFormatError, open_store
from threadstore.sqlite._sql import SCHEMA_VERSION

V1_FILE = Path(__file__).resolve().parent.parent / "data" / "store-v1.db"


@pytest.fixture
def v1_path(tmp_path: Path) -> Path:
    path = tmp_path / "store.db"
    shutil.copyfile(V1_FILE, path)
    return path


def _user_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


async def test_a_version_1_store_migrates_and_keeps_everything(v1_path: Path) -> None:
    assert _user_version(v1_path) == 1
    with pytest.raises(StoreFormatError, match="open it for writing once"):
        async with open_store(v1_path, read_only=True):  # a read-only open cannot migrate
            pass
    async with open_store(v1_path) as store:
        assert _user_version(v1_path) == SCHEMA_VERSION
        page = await store.list_threads()
        assert [t.id for t in page.threads] == ["chat", "goal-first"]
        assert {t.namespace for t in page.threads} == {""}
        chat = await store.get_thread("chat")
        assert (chat.title, chat.preview, chat.status, chat.item_count) == (
            "Renamed",
            "hi",
            "idle",
            6,
        )
        assert (chat.input_tokens, chat.output_tokens, dict(chat.extra)) == (3, 4, {"k": 1})
        assert (chat.forked_from, chat.forked_at) == (None, None)
        archived = (await store.list_threads(archived=True)).threads
        assert [t.id for t in archived] == ["archived"]
        goal_first = await store.get_thread("goal-first")
        assert (goal_first.preview, goal_first.last_message) == ("Find flights", "Found 3")
        # The new features work on the old threads.
        assert [i.kind for i in await store.read_context("goal-first")] == [
            "goal",
            "user_message",
            "assistant_message",
        ]
        rewound = await store.rewind("goal-first", 1)
        assert (rewound.preview, rewound.item_count) == ("Plan a trip", 1)
        branch = await store.fork("chat", at_seq=4, thread_id="branch")
        assert branch.forked_from == "chat"
        assert (await store.scoped("").get_thread("branch")).preview == "hi"
        assert (await store.list_threads(namespace="acme")).threads == ()
    async with open_store(v1_path, read_only=True) as reader:  # migrated: readers open it
        assert len(await reader.read_items("goal-first")) == 4
        # Old threads got change numbers: a replay from the start lists every one of them.
        async with reader.subscribe(since=0) as events:
            replayed: dict[str, int] = {}
            with trio.fail_after(10):
                while len(replayed) < 4:
                    event = await anext(events)
                    assert event.thread is not None
                    replayed[event.thread.id] = event.change
        assert set(replayed) == {"chat", "goal-first", "archived", "branch"}
        assert min(replayed.values()) > 0
        assert [i.kind for i in await reader.read_context("goal-first")] == ["goal"]
