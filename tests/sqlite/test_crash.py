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
- the store keeps working: the next append gets the next seq, a rewind and a fork work.

History edits (the children mix ``rewind``, ``fork`` and ``compaction`` items into their
work) are checked against the pure rule of ``threadstore._history``, on every thread after
every reopen:

- ``read_context`` (whole and with a ``limit``) is ``context(read_items)`` from the latest
  compaction in it on, and the ``hidden`` marks in the file are exactly the items outside
  ``context(read_items)``;
- metadata is a fresh projection of the log (counts, preview, last message, status and
  token sums over the context; title, goal, ``extra`` and the fork fields over the log;
  ``seq`` the last log seq);
- every ``rewind`` item was announced for its thread with its ``to_seq``, and each
  acknowledged rewind is stored at or before the seq its metadata showed;
- a fork's thread holds its ``fork`` item, then exactly the source's context through
  ``at_seq`` as the source's log stood at some seq at or after ``at_seq`` (kinds, data and
  times), then its title if asked for, then only its own appends and rewinds; an
  acknowledged fork is there whole.

Scenarios ``rewind`` and ``fork`` stop the child's writer thread at a kill point of its
N-th rewind or fork (``EditGate`` in the child: inside the job between its statements,
after the job, before the COMMIT of its transaction, or after that COMMIT) and SIGKILL it
there: an edit whose transaction had not committed must be absent whole (no rewind item
at its seq, no row of the fork's thread in the file), one that committed present whole.

Scenarios: ``stream-normal``/``stream-full`` (appends of every flavour from several tasks to
many threads, sometimes with a projector that stalls so metadata lags the log),
``create`` (threads created in a loop), ``delete`` (deletes racing appends and creations)
``recovery`` (a store whose metadata lags is reopened by children killed during the
re-projection that ``open_store`` runs, then opened by the parent), and ``rewind``/``fork``
(kill points inside history edits; ``rewind-<stage>``/``fork-<stage>`` names a stage).

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
from collections import Counter
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
from threadstore._history import COMPACTION_KIND, FORK_KIND, REWIND_KIND, context
from threadstore._items import datetime_to_us, us_to_datetime
from threadstore._meta import Patch, Projection

#: A generous bound on one trial (children, kills, reopen, checks); a hang fails the trial.
TRIAL_TIMEOUT: Final = 120
#: ``meta.extra`` entries written by the children's custom projectors (not part of the fold).
PROJECTOR_NAMES: Final = frozenset({"stall", "report"})
SCENARIOS: Final = (
    "stream-normal",
    "stream-full",
    "create",
    "delete",
    "recovery",
    "rewind",
    "fork",
)
#: Where the child's writer thread stops inside an edit (see ``EditGate`` in the child):
#: the first three before the edit's transaction commits, ``committed`` after.
STAGES: Final = ("mid", "job", "commit", "committed")


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


@attrs.frozen
class ForkIntent:
    """A ``fork`` the child announced (``at`` None: the source's last seq; ``thread_id``
    ``-``: a store-made id; ``titled``: with the title ``fork <cid>``)."""

    source: str
    at: int | None
    thread_id: str
    titled: bool


@attrs.frozen
class Paused:
    """Where the child's writer thread stopped (the ``paused`` line)."""

    point: str
    thread_id: str
    seq: int
    detail: str

    @property
    def committed(self) -> bool:
        return self.point.endswith("-committed")


@attrs.define
class ChildLog:
    """Everything a child reported, parsed line by line."""

    intents: dict[str, Intent] = attrs.Factory(dict)
    #: Announced rewinds: cid -> (thread id, to_seq); acknowledged: cid -> (thread id,
    #: the seq of the metadata the rewind returned).
    rewinds: dict[str, tuple[str, int]] = attrs.Factory(dict)
    rewound: dict[str, tuple[str, int]] = attrs.Factory(dict)
    #: Announced forks; acknowledged: cid -> (new thread id, its metadata's seq).
    forks: dict[str, ForkIntent] = attrs.Factory(dict)
    forked: dict[str, tuple[str, int]] = attrs.Factory(dict)
    paused: Paused | None = None
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
        elif word == "rewind":
            cid, thread_id, to_seq = rest
            self.rewinds[cid] = (thread_id, int(to_seq))
        elif word == "rewound":
            cid, thread_id, seq = rest
            assert self.rewinds[cid][0] == thread_id, line
            self.rewound[cid] = (thread_id, int(seq))
            self.acknowledged += 1
        elif word == "fork":
            cid, source, at, thread_id, titled = rest
            at_seq = None if at == "-" else int(at)
            self.forks[cid] = ForkIntent(source, at_seq, thread_id, titled == "1")
        elif word == "forked":
            cid, thread_id, seq = rest
            self.forked[cid] = (thread_id, int(seq))
            self.acknowledged += 1
        elif word == "paused":
            point, thread_id, seq, detail = rest
            self.paused = Paused(point, thread_id, int(seq), detail)
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
    #: History edits: acknowledged, found in the reopened store (acknowledged or not), and
    #: announced but unacknowledged when the child died.
    edits_acknowledged: int = 0
    rewinds_stored: int = 0
    forks_stored: int = 0
    edits_in_flight: int = 0
    #: The kill point the writer thread stopped at (``rewind``/``fork`` scenarios).
    kill_point: str | None = None
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
    """The metadata the log implies, independent of the store's state: the store's pure
    fold of every item, then the context statistics folded again over ``context(items)``
    (as after a rewind; for a log without rewinds the same as the plain fold)."""
    projection = Projection.new(meta.id, datetime_to_us(meta.created_at), meta.namespace)
    whole = projection.apply(Patch.from_items(items))
    visible = [(i.seq, datetime_to_us(i.created_at), i.kind, i.data) for i in context(items)]
    refolded = whole.with_context(Patch.from_rows(visible))
    return attrs.evolve(refolded.meta, archived_at=meta.archived_at)


def figures(items: Sequence[StoredItem]) -> dict[str, object]:
    """Metadata fields counted straight from the log (no library fold involved)."""
    visible = context(items)
    usage = [item.data for item in visible if item.kind == "token_usage"]
    fork = items[0].data if items and items[0].kind == FORK_KIND else {}
    return {
        "seq": items[-1].seq if items else 0,
        "item_count": len(visible),
        "turn_count": sum(item.kind == "turn_started" for item in visible),
        "input_tokens": sum(data.get("input", 0) for data in usage),
        "output_tokens": sum(data.get("output", 0) for data in usage),
        "forked_from": fork.get("from"),
        "forked_at": fork.get("at_seq"),
    }


def from_compaction(visible: Sequence[StoredItem]) -> list[StoredItem]:
    """What ``read_context`` returns for a context: from its latest compaction on."""
    starts = [i for i, item in enumerate(visible) if item.kind == COMPACTION_KIND]
    return list(visible[starts[-1] :] if starts else visible)


def seqs(items: Sequence[StoredItem]) -> list[int]:
    return [item.seq for item in items]


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


def call_of(item: StoredItem) -> str | None:
    """The cid an appended item is tagged with (None: untagged)."""
    tag = item.data.get("tag")
    return tag.partition("/")[0] if isinstance(tag, str) else None


async def all_threads(store: Store, **options: Any) -> list[ThreadMeta]:
    metas: list[ThreadMeta] = []
    cursor = None
    while True:
        page = await store.list_threads(limit=100, cursor=cursor, **options)
        metas += page.threads
        if page.next_cursor is None:
            return metas
        cursor = page.next_cursor


@attrs.define
class Found:
    """What the per-thread checks found, for the checks across threads."""

    creations: dict[str, str] = attrs.Factory(dict)  # cid -> thread holding its creation
    calls: dict[str, tuple[str, int, int]] = attrs.Factory(dict)  # cid -> (thread, first, last)
    forks: dict[str, str] = attrs.Factory(dict)  # fork cid -> the thread it made
    rewinds: dict[str, list[StoredItem]] = attrs.Factory(dict)  # thread -> its rewind items


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

    logs: dict[str, list[StoredItem]] = {}  # every log first: forks are checked against them
    for listed_meta in listed:
        tid = listed_meta.id
        try:
            logs[tid] = await store.read_items(tid)
        except StoreFormatError as exc:
            problems.append(f"{tid}: the store reports its log damaged: {exc}")
            logs[tid] = await trio.to_thread.run_sync(_raw_items, store.path, tid)
    marks = await trio.to_thread.run_sync(_visible_seqs, store.path)

    found = Found()
    for listed_meta in listed:
        tid = listed_meta.id
        items = logs[tid]
        meta = await store.get_thread(tid)
        if meta != listed_meta:
            problems.append(
                f"{tid}: listing and get_thread differ: {differences(listed_meta, meta)}"
            )
        dense = seqs(items) == list(range(1, len(items) + 1))
        if not dense:
            problems.append(f"{tid}: seqs are not 1..n: {seqs(items)}")
        if tid in log.deleted:
            problems.append(f"{tid}: delete_thread returned, but the thread is still there")
        await check_context(store, meta, items, marks.get(tid, set()), problems)
        if dense:
            check_metadata(meta, items, problems)
        if items and items[0].kind == FORK_KIND:
            start = check_fork_head(tid, items, logs, log, found, problems)
        else:
            start = check_creation(tid, items, log, found, problems)
        if start is not None:
            check_appended(tid, items[start:], log, found, problems)

    listed_set = set(listed_ids)
    check_acknowledged(log, found, listed_set, outcome)
    check_rewinds(log, found, listed_set, outcome)
    if log.paused is not None:
        await check_paused(store, log.paused, logs, outcome)

    # Deleted threads are gone for every reader.
    for tid in sorted(log.deleting - listed_set):
        for read in (store.get_thread, store.read_items, store.read_context):
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


async def check_context(
    store: Store, meta: ThreadMeta, items: list[StoredItem], marks: set[int], problems: list[str]
) -> None:
    """``read_context`` and the ``hidden`` marks follow the pure ``context()`` of the log."""
    tid = meta.id
    visible = context(items)
    expected = from_compaction(visible)
    got = await store.read_context(tid)
    if got != expected:
        problems.append(
            f"{tid}: read_context is not context(read_items) from its latest compaction: "
            f"{seqs(got)} != {seqs(expected)}"
        )
    if len(expected) > 1:
        limit = len(expected) // 2
        tail = await store.read_context(tid, limit=limit)
        if tail != expected[-limit:]:
            problems.append(
                f"{tid}: read_context(limit={limit}) is {seqs(tail)}, not {seqs(expected[-limit:])}"
            )
    in_context = set(seqs(visible))
    if marks != in_context:
        problems.append(
            f"{tid}: the hidden marks disagree with context(read_items) at seqs "
            f"{sorted(marks ^ in_context)}"
        )


def check_metadata(meta: ThreadMeta, items: list[StoredItem], problems: list[str]) -> None:
    """Once ``open_store`` has returned, metadata is a fresh projection of the log."""
    tid = meta.id
    expected = fold(meta, items)
    if without_projectors(meta) != expected:
        problems.append(
            f"{tid}: metadata is not the fold of its log: "
            f"{differences(without_projectors(meta), expected)}"
        )
    counted = {name: getattr(meta, name) for name in figures(items)}
    if counted != figures(items):
        problems.append(f"{tid}: metadata {counted} disagrees with its log: {figures(items)}")


def check_creation(
    tid: str, items: list[StoredItem], log: ChildLog, found: Found, problems: list[str]
) -> int | None:
    """The creation items, whole and as announced; the index of the first appended item."""
    cid = creation_cid(items[0]) if items else None
    intent = log.intents.get(cid) if cid is not None else None
    if cid is None or intent is None or not intent.create:
        problems.append(f"{tid}: does not start with a creation the child announced ({cid})")
        return None
    head = items[: intent.count]
    if any("tag" in item.data for item in head) or digest(head) != intent.digest:
        problems.append(f"{tid}: creation {cid} is stored partially or changed")
    if intent.thread_id not in ("-", tid) or log.created.get(cid, tid) != tid:
        problems.append(f"{tid}: creation {cid} was made as {intent.thread_id}")
    if cid in found.creations:
        problems.append(f"{tid}: creation {cid} is stored twice")
    found.creations[cid] = tid
    return intent.count


def check_appended(
    tid: str, rest: list[StoredItem], log: ChildLog, found: Found, problems: list[str]
) -> None:
    """Appended calls (each whole, contiguous, unchanged, in its task's order) and rewinds."""
    groups: dict[str, list[StoredItem]] = {}
    for item in rest:
        call = call_of(item)
        if item.kind == REWIND_KIND:
            found.rewinds.setdefault(tid, []).append(item)
        elif call is None:
            problems.append(f"{tid}: seq {item.seq} is an untagged {item.kind} after its head")
        else:
            groups.setdefault(call, []).append(item)
    last_of_task: dict[str, int] = {}
    for call, group in groups.items():
        call_intent = log.intents.get(call)
        numbers = seqs(group)
        parts = [int(str(item.data["tag"]).partition("/")[2]) for item in group]
        if call_intent is None or call_intent.create or call_intent.thread_id != tid:
            problems.append(f"{tid}: holds items of call {call}, never sent to it")
        elif (
            parts != list(range(call_intent.count))
            or numbers != list(range(numbers[0], numbers[0] + len(numbers)))
            or digest(group) != call_intent.digest
        ):
            problems.append(f"{tid}: call {call} stored partially, split or changed: {numbers}")
        if call in log.refused:
            problems.append(f"{tid}: call {call} raised before queueing, yet it is stored")
        if call in found.calls:
            problems.append(f"{tid}: call {call} is stored in two threads")
        found.calls[call] = (tid, numbers[0], numbers[-1])
        task, _, n = call.partition(".")
        if int(n) <= last_of_task.get(task, 0):
            problems.append(f"{tid}: task {task}'s calls are stored out of call order")
        last_of_task[task] = int(n)


def is_title_of(item: StoredItem, cid: str) -> bool:
    """``item`` is the title a fork made by ``cid`` was given."""
    return item.kind == "title" and dict(item.data) == {"text": f"fork {cid}"}


def fork_cid(tid: str, items: list[StoredItem], log: ChildLog, found: Found) -> str | None:
    """Which announced fork made thread ``tid`` (whose first item is a ``fork``)."""
    if tid.startswith("f-") and tid[2:] in log.forks:
        return tid[2:]
    for cid, (forked, _seq) in log.forked.items():
        if forked == tid:
            return cid
    # Unacknowledged, with a store-made id: by source, at_seq and title. (A copied title
    # names an acknowledged fork: only acknowledged threads are ever forked.)
    source, at = items[0].data.get("from"), items[0].data.get("at_seq")
    for cid, fork in log.forks.items():
        if (
            cid not in log.forked
            and cid not in found.forks
            and fork.thread_id == "-"
            and (fork.source, fork.at) in ((source, at), (source, None))
            and fork.titled == any(is_title_of(item, cid) for item in items)
        ):
            return cid
    return None


def check_fork_head(
    tid: str,
    items: list[StoredItem],
    logs: Mapping[str, list[StoredItem]],
    log: ChildLog,
    found: Found,
    problems: list[str],
) -> int | None:
    """A fork's ``fork`` item, copies and title, whole and as announced; the index of its
    first own item."""
    data = items[0].data
    source, at = data.get("from"), data.get("at_seq")
    if set(data) != {"from", "at_seq"} or not isinstance(source, str) or not isinstance(at, int):
        problems.append(f"{tid}: malformed fork item {dict(data)}")
        return None
    cid = fork_cid(tid, items, log, found)
    intent = log.forks.get(cid) if cid is not None else None
    if cid is None or intent is None:
        problems.append(f"{tid}: a fork of {source} at {at} the child never announced")
        return None
    if (
        intent.source != source
        or intent.at not in (None, at)
        or intent.thread_id not in ("-", tid)
        or log.forked.get(cid, (tid, 0))[0] != tid
    ):
        problems.append(f"{tid}: fork {cid} ({intent}) is stored as a fork of {source} at {at}")
    if cid in found.forks:
        problems.append(f"{tid}: fork {cid} is stored twice")
    found.forks[cid] = tid
    acked = log.forked.get(cid)
    acked_seq = None if acked is None else acked[1]
    end = fork_copies(tid, cid, intent.titled, items, at, logs.get(source), acked_seq, log)
    if end is None:
        problems.append(
            f"{tid}: fork {cid} of {source} at {at} does not hold a copy of the source's "
            f"context{' then its title' if intent.titled else ''} (source seqs "
            f"{seqs(logs.get(source, []))}, fork {[(i.seq, i.kind) for i in items]})"
        )
    return end


def fork_copies(
    tid: str,
    cid: str,
    titled: bool,
    items: list[StoredItem],
    at: int,
    source_log: list[StoredItem] | None,
    acked_seq: int | None,
    log: ChildLog,
) -> int | None:
    """Where a fork's head ends (the index of its first own item): its ``fork`` item, the
    copies, its title if asked for. None when no state of the source's log at or after
    ``at`` explains the copies (or, the source being gone, when the head is not followed
    by the fork's own items alone)."""

    def own(item: StoredItem) -> bool:
        intent = log.intents.get(call_of(item) or "")
        return item.kind == REWIND_KIND or (
            intent is not None and not intent.create and intent.thread_id == tid
        )

    def head_ends(end: int) -> int | None:
        """The copies end at ``end``: where the head ends, if the rest fits."""
        if titled:
            if end >= len(items) or not is_title_of(items[end], cid):
                return None
            end += 1
        if (acked_seq is not None and end != acked_seq) or not all(map(own, items[end:])):
            return None
        return end

    if source_log is None or seqs(source_log) != list(range(1, len(source_log) + 1)):
        # The source is gone (deleted) or damaged: the copies are what precedes the rest.
        end = next(
            (k for k in range(1, len(items)) if own(items[k]) or is_title_of(items[k], cid)),
            len(items),
        )
        return head_ends(end)
    # A copy is the source's context through ``at`` as its log stood when the fork ran;
    # past ``at`` only rewinds change that, so each rewind after ``at`` is a candidate.
    throughs = [at, *(item.seq for item in source_log[at:] if item.kind == REWIND_KIND)]
    for through in throughs:
        expected = [item for item in context(source_log[:through]) if item.seq <= at]
        end = 1 + len(expected)
        copies = items[1:end]
        if len(copies) == len(expected) and all(
            (c.kind, c.data, c.created_at) == (e.kind, e.data, e.created_at)
            for c, e in zip(copies, expected, strict=True)
        ):
            head = head_ends(end)
            if head is not None:
                return head
    return None


def check_acknowledged(log: ChildLog, found: Found, listed: set[str], outcome: Outcome) -> None:
    """Nothing acknowledged is missing, unless its thread's deletion was announced."""
    problems = outcome.problems

    def excused(tid: str) -> bool:
        return tid in log.deleting and tid not in listed

    for cid, (tid, first, last) in log.acks.items():
        count = log.intents[cid].count
        outcome.acknowledged += count
        if found.calls.get(cid) != (tid, first, last) and not excused(tid):
            outcome.lost += count
            problems.append(
                f"acknowledged call {cid} ({tid} {first}..{last}) is {found.calls.get(cid)}"
            )
    for cid, tid in log.created.items():
        count = log.intents[cid].count
        outcome.acknowledged += count
        if found.creations.get(cid) != tid and not excused(tid):
            outcome.lost += count
            problems.append(f"acknowledged creation {cid} of {tid} is missing")
    for cid, (tid, seq) in log.forked.items():
        outcome.acknowledged += seq
        outcome.edits_acknowledged += 1
        if found.forks.get(cid) != tid and not excused(tid):
            outcome.lost += seq
            problems.append(f"acknowledged fork {cid} ({tid}, {seq} items) is missing")
    outcome.forks_stored += len(found.forks)

    settled = log.acks.keys() | log.created.keys() | log.refused
    in_flight = log.intents.keys() - settled
    outcome.in_flight += len(in_flight)
    outcome.in_flight_stored += len(in_flight & (found.calls.keys() | found.creations.keys()))
    edits = log.rewinds.keys() | log.forks.keys()
    outcome.edits_in_flight += len(edits - log.rewound.keys() - log.forked.keys() - log.raised)


def check_rewinds(log: ChildLog, found: Found, listed: set[str], outcome: Outcome) -> None:
    """Every stored rewind was announced; every acknowledged one is stored, at or before the
    seq of the metadata it returned."""
    problems = outcome.problems
    announced = Counter(log.rewinds.values())
    free: dict[tuple[str, int], list[int]] = {}  # (thread, to_seq) -> seqs of stored rewinds
    for tid, items in found.rewinds.items():
        for item in items:
            to_seq = item.data.get("to_seq")
            if set(item.data) != {"to_seq"} or not isinstance(to_seq, int):
                problems.append(f"{tid}: malformed rewind at seq {item.seq}: {dict(item.data)}")
                continue
            if not 0 <= to_seq < item.seq:
                problems.append(f"{tid}: the rewind at seq {item.seq} goes to {to_seq}")
            free.setdefault((tid, to_seq), []).append(item.seq)
            outcome.rewinds_stored += 1
    for (tid, to_seq), stored in free.items():
        if len(stored) > announced[(tid, to_seq)]:
            problems.append(
                f"{tid}: {len(stored)} rewind(s) to {to_seq} stored (seqs {stored}), "
                f"{announced[(tid, to_seq)]} announced"
            )
    for cid, (tid, seq) in sorted(log.rewound.items(), key=lambda entry: entry[1][1]):
        outcome.acknowledged += 1
        outcome.edits_acknowledged += 1
        candidates = free.get((tid, log.rewinds[cid][1]), [])
        match = next((s for s in candidates if s <= seq), None)
        if match is not None:
            candidates.remove(match)
        elif not (tid in log.deleting and tid not in listed):
            outcome.lost += 1
            problems.append(
                f"acknowledged rewind {cid} of {tid} to {log.rewinds[cid][1]} (metadata at "
                f"seq {seq}) is not stored"
            )


async def check_paused(
    store: Store, paused: Paused, logs: Mapping[str, list[StoredItem]], outcome: Outcome
) -> None:
    """The edit the writer thread stopped in is absent whole if its transaction had not
    committed, present (whole: checked with every thread) if it had."""
    problems = outcome.problems
    edit = paused.point.partition("-")[0]
    tid = paused.thread_id
    rows = await trio.to_thread.run_sync(_raw_rows, store.path, tid)
    if edit == "rewind":
        items = logs.get(tid)
        if items is None:
            problems.append(f"{tid}: the thread of the rewind killed at {paused.point} is gone")
            return
        stored = items[paused.seq - 1] if len(items) >= paused.seq else None
        if paused.committed:
            if (
                stored is None
                or stored.kind != REWIND_KIND
                or stored.data.get("to_seq") != int(paused.detail)
            ):
                problems.append(
                    f"{tid}: the rewind to {paused.detail} committed at seq {paused.seq} "
                    f"before the kill, but that seq holds {stored}"
                )
        elif stored is not None:
            problems.append(
                f"{tid}: killed at {paused.point} (before the COMMIT of its rewind at seq "
                f"{paused.seq}), yet seq {paused.seq} holds a {stored.kind}"
            )
        return
    if paused.committed and tid not in logs:
        problems.append(f"{tid}: the fork committed before the kill, but the thread is missing")
    elif not paused.committed and (tid in logs or rows != (0, 0)):
        problems.append(
            f"{tid}: killed at {paused.point} (before the COMMIT of its fork), yet the file "
            f"holds {rows[0]} thread row(s) and {rows[1]} item(s) of it"
        )


async def check_store_keeps_working(store: Store, log: ChildLog, outcome: Outcome) -> None:
    """After the checks: the next append gets the next seq, a rewind and a fork of the
    thread work; deleted ids can be reused."""
    problems = outcome.problems
    listed = await all_threads(store, include_empty=True)
    if listed:
        meta = listed[0]
        receipt = await store.append_and_flush(meta.id, Item.user_message("after the crash"))
        after = await store.get_thread(meta.id)
        if (receipt.seq, after.seq, after.item_count) != (
            meta.seq + 1,
            meta.seq + 1,
            meta.item_count + 1,
        ):
            problems.append(f"{meta.id}: append after reopen got {receipt.seq}, {after}")
        rewound = await store.rewind(meta.id, max(0, after.seq - 2))
        items = await store.read_items(meta.id)
        context_now = await store.read_context(meta.id)
        if (
            rewound.seq != after.seq + 1
            or items[-1].kind != REWIND_KIND
            or context_now != from_compaction(context(items))
            or without_projectors(rewound) != fold(rewound, items)
        ):
            problems.append(f"{meta.id}: rewind after reopen gave {rewound}, {seqs(context_now)}")
        fork = await store.fork(meta.id, title="after the crash")
        forked = await store.read_items(fork.id)
        expected = [(i.kind, i.data) for i in context(items)]
        title = ("title", {"text": "after the crash"})
        if [(i.kind, i.data) for i in forked[1:]] != [*expected, title] or (
            fork.title != "after the crash"
        ):
            problems.append(f"{fork.id}: fork after reopen holds {seqs(forked)}")
    listed_set = {meta.id for meta in listed}
    for tid in sorted(log.deleting - listed_set)[:3]:
        created = await store.create_thread(goal="again", thread_id=tid)
        items = await store.read_items(tid)
        if created.seq != 1 or [(i.seq, i.kind) for i in items] != [(1, "goal")]:
            problems.append(f"{tid}: reused id shows old items: {items}")


async def reopen_and_check(path: Path, durability: str, log: ChildLog, outcome: Outcome) -> None:
    async with open_store(path, durability=durability) as store:  # type: ignore[arg-type]
        await check_store(store, log, outcome)
        if not outcome.problems:  # (writing to a damaged store can wedge it: report instead)
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
    options += ["--edits", edit_rate(rng)]
    log = ChildLog()
    await run_until_killed(path, "stream", options, log, lambda: log.acknowledged >= kill_after)
    outcome.kills += 1
    await reopen_and_check(path, durability, log, outcome)


async def create_trial(directory: Path, rng: random.Random, outcome: Outcome) -> None:
    path = directory / "store.db"
    kill_after = rng.randint(1, 150)
    options = ["--seed", str(outcome.seed), "--tasks", str(rng.randint(1, 6))]
    options += ["--edits", edit_rate(rng)]
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
    options += ["--tasks", str(rng.randint(2, 6)), "--edits", edit_rate(rng)]
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
    options += ["--edits", edit_rate(rng)]
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


def edit_rate(rng: random.Random) -> str:
    """How often a child's step is a rewind or a fork instead of an append."""
    return rng.choice(["0", "0.05", "0.1", "0.25"])


async def edit_trial(
    directory: Path, rng: random.Random, outcome: Outcome, edit: str, stage: str | None
) -> None:
    """Stop the child's writer thread at a kill point of its N-th rewind or fork, SIGKILL it
    there, then check: the edit is absent whole (or, ``committed``, present whole)."""
    path = directory / "store.db"
    stage = rng.choice(STAGES) if stage is None else stage
    point = f"{edit}-{stage}"
    outcome.kill_point = point
    durability = rng.choice(["normal", "full"])
    options = ["--durability", durability, "--seed", str(outcome.seed)]
    options += ["--threads", str(rng.randint(2, 12)), "--tasks", str(rng.randint(2, 5))]
    options += ["--edits", rng.choice(["0.2", "0.4"])]
    options += ["--pause", point, "--pause-at", str(rng.randint(1, 8))]
    log = ChildLog()
    # The kill point comes within a few dozen steps; the bound only keeps a miss finite.
    await run_until_killed(
        path, "stream", options, log, lambda: log.paused is not None or log.acknowledged >= 5000
    )
    outcome.kills += 1
    if log.paused is None or log.paused.point != point:
        outcome.problems.append(f"the child never stopped at {point}: {log.paused}")
    await reopen_and_check(path, durability, log, outcome)


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
        elif scenario.startswith(("rewind", "fork")):
            edit, _, stage = scenario.partition("-")
            assert stage in ("", *STAGES), scenario
            await edit_trial(directory, rng, outcome, edit, stage or None)
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
    outcomes = []
    for seed in (11, 12, 13):
        outcome = await run_trial(f"stream-{durability}", seed, tmp_path / str(seed))
        outcome.check()
        assert outcome.acknowledged > 0
        outcomes.append(outcome)
    # The workloads mix history edits into the appends.
    assert sum(o.rewinds_stored for o in outcomes) > 0
    assert sum(o.forks_stored for o in outcomes) > 0


@pytest.mark.parametrize("edit", ["rewind", "fork"])
async def test_sigkill_inside_a_history_edit_leaves_all_of_it_or_nothing(  # noqa: ASYNC910 - every trial awaits
    tmp_path: Path, edit: str
) -> None:
    """The writer thread stops at each kill point of a rewind (a fork) and is SIGKILLed."""
    for i, stage in enumerate(STAGES):
        outcome = await run_trial(f"{edit}-{stage}", 51 + i, tmp_path / stage)
        outcome.check()
        assert outcome.kill_point == f"{edit}-{stage}"
        assert outcome.edits_acknowledged + outcome.edits_in_flight > 0


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


def _visible_seqs(path: str) -> dict[str, set[int]]:
    """Per thread, the seqs of the items the file does not mark hidden."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT thread_id, seq FROM items WHERE hidden = 0").fetchall()
    finally:
        conn.close()
    visible: dict[str, set[int]] = {}
    for thread_id, seq in rows:
        visible.setdefault(thread_id, set()).add(seq)
    return visible


def _raw_rows(path: str, thread_id: str) -> tuple[int, int]:
    """How many ``threads`` rows and ``items`` rows the file holds for ``thread_id``."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (threads,) = conn.execute("SELECT count(*) FROM threads WHERE id = ?", (thread_id,))
        (items,) = conn.execute("SELECT count(*) FROM items WHERE thread_id = ?", (thread_id,))
    finally:
        conn.close()
    return int(threads[0]), int(items[0])


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
    kill_points = Counter(o.kill_point for o in outcomes if o.kill_point is not None)
    say(
        f"crash soak: seed={seed}, trials={len(plan)}, failed={len(failed)}, "
        f"kills={sum(o.kills for o in outcomes)} "
        f"(during recovery: {sum(o.recovery_kills for o in outcomes)}), "
        f"acknowledged={sum(o.acknowledged for o in outcomes)}, "
        f"in flight at the kill={sum(o.in_flight for o in outcomes)} calls "
        f"({sum(o.in_flight_stored for o in outcomes)} stored whole, the rest absent), "
        f"lost={sum(o.lost for o in outcomes)}, "
        f"threads checked={sum(o.threads for o in outcomes)}, "
        f"history edits: {sum(o.edits_acknowledged for o in outcomes)} acknowledged, "
        f"{sum(o.edits_in_flight for o in outcomes)} in flight at the kill, "
        f"{sum(o.rewinds_stored for o in outcomes)} rewinds and "
        f"{sum(o.forks_stored for o in outcomes)} forks checked, "
        f"kills inside an edit: {dict(sorted(kill_points.items()))}, {seconds:.0f} s, "
        f"slowest trial {max((o.seconds for o in outcomes), default=0):.1f} s, {per_scenario}"
    )
    assert not failed, f"failing trials (seed={seed}): {failed}"
    assert sum(o.lost for o in outcomes) == 0


def _tamper_edits(
    path: str, rewind: tuple[str, int], copy: tuple[str, int], hide: tuple[str, int]
) -> None:
    """Damage history edits behind the store's back: move a rewind's ``to_seq``, change a
    fork's copied item, mark an item of the context hidden."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(
            "UPDATE items SET data = json_set(data, '$.to_seq', "
            "CASE json_extract(data, '$.to_seq') WHEN 0 THEN 1 ELSE 0 END) "
            "WHERE thread_id = ? AND seq = ?",
            rewind,
        )
        conn.execute(
            "UPDATE items SET data = json_set(data, '$.tampered', 1) "
            "WHERE thread_id = ? AND seq = ?",
            copy,
        )
        conn.execute("UPDATE items SET hidden = 1 WHERE thread_id = ? AND seq = ?", hide)
    finally:
        conn.close()


async def test_the_harness_notices_broken_history_edits(tmp_path: Path) -> None:
    """The edit checks are not vacuous: a moved rewind, a changed copy in a fork and a
    wrong hidden mark are each reported."""
    path = tmp_path / "store.db"
    log = ChildLog()
    options = ["--threads", "3", "--tasks", "2", "--seed", "9", "--edits", "0.4"]
    with trio.fail_after(TRIAL_TIMEOUT):
        await run_until_killed(
            path, "stream", options, log, lambda: len(log.forked) >= 3 and len(log.rewound) >= 1
        )
        async with open_store(path) as store:  # recover the metadata, pick the victims
            rewound_cid, (rewound_tid, _seq) = next(iter(log.rewound.items()))
            items = await store.read_items(rewound_tid)
            rewind_seq = next(
                i.seq
                for i in items
                if i.kind == REWIND_KIND and i.data["to_seq"] == log.rewinds[rewound_cid][1]
            )
            forks = [
                (cid, tid)
                for cid, (tid, seq) in log.forked.items()
                if tid != rewound_tid and seq > 1 + log.forks[cid].titled
            ]
            fork_cid_, fork_tid = forks[0]
            copy_seq = 2  # the first copy follows the fork item
            hidden: tuple[str, int] | None = None
            for tid in log.created.values():
                visible = context(await store.read_items(tid))
                if tid not in (rewound_tid, fork_tid) and visible:
                    hidden = (tid, visible[-1].seq)
                    break
            assert hidden is not None
            hidden_tid = hidden[0]
        await trio.to_thread.run_sync(
            _tamper_edits,
            str(path),
            (rewound_tid, rewind_seq),
            (fork_tid, copy_seq),
            hidden,
        )
        outcome = Outcome("tampered-edits", 9)
        async with open_store(path) as store:
            await check_store(store, log, outcome)
    problems = outcome.problems
    assert any(f"acknowledged rewind {rewound_cid} " in p for p in problems), problems
    assert any(f"{fork_tid}: fork {fork_cid_} of " in p for p in problems), problems
    assert any(f"{hidden_tid}: the hidden marks disagree" in p for p in problems), problems
    assert any(f"{hidden_tid}: read_context is not" in p for p in problems), problems
    with pytest.raises(AssertionError, match="acknowledged item"):
        outcome.check()
