"""S2 — a burst: 100 threads x 100 items at once, at durability "normal" and "full".

100 tasks each await ``store.append`` of one item 100 times (threads created beforehand,
no projector). Measured: projection writes and log commits per item (``statistics()``
deltas), items/s until the last append returned, the time from then until everything is
visible (``flush_all``), the event-loop heartbeat overshoot over burst and drain, and the
same burst through the bare trio + sqlite3 group-commit loop (``_baseline``) in this process:
our items/s is reported as a ratio of it. Runs alternate ours/bare; medians are reported.
"""

from __future__ import annotations

import collections
import time
from pathlib import Path
from typing import Any, Final, Literal

import trio
import trio.testing

from threadstore import Item, open_store
from threadstore._items import new_thread_id

from ._baseline import bare_burst
from ._burst import burst, make_threads, stats_delta
from ._env import sqlite_settings
from ._figures import Figure, ScenarioResult, Target
from ._profile import Profile
from ._stats import CpuSplit, Summary, heartbeat, median, summarize
from ._workload import item_stream

ID: Final = "S2"
TITLE: Final = "burst: 100 threads x 100 items"

Durability = Literal["normal", "full"]
#: The kinds docs/architecture.md lists as urgent (a thread's first user message is too, once).
URGENT_KINDS: Final = frozenset({"goal", "title", "turn_completed", "turn_aborted", "error"})
MIN_ITEMS_PER_S: Final[dict[str, float]] = {"normal": 50_000, "full": 40_000}


def _items(threads: int, per_thread: int) -> list[list[Item]]:
    out = []
    for index in range(threads):
        stream = item_stream(1000 + index)
        out.append([next(stream) for _ in range(per_thread)])
    return out


async def _ours(path: Path, durability: Durability, items: list[list[Item]]) -> dict[str, Any]:
    async with open_store(path, durability=durability) as store:
        settings = await sqlite_settings(store, durability)
        thread_ids = await make_threads(store, len(items))
        await store.flush_all()
        before = store.statistics()
        async with heartbeat() as beat:
            result = await burst(store, thread_ids, items)
            await store.flush_all()
            visible = time.perf_counter()
        delta = stats_delta(before, store.statistics())
    appended = max(1, delta["items_appended"])
    return {
        "items_per_s": result.items_per_s,
        "cpu": _cpu(result.cpu, result.items, result.seconds),
        "visible_ms": (visible - result.ended_at) * 1000,
        "projection_writes_per_item": delta["projection_writes"] / appended,
        "log_commits_per_item": delta["log_commits"] / appended,
        "append": summarize(result.latencies_ms),
        "heartbeat": beat.summary(),
        "settings": settings,
        "delta": delta,
    }


async def _urgent_visibility(path: Path, items: list[list[Item]]) -> Summary:
    """The burst once more, with a change-feed subscriber: for every urgent item (goal,
    title, turn_completed, ...), the time from its append returning to the ``updated``
    event whose metadata covers it. (A separate run: the subscriber costs the burst.)"""
    waiting: dict[str, collections.deque[tuple[int, float]]] = collections.defaultdict(
        collections.deque
    )
    delays: list[float] = []
    async with open_store(path) as store:
        thread_ids = await make_threads(store, len(items))
        await store.flush_all()
        async with store.subscribe(buffer=1_000_000) as events, trio.open_nursery() as nursery:

            async def watch() -> None:
                async for event in events:
                    if event.thread is None:  # a reset: only after a restart
                        continue
                    queue = waiting.get(event.thread.id)
                    now = time.perf_counter()
                    while queue and queue[0][0] <= event.thread.seq:
                        delays.append((now - queue.popleft()[1]) * 1000)

            nursery.start_soon(watch)

            async def task(thread_id: str, mine: list[Item]) -> None:
                for item in mine:
                    receipt = await store.append(thread_id, item)
                    if item.kind in URGENT_KINDS:
                        waiting[thread_id].append((receipt.seq, time.perf_counter()))
                await trio.lowlevel.checkpoint()

            async with trio.open_nursery() as appenders:
                for thread_id, mine in zip(thread_ids, items, strict=True):
                    appenders.start_soon(task, thread_id, mine)
            await store.flush_all()
            await trio.testing.wait_all_tasks_blocked()  # the watcher has seen every event
            nursery.cancel_scope.cancel()
    return summarize(delays)


def _cpu(cpu: CpuSplit, items: int, seconds: float) -> dict[str, float]:
    """CPU per item on the event loop's thread and on the others, and how many threads were
    busy at once on average (CPU over wall time: 1.0 means they took turns)."""
    loop, other = cpu.per_item_us(items)
    return {
        "loop_us": loop,
        "other_us": other,
        "busy_threads": (cpu.loop_s + cpu.other_s) / seconds if seconds > 0 else float("nan"),
    }


async def _bare(path: Path, durability: Durability, items: list[list[Item]]) -> dict[str, Any]:
    # Ids like the store's (UUIDv7, 36 characters, a shared time prefix): the log's
    # (thread, seq) index stores and compares them, so short ids would flatter the loop.
    thread_ids = [new_thread_id() for _ in items]
    async with heartbeat() as beat:
        result = await bare_burst(str(path), durability, thread_ids, items)
    return {
        "heartbeat": beat.summary(),
        "items_per_s": result.items_per_s,
        "cpu": _cpu(result.cpu, result.items, result.seconds),
        "append": summarize(list(result.latencies_ms)),
        "commits_per_item": result.commits / max(1, result.items),
    }


async def run(profile: Profile, workdir: Path) -> ScenarioResult:
    items = _items(profile.s2_threads, profile.s2_items)
    figures: list[Figure] = []
    settings: dict[str, Any] = {}
    series: dict[str, Any] = {}
    runs: dict[str, Any] = {}
    durabilities: tuple[Durability, ...] = ("normal", "full")
    async with heartbeat() as idle:
        await trio.sleep(0.3)
    figures.append(
        Figure(
            key="heartbeat_idle_p99_ms",
            label="heartbeat overshoot p99, idle loop (reference)",
            value=idle.summary().p99,
            unit="ms",
        )
    )
    for durability in durabilities:
        ours: list[dict[str, Any]] = []
        bare: list[dict[str, Any]] = []
        for rep in range(profile.s2_repeats):
            ours.append(await _ours(workdir / f"s2-{durability}-{rep}.db", durability, items))
            bare.append(await _bare(workdir / f"s2-bare-{durability}-{rep}.db", durability, items))
        settings[durability] = ours[0]["settings"]
        # The run with the median throughput stands for the others in the per-run figures.
        ranked = sorted(ours, key=lambda r: float(r["items_per_s"]))
        mid = ranked[(len(ranked) - 1) // 2]
        rate = median(r["items_per_s"] for r in ours)
        bare_rate = median(r["items_per_s"] for r in bare)
        d = durability
        figures += [
            Figure(
                key=f"projection_writes_per_item.{d}",
                label=f"projection writes / item, {d}",
                value=median(r["projection_writes_per_item"] for r in ours),
                target=Target(op="<=", threshold=0.1),
            ),
            Figure(
                key=f"log_commits_per_item.{d}",
                label=f"log commits / item, {d}",
                value=median(r["log_commits_per_item"] for r in ours),
                target=Target(op="<=", threshold=0.25),
            ),
            Figure(
                key=f"items_per_s.{d}",
                label=f"items/s, {d}",
                value=rate,
                unit="items/s",
                target=Target(op=">=", threshold=MIN_ITEMS_PER_S[d]),
            ),
            Figure(
                key=f"bare_items_per_s.{d}",
                label=f"bare group-commit loop items/s, {d}",
                value=bare_rate,
                unit="items/s",
            ),
            Figure(
                key=f"items_per_s_ratio_vs_bare.{d}",
                label=f"items/s ours / bare loop, {d}",
                value=rate / bare_rate,
                unit="x",
            ),
            *(
                Figure(
                    key=f"{prefix}{name}_cpu_us_per_item.{d}",
                    label=f"{who}{what} CPU per item, {d}",
                    value=median(r["cpu"][f"{name}_us"] for r in side),
                    unit="us",
                )
                for prefix, who, side in (("", "", ours), ("bare_", "bare loop: ", bare))
                # (other threads: the store's writer, readers and checkpointer; the bare
                # loop's writer)
                for name, what in (("loop", "event-loop thread"), ("other", "other threads'"))
            ),
            Figure(
                key=f"busy_threads.{d}",
                label=f"threads busy at once in the burst (CPU / wall; bare loop: "
                f"{median(r['cpu']['busy_threads'] for r in bare):.2f}), {d}",
                value=median(r["cpu"]["busy_threads"] for r in ours),
                unit="x",
            ),
            Figure(
                key=f"append_p50_ms.{d}",
                label=f"append p50 in the burst, {d}",
                value=mid["append"].p50,
                unit="ms",
            ),
            Figure(
                key=f"append_p99_ms.{d}",
                label=f"append p99 in the burst, {d}",
                value=mid["append"].p99,
                unit="ms",
            ),
            Figure(
                key=f"bare_append_p50_ms.{d}",
                label=f"bare loop append p50, {d}",
                value=median(r["append"].p50 for r in bare),
                unit="ms",
            ),
            Figure(
                key=f"visible_ms.{d}",
                label=f"last append returned -> all visible, {d}",
                value=median(r["visible_ms"] for r in ours),
                unit="ms",
            ),
            Figure(
                key=f"heartbeat_p99_ms.{d}",
                label=f"heartbeat overshoot p99 (burst + drain, worst run), {d}",
                value=max(r["heartbeat"].p99 for r in ours),
                unit="ms",
                target=Target(op="<", threshold=5.0),
            ),
            Figure(
                key=f"bare_heartbeat_p99_ms.{d}",
                label=f"bare loop heartbeat overshoot p99 (worst run), {d}",
                value=max(r["heartbeat"].p99 for r in bare),
                unit="ms",
            ),
            Figure(
                key=f"heartbeat_max_ms.{d}",
                label=f"heartbeat overshoot max (burst + drain, worst run), {d}",
                value=max(r["heartbeat"].max for r in ours),
                unit="ms",
            ),
        ]
        series[d] = {
            "projection_writes_per_item": [r["projection_writes_per_item"] for r in ours],
            "log_commits_per_item": [r["log_commits_per_item"] for r in ours],
            "items_per_s": [r["items_per_s"] for r in ours],
            "bare_items_per_s": [r["items_per_s"] for r in bare],
        }
        runs[d] = {
            "ours": [
                {
                    "items_per_s": round(r["items_per_s"], 1),
                    "cpu": {k: round(v, 3) for k, v in r["cpu"].items()},
                    "visible_ms": round(r["visible_ms"], 3),
                    "delta": r["delta"],
                    "heartbeat_p99_ms": round(r["heartbeat"].p99, 3),
                }
                for r in ours
            ],
            "bare": [
                {
                    "items_per_s": round(r["items_per_s"], 1),
                    "cpu": {k: round(v, 3) for k, v in r["cpu"].items()},
                    "commits_per_item": round(r["commits_per_item"], 4),
                }
                for r in bare
            ],
        }
    urgent = await _urgent_visibility(workdir / "s2-urgent.db", items)
    figures += [
        Figure(
            key="urgent_visible_p50_ms",
            label="urgent item: append returned -> updated event, p50 (normal)",
            value=urgent.p50,
            unit="ms",
        ),
        Figure(
            key="urgent_visible_p99_ms",
            label="urgent item: append returned -> updated event, p99 (normal)",
            value=urgent.p99,
            unit="ms",
        ),
    ]
    return ScenarioResult(
        id=ID,
        title=TITLE,
        figures=tuple(figures),
        params={
            "threads": profile.s2_threads,
            "items_per_thread": profile.s2_items,
            "repeats": profile.s2_repeats,
            "runs": runs,
        },
        series=series,
        settings=settings,
    )
