"""Several processes writing one PostgreSQL store at once, one of them SIGKILLed.

Each trial (seeded: the seed is in the failure message) starts three writer processes
(``tests/_children/pg_writer_child.py``) on one database. Each creates threads of its own
and appends, from three tasks, to its own threads and to three shared threads the test
made; the test follows the store's change feed from a read-only store meanwhile. Once every
writer has some appends acknowledged, one of them is SIGKILLed mid-stream; the other two go
on. Then:

- the dead writer's threads are taken over: their metadata catches up with their log while
  the survivors run (nobody appends to them any more: only the takeover scan projects them);
- every thread's log is dense from seq 1, holds every acknowledged item exactly once (at the
  seq its acknowledgement named) and nothing that was never called;
- after the survivors flush and exit, every thread's metadata equals the fold of its log,
  and the feed follower's view equals ``list_threads``.

``make test`` runs two trials; ``make soak`` runs ``THREADSTORE_PG_SOAK_TRIALS`` (default
200) from ``THREADSTORE_SOAK_SEED`` (default: random, printed).
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack

import pytest
import trio
from _helpers import View, apply, fold_log
from _process import Child, spawn_child

from threadstore import Store, StoredItem, ThreadMeta, open_store
from threadstore.demo import list_all

#: How many appends each writer has acknowledged before one of them is killed, and how many
#: more the survivors acknowledge after.
BEFORE_KILL = 25
AFTER_KILL = 25
SHARED = 3
OWN = 3
WRITERS = 3


class Writer:
    """What the test knows of one writer process from its stdout."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self.own: list[str] = []
        self.called: dict[str, str] = {}  # text -> thread id
        self.acked: dict[str, tuple[str, int]] = {}  # text -> (thread id, seq)
        self.bad: list[str] = []
        self.done = False

    async def read_until(self, predicate: Callable[[Writer], bool]) -> None:
        """Read its lines until ``predicate`` holds (or its stdout ends)."""
        while not predicate(self):
            line = await self.child.line()
            if line is None:
                break
            self.take(line)
        await trio.lowlevel.checkpoint()

    def take(self, line: str) -> None:
        word, _, rest = line.partition(" ")
        if word == "created":
            self.own.append(rest)
        elif word == "call":
            text, tid = rest.split()
            self.called[text] = tid
        elif word == "ack":
            text, tid, seq = rest.split()
            self.acked[text] = (tid, int(seq))
        elif word == "bad":
            self.bad.append(rest)
        elif word == "done":
            self.done = True


def folded(meta: ThreadMeta, items: list[StoredItem]) -> ThreadMeta:
    """What folding ``items`` gives for ``meta``'s thread (the test suite's own fold)."""
    return fold_log(items, thread_id=meta.id, created_at=meta.created_at, namespace=meta.namespace)[
        0
    ]


async def _follow(store: Store, view: View, task_status: trio.TaskStatus[None]) -> None:
    async with store.subscribe(since=0) as events:
        task_status.started()
        async for event in events:
            apply(view, event)


async def _converged(store: Store, thread_ids: list[str]) -> None:
    """Wait (polling: these threads change in other processes) until each thread's
    metadata reflects its whole log."""
    while True:
        lagging = [
            tid
            for tid in thread_ids
            if (await store.get_thread(tid)).seq < len(await store.read_items(tid))
        ]
        if not lagging:
            break
        await trio.sleep(0.05)
    await trio.lowlevel.checkpoint()


async def _trial(url: str, seed: int) -> None:
    rng = random.Random(seed)
    context = f"(seed {seed})"
    async with open_store(url) as store:
        shared = [(await store.create_thread(goal=f"shared {n}")).id for n in range(SHARED)]
    view: View = {}
    async with (
        open_store(url, read_only=True) as reader,
        trio.open_nursery() as follower,
    ):
        await follower.start(_follow, reader, view)
        async with AsyncExitStack() as children:
            writers = [
                Writer(
                    await children.enter_async_context(
                        spawn_child(
                            "pg_writer_child.py",
                            url,
                            str(rng.randrange(1 << 30)),
                            str(OWN),
                            ",".join(shared),
                            kind=Child,
                        )
                    )
                )
                for _ in range(WRITERS)
            ]
            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    for w in writers:
                        nursery.start_soon(w.read_until, lambda w: len(w.acked) >= BEFORE_KILL)
            victim = rng.choice(writers)
            os.kill(victim.child.pid, signal.SIGKILL)
            await victim.read_until(lambda w: False)  # what it wrote before it died
            survivors = [w for w in writers if w is not victim]
            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    for w in survivors:
                        goal = len(w.acked) + AFTER_KILL
                        nursery.start_soon(w.read_until, lambda w, goal=goal: len(w.acked) >= goal)
            with trio.fail_after(60):  # the dead writer's threads, taken over
                await _converged(reader, victim.own)
            for w in survivors:
                await w.child.close_stdin()
            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    for w in survivors:
                        nursery.start_soon(w.read_until, lambda w: w.done)
            for w in survivors:
                assert w.done, f"a survivor did not finish {context}: {await w.child.stderr()}"
        for w in writers:
            assert not w.bad, f"{w.bad} {context}"
        threads = shared + [tid for w in writers for tid in w.own]
        acked = {text: where for w in writers for text, where in w.acked.items()}
        called = {text: tid for w in writers for text, tid in w.called.items()}
        for tid in threads:
            items = await reader.read_items(tid)
            assert [i.seq for i in items] == list(range(1, len(items) + 1)), context
            texts = [str(i.data["text"]) for i in items[1:]]
            assert len(texts) == len(set(texts)), f"duplicated items {context}"
            for item in items[1:]:
                text = str(item.data["text"])
                assert called.get(text) == tid, f"{text} was never called on {tid} {context}"
                if text in acked:
                    assert acked[text] == (tid, item.seq), f"{text} moved {context}"
            stored = set(texts)
            missing = [t for t, (where, _) in acked.items() if where == tid and t not in stored]
            assert not missing, f"acknowledged items lost {context}: {missing}"
        with trio.fail_after(60):
            await _converged(reader, threads)
        for tid in threads:
            meta = await reader.get_thread(tid)
            assert meta == folded(meta, await reader.read_items(tid)), context
        listed = await list_all(reader)
        with trio.fail_after(30):
            while view != listed:  # noqa: ASYNC110 - the follower catches up when woken
                await trio.sleep(0.02)
        assert view == listed, context
        follower.cancel_scope.cancel()


@pytest.mark.parametrize("seed", [11, 12])
async def test_three_writers_one_killed_lose_nothing(postgres_url: str, seed: int) -> None:
    await _trial(postgres_url, seed)


@pytest.mark.soak
async def test_writer_kill_soak(postgres_databases: Callable[[], str]) -> None:
    trials = int(os.environ.get("THREADSTORE_PG_SOAK_TRIALS", "200"))
    seed = int(os.environ.get("THREADSTORE_SOAK_SEED", random.randrange(1 << 30)))
    print(f"writer kill soak: {trials} trials from seed {seed}")
    for trial in range(trials):
        await _trial(postgres_databases(), seed + trial)
    await trio.lowlevel.checkpoint()
