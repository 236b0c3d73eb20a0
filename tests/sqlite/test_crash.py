"""Crash harness: child processes work a store and are SIGKILLed at random moments.

A child (``tests/_children/crash_child.py``) announces every call on stdout before making it
and acknowledges it as soon as it returns (protocol in the child's docstring). The parent
reads those lines, SIGKILLs the child after a number of acknowledgements chosen by
``random.Random(seed)``, reads what the child wrote before dying, reopens the store with
``open_store`` and checks what a user would rely on:

- every acknowledged item is there with identical content at its acknowledged seq, seqs are
  dense 1..n per thread, no call is stored twice, partially or out of order (per task);
- every announced but unacknowledged call is stored whole or not at all;
- after ``open_store`` returns, each thread's metadata is the fold of its log
  (``threadstore._meta``: ``Projection.new(...).apply(Patch.from_items(items))``), and the
  listing shows exactly the threads that exist;
- a thread whose ``delete_thread`` returned is gone (and its id can be reused), a thread
  whose deletion was only announced is gone or whole;
- the store keeps working: the next append gets the next seq.

Scenarios: ``stream-normal``/``stream-full`` (appends of every flavour from several tasks to
many threads, sometimes with a projector that stalls so metadata lags the log),
``create`` (threads created in a loop), ``delete`` (deletes racing appends and creations)
and ``recovery`` (a store whose metadata lags is reopened by children killed during the
re-projection that ``open_store`` runs, then opened by the parent).

``make test`` runs a few fixed-seed trials per scenario. ``make soak`` runs
:func:`test_crash_soak`: ``THREADSTORE_SOAK_TRIALS`` (default 200) trials from the seed in
``THREADSTORE_SOAK_SEED`` (default: random; printed), printing each failing trial as
``THREADSTORE_SOAK_TRIAL=<scenario>:<seed>``, which replays just that trial.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import attrs
import pytest
import trio
from _process import Child, spawn_child

from threadstore import (
    Item,
    Store,
    StoredItem,
    StoreFormatError,
    ThreadMeta,
    ThreadNotFoundError,
    open_store,
)
from threadstore._items import datetime_to_us, us_to_datetime
from threadstore._meta import Patch, Projection

#: A generous bound on one trial (children, kills, reopen, checks); a hang fails the trial.
TRIAL_TIMEOUT: Final = 120
#: ``meta.extra`` entries written by the children's custom projectors (not part of the fold).
PROJECTOR_NAMES: Final = frozenset({"stall", "report"})
SCENARIOS: Final = ("stream-normal", "stream-full", "create", "delete", "recovery")


# -- the child's protocol -----------------------------------------------------------------


def _plain(value: object) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not JSON: {value!r}")


def digest(items: Sequence[Item]) -> str:
    """The child's digest of items' kinds and data (same code as in crash_child.py)."""
    text = json.dumps(
        [[item.kind, item.data] for item in items],
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        default=_plain,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@attrs.frozen
class Intent:
    """A call the child announced: ``create_thread`` or an append of ``count`` items."""

    thread_id: str  # "-": a creation with a store-made id
    count: int
    digest: str
    create: bool


@attrs.define
class ChildLog:
    """Everything a child reported, parsed line by line."""

    intents: dict[str, Intent] = attrs.Factory(dict)
    #: Acknowledged appends: cid -> (thread id, first seq, last seq).
    acks: dict[str, tuple[str, int, int]] = attrs.Factory(dict)
    #: Acknowledged creations: cid -> thread id.
    created: dict[str, str] = attrs.Factory(dict)
    refused: set[str] = attrs.Factory(set)
    raised: set[str] = attrs.Factory(set)
    deleting: set[str] = attrs.Factory(set)
    deleted: set[str] = attrs.Factory(set)
    bad: list[str] = attrs.Factory(list)
    #: Acknowledgements (created/ack/deleted) and recovery progress (project lines).
    acknowledged: int = 0
    projected: int = 0
    ready: bool = False
    opening: bool = False
    opened: bool = False

    def feed(self, line: str) -> None:
        word, *rest = line.split(" ")
        if word in ("create", "call"):
            cid, thread_id, count, hexdigest = rest
            self.intents[cid] = Intent(thread_id, int(count), hexdigest, word == "create")
        elif word == "created":
            cid, thread_id = rest
            self.created[cid] = thread_id
            self.acknowledged += 1
        elif word == "ack":
            cid, thread_id, first, last, hexdigest = rest
            assert hexdigest == self.intents[cid].digest, line
            self.acks[cid] = (thread_id, int(first), int(last))
            self.acknowledged += 1
        elif word == "refused":
            self.refused.add(rest[0])
        elif word == "raised":
            self.raised.add(rest[0])
        elif word == "deleting":
            self.deleting.add(rest[0])
        elif word == "deleted":
            self.deleted.add(rest[0])
            self.acknowledged += 1
        elif word == "bad":
            self.bad.append(line)
        elif word == "project":
            self.projected += 1
        elif word in ("ready", "opening", "opened"):
            setattr(self, word, True)
        else:
            raise AssertionError(f"unexpected line from the child: {line!r}")


# -- child processes ----------------------------------------------------------------------


@asynccontextmanager
async def spawn(path: Path, mode: str, *options: str) -> AsyncIterator[Child]:
    """Run the crash child on ``path``; on the way out, kill it if it still runs and reap it."""
    async with spawn_child("crash_child.py", str(path), mode, *options, kind=Child) as child:
        yield child


async def run_until_killed(
    path: Path, mode: str, options: Sequence[str], log: ChildLog, kill: Callable[[], bool]
) -> None:
    """Run a child, feeding ``log``; SIGKILL it as soon as ``kill()`` holds after a line.

    Then read what it wrote before it died. Fails if the child exits on its own.
    """
    async with spawn(path, mode, *options) as child:
        killed = False
        while (line := await child.line()) is not None:
            log.feed(line)
            if not killed and kill():
                os.kill(child.proc.pid, signal.SIGKILL)
                killed = True
        code = await child.proc.wait()
        if not killed or code != -signal.SIGKILL:
            stderr = await child.stderr()
            raise AssertionError(f"{mode} child exited by itself ({code}); stderr:\n{stderr}")


# -- checks -------------------------------------------------------------------------------


@attrs.define
class Outcome:
    """What one trial saw; ``problems`` are broken promises (the trial fails on any)."""

    scenario: str
    seed: int
    acknowledged: int = 0
    lost: int = 0
    threads: int = 0
    kills: int = 0
    recovery_kills: int = 0
    #: Calls announced but neither acknowledged nor refused when the child died, and how
    #: many of them the store holds (whole): evidence that kills land mid-flight.
    in_flight: int = 0
    in_flight_stored: int = 0
    seconds: float = 0.0
    problems: list[str] = attrs.Factory(list)

    def replay(self) -> str:
        return f"THREADSTORE_SOAK_TRIAL={self.scenario}:{self.seed}"

    def check(self) -> None:
        if self.problems:
            shown = "\n  ".join(self.problems[:20])
            more = len(self.problems) - 20
            raise AssertionError(
                f"trial {self.scenario} seed={self.seed} (replay: {self.replay()} "
                f"pytest -m soak tests/sqlite/test_crash.py): "
                f"{self.lost} acknowledged item(s) lost, "
                f"{len(self.problems)} problem(s):\n  {shown}"
                + (f"\n  … {more} more" if more > 0 else "")
            )


def fold(meta: ThreadMeta, items: Sequence[StoredItem]) -> ThreadMeta:
    """The metadata the log implies: the store's pure fold, independent of its state."""
    projection = Projection.new(meta.id, datetime_to_us(meta.created_at))
    return attrs.evolve(
        projection.apply(Patch.from_items(items)).meta, archived_at=meta.archived_at
    )


def without_projectors(meta: ThreadMeta) -> ThreadMeta:
    extra = {k: v for k, v in meta.extra.items() if k not in PROJECTOR_NAMES}
    return attrs.evolve(meta, extra=extra)


def differences(a: ThreadMeta, b: ThreadMeta) -> dict[str, tuple[object, object]]:
    return {
        f.name: (getattr(a, f.name), getattr(b, f.name))
        for f in attrs.fields(ThreadMeta)
        if getattr(a, f.name) != getattr(b, f.name)
    }


def creation_cid(item: StoredItem) -> str | None:
    """The cid named by a thread's first item (creation items are untagged)."""
    if "tag" in item.data:
        return None
    if item.kind in ("goal", "title"):
        words = str(item.data["text"]).split()
        return words[1] if len(words) > 1 else None
    if item.kind == "metadata":
        return str(item.data["extra"].get("cid"))
    return None


async def all_threads(store: Store, **options: Any) -> list[ThreadMeta]:
    metas: list[ThreadMeta] = []
    cursor = None
    while True:
        page = await store.list_threads(limit=100, cursor=cursor, **options)
        metas += page.threads
        if page.next_cursor is None:
            return metas
        cursor = page.next_cursor


async def check_store(store: Store, log: ChildLog, outcome: Outcome) -> None:
    """Compare the reopened store with what the child announced and acknowledged."""
    problems = outcome.problems
    problems += log.bad
    listed = await all_threads(store, include_empty=True, order_by="created_at", descending=False)
    listed_ids = [meta.id for meta in listed]
    if len(set(listed_ids)) != len(listed_ids):
        problems.append(f"a thread is listed twice: {listed_ids}")
    if [datetime_to_us(m.created_at) for m in listed] != sorted(
        datetime_to_us(m.created_at) for m in listed
    ):
        problems.append("listing by created_at is out of order")
    outcome.threads = len(listed)

    creations: dict[str, str] = {}  # cid -> thread holding its creation items
    calls: dict[str, tuple[str, int, int]] = {}  # cid -> (thread, first seq, last seq)
    for listed_meta in listed:
        tid = listed_meta.id
        try:
            items = await store.read_items(tid)
        except StoreFormatError as exc:
            problems.append(f"{tid}: the store reports its log damaged: {exc}")
            items = await trio.to_thread.run_sync(_raw_items, store.path, tid)
        meta = await store.get_thread(tid)
        if meta != listed_meta:
            problems.append(
                f"{tid}: listing and get_thread differ: {differences(listed_meta, meta)}"
            )
        dense = [item.seq for item in items] == list(range(1, len(items) + 1))
        if not dense:
            problems.append(f"{tid}: seqs are not 1..n: {[item.seq for item in items]}")
        if tid in log.deleted:
            problems.append(f"{tid}: delete_thread returned, but the thread is still there")

        # Metadata is the fold of the log once open_store has returned.
        expected = fold(meta, items) if dense else None
        if expected is not None and without_projectors(meta) != expected:
            problems.append(
                f"{tid}: metadata is not the fold of its log: "
                f"{differences(without_projectors(meta), expected)}"
            )
        if meta.seq != (items[-1].seq if items else 0) or meta.item_count != len(items):
            problems.append(
                f"{tid}: meta seq/item_count {meta.seq}/{meta.item_count}, {len(items)} items"
            )

        # The creation items, whole and as announced.
        cid = creation_cid(items[0]) if items else None
        intent = log.intents.get(cid) if cid is not None else None
        if cid is None or intent is None or not intent.create:
            problems.append(f"{tid}: does not start with a creation the child announced ({cid})")
            continue
        head, rest = items[: intent.count], items[intent.count :]
        if any("tag" in item.data for item in head) or digest(head) != intent.digest:
            problems.append(f"{tid}: creation {cid} is stored partially or changed")
        if intent.thread_id not in ("-", tid) or log.created.get(cid, tid) != tid:
            problems.append(f"{tid}: creation {cid} was made as {intent.thread_id}")
        if cid in creations:
            problems.append(f"{tid}: creation {cid} is stored twice")
        creations[cid] = tid

        # Appended calls: each whole, contiguous, unchanged, in its task's order.
        groups: dict[str, list[StoredItem]] = {}
        for item in rest:
            tag = item.data.get("tag")
            if not isinstance(tag, str):
                problems.append(f"{tid}: seq {item.seq} is an untagged item after the creation")
                continue
            groups.setdefault(tag.partition("/")[0], []).append(item)
        last_of_task: dict[str, int] = {}
        for call, group in groups.items():
            call_intent = log.intents.get(call)
            seqs = [item.seq for item in group]
            parts = [int(str(item.data["tag"]).partition("/")[2]) for item in group]
            if call_intent is None or call_intent.create or call_intent.thread_id != tid:
                problems.append(f"{tid}: holds items of call {call}, never sent to it")
            elif (
                parts != list(range(call_intent.count))
                or seqs != list(range(seqs[0], seqs[0] + len(seqs)))
                or digest(group) != call_intent.digest
            ):
                problems.append(f"{tid}: call {call} stored partially, split or changed: {seqs}")
            if call in log.refused:
                problems.append(f"{tid}: call {call} raised before queueing, yet it is stored")
            if call in calls:
                problems.append(f"{tid}: call {call} is stored in two threads")
            calls[call] = (tid, seqs[0], seqs[-1])
            task, _, n = call.partition(".")
            if int(n) <= last_of_task.get(task, 0):
                problems.append(f"{tid}: task {task}'s calls are stored out of call order")
            last_of_task[task] = int(n)

    # Nothing acknowledged is missing, unless its thread's deletion was announced.
    listed_set = set(listed_ids)
    for cid, (tid, first, last) in log.acks.items():
        count = log.intents[cid].count
        outcome.acknowledged += count
        if calls.get(cid) != (tid, first, last) and not (
            tid in log.deleting and tid not in listed_set
        ):
            outcome.lost += count
            problems.append(f"acknowledged call {cid} ({tid} {first}..{last}) is {calls.get(cid)}")
    for cid, tid in log.created.items():
        count = log.intents[cid].count
        outcome.acknowledged += count
        if creations.get(cid) != tid and not (tid in log.deleting and tid not in listed_set):
            outcome.lost += count
            problems.append(f"acknowledged creation {cid} of {tid} is missing")

    settled = log.acks.keys() | log.created.keys() | log.refused
    in_flight = log.intents.keys() - settled
    outcome.in_flight += len(in_flight)
    outcome.in_flight_stored += len(in_flight & (calls.keys() | creations.keys()))

    # Deleted threads are gone for every reader.
    for tid in sorted(log.deleting - listed_set):
        for read in (store.get_thread, store.read_items):
            try:
                await read(tid)
            except ThreadNotFoundError:
                continue
            problems.append(f"{tid}: not listed after its deletion, yet {read.__name__} finds it")

    # The listing without include_empty shows the threads with a preview or a title.
    shown = {meta.id for meta in await all_threads(store)}
    expected_shown = {m.id for m in listed if m.preview is not None or m.title is not None}
    if shown != expected_shown:
        problems.append(f"default listing differs: {sorted(shown ^ expected_shown)}")


async def check_store_keeps_working(store: Store, log: ChildLog, outcome: Outcome) -> None:
    """After the checks: the next append gets the next seq; deleted ids can be reused."""
    listed = await all_threads(store, include_empty=True)
    if listed:
        meta = listed[0]
        receipt = await store.append_and_flush(meta.id, Item.user_message("after the crash"))
        after = await store.get_thread(meta.id)
        if (receipt.seq, after.seq, after.item_count) != (meta.seq + 1,) * 3:
            outcome.problems.append(f"{meta.id}: append after reopen got {receipt.seq}, {after}")
    listed_set = {meta.id for meta in listed}
    for tid in sorted(log.deleting - listed_set)[:3]:
        created = await store.create_thread(goal="again", thread_id=tid)
        items = await store.read_items(tid)
        if created.seq != 1 or [(i.seq, i.kind) for i in items] != [(1, "goal")]:
            outcome.problems.append(f"{tid}: reused id shows old items: {items}")


async def reopen_and_check(path: Path, durability: str, log: ChildLog, outcome: Outcome) -> None:
    async with open_store(path, durability=durability) as store:  # type: ignore[arg-type]
        await check_store(store, log, outcome)
        await check_store_keeps_working(store, log, outcome)


async def projection_lag(path: Path) -> dict[str, tuple[int, int]]:
    """Per thread, (metadata seq, last log seq) as a read-only open sees them."""
    lag = {}
    async with open_store(path, read_only=True) as reader:
        for meta in await all_threads(reader, include_empty=True):
            items = await reader.read_items(meta.id)
            lag[meta.id] = (meta.seq, items[-1].seq if items else 0)
    return lag


# -- scenarios ----------------------------------------------------------------------------


async def stream_trial(
    directory: Path, rng: random.Random, outcome: Outcome, durability: str
) -> None:
    path = directory / "store.db"
    threads, tasks = rng.randint(2, 24), rng.randint(1, 6)
    block_after = rng.choice([None, rng.randint(1, 30)])
    kill_after = rng.randint(1, 300)  # counts creations too: some kills land in the set-up
    options = ["--durability", durability, "--seed", str(outcome.seed)]
    options += ["--threads", str(threads), "--tasks", str(tasks)]
    if block_after is not None:
        options += ["--block-after", str(block_after)]
    log = ChildLog()
    await run_until_killed(path, "stream", options, log, lambda: log.acknowledged >= kill_after)
    outcome.kills += 1
    await reopen_and_check(path, durability, log, outcome)


async def create_trial(directory: Path, rng: random.Random, outcome: Outcome) -> None:
    path = directory / "store.db"
    kill_after = rng.randint(1, 150)
    options = ["--seed", str(outcome.seed), "--tasks", str(rng.randint(1, 6))]
    log = ChildLog()
    await run_until_killed(path, "create", options, log, lambda: log.acknowledged >= kill_after)
    outcome.kills += 1
    await reopen_and_check(path, "normal", log, outcome)


async def delete_trial(directory: Path, rng: random.Random, outcome: Outcome) -> None:
    path = directory / "store.db"
    threads = rng.randint(3, 20)
    setup = 3 * threads  # acknowledgements before "ready": creations and two appends each
    kill_after = setup + rng.randint(1, 200)
    options = ["--seed", str(outcome.seed), "--threads", str(threads)]
    options += ["--tasks", str(rng.randint(2, 6))]
    log = ChildLog()
    await run_until_killed(path, "delete", options, log, lambda: log.acknowledged >= kill_after)
    outcome.kills += 1
    if not log.ready:
        outcome.problems.append(f"the delete child died in its set-up: {setup} acknowledgements")
    await reopen_and_check(path, "normal", log, outcome)


async def recovery_trial(directory: Path, rng: random.Random, outcome: Outcome) -> None:
    """Metadata lags (stalled projector, SIGKILL); opens that recover are killed; then check."""
    path = directory / "store.db"
    options = ["--seed", str(outcome.seed), "--threads", str(rng.randint(8, 40))]
    options += ["--tasks", str(rng.randint(2, 6)), "--block-after", str(rng.randint(1, 5))]
    kill_after = rng.randint(60, 300)
    log = ChildLog()
    await run_until_killed(path, "stream", options, log, lambda: log.acknowledged >= kill_after)
    outcome.kills += 1
    lagging = sum(seq < last for seq, last in (await projection_lag(path)).values())
    if not lagging:
        outcome.problems.append("the stalled projector left no thread behind: nothing to recover")
    for _ in range(rng.randint(1, 3)):
        # 0: kill right after "opening" (lock, schema); k: after the k-th re-projection;
        # more than there are lagging threads: once open_store returned.
        at = rng.randint(0, lagging + 1)
        opening = ChildLog()

        def reached(opening: ChildLog = opening, at: int = at) -> bool:
            return (opening.opening and at == 0) or opening.projected >= at or opening.opened

        await run_until_killed(path, "recover", [], opening, reached)
        outcome.kills += 1
        outcome.recovery_kills += not opening.opened
    await reopen_and_check(path, "normal", log, outcome)


async def run_trial(scenario: str, seed: int, directory: Path) -> Outcome:
    """One seeded trial in ``directory``; the outcome lists any broken promise."""
    await trio.Path(directory).mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    outcome = Outcome(scenario, seed)
    start = time.monotonic()
    with trio.fail_after(TRIAL_TIMEOUT):
        if scenario.startswith("stream-"):
            await stream_trial(directory, rng, outcome, scenario.removeprefix("stream-"))
        elif scenario == "create":
            await create_trial(directory, rng, outcome)
        elif scenario == "delete":
            await delete_trial(directory, rng, outcome)
        else:
            assert scenario == "recovery", scenario
            await recovery_trial(directory, rng, outcome)
    outcome.seconds = time.monotonic() - start
    return outcome


# -- make test: a few fixed-seed trials per scenario ------------------------------------------


@pytest.mark.parametrize("durability", ["normal", "full"])
async def test_sigkill_while_appending_loses_nothing_acknowledged(
    tmp_path: Path, durability: str
) -> None:
    for seed in (11, 12, 13):
        outcome = await run_trial(f"stream-{durability}", seed, tmp_path / str(seed))
        outcome.check()
        assert outcome.acknowledged > 0


async def test_sigkill_while_creating_threads_leaves_each_whole_or_absent(tmp_path: Path) -> None:
    for seed in (21, 22):
        outcome = await run_trial("create", seed, tmp_path / str(seed))
        outcome.check()
        assert outcome.threads > 0


async def test_sigkill_while_deleting_threads_leaves_each_whole_or_gone(tmp_path: Path) -> None:
    for seed in (31, 32):
        outcome = await run_trial("delete", seed, tmp_path / str(seed))
        outcome.check()


async def test_sigkill_during_recovery_then_open_recovers(tmp_path: Path) -> None:
    outcome = await run_trial("recovery", 41, tmp_path / "41")
    outcome.check()
    assert outcome.kills >= 2


def _raw_items(path: str, thread_id: str) -> list[StoredItem]:
    """The thread's log as the file holds it, read past the store's own damage checks."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT seq, created_at, kind, data FROM items WHERE thread_id = ? ORDER BY seq",
            (thread_id,),
        ).fetchall()
    finally:
        conn.close()
    return [
        StoredItem(kind=kind, data=json.loads(data), seq=seq, created_at=us_to_datetime(at))
        for seq, at, kind, data in rows
    ]


def _tamper(path: str, thread_id: str, seq: int, other_id: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("DELETE FROM items WHERE thread_id = ? AND seq = ?", (thread_id, seq))
        conn.execute("UPDATE threads SET preview = 'tampered' WHERE id = ?", (other_id,))
    finally:
        conn.close()


async def test_the_harness_notices_a_lost_item_and_stale_metadata(tmp_path: Path) -> None:
    """The checks are not vacuous: damage done behind the store's back is reported."""
    path = tmp_path / "store.db"
    log = ChildLog()
    options = ["--threads", "3", "--tasks", "2", "--seed", "5"]
    with trio.fail_after(TRIAL_TIMEOUT):
        await run_until_killed(path, "stream", options, log, lambda: log.acknowledged >= 40)
        async with open_store(path):  # recover the metadata, then damage the closed store
            pass
        cid, (tid, _first, last) = next(iter(log.acks.items()))
        other = next(t for t in log.created.values() if t != tid)
        await trio.to_thread.run_sync(_tamper, str(path), tid, last, other)
        outcome = Outcome("tampered", 5)
        async with open_store(path) as store:
            await check_store(store, log, outcome)
    assert outcome.lost == log.intents[cid].count
    assert any(f"acknowledged call {cid} " in problem for problem in outcome.problems)
    assert any(f"{tid}: seqs are not 1..n" in problem for problem in outcome.problems)
    assert any(f"{tid}: the store reports its log damaged" in p for p in outcome.problems)
    assert any(f"{other}: metadata is not the fold" in problem for problem in outcome.problems)
    with pytest.raises(AssertionError, match="acknowledged item"):
        outcome.check()


# -- make soak ------------------------------------------------------------------------------


@pytest.mark.soak
async def test_crash_soak(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ASYNC910 - every trial awaits
    seed = int(os.environ.get("THREADSTORE_SOAK_SEED") or random.randrange(2**32))
    trials = int(os.environ.get("THREADSTORE_SOAK_TRIALS") or 200)
    replay = os.environ.get("THREADSTORE_SOAK_TRIAL")  # "<scenario>:<seed>": one trial
    master = random.Random(seed)
    plan = [(master.choice(SCENARIOS), master.randrange(2**32)) for _ in range(trials)]
    if replay:
        scenario, _, replay_seed = replay.partition(":")
        plan = [(scenario, int(replay_seed))]

    def say(text: str) -> None:
        with capsys.disabled():
            print(text, file=sys.stderr, flush=True)

    if replay:
        say(f"\ncrash soak: replaying THREADSTORE_SOAK_TRIAL={replay}")
    else:
        say(f"\ncrash soak: seed={seed} trials={len(plan)} (THREADSTORE_SOAK_SEED={seed})")
    outcomes: list[Outcome] = []
    failed: list[str] = []
    start = time.monotonic()
    for i, (scenario, trial_seed) in enumerate(plan):
        directory = tmp_path / f"trial-{i}"
        try:
            outcome = await run_trial(scenario, trial_seed, directory)
            outcomes.append(outcome)
            outcome.check()
        except Exception as exc:
            failed.append(f"{scenario}:{trial_seed}")
            say(
                f"crash soak: trial {i} FAILED, replay: THREADSTORE_SOAK_TRIAL={scenario}:"
                f"{trial_seed} pytest -m soak tests/sqlite/test_crash.py\n{exc!r}"[:4000]
            )
        else:
            await trio.to_thread.run_sync(shutil.rmtree, directory)
    seconds = time.monotonic() - start
    per_scenario = {name: sum(o.scenario == name for o in outcomes) for name in SCENARIOS}
    say(
        f"crash soak: seed={seed}, trials={len(plan)}, failed={len(failed)}, "
        f"kills={sum(o.kills for o in outcomes)} "
        f"(during recovery: {sum(o.recovery_kills for o in outcomes)}), "
        f"acknowledged={sum(o.acknowledged for o in outcomes)}, "
        f"in flight at the kill={sum(o.in_flight for o in outcomes)} calls "
        f"({sum(o.in_flight_stored for o in outcomes)} stored whole, the rest absent), "
        f"lost={sum(o.lost for o in outcomes)}, "
        f"threads checked={sum(o.threads for o in outcomes)}, {seconds:.0f} s, "
        f"slowest trial {max((o.seconds for o in outcomes), default=0):.1f} s, {per_scenario}"
    )
    assert not failed, f"failing trials (seed={seed}): {failed}"
    assert sum(o.lost for o in outcomes) == 0
