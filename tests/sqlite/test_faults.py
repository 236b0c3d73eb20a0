"""Injected SQLite failures (``threadstore.testing.Faults``): what a user sees, and recovery.

Each test opens a real store with a seeded fault injector. Faults hit the writer thread's
transactions: statement faults (``busy``, ``ioerr``, ``full``) fail one job, ``commit`` faults
fail a whole group commit, and ``fill_disk`` makes SQLite itself report ``SQLITE_FULL``.
The checks are what the contract promises: an append that raised ``AppendFailedError``
stored none of its items and every acknowledged one is kept, seqs stay dense, projection
failures are retried and reported only to the barriers whose covering attempt failed for
good, and once faults stop every thread's metadata equals the fold of its log.

Retries use no backoff (``base_delay=0``) and the store's periodic retry is off, so nothing
here depends on time. Where the order of steps matters, ``GatedFaults`` stops chosen jobs in
the writer thread until the test decides their fate; a ``trio.fail_after`` guard only turns a
bug into a failure instead of a hang.
"""

from __future__ import annotations

import math
import queue
import random
import sqlite3
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Final

import attrs
import pytest
import trio
import trio.testing
from _helpers import no_backoff

from threadstore import (
    AppendFailedError,
    Item,
    ProjectionFailedError,
    Receipt,
    Store,
    StoredItem,
    ThreadMeta,
    WriteFailedError,
    open_store,
)
from threadstore._items import datetime_to_us
from threadstore._meta import Patch, Projection
from threadstore.testing import FAULT_KINDS, FaultKind, Faults, Target

#: Guard against a hung barrier; never a timing assertion.
GUARD_S: Final = 10

#: What sqlite3 says for each kind (the injected errors carry the real messages).
MESSAGES: Final[dict[FaultKind, str]] = {
    "busy": "database is locked",
    "ioerr": "disk I/O error",
    "full": "database or disk is full",
    "commit": "disk I/O error",
}


LOG: Final[tuple[Target, ...]] = ("log",)
PROJECTION: Final[tuple[Target, ...]] = ("projection",)


def injected_error(kind: FaultKind) -> sqlite3.OperationalError:
    """An error like the one ``Faults`` raises for ``kind``."""
    error = sqlite3.OperationalError(f"{MESSAGES[kind]} (injected by the test)")
    error.sqlite_errorcode = {"busy": 5, "ioerr": 10, "full": 13, "commit": 10}[kind]
    return error


class GatedFaults(Faults):
    """Faults whose jobs of the ``gated`` targets stop in the writer thread for a decision.

    Each gated job announces its target (see :meth:`arrival`) and blocks the writer thread
    until :meth:`decide` lets it through (``None``) or fails it with an injected fault.
    Announcements travel through the trio token like the writer's batch results, so when
    the test sees one, the results of every earlier transaction have been delivered. If the
    writer runs a transaction's jobs again after a failed first pass (without committing in
    between), each job meets the fate decided for it in that pass, without a new announcement.
    """

    def __init__(
        self,
        token: trio.lowlevel.TrioToken,
        *,
        probability: float = 0.0,
        kinds: Iterable[FaultKind] = FAULT_KINDS,
        targets: Collection[Target] = ("log", "projection"),
    ) -> None:
        super().__init__(probability=probability, kinds=kinds, targets=targets)
        self.gated: frozenset[Target] = frozenset()
        self._token = token
        self._send, self._arrivals = trio.open_memory_channel[Target](math.inf)
        self._decisions: queue.SimpleQueue[FaultKind | None] = queue.SimpleQueue()
        self._index = 0  # of the next job in the current pass over a transaction's jobs
        self._decided: dict[int, FaultKind | None] = {}  # in the current pass, by index
        self._replay: dict[int, FaultKind | None] = {}  # from a pass that did not commit

    def before_transaction(self, conn: sqlite3.Connection) -> None:
        super().before_transaction(conn)
        self._index = 0
        self._replay, self._decided = self._decided, {}

    def before_job(self, target: Target) -> None:
        index = self._index
        self._index += 1
        if index in self._replay:
            decision = self._replay[index]
        elif target in self.gated:
            self._token.run_sync_soon(self._send.send_nowait, target)
            try:
                decision = self._decisions.get(timeout=GUARD_S)
            except queue.Empty:
                raise RuntimeError("the test never decided the fate of a gated job") from None
            if decision is not None:
                self.injected[decision] += 1
        else:
            super().before_job(target)
            return
        self._decided[index] = decision
        if decision is not None:
            raise injected_error(decision)

    def before_commit(self, targets: Collection[Target]) -> None:
        self._decided = {}  # this pass reached its COMMIT: nothing to replay
        super().before_commit(targets)

    async def arrival(self) -> Target:
        """The target of the next job that stopped at the gate."""
        with trio.fail_after(GUARD_S):
            return await self._arrivals.receive()

    def decide(self, fail: FaultKind | None) -> None:
        """Let the waiting gated job through (``None``) or fail it with a ``fail`` fault."""
        self._decisions.put(fail)


# -- a workload whose items say which call they belong to ---------------------------------


def call_items(call: str, size: int, rng: random.Random) -> tuple[Item, ...]:
    """``size`` items of assorted built-in kinds, each marked with its call and position."""
    makers = [
        lambda k: Item.user_message(f"{call} says {k}"),
        lambda k: Item.assistant_message(f"answer {k} to {call}"),
        lambda k: Item.turn_started(f"{call}/{k}"),
        lambda k: Item.turn_completed(f"{call}/{k}"),
        lambda k: Item.error(f"{call} failed at {k}"),
        lambda k: Item.token_usage(k + 1, 2 * k),
        lambda k: Item.tool_call("search", {"q": call}, f"{call}/{k}"),
        lambda k: Item.goal(f"goal of {call}"),
    ]
    items = []
    for k in range(size):
        item = rng.choice(makers)(k)
        items.append(Item(kind=item.kind, data={**item.data, "call": call, "part": k}))
    return tuple(items)


def call_of(item: Item) -> str:
    """The call an item came from: its marker, or its text for ``update_thread`` titles."""
    if "call" in item.data:
        return str(item.data["call"])
    return f"{item.kind}:{item.data['text']}"


@attrs.define
class Ledger:
    """What the test knows of its calls: their thread and items, and how each one ended."""

    thread: dict[str, str] = attrs.Factory(dict)
    items: dict[str, tuple[Item, ...]] = attrs.Factory(dict)
    acked: set[str] = attrs.Factory(set)
    failed: dict[str, AppendFailedError] = attrs.Factory(dict)
    pending: dict[str, Receipt] = attrs.Factory(dict)

    def add(self, thread_id: str, call: str, items: tuple[Item, ...]) -> tuple[Item, ...]:
        assert call not in self.items
        self.thread[call] = thread_id
        self.items[call] = items
        return items

    def next_seq(self, thread_id: str) -> int:
        """The seq the next append to ``thread_id`` gets when nothing is in flight."""
        return 1 + sum(len(self.items[c]) for c in self.acked if self.thread[c] == thread_id)

    async def resolve(self) -> None:
        """Wait for every ``append_nowait`` receipt and file it as acknowledged or failed."""
        for call, receipt in sorted(self.pending.items()):
            try:
                with trio.fail_after(GUARD_S):
                    await receipt.durable()
            except AppendFailedError as exc:
                self.failed[call] = exc
            else:
                self.acked.add(call)
        self.pending.clear()
        await trio.lowlevel.checkpoint()

    def assert_log(self, thread_id: str, items: Sequence[StoredItem]) -> None:
        """The log is dense and holds exactly the acknowledged calls, each whole."""
        assert [item.seq for item in items] == list(range(1, len(items) + 1))
        blocks: list[tuple[str, list[Item]]] = []
        for item in items:
            call = call_of(item)
            if not blocks or blocks[-1][0] != call:
                blocks.append((call, []))
            blocks[-1][1].append(Item(kind=item.kind, data=item.data))
        calls = [call for call, _ in blocks]
        assert len(calls) == len(set(calls)), "a call's items are split up in the log"
        for call, stored in blocks:
            assert tuple(stored) == self.items[call], f"{call} stored partially or altered"
        assert not set(calls) & set(self.failed), "an append that failed stored items"
        assert set(calls) == {c for c in self.acked if self.thread[c] == thread_id}


def fold(meta: ThreadMeta, items: Sequence[StoredItem]) -> ThreadMeta:
    """The metadata the built-in projection derives from ``items`` (the archived flag aside)."""
    projection = Projection.new(meta.id, datetime_to_us(meta.created_at))
    if items:
        projection = projection.apply(Patch.from_items(items))
    return attrs.evolve(projection.meta, archived_at=meta.archived_at)


async def assert_converged(store: Store, thread_ids: Iterable[str]) -> None:
    """Every thread's visible metadata is the fold of its whole (dense) log."""
    for tid in thread_ids:
        items = await store.read_items(tid)
        assert [item.seq for item in items] == list(range(1, len(items) + 1))
        meta = await store.get_thread(tid)
        assert meta == fold(meta, items)
        assert meta.seq == len(items)
    await trio.lowlevel.checkpoint()


async def try_append(
    store: Store, thread_id: str, items: Sequence[Item]
) -> Receipt | AppendFailedError:
    """``append``'s receipt, or the AppendFailedError it raised."""
    try:
        return await store.append(thread_id, *items)
    except AppendFailedError as exc:
        await trio.lowlevel.checkpoint()
        return exc


async def flush_all(store: Store) -> None:
    with trio.fail_after(GUARD_S):
        await store.flush_all()


def assert_injected_cause(error: BaseException, kind: FaultKind) -> None:
    cause = error.__cause__
    assert isinstance(cause, sqlite3.OperationalError)
    assert MESSAGES[kind] in str(cause)
    assert "injected" in str(cause)


# -- log commits --------------------------------------------------------------------------


async def test_failed_log_commits_store_nothing_and_later_appends_work(tmp_path: Path) -> None:
    faults = Faults(seed=7, probability=0.4, kinds=("commit",), targets=LOG)
    faults.enabled = False
    ledger = Ledger()
    rng = random.Random(7)
    async with open_store(
        tmp_path / "s.db", faults=faults, retry=no_backoff(3), retry_interval=None
    ) as store:
        tids = [(await store.create_thread(thread_id=f"t{n}")).id for n in range(2)]
        faults.enabled = True
        for n in range(40):
            tid, call = tids[n % 2], f"c{n}"
            items = ledger.add(tid, call, call_items(call, 1 + n % 3, rng))
            first = ledger.next_seq(tid)
            outcome = await try_append(store, tid, items)
            if isinstance(outcome, AppendFailedError):
                ledger.failed[call] = outcome
                assert (outcome.thread_id, outcome.seq) == (tid, first)
                assert f"(seq {first}) failed: disk I/O error" in str(outcome)
                assert_injected_cause(outcome, "commit")
            else:
                assert isinstance(outcome, Receipt)
                ledger.acked.add(call)
                assert (outcome.thread_id, outcome.seq) == (tid, first + len(items) - 1)
        # The seed makes both outcomes happen; each failure is one injected commit fault.
        assert len(ledger.failed) >= 5
        assert len(ledger.acked) >= 5
        assert faults.injected == Counter({"commit": len(ledger.failed)})

        # A burst of queued appends whose group commits fail: every one fails, none is stored.
        faults.probability = 1.0
        for n in range(6):
            tid, call = tids[n % 2], f"burst{n}"
            ledger.pending[call] = store.append_nowait(
                tid, *ledger.add(tid, call, call_items(call, 2, rng))
            )
        await ledger.resolve()
        assert {f"burst{n}" for n in range(6)} <= set(ledger.failed)

        faults.stop()
        for n in range(4):
            tid, call = tids[n % 2], f"after{n}"
            items = ledger.add(tid, call, call_items(call, 2, rng))
            first = ledger.next_seq(tid)
            receipt = await store.append(tid, *items)
            assert receipt.seq == first + 1  # dense: failed seqs were handed out again
            ledger.acked.add(call)
        await flush_all(store)
        for tid in tids:
            ledger.assert_log(tid, await store.read_items(tid))
        await assert_converged(store, tids)
        stats = store.statistics()
        assert stats.items_appended >= sum(len(ledger.items[c]) for c in ledger.acked)
        assert stats.lagging_threads == 0

    async with open_store(tmp_path / "s.db") as store:  # and all of it survives a reopen
        for tid in tids:
            ledger.assert_log(tid, await store.read_items(tid))
        await assert_converged(store, tids)


#: Fixed seeds for the per-kind tests; with these, every kind fails some appends or attempts.
KIND_SEEDS: Final[dict[FaultKind, int]] = {"busy": 1, "ioerr": 2, "full": 3, "commit": 4}


@pytest.mark.parametrize("kind", FAULT_KINDS)
async def test_log_fault_fails_only_the_affected_appends(tmp_path: Path, kind: FaultKind) -> None:
    faults = Faults(seed=KIND_SEEDS[kind], probability=0.5, kinds=(kind,), targets=LOG)
    faults.enabled = False
    ledger = Ledger()
    rng = random.Random(kind)
    # A failed COMMIT fails every job of its transaction, so a metadata write that shares one
    # with a faulted append fails that attempt too (how often depends on timing: on a slow
    # host the deferred lane's interval elapses mid-loop). It is retried; enough attempts
    # that it always gets through, so the check below is about log faults alone.
    async with open_store(
        tmp_path / "s.db", faults=faults, retry=no_backoff(30), retry_interval=None
    ) as store:
        tid = (await store.create_thread(thread_id="t", goal="keep going")).id
        ledger.add(tid, "goal:keep going", (Item.goal("keep going"),))
        ledger.acked.add("goal:keep going")
        faults.enabled = True
        for n in range(30):
            call = f"c{n}"
            items = ledger.add(tid, call, call_items(call, 2, rng))
            first = ledger.next_seq(tid)
            outcome = await try_append(store, tid, items)
            if isinstance(outcome, AppendFailedError):
                ledger.failed[call] = outcome
                assert outcome.seq == first
                assert MESSAGES[kind] in str(outcome)
                assert_injected_cause(outcome, kind)
            else:
                assert isinstance(outcome, Receipt)
                ledger.acked.add(call)
                assert outcome.seq == first + 1
            # Nothing partial at any point: the log holds exactly the acknowledged calls.
            ledger.assert_log(tid, await store.read_items(tid))

        assert ledger.failed
        assert len(ledger.acked) >= 5
        # Every failure was injected (the writer may get past some faults by itself).
        assert set(faults.injected) == {kind}
        assert faults.injected[kind] >= len(ledger.failed)
        # A create_thread is a log write too; it fails whole and the id stays free.
        faults.probability = 1.0
        with pytest.raises(AppendFailedError, match=MESSAGES[kind]):
            await store.create_thread(thread_id="second", goal="g")
        faults.stop()
        second = await store.create_thread(thread_id="second", goal="g")
        assert (second.id, second.preview, second.seq) == ("second", "g", 1)
        receipt = await store.append_and_flush(tid, Item.user_message("after the faults"))
        assert receipt.seq == ledger.next_seq(tid)
        await flush_all(store)
        await assert_converged(store, [tid, "second"])
        assert store.statistics().projection_failures == 0


@pytest.mark.parametrize("kind", FAULT_KINDS)
async def test_projection_fault_is_retried_until_it_goes_through(
    tmp_path: Path, kind: FaultKind
) -> None:
    faults = Faults(seed=KIND_SEEDS[kind], probability=0.5, kinds=(kind,), targets=PROJECTION)
    rng = random.Random(kind)
    async with open_store(
        tmp_path / "s.db", faults=faults, retry=no_backoff(40), retry_interval=None
    ) as store:
        tid = (await store.create_thread(thread_id="t")).id
        for n in range(25):
            receipt = await store.append_and_flush(tid, *call_items(f"c{n}", 2, rng))
            assert receipt.seq == 2 * (n + 1)  # projection faults never touch the log
            meta = await store.get_thread(tid)
            assert meta.seq == receipt.seq  # the barrier returned: visible
            assert meta == fold(meta, await store.read_items(tid))

        stats = store.statistics()
        # Failed attempts were retried; each failed attempt met at least one injected fault.
        assert set(faults.injected) == {kind}
        assert 1 <= stats.retries <= faults.injected[kind]
        assert stats.projection_failures == 0
        assert (stats.appends, stats.items_appended) == (25, 50)
        await assert_converged(store, [tid])


async def test_full_disk_fails_appends_clearly_and_recovers_when_space_returns(
    tmp_path: Path,
) -> None:
    faults = Faults()
    ledger = Ledger()
    rng = random.Random(0)
    path = tmp_path / "s.db"
    async with open_store(path, faults=faults, retry=no_backoff(2), retry_interval=None) as store:
        tid = (await store.create_thread(thread_id="t")).id
        for n in range(3):
            await store.append(tid, *ledger.add(tid, f"c{n}", call_items(f"c{n}", 2, rng)))
            ledger.acked.add(f"c{n}")
        await flush_all(store)

        faults.fill_disk()
        big = "x" * 3000  # a few pages per append: the file must grow, and cannot
        errors: list[AppendFailedError] = []
        for n in range(200):
            call = f"big{n}"
            items = ledger.add(tid, call, (Item(kind="note", data={"call": call, "text": big}),))
            try:
                await store.append(tid, *items)
            except AppendFailedError as exc:
                ledger.failed[call] = exc
                errors.append(exc)
                if len(errors) == 3:
                    break
            else:
                ledger.acked.add(call)
        assert len(errors) == 3, "the capped file never filled up"
        for error in errors:
            assert "database or disk is full" in str(error)
            assert isinstance(error.__cause__, sqlite3.OperationalError)
            assert str(error.__cause__) == "database or disk is full"  # SQLite's own error
        assert not faults.injected
        ledger.assert_log(tid, await store.read_items(tid))

        faults.free_disk()
        for n in range(3):
            call = f"later{n}"
            await store.append(tid, *ledger.add(tid, call, call_items(call, 3, rng)))
            ledger.acked.add(call)
        await flush_all(store)
        ledger.assert_log(tid, await store.read_items(tid))
        await assert_converged(store, [tid])

    async with open_store(path) as store:
        ledger.assert_log(tid, await store.read_items(tid))
        await assert_converged(store, [tid])


# -- projection failures and barriers ---------------------------------------------------


@pytest.mark.parametrize("kind", FAULT_KINDS)
async def test_projection_failing_for_good_fails_its_barrier_and_keeps_the_work(
    tmp_path: Path, kind: FaultKind
) -> None:
    faults = Faults(probability=1.0, kinds=(kind,), targets=PROJECTION)
    async with open_store(
        tmp_path / "s.db", faults=faults, retry=no_backoff(3), retry_interval=None
    ) as store:
        tid = (await store.create_thread(thread_id="t")).id
        receipt = await store.append(tid, Item.user_message("hello"), Item.assistant_message("hi"))
        assert receipt.seq == 2  # the append itself succeeded and returned

        with trio.fail_after(GUARD_S), pytest.raises(ProjectionFailedError) as info:
            await store.flush(tid)
        error = info.value
        assert (error.thread_id, error.seq, error.attempts) == (tid, 2, 3)
        assert_injected_cause(error, kind)
        assert "through seq 2 failed after 3 attempt(s)" in str(error)
        stats = store.statistics()
        assert (stats.retries, stats.projection_failures) == (2, 1)
        assert set(faults.injected) == {kind}
        assert faults.injected[kind] >= 3
        assert (await store.get_thread(tid)).seq == 0  # nothing half-projected

        # A barrier while it still fails: the items are durable, the barrier reports it.
        with trio.fail_after(GUARD_S), pytest.raises(ProjectionFailedError) as info:
            await store.append_and_flush(tid, Item.user_message("again"))
        assert (info.value.seq, info.value.attempts) == (3, 3)
        assert [i.seq for i in await store.read_items(tid)] == [1, 2, 3]

        faults.stop()  # the kept work goes through on the next barrier
        await flush_all(store)
        meta = await store.get_thread(tid)
        assert (meta.seq, meta.preview, meta.last_message) == (3, "hello", "hi")
        await assert_converged(store, [tid])
        assert store.statistics().lagging_threads == 0


async def test_only_the_barrier_whose_covering_attempt_failed_for_good_fails(
    tmp_path: Path,
) -> None:
    """Attempts 1 and 2 covering seq 1 fail; seq 2 queues meanwhile; then 1..2 goes through.

    The barrier at seq 1 fails (the attempt covering it failed for good). The barrier at
    seq 2 was only ever covered by the later, successful attempt: it returns normally.
    """
    faults = GatedFaults(trio.lowlevel.current_trio_token())
    async with open_store(
        tmp_path / "s.db", faults=faults, retry=no_backoff(2), retry_interval=None
    ) as store:
        tid = (await store.create_thread(thread_id="t")).id
        faults.gated = frozenset({"projection"})
        await store.append(tid, Item.user_message("one"))
        assert await faults.arrival() == "projection"  # attempt 1 for seq 1
        faults.gated = frozenset({"projection", "log"})
        second = store.append_nowait(tid, Item.user_message("two"))
        outcomes: dict[int, BaseException | None] = {}

        async def barrier(seq: int) -> None:
            try:
                await store.flush(tid, seq)
            except ProjectionFailedError as exc:
                await trio.lowlevel.checkpoint()
                outcomes[seq] = exc
            else:
                outcomes[seq] = None

        with trio.fail_after(GUARD_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(barrier, 1)
                nursery.start_soon(barrier, 2)
                await trio.testing.wait_all_tasks_blocked()
                faults.decide("ioerr")  # attempt 1 fails; its retry queues behind seq 2
                assert await faults.arrival() == "log"
                await trio.testing.wait_all_tasks_blocked()
                faults.decide(None)  # seq 2 commits while attempt 2 (seq 1 only) is queued
                assert await faults.arrival() == "projection"
                await trio.testing.wait_all_tasks_blocked()
                assert outcomes == {}
                faults.decide("busy")  # attempt 2 fails: the one covering seq 1, for good
                assert await faults.arrival() == "projection"  # the kept work plus seq 2
                await trio.testing.wait_all_tasks_blocked()
                assert list(outcomes) == [1]
                faults.decide(None)

        await second.durable()
        failed = outcomes[1]
        assert isinstance(failed, ProjectionFailedError)
        assert (failed.thread_id, failed.seq, failed.attempts) == (tid, 1, 2)
        assert_injected_cause(failed, "busy")
        assert outcomes[2] is None
        stats = store.statistics()
        assert (stats.retries, stats.projection_failures) == (1, 1)
        assert faults.injected == Counter({"ioerr": 1, "busy": 1})
        meta = await store.get_thread(tid)
        assert (meta.seq, meta.item_count, meta.preview) == (2, 2, "one")
        # A barrier after the success returns normally, the failure long superseded.
        with trio.fail_after(GUARD_S):
            await store.flush(tid, 1)
        faults.gated = frozenset()
        await assert_converged(store, [tid])


async def _fail_the_next_group_commit(
    store: Store, faults: GatedFaults, act: Callable[[], Awaitable[None]]
) -> Receipt:
    """Hold the writer at the gate on thread ``c``'s projection, queue an append to ``b``,
    start ``act`` (its write joins the same group commit), then make that COMMIT fail.
    Returns ``b``'s receipt; ``act`` has finished when this returns."""
    faults.gated = frozenset({"projection"})
    await store.append("c", Item.user_message("hold the writer"))
    assert await faults.arrival() == "projection"
    faults.gated = frozenset()
    append = store.append_nowait("b", Item.user_message("shares the commit"))
    with trio.fail_after(GUARD_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(act)
            await trio.testing.wait_all_tasks_blocked()
            faults.probability = 1.0  # the next group commit fails
            faults.decide(None)
    return append


async def _raised_in_a_failed_commit(
    store: Store, faults: GatedFaults, mutation: Callable[[], Awaitable[object]]
) -> list[BaseException]:
    """Run ``mutation`` inside a group commit that fails (see _fail_the_next_group_commit)
    and return what it raised; the append sharing that commit fails."""
    raised: list[BaseException] = []

    async def act() -> None:
        try:
            await mutation()
        except Exception as exc:  # what the caller sees, whatever it is
            await trio.lowlevel.checkpoint()
            raised.append(exc)

    append = await _fail_the_next_group_commit(store, faults, act)
    with pytest.raises(AppendFailedError):
        await append.durable()
    return raised


@pytest.mark.parametrize("operation", ["archive_thread", "delete_thread"])
async def test_failed_commit_under_an_explicit_mutation_raises_a_threadstore_error(
    tmp_path: Path, operation: str
) -> None:
    """A mutation whose group commit fails reports it like appends do, and changes nothing.

    Thread ``c``'s projection holds the writer at the gate while an append to ``b`` and the
    mutation of ``a`` queue up into one group commit, which then fails.
    """
    faults = GatedFaults(trio.lowlevel.current_trio_token(), kinds=("commit",), targets=LOG)
    async with open_store(
        tmp_path / "s.db", faults=faults, retry=no_backoff(2), retry_interval=None
    ) as store:
        for tid in "abc":
            await store.create_thread(thread_id=tid, goal=f"goal {tid}")
        raised = await _raised_in_a_failed_commit(
            store, faults, partial(getattr(store, operation), "a")
        )
        assert faults.injected == Counter({"commit": 1})
        faults.stop()
        # The mutation did not happen ...
        meta = await store.get_thread("a")
        assert (meta.archived_at, meta.preview) == (None, "goal a")
        # ... and the caller got an error of the store's hierarchy naming the failure, with
        # SQLite's error as its cause (as AppendFailedError and ProjectionFailedError do).
        assert len(raised) == 1
        assert isinstance(raised[0], WriteFailedError), f"raw error: {raised[0]!r}"
        assert not isinstance(raised[0], AppendFailedError)
        assert (
            raised[0].operation
            == {"archive_thread": "archive", "delete_thread": "delete"}[operation]
        )
        assert_injected_cause(raised[0], "commit")
        assert "disk I/O error" in str(raised[0])


@pytest.mark.parametrize("restore", ["flush", "append"])
async def test_a_failed_delete_leaves_the_thread_as_it_was(tmp_path: Path, restore: str) -> None:
    """delete_thread drops the thread's queued metadata work before its own write; when that
    write's COMMIT fails, the thread must come back whole: it takes appends again, and the
    dropped work is redone, so a barrier returns (no ThreadDiscardedError: nobody called
    discard) and the metadata reaches the end of the log without another append.
    """
    faults = GatedFaults(trio.lowlevel.current_trio_token(), kinds=("commit",), targets=LOG)
    # A long coalescing window keeps "a"'s metadata work queued in the pool at the delete.
    async with open_store(
        tmp_path / "s.db",
        faults=faults,
        retry=no_backoff(2),
        retry_interval=None,
        projection_delay=3600,
    ) as store:
        for tid in "abc":
            await store.create_thread(thread_id=tid, goal=f"goal {tid}")
        await store.append("a", Item.assistant_message("queued metadata"))
        assert (await store.get_thread("a")).seq == 1  # its projection waits in the window
        raised = await _raised_in_a_failed_commit(store, faults, partial(store.delete_thread, "a"))
        faults.stop()
        assert len(raised) == 1
        assert isinstance(raised[0], WriteFailedError), f"raw error: {raised[0]!r}"
        if restore == "flush":
            with trio.fail_after(GUARD_S):
                await store.flush("a")
            meta = await store.get_thread("a")
            assert (meta.seq, meta.last_message) == (2, "queued metadata")
        receipt = await store.append_and_flush("a", Item.user_message("still here"))
        assert receipt.seq == 3
        meta = await store.get_thread("a")
        assert (meta.seq, meta.item_count, meta.last_message) == (3, 3, "queued metadata")
        await assert_converged(store, "abc")
        assert store.statistics().lagging_threads == 0


async def test_flush_all_is_a_barrier_not_a_victim_of_a_failed_commit(tmp_path: Path) -> None:
    """flush_all's wait for the writer joins whatever group commit is next; if that COMMIT
    fails, the appends in it report the failure, and flush_all still returns normally."""
    faults = GatedFaults(trio.lowlevel.current_trio_token(), kinds=("commit",), targets=LOG)
    async with open_store(
        tmp_path / "s.db", faults=faults, retry=no_backoff(2), retry_interval=None
    ) as store:
        for tid in "bc":
            await store.create_thread(thread_id=tid, goal=f"goal {tid}")
        outcome: list[BaseException | None] = []

        async def flush_all() -> None:
            try:
                await store.flush_all()
            except Exception as exc:  # what the caller sees, whatever it is
                await trio.lowlevel.checkpoint()
                outcome.append(exc)
            else:
                outcome.append(None)

        append = await _fail_the_next_group_commit(store, faults, flush_all)

        with pytest.raises(AppendFailedError):
            await append.durable()
        assert faults.injected == Counter({"commit": 1})
        assert outcome == [None]
        faults.stop()
        assert (await store.get_thread("c")).preview == "hold the writer"
        assert [item.kind for item in await store.read_items("b")] == ["goal"]


# -- randomized ------------------------------------------------------------------------------

#: Faults injected by kind over all seeds of the last run of the randomized test.
INJECTED: Counter[str] = Counter()
SEEDS: Final = (101, 202, 303, 404, 505)


async def _random_op(
    store: Store, tid: str, call: str, rng: random.Random, ledger: Ledger
) -> AppendFailedError | ProjectionFailedError | None:
    """One random append, barrier or title change on ``tid``, filed in the ledger.

    Returns the AppendFailedError or ProjectionFailedError it raised, if any.
    """
    op = rng.choice(["append", "append", "nowait", "nowait", "and_flush", "flush", "title"])
    if op == "nowait":
        items = ledger.add(tid, call, call_items(call, rng.randint(1, 3), rng))
        ledger.pending[call] = store.append_nowait(tid, *items)  # resolved at the end
        await trio.lowlevel.checkpoint()
        return None
    title = f"title {call}"
    if op == "title":
        call = f"title:{title}"
        items = ledger.add(tid, call, (Item.title(title),))
    elif op == "flush":
        items = ()
    else:
        items = ledger.add(tid, call, call_items(call, 2, rng))
    try:
        if op == "flush":
            await store.flush(tid)
        elif op == "append":
            await store.append(tid, *items)
        elif op == "and_flush":
            receipt = await store.append_and_flush(tid, *items)
            assert (await store.get_thread(tid)).seq >= receipt.seq  # visible
        else:
            meta = await store.update_thread(tid, title=title)
            assert meta.title == title
    except AppendFailedError as exc:
        # The call's own items failed (flush: an append_nowait before it did).
        if items:
            ledger.failed[call] = exc
        await trio.lowlevel.checkpoint()
        return exc
    except ProjectionFailedError as exc:
        if items:
            ledger.acked.add(call)  # durable: only the barrier after the append failed
        await trio.lowlevel.checkpoint()
        return exc
    if items:
        ledger.acked.add(call)
    return None


async def _random_workload(store: Store, tid: str, rng: random.Random, ledger: Ledger) -> None:
    """Thirty random operations on one thread; the errors they raise name it."""
    for n in range(30):
        error = await _random_op(store, tid, f"{tid}.{n}", rng, ledger)
        if error is not None:
            assert error.thread_id == tid
        if isinstance(error, ProjectionFailedError):
            assert error.attempts == 3
    await trio.lowlevel.checkpoint()


async def test_random_faults_over_several_seeds_lose_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    INJECTED.clear()
    retries = 0
    for seed in SEEDS:
        path = tmp_path / f"s{seed}.db"
        faults = Faults(seed=seed, probability=0.08)  # every kind, both targets
        faults.enabled = False
        ledger = Ledger()
        rng = random.Random(seed)
        async with open_store(
            path, faults=faults, retry=no_backoff(3), retry_interval=None
        ) as store:
            tids = [(await store.create_thread(thread_id=f"t{n}")).id for n in range(4)]
            faults.enabled = True
            async with trio.open_nursery() as nursery:
                for tid in tids:
                    nursery.start_soon(
                        _random_workload, store, tid, random.Random(rng.random()), ledger
                    )
            faults.stop()
            await ledger.resolve()
            await flush_all(store)
            assert ledger.acked
            assert ledger.failed
            for tid in tids:
                ledger.assert_log(tid, await store.read_items(tid))
            await assert_converged(store, tids)
            stats = store.statistics()
            assert stats.lagging_threads == 0
            retries += stats.retries
            assert stats.items_appended >= sum(len(ledger.items[c]) for c in ledger.acked)
            INJECTED.update(faults.injected)

        async with open_store(path) as store:  # everything acknowledged survives a reopen
            for tid in tids:
                ledger.assert_log(tid, await store.read_items(tid))
            await assert_converged(store, tids)

    await trio.lowlevel.checkpoint()
    print(f"faults injected over seeds {SEEDS}: {dict(sorted(INJECTED.items()))}")
    assert set(INJECTED) == set(FAULT_KINDS)
    assert retries > 0


class FailFirstLogJob(Faults):
    """Injects one ``busy`` fault: into the first log job it is asked about."""

    def __init__(self) -> None:
        super().__init__(kinds=("busy",), targets=LOG)
        self.armed = False

    def before_job(self, target: Target) -> None:
        if self.armed and target == "log":
            self.armed = False
            self.injected["busy"] += 1
            error = sqlite3.OperationalError("database is locked (injected)")
            error.sqlite_errorcode = 5
            raise error


async def test_a_statement_fault_fails_its_own_append_only(tmp_path: Path) -> None:
    """Appends sharing the failed job's group commit are stored; the faulted one is not."""
    faults = FailFirstLogJob()
    async with open_store(tmp_path / "s.db", faults=faults) as store:
        for tid in "abc":
            await store.create_thread(thread_id=tid)
        faults.armed = True
        receipts = [store.append_nowait(tid, Item.user_message(f"to {tid}")) for tid in "abc"]
        outcomes = []
        for receipt in receipts:
            try:
                await receipt.durable()
                outcomes.append("stored")
            except AppendFailedError:
                outcomes.append("failed")
        assert outcomes == ["failed", "stored", "stored"]
        assert faults.injected == Counter({"busy": 1})
        assert [len(await store.read_items(tid)) for tid in "abc"] == [0, 1, 1]
        assert (await store.append("a", Item.user_message("again"))).seq == 1
