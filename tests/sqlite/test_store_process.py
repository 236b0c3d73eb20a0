"""Process-level behaviour of the store: locks, crashes, Ctrl-C, cancellation, shutdown.

Child processes (``tests/_children/store_child.py``) own a store and report each event as one
line on stdout; the parent reads lines to know where the child is, never sleeps. In-process
concurrency is ordered with ``wait_all_tasks_blocked``, a projector gated on a
``trio.Event``, or a write lock held on the database from outside (a plain SQLite
``BEGIN IMMEDIATE``), which keeps the store's group commit waiting until it is released.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
from collections.abc import AsyncIterator, Iterator, Mapping, MutableMapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio
import trio.testing
from _helpers import GatedProjector, fast_retry
from _process import Child, spawn_child

from threadstore import (
    Item,
    ProjectionFailedError,
    StoredItem,
    StoreFormatError,
    StoreLockedError,
    ThreadExistsError,
    ThreadMeta,
    ThreadNotFoundError,
    ThreadStoreError,
    open_store,
)
from threadstore.sqlite._sql import SCHEMA_VERSION

#: Generous bound on anything a child or a store does; a hang fails instead of blocking CI.
TIMEOUT = 60
#: For a child whose whole life should take well under a second but that may hang.
SHUTDOWN_HANG_TIMEOUT = 30


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "store.db")


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


# -- child processes --------------------------------------------------------------------


class StoreChild(Child):
    """A running ``store_child.py`` and its protocol (see the script's docstring)."""

    async def read_threads(self) -> list[str]:
        """The ids of the threads the child created, once it reports ``ready``."""
        thread_ids = []
        while (line := await self.expect_line()) != "ready":
            word, thread_id = line.split()
            assert word == "thread", line
            thread_ids.append(thread_id)
        return thread_ids

    async def read_acks(self, count: int) -> list[tuple[str, int]]:
        """The next ``count`` acknowledgements (``ack <thread id> <seq>``)."""
        return [_ack(await self.expect_line()) for _ in range(count)]  # noqa: ASYNC910 - reads nothing when count is 0

    async def read_remaining_acks(self) -> list[tuple[str, int]]:
        """Acknowledgements until the child closes stdout."""
        acks = []
        while (line := await self.line()) is not None:
            acks.append(_ack(line))
        return acks

    async def finish(self) -> int:
        """Close the child's stdin (``hold`` mode then closes its store) and wait for it."""
        assert self.proc.stdin is not None
        await self.proc.stdin.aclose()
        return await self.proc.wait()


def _ack(line: str) -> tuple[str, int]:
    word, thread_id, seq = line.split()
    assert word == "ack", line
    return thread_id, int(seq)


@asynccontextmanager
async def spawn(path: str, mode: str, *options: str) -> AsyncIterator[StoreChild]:
    """Run the child on ``path``; on the way out, kill it if it still runs and reap it."""
    async with spawn_child("store_child.py", path, mode, *options, kind=StoreChild) as child:
        yield child


def acked_through(acks: Sequence[tuple[str, int]]) -> dict[str, int]:
    """The highest acknowledged seq per thread; receipts of one thread only move forward."""
    through: dict[str, int] = {}
    for thread_id, seq in acks:
        assert seq > through.get(thread_id, 0), f"receipt seqs of {thread_id} went backwards"
        through[thread_id] = seq
    return through


# -- checks -----------------------------------------------------------------------------


def _texts(items: Sequence[StoredItem], kind: str) -> list[str]:
    return [str(item.data["text"]) for item in items if item.kind == kind]


async def assert_streamed_threads_intact(  # noqa: ASYNC910 - reads only when there is something to check
    store: Any, thread_ids: Sequence[str], acked: Mapping[str, int]
) -> None:
    """Each child thread holds its goal then a gapless, duplicate-free prefix of the stream,
    covering every acknowledged seq, and its metadata reflects exactly that log."""
    assert set(acked) <= set(thread_ids)
    for index, thread_id in enumerate(thread_ids):
        items = await store.read_items(thread_id)
        assert [item.seq for item in items] == list(range(1, len(items) + 1))
        assert len(items) >= acked.get(thread_id, 1), "an acknowledged item is missing"
        assert _texts(items, "goal") == [f"goal {index}"]
        users = _texts(items, "user_message")
        assert users == [f"u{index}-{n}" for n in range(1, len(users) + 1)]
        assistants = _texts(items, "assistant_message")
        assert assistants == [f"a{index}-{n}" for n in range(2, 2 * len(assistants) + 1, 2)]
        meta = await store.get_thread(thread_id)
        assert (meta.seq, meta.item_count) == (len(items), len(items))
        assert meta.preview == (users[0] if users else f"goal {index}")
        assert meta.last_message == (assistants[-1] if assistants else None)


async def projection_lag(path: str) -> dict[str, tuple[int, int]]:
    """Per thread, (metadata seq, last log seq) as a read-only open sees them."""
    lag = {}
    async with open_store(path, read_only=True) as reader:
        page = await reader.list_threads(limit=1000, include_empty=True)
        for meta in page.threads:
            items = await reader.read_items(meta.id)
            lag[meta.id] = (meta.seq, items[-1].seq if items else 0)
    return lag


async def try_open(path: str, **options: Any) -> None:
    async with open_store(path, **options):
        pass


# -- a write lock held from outside: keeps the store's next commit waiting ---------------


def _take_write_lock(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def _release_write_lock(conn: sqlite3.Connection) -> None:
    conn.execute("COMMIT")
    conn.close()


@asynccontextmanager
async def commits_held(path: str) -> AsyncIterator[None]:
    """While inside, the store's writer waits in ``BEGIN IMMEDIATE`` (busy timeout 5 s)."""
    conn = await trio.to_thread.run_sync(_take_write_lock, path)
    try:
        yield
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_release_write_lock, conn)


class YieldingProjector:
    """A custom projector that takes a scheduling round per call and counts items."""

    name = "counter"

    async def project(self, meta: ThreadMeta, items: Sequence[StoredItem]) -> Mapping[str, Any]:
        await trio.lowlevel.checkpoint()
        return {"seen": meta.extra.get(self.name, {}).get("seen", 0) + len(items)}


class FailingProjector:
    """A custom projector with a bug: every call raises."""

    name = "failing"

    def project(self, meta: ThreadMeta, items: Sequence[StoredItem]) -> Mapping[str, Any]:
        raise RuntimeError("projector bug")


FAST_RETRY = fast_retry(2)


async def make_lagging_store(path: str, threads: int = 2) -> list[str]:
    """A closed store whose threads' metadata lags their log (seq 1 of 3: goal only)."""
    stuck = GatedProjector(report="seen")  # its gate never opens: shutdown times out
    async with open_store(path, projectors=[stuck], shutdown_timeout=0.05) as store:
        thread_ids = [(await store.create_thread(goal=f"goal {i}")).id for i in range(threads)]
        for i, tid in enumerate(thread_ids):
            await store.append(tid, Item.user_message(f"u{i}"), Item.assistant_message(f"a{i}"))
    assert await projection_lag(path) == dict.fromkeys(thread_ids, (1, 3))
    return thread_ids


def _event(logs: Sequence[MutableMapping[str, Any]], name: str) -> MutableMapping[str, Any]:
    [entry] = [entry for entry in logs if entry["event"] == name]
    return entry


# -- 1. the writer lock -----------------------------------------------------------------


@pytest.mark.usefixtures("umask_022")
async def test_writer_lock_is_held_by_another_process_and_readers_still_work(path: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with spawn(path, "hold", "--threads", "2") as child:
            thread_ids = await child.read_threads()

            with pytest.raises(StoreLockedError) as info:
                await try_open(path)
            assert f"pid {child.pid} on " in str(info.value)
            assert info.value.holder.startswith(f"pid {child.pid} on ")
            assert info.value.path == path

            async with open_store(path, read_only=True) as reader:
                page = await reader.list_threads()
                assert sorted(meta.id for meta in page.threads) == sorted(thread_ids)
                assert {meta.preview for meta in page.threads} == {"goal 0", "goal 1"}

            for name in (path, path + ".lock", path + "-wal", path + "-shm"):
                assert stat.S_IMODE(os.stat(name).st_mode) == 0o600, name

            assert await child.finish() == 0, await child.stderr()

        async with open_store(path) as store:
            page = await store.list_threads()
            assert sorted(meta.id for meta in page.threads) == sorted(thread_ids)
            await store.append_and_flush(thread_ids[0], Item.user_message("mine now"))
    for name in (path, path + ".lock"):
        assert stat.S_IMODE(os.stat(name).st_mode) == 0o600, name


async def test_second_writer_open_in_the_same_process_is_refused(path: str) -> None:
    async with open_store(path) as store:
        first = await store.create_thread(goal="first")
        with pytest.raises(StoreLockedError, match=f"pid {os.getpid()} on "):
            await try_open(path)
        async with open_store(path, read_only=True) as reader:
            assert (await reader.get_thread(first.id)).preview == "first"
        second = await store.create_thread(goal="second")  # the refused open changed nothing
    async with open_store(path) as store:
        page = await store.list_threads()
        assert {meta.id for meta in page.threads} == {first.id, second.id}


# -- 2. crash recovery ------------------------------------------------------------------


@pytest.mark.parametrize("durability", ["normal", "full"])
async def test_sigkill_loses_nothing_acknowledged_and_open_recovers_metadata(
    path: str, durability: str
) -> None:
    with trio.fail_after(TIMEOUT):
        options = ("--durability", durability, "--threads", "4", "--block-after", "6")
        async with spawn(path, "stream", *options) as child:
            thread_ids = await child.read_threads()
            acks = await child.read_acks(150)
            os.kill(child.pid, signal.SIGKILL)
            acks += await child.read_remaining_acks()
            assert await child.proc.wait() == -signal.SIGKILL
        acked = acked_through(acks)
        assert set(acked) == set(thread_ids)

        # The stalled projector guarantees the metadata lagged the log at the kill.
        lag = await projection_lag(path)
        assert any(meta_seq < last for meta_seq, last in lag.values()), lag

        async with open_store(path, durability=durability) as store:  # type: ignore[arg-type]
            await assert_streamed_threads_intact(store, thread_ids, acked)


# -- 3. reopen without a crash ----------------------------------------------------------


async def test_reopen_shows_the_same_metadata_and_listing(path: str) -> None:
    async def listing(store: Any) -> list[list[ThreadMeta]]:
        pages = []
        for order_by in ("updated_at", "created_at", "recency_at"):
            page = await store.list_threads(limit=1000, order_by=order_by, include_empty=True)
            pages.append(list(page.threads))
        return pages

    async with open_store(path) as store:
        thread_ids = []
        for i in range(60):
            meta = await store.create_thread(goal=f"goal {i}" if i % 3 else None)
            thread_ids.append(meta.id)
            items = [Item.turn_started(f"t{i}"), Item.user_message(f"question {i}")]
            items += [Item.assistant_message(f"answer {i}"), Item.token_usage(i, 2 * i)]
            items.append(Item.error("boom") if i % 5 == 0 else Item.turn_completed(f"t{i}"))
            for item in items[: 1 + i % len(items)]:
                store.append_nowait(meta.id, item)
            if i % 7 == 0:
                await store.update_thread(meta.id, title=f"title {i}", extra={"n": i})
            if i % 11 == 0:
                await store.archive_thread(meta.id)
        await store.flush_all()
        before = {tid: await store.get_thread(tid) for tid in thread_ids}
        listed_before = await listing(store)

    async with open_store(path) as store:
        after = {tid: await store.get_thread(tid) for tid in thread_ids}
        assert after == before
        assert await listing(store) == listed_before
        for meta in after.values():
            assert meta.seq == meta.item_count == len(await store.read_items(meta.id))


# -- 4. recovery of metadata left behind by a timed-out shutdown -------------------------


async def test_open_reprojects_metadata_a_timed_out_shutdown_left_behind(path: str) -> None:
    stuck = GatedProjector(report="seen")  # its gate never opens
    with structlog.testing.capture_logs() as logs:
        async with open_store(path, projectors=[stuck], shutdown_timeout=0.2) as store:
            thread_ids = [(await store.create_thread(goal=f"goal {i}")).id for i in range(3)]
            for i, tid in enumerate(thread_ids):
                for n in range(4):
                    await store.append(
                        tid, Item.user_message(f"u{i}-{n}"), Item.assistant_message(f"a{i}-{n}")
                    )
    closed = _event(logs, "store.closed")
    assert closed["timed_out"] is True
    assert closed["unprojected_threads"] == 3
    assert len(stuck.calls) >= 3

    lag = await projection_lag(path)
    assert lag == dict.fromkeys(thread_ids, (1, 9))

    with structlog.testing.capture_logs() as logs:
        async with open_store(path) as store:
            assert _event(logs, "store.opened")["recovered"] == 3
            for i, tid in enumerate(thread_ids):  # visible as soon as open_store yields
                meta = await store.get_thread(tid)
                assert (meta.seq, meta.item_count) == (9, 9)
                assert meta.preview == f"u{i}-0"
                assert meta.last_message == f"a{i}-3"
                assert "gated" not in meta.extra


async def test_a_projector_failing_during_recovery_does_not_lock_users_out(path: str) -> None:
    thread_ids = await make_lagging_store(path)
    with trio.fail_after(TIMEOUT):
        async with open_store(path, projectors=[FailingProjector()], retry=FAST_RETRY) as store:
            for i, tid in enumerate(thread_ids):
                assert [item.seq for item in await store.read_items(tid)] == [1, 2, 3]
                receipt = await store.append(tid, Item.user_message(f"more {i}"))
                assert receipt.seq == 4
                with pytest.raises(ProjectionFailedError):
                    await store.flush(tid)
    async with open_store(path) as store:  # without the buggy projector, all catches up
        for i, tid in enumerate(thread_ids):
            meta = await store.get_thread(tid)
            assert (meta.seq, meta.item_count, meta.preview) == (4, 4, f"u{i}")


async def test_open_cancelled_during_recovery_releases_the_store(path: str) -> None:
    thread_ids = await make_lagging_store(path)
    stuck = GatedProjector(report="seen")
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def opener() -> None:
                with scope:
                    await try_open(path, projectors=[stuck], shutdown_timeout=0.05)
                    pytest.fail("open_store yielded before recovery finished")

            nursery.start_soon(opener)
            await stuck.wait_calls(1)  # recovery is re-projecting a lagging thread
            scope.cancel()
        assert scope.cancelled_caught
        async with open_store(path) as store:  # lock released; recovery runs again
            for tid in thread_ids:
                assert (await store.get_thread(tid)).seq == 3


# -- 5. cancelled callers ---------------------------------------------------------------


async def test_cancelled_append_is_still_stored_and_the_thread_keeps_working(path: str) -> None:
    async with open_store(path) as store:
        tid = (await store.create_thread()).id
        returned = []
        async with commits_held(path), trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def appender() -> None:
                with scope:
                    receipt = await store.append(
                        tid, Item.user_message("hello"), Item.assistant_message("hi")
                    )
                    returned.append(receipt)

            nursery.start_soon(appender)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
        assert scope.cancelled_caught
        assert returned == []

        receipt = await store.append_and_flush(tid, Item.user_message("again"))
        assert receipt.seq == 3
        items = await store.read_items(tid)
        assert [(item.seq, item.data["text"]) for item in items] == [
            (1, "hello"),
            (2, "hi"),
            (3, "again"),
        ]
        meta = await store.get_thread(tid)
        assert (meta.seq, meta.item_count) == (3, 3)
        assert (meta.preview, meta.last_message) == ("hello", "hi")


async def test_cancelled_append_and_flush_leaves_a_working_actor(path: str) -> None:
    projector = GatedProjector(report="seen")
    async with open_store(path, projectors=[projector]) as store:
        tid = (await store.create_thread()).id
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(store.append_and_flush, tid, Item.user_message("first"))
                await projector.wait_calls(1)  # the append is durable; projection waits
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()
        assert scope.cancelled_caught
        assert [item.seq for item in await store.read_items(tid)] == [1]
        assert (await store.get_thread(tid)).seq == 0

        projector.open()
        receipt = await store.append_and_flush(tid, Item.assistant_message("second"))
        assert receipt.seq == 2
        meta = await store.get_thread(tid)
        assert (meta.seq, meta.item_count) == (2, 2)
        assert (meta.preview, meta.last_message) == ("first", "second")
        assert meta.extra["gated"] == {"seen": 2}
        await store.flush(tid)


async def test_create_thread_cancelled_while_committing_creates_it_whole(path: str) -> None:
    async with open_store(path) as store:
        async with commits_held(path), trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def creator() -> None:
                with scope:
                    await store.create_thread(goal="the goal", title="the title", thread_id="t-1")

            nursery.start_soon(creator)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
        assert scope.cancelled_caught
        with pytest.raises(ThreadExistsError):
            await store.create_thread(thread_id="t-1")
        await store.flush("t-1")  # the creation commits now that the write lock is free

        meta = await store.get_thread("t-1")
        assert (meta.goal, meta.title, meta.preview) == ("the goal", "the title", "the goal")
        assert (meta.seq, meta.item_count) == (2, 2)
        items = await store.read_items("t-1")
        assert [(item.seq, item.kind) for item in items] == [(1, "goal"), (2, "title")]
        page = await store.list_threads()
        assert [meta.id for meta in page.threads] == ["t-1"]

        receipt = await store.append_and_flush("t-1", Item.user_message("go"))
        assert receipt.seq == 3
        assert (await store.get_thread("t-1")).item_count == 3


async def test_create_thread_in_a_cancelled_scope_is_whole_or_absent(path: str) -> None:
    async with open_store(path) as store:
        with trio.CancelScope() as scope:
            scope.cancel()
            await store.create_thread(goal="g", thread_id="t-2")
        assert scope.cancelled_caught
        try:
            await store.flush("t-2")  # waits for the creation's commit, if it was queued
        except ThreadNotFoundError:
            with pytest.raises(ThreadNotFoundError):
                await store.read_items("t-2")
            await store.create_thread(goal="g", thread_id="t-2")  # the id is free
        meta = await store.get_thread("t-2")
        assert (meta.goal, meta.seq, meta.item_count) == ("g", 1, 1)
        assert [item.kind for item in await store.read_items("t-2")] == ["goal"]
        assert (await store.append_and_flush("t-2", Item.user_message("x"))).seq == 2


async def test_cancelling_a_scope_around_the_store_commits_and_projects_what_was_accepted(
    path: str,
) -> None:
    """``with trio.move_on_after(...): async with open_store(...)`` is a normal way out.

    In a child process: a hang in the (shielded) shutdown fails the test instead of the run.
    """
    with trio.fail_after(SHUTDOWN_HANG_TIMEOUT):
        async with spawn(path, "cancel", "--threads", "2", "--appends", "25") as child:
            thread_ids = await child.read_threads()
            acks = []
            while (line := await child.expect_line()) != "closed":
                acks.append(_ack(line))
            assert await child.proc.wait() == 0, await child.stderr()
    accepted = acked_through(acks)
    assert accepted == {thread_ids[0]: 38, thread_ids[1]: 38}  # goal + 25 rounds (1 or 2 items)

    async with open_store(path, read_only=True) as reader:  # drained on the way out
        await assert_streamed_threads_intact(reader, thread_ids, accepted)


# -- 6. Ctrl-C --------------------------------------------------------------------------


@pytest.mark.parametrize("stalled", [False, True], ids=["projecting", "projector-stalled"])
async def test_ctrl_c_exits_and_loses_nothing_acknowledged(path: str, stalled: bool) -> None:
    # KeyboardInterrupt at checkpoints: with trio's default, an ill-timed Ctrl-C can land
    # inside trio's own scheduler (TrioInternalError); the crash harness covers that case
    # (SIGKILL at any moment) for what was acknowledged.
    options = ["--threads", "3", "--shutdown-timeout", "1", "--ki-at-checkpoints"]
    if stalled:
        options += ["--block-after", "5"]
    with trio.fail_after(TIMEOUT):
        async with spawn(path, "stream", *options) as child:
            thread_ids = await child.read_threads()
            acks = await child.read_acks(120)
            child.proc.send_signal(signal.SIGINT)
            acks += await child.read_remaining_acks()
            code = await child.proc.wait()
            stderr = await child.stderr()
        assert code != 0, stderr
        assert "KeyboardInterrupt" in stderr, stderr
        acked = acked_through(acks)

        async with open_store(path) as store:  # the child released the lock
            await assert_streamed_threads_intact(store, thread_ids, acked)


@pytest.mark.parametrize(
    "error", [ThreadNotFoundError("missing"), KeyboardInterrupt()], ids=lambda e: type(e).__name__
)
async def test_exceptions_leave_the_block_unwrapped(path: str, error: BaseException) -> None:
    """`except KeyboardInterrupt` / `except ThreadStoreError` around the block must work."""

    async def leave_with_error() -> None:
        async with open_store(path) as store:
            await store.create_thread(goal="g")
            raise error

    with pytest.raises(BaseException) as info:  # noqa: PT011 - the exact type is the point
        await leave_with_error()
    assert info.value is error
    if isinstance(error, ThreadStoreError):
        with pytest.raises(ThreadNotFoundError):
            async with open_store(path) as store:
                await store.get_thread("missing")


# -- 7. shutdown drains projection ------------------------------------------------------


async def test_leaving_the_block_commits_and_projects_everything_accepted(path: str) -> None:
    with structlog.testing.capture_logs() as logs:
        async with open_store(path, projectors=[YieldingProjector()]) as store:
            thread_ids = [(await store.create_thread()).id for _ in range(20)]
            for n in range(40):
                for tid in thread_ids:
                    store.append_nowait(tid, Item.user_message(f"u{n}"))
                    if n % 4 == 0:
                        store.append_nowait(tid, Item.assistant_message(f"a{n}"))
            last = await store.append(thread_ids[0], Item.assistant_message("last"))
    assert last.seq == 51
    closed = _event(logs, "store.closed")
    assert (closed["unprojected_threads"], closed["timed_out"]) == (0, False)

    async with open_store(path, read_only=True) as reader:
        for tid in thread_ids:
            count = 51 if tid == thread_ids[0] else 50
            meta = await reader.get_thread(tid)
            assert (meta.seq, meta.item_count) == (count, count)
            assert meta.extra["counter"] == {"seen": count}
            assert len(await reader.read_items(tid)) == count
    with structlog.testing.capture_logs() as logs:
        await try_open(path)
    assert _event(logs, "store.opened")["recovered"] == 0


# -- 8. a file from a newer version -----------------------------------------------------


def _set_user_version(path: str, version: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(f"PRAGMA user_version = {version}")
    finally:
        conn.close()


def _files(path: str) -> dict[str, bytes]:
    directory = Path(path).parent
    return {
        p.name: p.read_bytes() for p in sorted(directory.iterdir()) if not p.name.endswith(".lock")
    }


async def test_newer_schema_is_refused_and_left_untouched(path: str) -> None:
    async with open_store(path) as store:
        await store.create_thread(goal="from the future")
    await trio.to_thread.run_sync(_set_user_version, path, 99)
    before = await trio.to_thread.run_sync(_files, path)

    for read_only in (False, True, False):
        with pytest.raises(StoreFormatError, match="newer"):
            await try_open(path, read_only=read_only)
    assert await trio.to_thread.run_sync(_files, path) == before

    await trio.to_thread.run_sync(_set_user_version, path, SCHEMA_VERSION)
    async with open_store(path) as store:  # the refused opens left no lock behind
        page = await store.list_threads()
        assert [meta.preview for meta in page.threads] == ["from the future"]
