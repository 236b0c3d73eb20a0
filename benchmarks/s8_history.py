"""S8 — history edits on a long thread: fork, read_context and rewind at 10,000 items.

One thread of ``s8_items`` realistic items (a compaction every 2,000), then, each timed over
``s8_calls`` calls: ``fork`` of the whole thread (a new thread with a copy of the context, in
one transaction), ``read_context`` (the context from the latest compaction) and its newest 50
items, and ``rewind`` of one item (the metadata is folded again from the context). The
baseline run in the same store is ``read_items`` of the whole thread.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Final

import trio

from threadstore import Item, open_store

from ._burst import make_threads
from ._figures import Figure, ScenarioResult
from ._profile import Profile
from ._stats import summarize
from ._workload import item_stream

ID: Final = "S8"
TITLE: Final = "history edits at 10,000 items"


async def run(profile: Profile, workdir: Path) -> ScenarioResult:
    items, calls = profile.s8_items, profile.s8_calls
    async with open_store(workdir / "s8.db") as store:
        (tid,) = await make_threads(store, 1, prefix="history")
        stream = item_stream(8)
        batch: list[Item] = []
        for n in range(1, items + 1):
            batch.append(Item.compaction(f"summary {n}") if n % 2000 == 0 else next(stream))
            if len(batch) == 100:
                await store.append(tid, *batch)
                batch = []
        if batch:
            await store.append(tid, *batch)
        await store.flush_all()

        timings: dict[str, list[float]] = {
            name: [] for name in ("read_items", "read_context", "read_context_50", "fork", "rewind")
        }
        for _ in range(calls):
            begin = time.perf_counter()
            everything = await store.read_items(tid)
            timings["read_items"].append((time.perf_counter() - begin) * 1000)
            begin = time.perf_counter()
            visible = await store.read_context(tid)
            timings["read_context"].append((time.perf_counter() - begin) * 1000)
            begin = time.perf_counter()
            await store.read_context(tid, limit=50)
            timings["read_context_50"].append((time.perf_counter() - begin) * 1000)
            begin = time.perf_counter()
            fork = await store.fork(tid)
            timings["fork"].append((time.perf_counter() - begin) * 1000)
            begin = time.perf_counter()
            await store.rewind(tid, len(everything) - 1)
            timings["rewind"].append((time.perf_counter() - begin) * 1000)
            await store.delete_thread(fork.id)
        copied = fork.item_count
    await trio.lowlevel.checkpoint()

    summary = {name: summarize(values) for name, values in timings.items()}
    labels = {
        "read_items": "read_items, whole thread (baseline)",
        "read_context": "read_context, from the latest compaction",
        "read_context_50": "read_context(limit=50)",
        "fork": "fork of the whole thread",
        "rewind": "rewind by one item",
    }
    figures = [
        Figure(key=f"{name}_p50_ms", label=f"{labels[name]} p50", value=s.p50, unit="ms")
        for name, s in summary.items()
    ]
    figures.append(
        Figure(
            key="fork_per_item_us",
            label="fork per copied item",
            value=summary["fork"].p50 * 1000 / max(1, copied),
            unit="us",
        )
    )
    figures.append(
        Figure(
            key="read_context_over_read_items",
            label="read_context / read_items (whole thread)",
            value=summary["read_context"].p50 / summary["read_items"].p50,
            unit="x",
        )
    )
    return ScenarioResult(
        id=ID,
        title=TITLE,
        figures=tuple(figures),
        params={"items": items, "calls": calls, "context_items": len(visible), "copied": copied},
    )
