"""A child process that works a threadstore until it is SIGKILLed, for tests/sqlite/test_crash.py.

Run as ``python crash_child.py PATH MODE [options]`` with ``PYTHONPATH`` at the repo root.
Every event is one line on stdout, written and flushed in one ``write`` (atomic on a pipe),
so a line the parent reads was complete when the child died. A line announcing a call is
written *before* the call; its acknowledgement *after* the call returned:

- ``create <cid> <thread id or -> <count> <digest>`` then ``created <cid> <thread id>``:
  ``create_thread`` with ``count`` first items (goal/title/extra, each naming ``cid``);
- ``call <cid> <thread id> <count> <digest>`` then ``ack <cid> <thread id> <first seq>
  <last seq> <digest>``: an append of ``count`` items (``append``, ``append_nowait`` +
  ``durable()``, or ``append_and_flush``), each item tagged ``data["tag"] = "<cid>/<j>"``;
- ``refused <cid> <error>``: the call raised before queueing anything (nothing is stored);
  ``raised <cid> <error>``: ``append_and_flush``, a rewind or a fork raised (racing a
  deletion): stored whole or not at all;
- ``deleting <thread id>`` then ``deleted <thread id>``;
- ``rewind <cid> <thread id> <to_seq>`` then ``rewound <cid> <thread id> <meta seq>``:
  ``store.rewind`` (the rewind item's seq is at most the returned metadata's seq);
- ``fork <cid> <source id> <at_seq or -> <thread id or -> <titled 0/1>`` then ``forked <cid>
  <thread id> <meta seq>``: ``store.fork``, titled ``fork <cid>`` if ``titled`` is 1;
- ``paused <point> <thread id> <seq> <detail>``: the writer thread stopped at kill point
  ``point`` (``--pause``) of a rewind (``seq``: its item's, ``detail``: its ``to_seq``) or
  a fork (``<thread id>``: the new thread, ``seq`` 0, ``detail``: the source) and waits for
  the SIGKILL;
- ``bad <text>``: the child saw the store break a promise (the parent fails the test).

``<digest>`` is :func:`digest` of the items' ``(kind, data)``: the parent recomputes it from
what it reads back. ``<cid>`` is ``<task>.<n>``: the n-th call of task ``task``.

Modes: ``stream`` creates ``--threads`` threads, prints ``ready`` and runs ``--tasks`` tasks
appending to random threads forever (``--block-after N``: a projector whose N-th and later
calls never return, so metadata lags the log; such a child never calls
``append_and_flush``); ``create`` runs tasks creating threads (sometimes appending to them);
``delete`` creates threads, prints ``ready``, then runs tasks that delete, create and
append to threads at random; ``recover`` prints ``opening``, opens the store (which
re-projects lagging threads: a projector prints ``project <thread id>`` on each call) and
prints ``opened``, then waits to be killed. Nothing here exits on its own.

History edits: in every mode but ``recover``, a task's step is, with probability
``--edits``, a rewind or a fork instead of an append (appends also hold ``compaction``
items). With ``--block-after`` a rewind never returns (it waits for metadata the stalled
projector never writes), so such a child runs its rewinds in background tasks.

Kill points (``--pause <edit>-<stage> --pause-at N``): the N-th rewind (or fork) job the
writer thread runs stops it, reporting ``paused``: ``mid`` inside the job, between its
statements (a rewind's item appended, its hidden marks not yet written; a fork's thread
and items inserted, its ``fork`` item not yet marked hidden); ``job`` right after the job;
``commit`` just before the COMMIT of its transaction (the faults seam); ``committed``
before the writer's next transaction, so the edit is committed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import sqlite3
import sys
import threading
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal

import structlog
import trio

import threadstore
from threadstore import Item, StoredItem, ThreadMeta, ThreadNotFoundError, ThreadStoreError
from threadstore._engine import ForkThread, RewindThread
from threadstore.sqlite import _engine, _sql
from threadstore.sqlite._engine import ChangeCounter
from threadstore.testing import Faults, Target

#: Texts over the preview bound (240 characters) and odd characters exercise the fold.
LONG = "long " * 70
ODD = "quotes ' \" -- ; DROP TABLE items; NUL \x00 emoji 🧵 ü"


def report(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def plain(value: object) -> Any:
    """``json.dumps`` fallback: read-only mappings become dicts."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not JSON: {value!r}")


def digest(items: Sequence[Item]) -> str:
    """A short hash of the items' kinds and data (the parent has the same function)."""
    text = json.dumps(
        [[item.kind, item.data] for item in items],
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        default=plain,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def make_items(rng: random.Random, cid: str) -> list[Item]:
    """1-4 items of mixed kinds, each tagged with ``<cid>/<j>``."""
    items = []
    for j in range(rng.randint(1, 4)):
        token = f"{cid}.{j}"
        text = rng.choice([token, f"{token} {LONG}", f"{token} {ODD}", "   "])
        item = rng.choice(
            [
                Item.user_message(text),
                Item.user_message(text),
                Item.assistant_message(text),
                Item.assistant_message(text),
                Item.reasoning(text),
                Item.tool_call("search", {"query": token, "n": j}, call_id=token),
                Item.tool_result(token, [1, token], is_error=rng.random() < 0.2),
                Item.turn_started(token),
                Item.turn_completed(token),
                Item.turn_aborted(token, "stopped"),
                Item.goal(f"goal {text}"),
                Item.title(f"title {token}"),
                Item.token_usage(rng.randint(0, 900), rng.randint(0, 900)),
                Item.error(f"error {token}"),
                Item.compaction(f"summary {text}"),
            ]
        )
        items.append(Item(kind=item.kind, data={**item.data, "tag": f"{cid}/{j}"}))
    return items


def creation(
    rng: random.Random, cid: str
) -> tuple[str | None, str | None, dict[str, Any] | None, list[Item]]:
    """Arguments of a ``create_thread`` (at least one of goal/title/extra) and its items."""
    goal = f"goal {cid} {rng.choice(['', LONG, ODD])}" if rng.random() < 0.7 else None
    title = f"title {cid}" if rng.random() < 0.4 else None
    extra = {"cid": cid, "n": rng.randint(0, 9)} if rng.random() < 0.3 or not goal else None
    items = []
    if goal is not None:
        items.append(Item.goal(goal))
    if title is not None:
        items.append(Item.title(title))
    if extra is not None:
        items.append(Item(kind="metadata", data={"extra": extra}))
    return goal, title, extra, items


class StallingProjector:
    """Counts the items it saw; from its ``block_after``-th call on it never returns."""

    name = "stall"

    def __init__(self, block_after: int) -> None:
        self.block_after = block_after
        self.calls = 0

    async def project(self, meta: ThreadMeta, items: Sequence[StoredItem]) -> Mapping[str, Any]:
        self.calls += 1
        await trio.lowlevel.checkpoint()
        if self.calls >= self.block_after:
            await trio.sleep_forever()
        return {"seen": meta.extra.get(self.name, {}).get("seen", 0) + len(items)}


class ReportingProjector:
    """Prints ``project <thread id>`` on each call (recovery progress); changes nothing."""

    name = "report"

    def project(self, meta: ThreadMeta, items: Sequence[StoredItem]) -> None:
        report(f"project {meta.id}")


class EditGate(Faults):
    """Stops the writer thread at one kill point of the ``at``-th rewind or fork job.

    A :class:`Faults` that injects nothing: its ``before_commit`` and
    ``before_transaction`` hooks (run by the writer thread) are the ``commit`` and
    ``committed`` points; :meth:`install` wraps the engine's rewind and fork jobs (and the
    statement each runs last) for the ``mid`` and ``job`` points. Stopping reports
    ``paused`` and blocks the writer thread until the parent's SIGKILL.
    """

    STAGES = ("mid", "job", "commit", "committed")

    def __init__(self, point: str, at: int) -> None:
        super().__init__()
        self.edit, _, self.stage = point.partition("-")
        if self.edit not in ("rewind", "fork") or self.stage not in self.STAGES:
            raise SystemExit(f"unknown kill point {point!r}")
        self.at = at
        self.seen = 0
        #: ``<thread id> <seq> <detail>`` of the edit to stop in, once its job started.
        self.target: str | None = None

    def install(self) -> None:
        """Wrap the SQLite engine's edit jobs (module globals it looks up at each call)."""
        rewind_job, fork_job = _engine._rewind_job, _engine._fork_job
        hide_items, insert_hidden = _sql.hide_items, _sql.insert_hidden

        def rewind(op: RewindThread, conn: sqlite3.Connection) -> None:
            self.started("rewind", f"{op.append.thread_id} {op.append.rows[0][0]} {op.to_seq}")
            rewind_job(op, conn)
            self.halt("rewind", "job")

        def fork(counter: ChangeCounter, op: ForkThread, conn: sqlite3.Connection) -> ThreadMeta:
            self.started("fork", f"{op.thread_id} 0 {op.source_id}")
            meta = fork_job(counter, op, conn)
            self.halt("fork", "job")
            return meta

        def hide(conn: sqlite3.Connection, thread_id: str, to_seq: int, rewind_seq: int) -> None:
            self.halt("rewind", "mid")  # the rewind item is appended, nothing hidden yet
            hide_items(conn, thread_id, to_seq, rewind_seq)

        def mark(conn: sqlite3.Connection, thread_id: str, rows: Sequence[_sql.ItemRow]) -> None:
            self.halt("fork", "mid")  # the thread and all its items are inserted
            insert_hidden(conn, thread_id, rows)

        _engine._rewind_job, _engine._fork_job = rewind, fork
        _sql.hide_items, _sql.insert_hidden = hide, mark

    def started(self, edit: str, description: str) -> None:
        if edit == self.edit and self.target is None:
            self.seen += 1
            if self.seen == self.at:
                self.target = description

    def halt(self, edit: str, stage: str) -> None:
        """Block for good if the chosen edit has reached the chosen stage."""
        if self.target is not None and edit == self.edit and stage == self.stage:
            report(f"paused {self.edit}-{stage} {self.target}")
            threading.Event().wait()

    def before_transaction(self, conn: sqlite3.Connection) -> None:
        self.halt(self.edit, "committed")  # the edit's transaction committed: the next one
        super().before_transaction(conn)

    def before_commit(self, targets: Collection[Target]) -> None:
        self.halt(self.edit, "commit")
        super().before_commit(targets)


class Worker:
    """What the tasks of one child share: the store, the threads, the random source."""

    def __init__(
        self,
        store: threadstore.Store,
        rng: random.Random,
        *,
        flush: bool,
        edits: float = 0.0,
        background: trio.Nursery | None = None,
    ) -> None:
        self.store = store
        self.rng = rng
        self.flush = flush
        self.edits = edits
        #: Where rewinds run when they cannot return (a stalled projector), else None.
        self.background = background
        self.threads: list[str] = []
        self.deleting: set[str] = set()
        #: The last seq the child saw for each thread (never above what the store assigned).
        self.known: dict[str, int] = {}

    async def create(self, cid: str) -> str:
        goal, title, extra, items = creation(self.rng, cid)
        thread_id = f"t-{cid}" if self.rng.random() < 0.5 else None  # else a UUIDv7
        report(f"create {cid} {thread_id or '-'} {len(items)} {digest(items)}")
        meta = await self.store.create_thread(
            goal=goal, title=title, thread_id=thread_id, extra=extra
        )
        report(f"created {cid} {meta.id}")
        if meta.seq != len(items) or (goal is not None and meta.goal != goal):
            report(f"bad create_thread returned {meta.seq=} {meta.goal=} for {cid}")
        self.threads.append(meta.id)
        self.known[meta.id] = meta.seq
        return meta.id

    async def step(self, cid: str, thread_id: str) -> None:
        """An append, or (with probability ``edits``) a rewind or a fork of ``thread_id``."""
        roll = self.rng.random()
        if roll >= self.edits:
            await self.append(cid, thread_id)
        elif roll < self.edits * 0.55:
            if self.background is None:
                await self.rewind(cid, thread_id)
            else:
                self.background.start_soon(self.rewind, cid, thread_id)
                await trio.lowlevel.checkpoint()
        else:
            await self.fork(cid, thread_id)

    async def rewind(self, cid: str, thread_id: str) -> None:
        rng, last = self.rng, self.known.get(thread_id, 0)
        to_seq = rng.choice([last, rng.randint(max(0, last - 6), last), rng.randint(0, last)])
        report(f"rewind {cid} {thread_id} {to_seq}")
        try:
            meta = await self.store.rewind(thread_id, to_seq)
        except ThreadStoreError as exc:  # deleted before or meanwhile: stored or not
            report(f"raised {cid} {type(exc).__name__}")
            await trio.lowlevel.checkpoint()
            return
        report(f"rewound {cid} {thread_id} {meta.seq}")
        if meta.seq <= max(to_seq, last):
            report(f"bad rewind({cid}) returned metadata at seq {meta.seq}, before the rewind")
        self.known[thread_id] = max(self.known.get(thread_id, 0), meta.seq)

    async def fork(self, cid: str, source: str) -> None:
        rng, last = self.rng, self.known.get(source, 0)
        at = None if rng.random() < 0.4 else rng.choice([last, rng.randint(0, last)])
        thread_id = f"f-{cid}" if rng.random() < 0.5 else None  # else a UUIDv7
        title = f"fork {cid}" if rng.random() < 0.5 else None
        report(
            f"fork {cid} {source} {'-' if at is None else at} {thread_id or '-'} {int(bool(title))}"
        )
        try:
            meta = await self.store.fork(source, at_seq=at, thread_id=thread_id, title=title)
        except ThreadStoreError as exc:  # the source deleted before or meanwhile: not stored
            report(f"raised {cid} {type(exc).__name__}")
            await trio.lowlevel.checkpoint()
            return
        report(f"forked {cid} {meta.id} {meta.seq}")
        if meta.forked_from != source or (at is not None and meta.forked_at != at):
            report(f"bad fork({cid}) returned {meta.forked_from=} {meta.forked_at=}")
        self.threads.append(meta.id)
        self.known[meta.id] = meta.seq

    async def append(self, cid: str, thread_id: str) -> None:
        items = make_items(self.rng, cid)
        method = self.rng.choice(
            ["append", "nowait", "flush"] if self.flush else ["append", "nowait"]
        )
        report(f"call {cid} {thread_id} {len(items)} {digest(items)}")
        try:
            if method == "append":
                receipt = await self.store.append(thread_id, *items)
            elif method == "nowait":
                receipt = self.store.append_nowait(thread_id, *items)
                await receipt.durable()
            else:
                try:
                    receipt = await self.store.append_and_flush(thread_id, *items)
                except ThreadStoreError as exc:  # deleted meanwhile: stored or not
                    report(f"raised {cid} {type(exc).__name__}")
                    await trio.lowlevel.checkpoint()
                    return
        except ThreadNotFoundError as exc:  # deleted before the call: nothing queued
            report(f"refused {cid} {type(exc).__name__}")
            await trio.lowlevel.checkpoint()
            return
        first = receipt.seq - len(items) + 1
        report(f"ack {cid} {thread_id} {first} {receipt.seq} {digest(items)}")
        self.known[thread_id] = max(self.known.get(thread_id, 0), receipt.seq)
        if method == "flush":
            try:
                meta = await self.store.get_thread(thread_id)
            except ThreadNotFoundError:
                return
            if meta.seq < receipt.seq:
                report(f"bad append_and_flush({cid}) returned before seq {receipt.seq} was visible")

    async def delete(self, thread_id: str) -> None:
        self.deleting.add(thread_id)
        report(f"deleting {thread_id}")
        await self.store.delete_thread(thread_id)
        report(f"deleted {thread_id}")

    def live(self) -> list[str]:
        return [tid for tid in self.threads if tid not in self.deleting]


async def stream_task(worker: Worker, task: int) -> None:
    n = 0
    while True:
        n += 1
        await worker.step(f"{task}.{n}", worker.rng.choice(worker.threads))


async def create_task(worker: Worker, task: int) -> None:
    n = 0
    while True:
        n += 1
        thread_id = await worker.create(f"{task}.{n}")
        if worker.rng.random() < 0.5:
            n += 1
            await worker.step(f"{task}.{n}", worker.rng.choice([thread_id, *worker.threads]))


async def delete_task(worker: Worker, task: int) -> None:
    n = 0
    while True:
        n += 1
        live = worker.live()
        roll = worker.rng.random()
        if roll < 0.3 and live:
            await worker.delete(worker.rng.choice(live))
        elif roll < 0.45 or len(live) < 3:
            await worker.create(f"{task}.{n}")
        else:  # any thread, also one being deleted: a racing call is refused or stored
            await worker.step(f"{task}.{n}", worker.rng.choice(worker.threads))


async def main(args: argparse.Namespace) -> None:
    durability: Literal["normal", "full"] = args.durability
    rng = random.Random(args.seed)
    if args.mode == "recover":
        report("opening")
        async with threadstore.open_store(
            args.path, durability=durability, projectors=[ReportingProjector()]
        ):
            report("opened")
            await trio.sleep_forever()
    projectors = [] if args.block_after is None else [StallingProjector(args.block_after)]
    gate = None
    if args.pause is not None:
        gate = EditGate(args.pause, args.pause_at)
        gate.install()
    async with (
        threadstore.open_store(
            args.path,
            durability=durability,
            projectors=projectors,
            shutdown_timeout=0,
            faults=gate,
        ) as store,
        trio.open_nursery() as nursery,
    ):
        stalls = args.block_after is not None
        worker = Worker(
            store,
            rng,
            flush=not stalls,
            edits=args.edits,
            background=nursery if stalls else None,
        )
        if args.mode in ("stream", "delete"):
            for n in range(1, args.threads + 1):
                await worker.create(f"0.{n}")
            if args.mode == "delete":
                for n in range(args.threads + 1, 3 * args.threads + 1):
                    await worker.append(f"0.{n}", rng.choice(worker.threads))
            report("ready")
        task = {"stream": stream_task, "create": create_task, "delete": delete_task}[args.mode]
        for t in range(1, args.tasks + 1):
            nursery.start_soon(task, worker, t)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("mode", choices=["stream", "create", "delete", "recover"])
    parser.add_argument("--durability", choices=["normal", "full"], default="normal")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--block-after", type=int, default=None)
    parser.add_argument("--edits", type=float, default=0.0)
    parser.add_argument("--pause", default=None)
    parser.add_argument("--pause-at", type=int, default=1)
    return parser.parse_args(argv)


if __name__ == "__main__":
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    trio.run(main, parse(sys.argv[1:]))
