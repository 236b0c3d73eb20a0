"""``make demo``: a simulated agent runtime streaming into an embedded store.

About 20 sessions stream turns concurrently (user message, reasoning, a tool call and its
result, an assistant message in chunks, token usage, turn completed); a few goal-first
threads are created mid-run; a slow custom projector (~100 ms, standing in for an LLM
title generator) runs in the projection actors, never on the append path.

A sidebar follows the change feed with a small buffer (so it falls behind and catches up
from the store) and redraws the live thread list while the sessions stream. At the end it
prints the list as ``list_threads`` shows it, checks that the sidebar's view (built from
events alone) is exactly that list, and prints a summary of the figures.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
import trio

from . import Item, Store, StoredItem, ThreadEvent, ThreadMeta, open_store

TOPICS = (
    "the flaky integration test in CI",
    "a memory leak in the image resizer",
    "migrating the billing cron jobs",
    "slow queries on the orders page",
    "a race in the websocket reconnect",
    "the onboarding email template",
    "upgrading the Postgres driver",
    "retry storms after a deploy",
    "dark mode contrast issues",
    "the CSV export timing out",
    "rate limits on the search API",
    "a broken link checker",
)
TOOLS = ("read_file", "run_tests", "grep", "edit_file", "http_get")


class TitleGenerator:
    """A slow projector: derives a short title once a thread has a preview (~100 ms)."""

    name = "titler"

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls = 0

    async def project(
        self, meta: ThreadMeta, items: Sequence[StoredItem]
    ) -> Mapping[str, Any] | None:
        if "titler" in meta.extra:
            return None  # titled already  # noqa: ASYNC910 - nothing to generate
        text = next((i.data["text"] for i in items if i.kind == "user_message"), None)
        if text is None:
            return None  # noqa: ASYNC910 - nothing to generate
        self.calls += 1
        await trio.sleep(self.delay)  # the "LLM call"
        subject = text.removeprefix("Can you look into ").rstrip("?")
        return {"title": subject[:1].upper() + subject[1:]}


class Figures:
    def __init__(self) -> None:
        self.append_ms: list[float] = []
        self.listed_ms: list[float] = []
        self.goal_threads = 0


async def timed_append(store: Any, figures: Figures, tid: str, *items: Item) -> None:
    start = time.perf_counter()
    await store.append(tid, *items)
    figures.append_ms.append((time.perf_counter() - start) * 1000)


async def session(
    store: Any, figures: Figures, rng: random.Random, turns: int, pace: float
) -> None:
    """One agent session: several turns of realistic streaming."""
    meta = await store.create_thread()
    tid = meta.id
    topic = rng.choice(TOPICS)
    for turn in range(turns):
        turn_id = f"turn-{turn + 1}"
        question = (
            f"Can you look into {topic}?" if turn == 0 else f"Follow-up {turn}: what about {topic}?"
        )
        await timed_append(store, figures, tid, Item.user_message(question))
        await timed_append(store, figures, tid, Item.turn_started(turn_id))
        await timed_append(store, figures, tid, Item.reasoning(f"Planning how to handle {topic}."))
        call_id = f"call-{turn}-{rng.randrange(10**6)}"
        tool = rng.choice(TOOLS)
        await timed_append(
            store, figures, tid, Item.tool_call(tool, {"query": topic, "turn": turn}, call_id)
        )
        await trio.sleep(pace * rng.random())  # the tool runs
        await timed_append(
            store, figures, tid, Item.tool_result(call_id, {"lines": rng.randrange(1, 400)})
        )
        for chunk in range(rng.randrange(3, 7)):
            await timed_append(
                store,
                figures,
                tid,
                Item.assistant_message(f"Part {chunk + 1} of the answer about {topic}."),
            )
            await trio.sleep(pace * rng.random() / 4)  # tokens stream in
        await timed_append(
            store,
            figures,
            tid,
            Item.token_usage(rng.randrange(500, 4000), rng.randrange(100, 900)),
        )
        await timed_append(store, figures, tid, Item.turn_completed(turn_id))


async def goal_first(store: Any, figures: Figures, goal: str) -> None:
    """Create a goal-first thread and measure until it shows in the top-50 list."""
    start = time.perf_counter()
    meta = await store.create_thread(goal=goal)
    page = await store.list_threads(limit=50)
    elapsed = (time.perf_counter() - start) * 1000
    if any(t.id == meta.id for t in page.threads):
        figures.listed_ms.append(elapsed)
    figures.goal_threads += 1


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def display_title(meta: ThreadMeta) -> str:
    titler = meta.extra.get("titler")
    if meta.title:
        return meta.title
    if isinstance(titler, Mapping) and "title" in titler:
        return f"{titler['title']} (generated)"
    return meta.preview or "(empty)"


class Sidebar:
    """A thread list kept from change events alone (upsert; remove on deleted)."""

    def __init__(self) -> None:
        self.view: dict[str, ThreadMeta] = {}
        self.events = 0
        self.frames = 0
        self.dirty = False
        self.changed = trio.Event()

    def apply(self, event: ThreadEvent) -> None:
        self.events += 1
        if event.type == "reset":
            self.view.clear()
        elif event.thread is not None and event.type == "deleted":
            self.view.pop(event.thread.id, None)
        elif event.thread is not None:
            self.view[event.thread.id] = event.thread
        self.dirty = True
        self.changed.set()
        self.changed = trio.Event()

    def frame(self, rows: int) -> str:
        listed = [m for m in self.view.values() if m.archived_at is None and m.preview]
        listed.sort(key=lambda m: (m.updated_at, m.id), reverse=True)
        lines = [f"-- live sidebar: {len(listed)} threads, {self.events} events --"]
        for meta in listed[:rows]:
            title = display_title(meta)
            title = title if len(title) <= 48 else title[:47] + "…"
            lines.append(f"  {title:48} {meta.status:8} {meta.item_count:4d} items")
        return "\n".join(lines)


async def follow(
    store: Store, sidebar: Sidebar, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """The sidebar's subscription: a small buffer, so a busy run shows it catching up."""
    async with store.subscribe(buffer=16) as events:
        task_status.started()
        async for event in events:
            sidebar.apply(event)


async def redraw(sidebar: Sidebar, every: float, rows: int) -> None:
    """Print the sidebar whenever it changed, at most every ``every`` seconds (a UI's
    frame rate; plain lines, so it reads the same in a log)."""
    while True:
        await trio.sleep(every)
        if sidebar.dirty:
            sidebar.dirty = False
            sidebar.frames += 1
            print(sidebar.frame(rows), flush=True)


async def list_all(store: Store) -> dict[str, ThreadMeta]:
    found: dict[str, ThreadMeta] = {}
    for archived in (False, True):
        cursor = None
        while True:
            page = await store.list_threads(
                limit=1000, cursor=cursor, archived=archived, include_empty=True
            )
            found.update((meta.id, meta) for meta in page.threads)
            if (cursor := page.next_cursor) is None:
                break
    return found


async def converged(store: Store, sidebar: Sidebar) -> bool:
    """Wait (bounded) until the sidebar's view equals what the store lists."""
    with trio.move_on_after(10):
        while sidebar.view != await list_all(store):
            await sidebar.changed.wait()
        return True
    return False


def remove_store(path: str) -> None:
    for suffix in ("", "-wal", "-shm", ".lock"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)


async def run(
    path: str, sessions: int, turns: int, pace: float, seed: int, redraw_every: float
) -> None:
    rng = random.Random(seed)
    figures = Figures()
    titler = TitleGenerator(delay=0.1)
    sidebar = Sidebar()
    started = time.perf_counter()
    async with open_store(path, projectors=[titler], projection_delay=0.033) as store:
        async with trio.open_nursery() as feed:
            await feed.start(follow, store, sidebar)
            feed.start_soon(redraw, sidebar, redraw_every, 6)
            async with trio.open_nursery() as nursery:
                for _ in range(sessions):
                    nursery.start_soon(
                        session, store, figures, random.Random(rng.random()), turns, pace
                    )
                for goal in (
                    "Ship the v2 onboarding flow by Friday",
                    "Cut CI time below ten minutes",
                    "Write the incident report for the outage",
                ):
                    await trio.sleep(pace * 2)  # mid-run
                    nursery.start_soon(goal_first, store, figures, goal)
            streamed = time.perf_counter()
            await store.flush_all()
            drained = time.perf_counter()
            matches = await converged(store, sidebar)
            feed.cancel_scope.cancel()
        page = await store.list_threads(limit=10)
        stats = store.statistics()

    print(f"\nthreadstore demo — {path}\n")
    print(f"{'thread':52} {'status':8} {'items':>5} {'turns':>5}  updated")
    for meta in page.threads:
        title = display_title(meta)
        title = title if len(title) <= 50 else title[:49] + "…"
        print(
            f"{title:52} {meta.status:8} {meta.item_count:5d} {meta.turn_count:5d}  "
            f"{meta.updated_at:%H:%M:%S.%f}"[:-3]
        )
    appended = stats.items_appended
    print("\nsummary")
    print(f"  sessions streamed            {sessions} x {turns} turns")
    print(f"  items appended               {appended}")
    print(
        f"  append latency               p50 {percentile(figures.append_ms, 0.5):.2f} ms, "
        f"p99 {percentile(figures.append_ms, 0.99):.2f} ms, "
        f"max {max(figures.append_ms):.2f} ms"
    )
    print(f"  log commits per item         {stats.log_commits / appended:.3f}")
    print(
        f"  projection writes per item   {stats.projection_writes / appended:.3f} "
        f"({stats.projection_writes} writes, {stats.patches_coalesced} patches coalesced)"
    )
    print(f"  titles generated (100 ms)    {titler.calls}")
    print(
        f"  live sidebar                 {sidebar.events} events, {stats.feed_catch_ups} "
        f"catch-ups from the store, {sidebar.frames} redraws; equals list_threads: "
        f"{'yes' if matches else 'NO'}"
    )
    print(
        f"  goal-first time-to-listed    p50 {percentile(figures.listed_ms, 0.5):.2f} ms, "
        f"max {max(figures.listed_ms, default=float('nan')):.2f} ms "
        f"({len(figures.listed_ms)}/{figures.goal_threads} listed at once)"
    )
    print(
        f"  wall time                    streaming {streamed - started:.1f} s, "
        f"drain after last append {(drained - streamed) * 1000:.0f} ms"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m threadstore.demo", description=__doc__)
    parser.add_argument("--path", default="demo.db", help="store file (default ./demo.db)")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--pace", type=float, default=0.25, help="seconds per tool call, max")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--redraw", type=float, default=0.5, help="seconds between sidebar redraws, at most"
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="print the store's log events (debug included) on stderr",
    )
    args = parser.parse_args(argv)
    if args.verbose:
        # structlog stays unconfigured, so the store's events go to stdlib logging: show
        # them all, on stderr.
        logging.basicConfig(
            level=logging.DEBUG, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
        )
    else:
        structlog.configure(
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
            cache_logger_on_first_use=True,
        )
    remove_store(args.path)  # the demo starts from a fresh store each run
    trio.run(run, args.path, args.sessions, args.turns, args.pace, args.seed, args.redraw)


if __name__ == "__main__":
    main()
