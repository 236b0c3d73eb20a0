"""The writer thread: group commit, the deferred (projection) lane, failure isolation."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from threadstore._config import Lanes
from threadstore.sqlite import _sql as sql
from threadstore.sqlite._writer import Batch, Job, Writer, _nothing

WAKE_GROUP = Lanes().wake_group
SOON_GROUP = Lanes().soon_group
SOON_SHARE = Lanes().soon_share


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "w.db")


def _connect(path: str) -> Callable[[], sqlite3.Connection]:
    def connect() -> sqlite3.Connection:
        conn = sql.connect(path, durability="normal")
        sql.ensure_schema(conn)
        return conn

    return connect


@pytest.fixture
async def writer(db: str) -> AsyncIterator[Writer]:
    """A started writer on a fresh store file, closed after the test."""
    writer = Writer(_connect(db))
    await writer.start()
    try:
        yield writer
    finally:
        await writer.aclose()


class Recorder:
    """Jobs that record the order they ran in; ``gate`` holds the writer thread."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.gate = threading.Event()
        self.entered = threading.Event()

    def job(self, name: str, *, log: bool = True) -> Job[None]:
        def fn(conn: sqlite3.Connection) -> None:
            self.ran.append(name)

        return Job(fn, log=log)

    def blocking(self, name: str) -> Job[None]:
        def fn(conn: sqlite3.Connection) -> None:
            self.entered.set()
            self.gate.wait(timeout=30)
            self.ran.append(name)

        return Job(fn, log=True)


async def _entered(recorder: Recorder) -> None:
    await trio.to_thread.run_sync(recorder.entered.wait, 30)


async def _held(writer: Writer, name: str = "hold") -> Recorder:
    """A recorder whose blocking job ``name`` holds the writer thread (until ``gate``)."""
    rec = Recorder()
    writer.submit(rec.blocking(name))
    await _entered(rec)
    return rec


async def test_queued_jobs_share_one_transaction(writer: Writer) -> None:
    rec = Recorder()
    first = rec.blocking("first")
    writer.submit(first)
    await _entered(rec)
    jobs = [rec.job(f"j{i}") for i in range(50)]
    for job in jobs:
        writer.submit(job)
    rec.gate.set()
    for job in jobs:
        await job.wait()
    assert rec.ran == ["first"] + [f"j{i}" for i in range(50)]
    assert (writer.commits, writer.log_commits) == (2, 2)  # 51 jobs, 2 commits


async def test_a_first_job_goes_ahead_and_waiters_wake_group_by_group(writer: Writer) -> None:
    """``first`` puts a job ahead of those queued (in the same transaction); the waiters of
    one transaction wake in groups of WAKE_GROUP, in queue order, a scheduler round apart."""
    rec = await _held(writer)
    jobs = [rec.job(f"j{i}") for i in range(2 * WAKE_GROUP + 8)]
    for job in jobs:
        writer.submit(job)
    urgent = rec.job("first")
    writer.submit(urgent, first=True)
    woke: list[str] = []

    async def waiter(name: str, job: Job[None]) -> None:
        await job.wait()
        woke.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter, "first", urgent)
        for i, job in enumerate(jobs):
            nursery.start_soon(waiter, f"j{i}", job)
        await trio.testing.wait_all_tasks_blocked()
        rec.gate.set()
    assert rec.ran == ["hold", "first"] + [f"j{i}" for i in range(len(jobs))]
    assert writer.commits == 2
    assert woke[0] == "first"
    groups = [int(name[1:]) // WAKE_GROUP for name in woke[1:]]
    assert groups == sorted(groups)  # a later group never wakes before an earlier one


async def test_results_of_later_transactions_never_overtake_earlier_ones(writer: Writer) -> None:
    """Two transactions' results arrive before trio gets to either (the writer thread hands
    them over back to back): every group of the first is delivered before the second's."""
    order: list[str] = []

    def recorder(name: str) -> Callable[[Job[None]], None]:
        return lambda job: order.append(name)

    def transaction(name: str) -> list[tuple[Batch, list[Job[Any]]]]:
        groups: list[tuple[Batch, list[Job[Any]]]] = []
        for g in range(2):
            batch, jobs = Batch(), []
            for j in range(2):
                job: Job[None] = Job(_nothing, on_done=recorder(f"{name}{g}.{j}"))
                job.batch = batch
                jobs.append(job)
            groups.append((batch, jobs))
        return groups

    first, second = transaction("a"), transaction("b")
    writer._arrived(first)  # (what the writer thread schedules, one after the other)
    writer._arrived(second)
    with trio.fail_after(5):
        for batch, _ in first + second:
            await batch.done.wait()
    await trio.lowlevel.checkpoint()
    assert order == ["a0.0", "a0.1", "a1.0", "a1.1", "b0.0", "b0.1", "b1.0", "b1.1"]


@pytest.mark.parametrize("expedite", [False, True], ids=["deferred", "expedited"])
async def test_deferred_jobs_wait_behind_log_appends(writer: Writer, expedite: bool) -> None:
    """A deferred job commits after an append queued later; expedited, it goes in the same
    transaction as that append, else in one of its own once the log has gone quiet."""
    rec = await _held(writer, "append-1")
    projection = rec.job("projection", log=False)
    writer.submit(projection, defer=True)
    if expedite:
        writer.expedite()
    later = rec.job("append-2")
    writer.submit(later)
    rec.gate.set()
    await projection.wait()
    await later.wait()
    # The append queued after the projection still commits first.
    assert rec.ran == ["append-1", "append-2", "projection"]
    assert writer.commits == (2 if expedite else 3)


async def test_an_idle_writer_commits_deferred_jobs_without_being_asked(writer: Writer) -> None:
    rec = Recorder()
    projection = rec.job("projection", log=False)
    writer.submit(projection, defer=True)
    with trio.fail_after(30):
        await projection.wait()
    assert rec.ran == ["projection"]


async def test_closing_commits_the_deferred_lane(db: str) -> None:
    rec = Recorder()
    writer = Writer(_connect(db))
    await writer.start()
    writer.submit(rec.blocking("append"))
    await _entered(rec)
    projection = rec.job("projection", log=False)
    writer.submit(projection, defer=True)
    rec.gate.set()
    await writer.aclose()
    assert rec.ran == ["append", "projection"]
    assert projection.batch is not None
    assert projection.batch.done.is_set()


def _transaction_of(writer: Writer, seen: dict[str, int], name: str, *, log: bool) -> Job[None]:
    """A job that records which transaction (counted in commits before it) ran it."""

    def fn(conn: sqlite3.Connection) -> None:
        seen[name] = writer.commits

    return Job(fn, log=log)


async def test_soon_jobs_go_one_group_per_transaction(writer: Writer) -> None:
    """Fifty urgent metadata writes do not make one long transaction: each takes one group of
    SOON_GROUP, the first with the appends queued meanwhile."""
    rec = await _held(writer)
    seen: dict[str, int] = {}
    soon = [_transaction_of(writer, seen, f"s{i}", log=False) for i in range(2 * SOON_GROUP + 1)]
    for job in soon:
        writer.submit(job, soon=True)
    append = _transaction_of(writer, seen, "append", log=True)
    writer.submit(append)
    rec.gate.set()
    with trio.fail_after(30):
        for job in [*soon, append]:
            await job.wait()
    assert seen["append"] == 1
    assert [seen[f"s{i}"] for i in range(len(soon))] == [1] * SOON_GROUP + [2] * SOON_GROUP + [3]


async def test_a_long_soon_lane_drains_a_share_per_transaction(writer: Writer) -> None:
    """A steady stream of urgent writes (one per new thread, say) must not back up behind a
    fixed group per transaction: a lane of n groups gives up ceil(n / SOON_SHARE) of them."""
    rec = await _held(writer)
    seen: dict[str, int] = {}
    groups = 2 * SOON_SHARE + 1
    soon = [_transaction_of(writer, seen, f"s{i}", log=False) for i in range(groups * SOON_GROUP)]
    for job in soon:
        writer.submit(job, soon=True)
    rec.gate.set()
    with trio.fail_after(30):
        for job in soon:
            await job.wait()
    per_transaction = [
        list(seen.values()).count(t) // SOON_GROUP for t in sorted(set(seen.values()))
    ]
    assert per_transaction[0] == 3  # ceil(17 / 8)
    assert sum(per_transaction) == groups
    assert len(per_transaction) < groups


async def test_expedite_and_drain_send_every_soon_job_at_once(writer: Writer) -> None:
    rec = await _held(writer)
    seen: dict[str, int] = {}
    soon = [_transaction_of(writer, seen, f"s{i}", log=False) for i in range(3 * SOON_GROUP)]
    for job in soon:
        writer.submit(job, soon=True)
    rec.gate.set()
    with trio.fail_after(30):
        await writer.drain()  # expedites: the soon lane goes whole
    assert all(job.batch is not None and job.batch.done.is_set() for job in soon)
    assert set(seen.values()) == {1}


async def test_a_failing_job_rolls_back_alone(writer: Writer) -> None:

    def insert(name: str) -> Callable[[sqlite3.Connection], None]:
        def fn(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO store_info (key, value) VALUES (?, ?)", (name, b"x"))

        return fn

    def boom(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO store_info (key, value) VALUES ('half', x'00')")
        raise ValueError("boom")

    good, bad, also_good = Job(insert("a")), Job(boom), Job(insert("b"))
    for job in (good, bad, also_good):
        writer.submit(job)
    await good.wait()
    with pytest.raises(ValueError, match="boom"):
        await bad.wait()
    await also_good.wait()

    def keys(conn: sqlite3.Connection) -> list[str]:
        return [k for (k,) in conn.execute("SELECT key FROM store_info ORDER BY key")]

    assert await writer.run(keys) == ["a", "b", "cursor_secret"]
