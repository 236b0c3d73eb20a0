"""The PostgreSQL engine's own behaviour, on the session's throwaway server (see ``_pg``):
schema creation and checks, connection errors, durability settings, text PostgreSQL cannot
hold as is, recovery at open, read-only opens beside a writer, lost connections, and the
server fixture's own promise (stopped when the test run is killed).

The contract suite (every engine, ``tests/test_*.py``) covers the API's semantics."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import urllib.parse
from collections.abc import Sequence
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any

import _pg
import psycopg
import pytest
import trio
from _helpers import FAST_RETRY, GUARD_S, fold_log, listed_ids

from threadstore import (
    AppendFailedError,
    Item,
    ProjectionFailedError,
    ReadOnlyStoreError,
    Store,
    StoredItem,
    StoreFormatError,
    StoreUnavailableError,
    ThreadMeta,
    open_store,
)
from threadstore.postgres import PostgresFaults, _sql

# -- helpers ------------------------------------------------------------------------------


def _query(url: str, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


async def query(url: str, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on its own connection (in a worker thread); its rows."""
    return await trio.to_thread.run_sync(_query, url, text, params)


async def dump(url: str) -> list[tuple[Any, ...]]:
    """Every threadstore row of the database, for before/after comparisons."""
    rows: list[tuple[Any, ...]] = []
    for table in ("threadstore_info", "threadstore_threads", "threadstore_items"):
        if (await query(url, "SELECT to_regclass(%s) IS NOT NULL", (table,)))[0][0]:
            rows += [(table, *row) for row in await query(url, f"SELECT * FROM {table}")]
    return sorted(rows, key=repr)


def folded(meta: ThreadMeta, items: Sequence[StoredItem]) -> ThreadMeta:
    """What folding ``items`` gives for ``meta``'s thread (the test suite's own fold)."""
    return fold_log(
        items,
        thread_id=meta.id,
        created_at=meta.created_at,
        namespace=meta.namespace,
        archived_at=meta.archived_at,
    )[0]


class Failing:
    """A projector that always raises (its thread's metadata stays behind its log)."""

    name = "failing"

    def project(self, meta: ThreadMeta, items: Sequence[StoredItem]) -> None:
        raise RuntimeError("projector down")


# -- schema -------------------------------------------------------------------------------


async def test_open_creates_a_versioned_schema_and_reopens_it(postgres_url: str) -> None:
    async with open_store(postgres_url) as store:
        tid = (await store.create_thread(goal="kept")).id
    info = dict(await query(postgres_url, "SELECT key, value FROM threadstore_info"))
    assert info["format"] == "threadstore"
    assert info["schema_version"] == str(_sql.SCHEMA_VERSION)
    assert len(bytes.fromhex(info["cursor_secret"])) == 32

    async with open_store(postgres_url) as store:
        assert (await store.get_thread(tid)).preview == "kept"
        cursor = (await store.list_threads(limit=1, include_empty=True)).next_cursor
    assert cursor is None
    assert dict(await query(postgres_url, "SELECT key, value FROM threadstore_info")) == info


def _ensure_schema(url: str) -> None:
    conn = _sql.connect(url, durability="normal")
    try:
        _sql.ensure_schema(conn)
    finally:
        conn.close()


async def test_connections_creating_the_schema_at_once_create_it_once(postgres_url: str) -> None:
    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(trio.to_thread.run_sync, _ensure_schema, postgres_url)
    keys = await query(postgres_url, "SELECT key FROM threadstore_info ORDER BY key")
    assert keys == [("cursor_secret",), ("feed_floor",), ("format",), ("schema_version",)]
    async with open_store(postgres_url) as store:
        await store.create_thread(goal="works")


async def test_two_writers_append_to_one_thread_with_dense_seqs(postgres_url: str) -> None:
    async with open_store(postgres_url) as one, open_store(postgres_url) as two:
        tid = (await one.create_thread(goal="shared")).id
        receipts = []
        for i in range(5):
            receipts.append(await one.append(tid, Item.user_message(f"one {i}")))
            receipts.append(await two.append(tid, Item.assistant_message(f"two {i}")))
        assert [r.seq for r in receipts] == list(range(2, 12))
        await two.flush(tid)
        meta = await one.get_thread(tid)
        assert (meta.seq, meta.item_count, meta.last_message) == (11, 11, "two 4")
        async with open_store(postgres_url, read_only=True) as reader:
            assert (await reader.get_thread(tid)).goal == "shared"
    async with open_store(postgres_url) as store:
        assert [i.seq for i in await store.read_items(tid)] == list(range(1, 12))


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (
            ["CREATE TABLE threadstore_threads (id text)"],
            "is not a threadstore database: it has a table 'threadstore_threads'",
        ),
        (
            [
                "CREATE TABLE threadstore_info (key text PRIMARY KEY, value text)",
                "INSERT INTO threadstore_info VALUES ('format', 'something else')",
            ],
            "is not a threadstore database",
        ),
        (
            [
                "CREATE TABLE threadstore_info (key text PRIMARY KEY, value text)",
                "INSERT INTO threadstore_info VALUES ('format', 'threadstore'), "
                "('schema_version', '99')",
            ],
            "was created by a newer threadstore",
        ),
        (
            [
                "CREATE TABLE threadstore_info (key text PRIMARY KEY, value text)",
                "INSERT INTO threadstore_info VALUES ('format', 'threadstore'), "
                "('schema_version', 'x')",
            ],
            "is damaged: its schema version is 'x'",
        ),
    ],
    ids=["foreign-table", "foreign-format", "newer", "damaged"],
)
@pytest.mark.parametrize("read_only", [False, True], ids=["writer", "reader"])
async def test_foreign_newer_or_damaged_schema_is_refused_untouched(
    postgres_url: str, setup: list[str], message: str, read_only: bool
) -> None:
    for statement in setup:
        await query(postgres_url, statement)
    before = await dump(postgres_url)
    with pytest.raises(StoreFormatError, match=message) as info:
        async with open_store(postgres_url, read_only=read_only):
            pytest.fail("opened")
    dbname = urllib.parse.urlsplit(postgres_url).path.lstrip("/")
    assert f"database {dbname!r}" in str(info.value)
    assert await dump(postgres_url) == before


async def test_read_only_open_of_an_empty_database_is_refused(postgres_url: str) -> None:
    with pytest.raises(StoreFormatError, match="has no threadstore schema yet"):
        async with open_store(postgres_url, read_only=True):
            pytest.fail("opened")
    assert await dump(postgres_url) == []


async def test_existing_application_tables_are_left_alone(postgres_url: str) -> None:
    await query(postgres_url, "CREATE TABLE threads (id int)")  # an application's own
    async with open_store(postgres_url) as store:
        await store.create_thread(goal="beside the app")
    assert await query(postgres_url, "SELECT count(*) FROM threads") == [(0,)]


# -- connections --------------------------------------------------------------------------


async def test_unreachable_server_names_host_and_database_never_the_password(
    tmp_path: Path,
) -> None:
    url = f"postgresql://alice:s3cr3t-pw@/appdb?host={tmp_path}&connect_timeout=2"
    with pytest.raises(StoreUnavailableError) as info:
        async with open_store(url):
            pytest.fail("opened")
    text = f"{info.value} {info.value!r} {info.value.__cause__!r} {info.value.__context__!r}"
    assert "s3cr3t-pw" not in text
    assert f"host {str(tmp_path)!r}" in str(info.value)
    assert "database 'appdb'" in str(info.value)
    assert isinstance(info.value, ConnectionError)


async def test_missing_database_is_a_clear_error(postgres_server: _pg.PostgresServer) -> None:
    url = postgres_server.url("no_such_database").replace("postgres@", "postgres:pw@")
    with pytest.raises(StoreUnavailableError, match="database 'no_such_database'") as info:
        async with open_store(url):
            pytest.fail("opened")
    assert 'database "no_such_database" does not exist' in str(info.value)
    assert ":pw@" not in str(info.value)


async def test_store_path_and_messages_never_show_the_password(postgres_url: str) -> None:
    # The throwaway server trusts local connections: the password is never checked.
    url = postgres_url.replace("postgres@", "postgres:hunter2@") + "&password=hunter3"
    async with open_store(url) as store:
        assert "hunter" not in store.path
        assert store.path.startswith("postgresql://postgres:***@/")
        assert "password=***" in store.path
    with pytest.raises(ValueError, match="not a valid PostgreSQL URL") as info:
        async with open_store("postgresql://u:hunter4@/db?no_such_option=1"):
            pytest.fail("opened")
    assert "hunter4" not in str(info.value)


@pytest.mark.parametrize(("durability", "setting"), [("normal", "off"), ("full", "on")])
async def test_durability_sets_synchronous_commit(
    postgres_url: str, durability: Any, setting: str
) -> None:
    def show() -> str:
        conn = _sql.connect(postgres_url, durability=durability)
        try:
            return str(conn.execute("SHOW synchronous_commit").fetchone()[0])  # type: ignore[index]
        finally:
            conn.close()

    assert await trio.to_thread.run_sync(show) == setting
    async with open_store(postgres_url, durability=durability) as store:
        await store.create_thread(goal="g")
        sessions = await query(
            postgres_url,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name LIKE 'threadstore %%'",
        )
        assert sessions[0][0] >= 1


async def test_lost_connections_fail_one_append_then_the_store_reconnects(
    postgres_url: str,
) -> None:
    async with open_store(postgres_url, retry=FAST_RETRY) as store:
        tid = (await store.create_thread(goal="before")).id
        await store.append_and_flush(tid, Item.user_message("one"))
        ended = await query(
            postgres_url,
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name LIKE 'threadstore %%'",
        )
        assert ended
        assert all(row[0] for row in ended)

        with pytest.raises(AppendFailedError, match="connection"):
            await store.append(tid, Item.user_message("lost with the connection"))
        receipt = await store.append_and_flush(tid, Item.user_message("after"))

        items = await store.read_items(tid)  # a reader reconnects too
        assert [(i.seq, i.kind) for i in items] == [
            (1, "goal"),
            (2, "user_message"),
            (3, "user_message"),
        ]
        assert items[-1].data == {"text": "after"}
        assert receipt.seq == 3
        meta = await store.get_thread(tid)
        assert meta == folded(meta, items)


class LoseConnection:
    """A writer fault: at ``point`` (``before_commit`` or ``after_commit``) of the next
    transaction, close the connection and raise as a lost connection does."""

    def __init__(self, point: str) -> None:
        self.point = point
        self.fired = 0

    def __call__(self, point: str, conn: psycopg.Connection[Any]) -> None:
        if point == self.point and not self.fired:
            self.fired += 1
            conn.pgconn.finish()  # the socket is gone: the server sees the client vanish
            raise psycopg.OperationalError(f"connection lost {point.replace('_', ' ')}")


def _writer(store: Store) -> Any:
    return store._engine.writer  # type: ignore[attr-defined]


async def test_a_commit_whose_answer_was_lost_is_confirmed_not_failed(postgres_url: str) -> None:
    async with open_store(postgres_url, retry=FAST_RETRY) as store:
        tid = (await store.create_thread(goal="g")).id
        fault = _writer(store).fault = LoseConnection("after_commit")
        receipt = await store.append(tid, Item.user_message("committed, answer lost"))
        assert fault.fired == 1
        assert receipt.seq == 2
        await store.append_and_flush(tid, Item.user_message("next"))
        items = await store.read_items(tid)
        assert [i.seq for i in items] == [1, 2, 3]
        meta = await store.get_thread(tid)
        assert meta == folded(meta, items)


async def test_a_connection_lost_before_commit_fails_the_appends_whole(postgres_url: str) -> None:
    async with open_store(postgres_url, retry=FAST_RETRY) as store:
        tid = (await store.create_thread(goal="g")).id
        fault = _writer(store).fault = LoseConnection("before_commit")
        with pytest.raises(AppendFailedError, match="connection lost before commit"):
            await store.append(tid, Item.user_message("lost"), Item.user_message("also lost"))
        assert fault.fired == 1
        await store.append_and_flush(tid, Item.user_message("next"))
        items = await store.read_items(tid)
        assert [(i.seq, i.data.get("text")) for i in items] == [(1, "g"), (2, "next")]


async def test_a_server_restart_mid_stream_loses_nothing_acknowledged(
    postgres_server: _pg.PostgresServer, postgres_url: str
) -> None:
    acked: dict[str, list[str]] = {}
    restarted = trio.Event()

    async def stream(store: Store, tid: str) -> None:
        n = after = 0
        while after < 10:  # until ten appends after the restart
            after += restarted.is_set()
            text = f"{tid} {n}"
            n += 1
            try:
                await store.append(tid, Item.user_message(text))
            except AppendFailedError:
                continue  # lost with the server; later appends go on
            acked[tid].append(text)
        assert acked[tid][-1] == text, "appends after the restart did not work"
        await trio.lowlevel.checkpoint()

    async with open_store(postgres_url, retry=FAST_RETRY) as store:
        tids = [(await store.create_thread(goal=f"g{n}")).id for n in range(4)]
        for tid in tids:
            acked[tid] = []
        async with trio.open_nursery() as nursery:
            for tid in tids:
                nursery.start_soon(stream, store, tid)
            await store.flush_all()
            await trio.to_thread.run_sync(postgres_server.restart)
            restarted.set()
        await store.flush_all()
        assert _writer(store).reconnects >= 1
        for tid in tids:
            items = await store.read_items(tid)
            assert [i.seq for i in items] == list(range(1, len(items) + 1))  # dense
            texts = [i.data["text"] for i in items[1:]]
            assert texts == acked[tid]  # every acknowledged item, nothing else, in order
            meta = await store.get_thread(tid)
            assert meta == folded(meta, items)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_injected_server_failures_lose_nothing_acknowledged(
    postgres_url: str, seed: int
) -> None:
    faults = PostgresFaults(seed=seed, probability=0.3)
    acked: dict[str, list[str]] = {}
    async with open_store(postgres_url, faults=faults, retry=FAST_RETRY) as store:
        while len(acked) < 4:
            with suppress(AppendFailedError):
                acked[(await store.create_thread(goal="g")).id] = ["g"]
        for n in range(80):
            tid = list(acked)[n % 4]
            with suppress(AppendFailedError):
                await store.append(tid, Item.user_message(f"m{n}"))
                acked[tid].append(f"m{n}")
        faults.stop()
        with suppress(ProjectionFailedError):  # a failure for good before the stop
            await store.flush_all()
        await store.flush_all()
        for tid, texts in acked.items():
            items = await store.read_items(tid)
            assert [i.seq for i in items] == list(range(1, len(items) + 1))
            assert [i.data["text"] for i in items] == texts
            meta = await store.get_thread(tid)
            assert meta == folded(meta, items)
    assert {"serialization", "connection"} <= set(faults.injected)
    assert faults.injected["commit-before"] + faults.injected["commit-after"] > 0


def _plans(url: str) -> dict[str, str]:
    """EXPLAIN of every listing variant over 6,000 threads (5 namespaces, a tenth archived,
    a third unlisted), keyed by variant."""
    with psycopg.connect(url, autocommit=True) as setup:
        setup.execute(
            "INSERT INTO threadstore_threads (id, created_at, updated_at, recency_at, preview, "
            "namespace, archived_at) SELECT 't' || i, i, i * 7 % 6007, i * 13 % 6007, "
            "CASE WHEN i % 3 = 0 THEN NULL ELSE 'p' || i END, 'ns' || (i % 5), "
            "CASE WHEN i % 10 = 1 THEN i END FROM generate_series(1, 6000) i"
        )
        setup.execute("ANALYZE threadstore_threads")
    conn = _sql.connect(url, durability="normal", read_only=True)
    plans: dict[str, str] = {}
    try:
        for order_by in sorted(_sql.ORDER_COLUMNS):
            for include_empty in (False, True):
                for namespace in (None, "ns2"):
                    for after in (None, (3000, "t3000")):
                        for descending in (True, False):
                            query, params = _sql.list_query(
                                order_by=order_by,
                                descending=descending,
                                archived=False,
                                search=None,
                                include_empty=include_empty,
                                after=after,
                                limit=51,
                                namespace=namespace,
                            )
                            rows = conn.execute("EXPLAIN " + query, params).fetchall()
                            key = f"{order_by} {include_empty=} {namespace=} {after=} {descending=}"
                            plans[key] = "\n".join(str(row[0]) for row in rows)
    finally:
        conn.close()
    return plans


async def test_every_listing_walks_an_index_without_sorting(postgres_url: str) -> None:
    async with open_store(postgres_url):
        pass  # the schema
    plans = await trio.to_thread.run_sync(_plans, postgres_url)
    assert len(plans) == 48
    for key, plan in plans.items():
        assert "Index Scan" in plan, f"{key}:\n{plan}"
        assert "Sort" not in plan, f"{key}:\n{plan}"
        assert "Seq Scan" not in plan, f"{key}:\n{plan}"


async def test_a_lock_timeout_in_the_url_fails_appends_blocked_by_another_session(
    postgres_url: str,
) -> None:
    holder = await trio.to_thread.run_sync(partial(psycopg.connect, postgres_url))
    url = postgres_url + "&options=-c%20lock_timeout%3D200"
    try:
        async with open_store(url, retry=FAST_RETRY) as store:
            tid = (await store.create_thread(goal="g")).id
            # Another session locks the thread's row: the next append's UPDATE waits for it.
            await trio.to_thread.run_sync(
                holder.execute, "SELECT 1 FROM threadstore_threads WHERE id = %s FOR UPDATE", (tid,)
            )
            with pytest.raises(AppendFailedError, match="lock timeout"):
                await store.append(tid, Item.user_message("blocked"))
            await trio.to_thread.run_sync(holder.rollback)
            await store.append_and_flush(tid, Item.user_message("after"))
            items = await store.read_items(tid)
            assert [(i.seq, i.data["text"]) for i in items] == [(1, "g"), (2, "after")]
    finally:
        await trio.to_thread.run_sync(holder.close)


# -- data ---------------------------------------------------------------------------------

ODD = "nul\x00inside \uffff0 and \uffff1 marks\x00"


async def test_text_postgres_cannot_hold_as_is_round_trips(postgres_url: str) -> None:
    odd_id = 'Robert\'); DROP TABLE threadstore_threads;-- "😀"'
    async with open_store(postgres_url) as store:
        meta = await store.create_thread(thread_id=odd_id, goal=ODD, title="t\x00")
        assert (meta.goal, meta.title, meta.preview) == (ODD, "t\x00", ODD)
        await store.append_and_flush(
            odd_id, Item.user_message("first\x00"), Item.assistant_message(ODD)
        )
        meta = await store.get_thread(odd_id)
        assert (meta.preview, meta.last_message) == ("first\x00", ODD)
        for search, found in [
            ("NUL\x00INSIDE \uffff0", [odd_id]),  # in the goal, ASCII case folded
            ("\uffff1 MARKS\x00", [odd_id]),
            ("first\x00", [odd_id]),
            ("\x00\x00", []),
            ("\uffff", [odd_id]),  # the mark itself, literally
        ]:
            assert await listed_ids(store, search=search) == found, repr(search)
    async with open_store(postgres_url, read_only=True) as reader:
        assert await reader.get_thread(odd_id) == meta
        items = await reader.read_items(odd_id)
        assert [i.data["text"] for i in items[2:]] == ["first\x00", ODD]
    # The log holds the very JSON text the store encoded.
    stored = await query(
        postgres_url,
        "SELECT data FROM threadstore_items WHERE thread_id = %s ORDER BY seq",
        (odd_id,),
    )
    assert stored[0][0] == '{"text":"nul\\u0000inside \uffff0 and \uffff1 marks\\u0000"}'


@pytest.mark.parametrize(
    "text",
    ["", "plain", "\x00", "\uffff", "\uffff0", "\uffff1\x00", "\x00\uffff\x000\uffff1", ODD],
)
def test_text_escape_round_trips(text: str) -> None:
    escaped = _sql.escape_text(text)
    assert escaped is not None
    assert "\x00" not in escaped
    row: list[str | None] = [None] * len(_sql.THREAD_COLUMNS)
    row[_sql.THREAD_COLUMNS.index("preview")] = escaped
    assert _sql.unescape_row(row)[_sql.THREAD_COLUMNS.index("preview")] == text
    if "\x00" not in text and "\uffff" not in text:
        assert escaped == text


async def test_lagging_metadata_is_reprojected_at_open(postgres_url: str) -> None:
    async with open_store(
        postgres_url, projectors=[Failing()], retry=FAST_RETRY, retry_interval=None
    ) as store:
        tid = (await store.create_thread()).id
        await store.append(tid, Item.user_message("hi"), Item.assistant_message("hello"))
    lag = await query(postgres_url, "SELECT seq, last_seq FROM threadstore_threads")
    assert lag == [(0, 2)]

    async with open_store(postgres_url) as store:
        meta = await store.get_thread(tid)
        assert (meta.seq, meta.preview, meta.last_message) == (2, "hi", "hello")
        assert meta == folded(meta, await store.read_items(tid))


async def test_read_only_store_reads_beside_the_writer_and_refuses_writes(
    postgres_url: str,
) -> None:
    async with open_store(postgres_url) as store:
        tid = (await store.create_thread(goal="shared")).id
        async with open_store(postgres_url, read_only=True) as reader:
            await store.append_and_flush(tid, Item.user_message("after the reader opened"))
            assert await reader.get_thread(tid) == await store.get_thread(tid)
            assert [i.kind for i in await reader.read_items(tid)] == ["goal", "user_message"]
            assert await listed_ids(reader) == [tid]
            with pytest.raises(ReadOnlyStoreError):
                await reader.append(tid, Item.user_message("no"))
            with pytest.raises(ReadOnlyStoreError):
                await reader.create_thread(goal="no")


async def test_a_burst_of_appends_is_group_committed(postgres_url: str) -> None:
    async with open_store(postgres_url) as store:
        tids = [(await store.create_thread(goal=f"g{n}")).id for n in range(10)]
        before = store.statistics().log_commits

        async def stream(tid: str) -> None:
            for n in range(20):
                await store.append(tid, Item.user_message(f"m{n}"))

        async with trio.open_nursery() as nursery:
            for tid in tids:
                nursery.start_soon(stream, tid)
        commits = store.statistics().log_commits - before
        await store.flush_all()
        for tid in tids:
            items = await store.read_items(tid)
            assert [i.seq for i in items] == list(range(1, 22))
            meta = await store.get_thread(tid)
            assert meta == folded(meta, items)
    # 200 appends from 10 tasks at once: a commit takes what queued meanwhile.
    assert commits <= 100


# -- the throwaway server itself -------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not reaped yet, does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


_TESTS_DIR = str(Path(__file__).resolve().parent.parent)

_CHILD = """
import os, sys
sys.path.insert(0, sys.argv[1])
import _pg
server = _pg.start_server(_pg.find_bindir())
pid = int(open(server.data / "postmaster.pid").readline())
print(server.base, pid, server._watchdog.pid, flush=True)
sys.stdin.read()  # until killed
"""


def _wait_exit(pid: int) -> None:
    """Block until process ``pid`` (not our child) has exited: a pidfd polls readable."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        select.select([fd], [], [], GUARD_S)
    finally:
        os.close(fd)


def _killed_run(tests_dir: str) -> tuple[str, int, int]:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, tests_dir],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert child.stdout is not None
        base, postmaster, watchdog = child.stdout.readline().split()
        child.send_signal(signal.SIGKILL)  # the "test run" dies without any cleanup
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()
    _wait_exit(int(watchdog))
    return base.decode(), int(postmaster), int(watchdog)


async def test_a_killed_test_run_still_stops_its_server(
    postgres_server: _pg.PostgresServer,
) -> None:
    base, postmaster, watchdog = await trio.to_thread.run_sync(_killed_run, _TESTS_DIR)
    assert not _pid_alive(watchdog)
    assert not _pid_alive(postmaster), "the server outlived the killed test run"
    assert not await trio.Path(base).exists()


async def test_a_read_only_store_follows_the_writers_change_feed(postgres_url: str) -> None:
    async with open_store(postgres_url) as writer:
        gone = await writer.create_thread(goal="to delete")
        async with (
            open_store(postgres_url, read_only=True, feed_poll_interval=0.01) as reader,
            reader.subscribe() as events,
        ):
            meta = await writer.create_thread(goal="after")
            await writer.delete_thread(gone.id)
            seen: dict[str, str] = {}
            with trio.fail_after(GUARD_S):
                async for event in events:
                    assert event.thread is not None
                    seen[event.thread.id] = event.type
                    if event.change == gone.change + 2:  # the creation, then the deletion
                        break
    assert seen == {meta.id: "updated", gone.id: "deleted"}
    assert meta.change == gone.change + 1


async def test_closing_cancels_a_statement_blocked_by_another_session(postgres_url: str) -> None:
    """Another session holds a thread's row: the append's transaction waits for it. Closing
    the store waits ``shutdown_timeout``, then cancels the blocked statement: the append
    fails whole and the store closes."""
    async with open_store(postgres_url) as store:
        tid = (await store.create_thread(goal="g")).id
    blocker = await trio.to_thread.run_sync(partial(psycopg.connect, postgres_url))
    try:
        await trio.to_thread.run_sync(
            blocker.execute, "SELECT 1 FROM threadstore_threads WHERE id = %s FOR UPDATE", (tid,)
        )
        with trio.fail_after(30):
            async with open_store(postgres_url, shutdown_timeout=0.2) as store:
                await store.get_thread(tid)  # (reads never wait for row locks)
                receipt = store.append_nowait(tid, Item.user_message("blocked"))
        with pytest.raises(AppendFailedError, match="canceling statement"):
            await receipt.durable()
    finally:
        await trio.to_thread.run_sync(blocker.close)
    async with open_store(postgres_url) as store:
        assert [i.kind for i in await store.read_items(tid)] == ["goal"]


async def test_a_group_commit_of_megabytes_commits(postgres_url: str) -> None:
    """400 threads x 20 items of 400 bytes queued at once: one ~3 MB group commit (in
    pipeline mode it hung, the client and the server each waiting for the other)."""
    async with open_store(postgres_url) as store:
        tids = [(await store.create_thread(goal=f"g{n}")).id for n in range(400)]
        receipts = [
            store.append_nowait(tid, *[Item.user_message("x" * 400) for _ in range(20)])
            for tid in tids
        ]
        with trio.fail_after(GUARD_S):
            for receipt in receipts:
                await receipt.durable()
        assert {r.seq for r in receipts} == {21}
        assert len(await store.read_items(tids[-1])) == 21


def test_aio_stores_share_threads_across_stores(postgres_url: str) -> None:
    """Two asyncio stores on one database (as two processes would be): ``append`` looks up a
    thread the other made; ``append_nowait`` (which never blocks) refuses one it has not
    met, and takes it once met; its receipt's seq is known once durable."""
    from threadstore import ThreadNotFoundError, aio

    async def main() -> None:
        async with aio.open_store(postgres_url) as one, aio.open_store(postgres_url) as two:
            tid = (await one.create_thread(goal="g")).id
            assert (await two.append(tid, Item.user_message("from two"))).seq == 2
            other = (await one.create_thread(goal="other")).id
            with pytest.raises(ThreadNotFoundError, match="known to this process yet"):
                two.append_nowait(other, Item.user_message("x"))
            receipt = two.append_nowait(tid, Item.user_message("again"))
            await receipt.durable()
            assert receipt.seq == 3
            await one.flush(tid, 3)  # a seq the other store gave; projected by its owner
            meta = await one.get_thread(tid)
            assert (meta.seq, meta.item_count, meta.preview) == (3, 3, "from two")
            assert [i.seq for i in await one.read_items(other)] == [1]

    asyncio.run(main())


async def test_a_barrier_on_a_thread_another_store_projects(postgres_url: str) -> None:
    """Store A owns the thread (it projected it first); store B's appends are projected by
    A, asked by B: B's barriers return once A made them visible, and B never owns it."""
    async with open_store(postgres_url) as a, open_store(postgres_url) as b:
        tid = (await a.create_thread(goal="g")).id
        await a.append_and_flush(tid, Item.user_message("hello"))
        for n in range(3):
            receipt = await b.append_and_flush(tid, Item.assistant_message(f"b{n}"))
            meta = await b.get_thread(tid)
            assert (meta.seq, meta.last_message) == (receipt.seq, f"b{n}")
        assert _engine(a).ownership.owns(tid)
        assert not _engine(b).ownership.owns(tid)
    # A closes: its threads are free; B's next barrier on the thread takes it over.
    async with open_store(postgres_url) as b:
        receipt = await b.append_and_flush(tid, Item.assistant_message("after"))
        assert (await b.get_thread(tid)).seq == receipt.seq == 6
        assert _engine(b).ownership.owns(tid)


def _engine(store: Store) -> Any:
    return store._engine
