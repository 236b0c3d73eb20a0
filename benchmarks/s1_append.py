"""S1 — append latency vs write-through, with custom projectors costing 0, 10 and 100 ms.

For each projector cost (and with no projector at all), in a fresh store: one trio task per
thread awaits ``store.append`` of realistic items in a loop; then, in the same store and on
fresh threads, the write-through baseline does ``append_and_flush`` for every item (the
caller waits for the metadata, projector included). Targets: append p99 with the 100 ms
projector within 1.5x of p99 without one, and at least 100x below the write-through p50.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final

import trio

from threadstore import Item, Receipt, open_store

from ._burst import make_threads, stats_delta
from ._env import sqlite_settings
from ._figures import Figure, ScenarioResult, Target
from ._profile import Profile
from ._stats import cdf_points, summarize
from ._workload import CostlyProjector, item_stream

ID: Final = "S1"
TITLE: Final = "append vs write-through, slow projectors"


def cost_label(cost_ms: float | None) -> str:
    return "none" if cost_ms is None else f"{cost_ms:g}ms"


async def _stream(
    op: Callable[[str, Item], Awaitable[Receipt]],
    thread_ids: Sequence[str],
    appends: int,
    seed: int,
) -> list[float]:
    """One task per thread doing ``appends`` awaited calls of ``op``; every latency in ms."""
    latencies: list[float] = []

    async def task(index: int, thread_id: str) -> None:
        items = item_stream(seed + index)
        for _ in range(appends):
            item = next(items)
            begin = time.perf_counter()
            await op(thread_id, item)
            latencies.append((time.perf_counter() - begin) * 1000)
        await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        for index, thread_id in enumerate(thread_ids):
            nursery.start_soon(task, index, thread_id)
    return latencies


async def _variant(
    path: Path, cost_ms: float | None, threads: int, appends: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    projectors = [] if cost_ms is None else [CostlyProjector(cost_ms / 1000)]
    async with open_store(path, projectors=projectors) as store:
        settings = await sqlite_settings(store, "normal")
        ours = await make_threads(store, threads, prefix="append")
        await store.flush_all()
        before = store.statistics()
        start = time.perf_counter()
        append_ms = await _stream(store.append, ours, appends, seed=1)
        streamed = time.perf_counter()
        await store.flush_all()
        drained = time.perf_counter()
        delta = stats_delta(before, store.statistics())

        theirs = await make_threads(store, threads, prefix="write-through")
        await store.flush_all()
        through_start = time.perf_counter()
        through_ms = await _stream(store.append_and_flush, theirs, appends, seed=1)
        through_s = time.perf_counter() - through_start
    out = {
        "append_ms": append_ms,
        "write_through_ms": through_ms,
        "stream_s": streamed - start,
        "drain_ms": (drained - streamed) * 1000,
        "write_through_s": through_s,
        "projection_writes_per_item": delta["projection_writes"] / max(1, delta["items_appended"]),
    }
    return out, settings


async def run(profile: Profile, workdir: Path) -> ScenarioResult:
    results: dict[str, dict[str, Any]] = {}
    settings: dict[str, Any] = {}
    for cost_ms in profile.s1_costs_ms:
        label = cost_label(cost_ms)
        results[label], settings = await _variant(
            workdir / f"s1-{label}.db", cost_ms, profile.s1_threads, profile.s1_appends
        )

    await trio.lowlevel.checkpoint()
    figures: list[Figure] = []
    series: dict[str, dict[str, list[float]]] = {"append_ms": {}, "write_through_ms": {}}
    for label, res in results.items():
        ours = summarize(res["append_ms"])
        through = summarize(res["write_through_ms"])
        series["append_ms"][label] = cdf_points(res["append_ms"])
        series["write_through_ms"][label] = cdf_points(res["write_through_ms"])
        name = "no projector" if label == "none" else f"{label} projector"
        figures += [
            Figure(
                key=f"append_p50_ms.{label}", label=f"append p50, {name}", value=ours.p50, unit="ms"
            ),
            Figure(
                key=f"append_p99_ms.{label}", label=f"append p99, {name}", value=ours.p99, unit="ms"
            ),
            Figure(
                key=f"append_max_ms.{label}", label=f"append max, {name}", value=ours.max, unit="ms"
            ),
            Figure(
                key=f"write_through_p50_ms.{label}",
                label=f"write-through p50, {name}",
                value=through.p50,
                unit="ms",
            ),
            Figure(
                key=f"write_through_p99_ms.{label}",
                label=f"write-through p99, {name}",
                value=through.p99,
                unit="ms",
            ),
            Figure(
                key=f"drain_ms.{label}",
                label=f"flush_all after the last append, {name}",
                value=res["drain_ms"],
                unit="ms",
            ),
        ]

    slowest = cost_label(max((c for c in profile.s1_costs_ms if c is not None), default=None))
    if "none" in results and slowest in results:
        p99_none = summarize(results["none"]["append_ms"]).p99
        p99_slow = summarize(results[slowest]["append_ms"]).p99
        through_p50 = summarize(results[slowest]["write_through_ms"]).p50
        figures += [
            Figure(
                key=f"append_p99_ratio.{slowest}_vs_none",
                label=f"append p99 with {slowest} projector / without",
                value=p99_slow / p99_none,
                unit="x",
                target=Target(op="<=", threshold=1.5),
            ),
            Figure(
                key=f"write_through_p50_over_append_p99.{slowest}",
                label=f"write-through p50 / append p99, {slowest} projector",
                value=through_p50 / p99_slow,
                unit="x",
                target=Target(op=">=", threshold=100),
            ),
        ]
    return ScenarioResult(
        id=ID,
        title=TITLE,
        figures=tuple(figures),
        params={
            "threads": profile.s1_threads,
            "appends_per_thread": profile.s1_appends,
            "projector_costs_ms": list(profile.s1_costs_ms),
            "projection_writes_per_item": {
                label: round(res["projection_writes_per_item"], 4) for label, res in results.items()
            },
        },
        series=series,
        settings={"normal": settings},
    )
