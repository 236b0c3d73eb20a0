"""S7 — the access layers: asyncio (``threadstore.aio``) and threads (``threadstore.blocking``)
against the trio store, in the same run.

Two workloads, each on a fresh store per layer, the layers alternating round by round:

- sequential: one caller awaits ``append`` of one item at a time on one thread (p50, p99);
- burst: S2's shape, one caller per thread (trio tasks, asyncio tasks, OS threads), each
  appending its items one at a time (items/s).

The floor of what a layer adds is one round trip through the portal: the caller's thread
hands a call to the store's thread and is woken with its result. ``hop`` times that with a
call that does nothing. Targets: asyncio sequential append p50 <= 1.5x trio's; asyncio
burst >= 0.8x trio's items/s.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import trio

from threadstore import Item, aio, blocking, open_store

from ._burst import burst, make_threads
from ._figures import Figure, ScenarioResult, Target
from ._profile import Profile
from ._stats import cdf_points, median, summarize
from ._workload import item_stream

ID: Final = "S7"
TITLE: Final = "asyncio and threads vs trio"

LAYERS: Final = ("trio", "aio", "blocking")


def _items(threads: int, per_thread: int) -> list[list[Item]]:
    return [
        [next(stream) for _ in range(per_thread)] for stream in map(item_stream, range(threads))
    ]


# -- trio ----------------------------------------------------------------------------------


async def _trio_sequential(path: Path, items: Sequence[Item]) -> list[float]:
    async with open_store(path) as store:
        (tid,) = await make_threads(store, 1)
        latencies = []
        for item in items:
            begin = time.perf_counter()
            await store.append(tid, item)
            latencies.append((time.perf_counter() - begin) * 1000)
        await store.flush_all()
    return latencies


async def _trio_burst(path: Path, items: list[list[Item]]) -> float:
    async with open_store(path) as store:
        ids = await make_threads(store, len(items))
        result = await burst(store, ids, items)
        await store.flush_all()
    return result.items_per_s


# -- asyncio -------------------------------------------------------------------------------


async def _aio_sequential(path: Path, items: Sequence[Item]) -> tuple[list[float], list[float]]:
    async with aio.open_store(path) as store:
        tid = (await store.create_thread(goal="sequential")).id
        latencies = []
        for item in items:
            begin = time.perf_counter()
            await store.append(tid, item)
            latencies.append((time.perf_counter() - begin) * 1000)
        await store.flush_all()
        hops = []
        for _ in range(len(items)):
            begin = time.perf_counter()
            await store._call(_nothing)
            hops.append((time.perf_counter() - begin) * 1000)
    return latencies, hops


async def _nothing(_store: Any) -> None:
    await trio.lowlevel.checkpoint()


async def _aio_burst(path: Path, items: list[list[Item]]) -> float:
    async with aio.open_store(path) as store:
        ids = [(await store.create_thread(goal=f"burst {i}")).id for i in range(len(items))]
        ends: list[float] = []

        async def caller(tid: str, mine: list[Item]) -> None:  # noqa: ASYNC910 - asyncio
            for item in mine:
                await store.append(tid, item)
            ends.append(time.perf_counter())

        start = time.perf_counter()
        await asyncio.gather(*(caller(t, m) for t, m in zip(ids, items, strict=True)))
        seconds = max(ends) - start
        await store.flush_all()
    return sum(map(len, items)) / seconds


# -- threads -------------------------------------------------------------------------------


def _blocking_sequential(path: Path, items: Sequence[Item]) -> list[float]:
    with blocking.open_store(path) as store:
        tid = store.create_thread(goal="sequential").id
        latencies = []
        for item in items:
            begin = time.perf_counter()
            store.append(tid, item)
            latencies.append((time.perf_counter() - begin) * 1000)
        store.flush_all()
    return latencies


def _blocking_burst(path: Path, items: list[list[Item]]) -> float:
    with blocking.open_store(path) as store:
        ids = [store.create_thread(goal=f"burst {i}").id for i in range(len(items))]
        ends: list[float] = []
        go = threading.Barrier(len(items) + 1)

        def caller(tid: str, mine: list[Item]) -> None:
            go.wait()
            for item in mine:
                store.append(tid, item)
            ends.append(time.perf_counter())

        threads = [
            threading.Thread(target=caller, args=(t, m)) for t, m in zip(ids, items, strict=True)
        ]
        for thread in threads:
            thread.start()
        go.wait()
        start = time.perf_counter()
        for thread in threads:
            thread.join()
        seconds = max(ends) - start
        store.flush_all()
    return sum(map(len, items)) / seconds


# -- the scenario --------------------------------------------------------------------------


async def run(profile: Profile, workdir: Path) -> ScenarioResult:
    stream = item_stream(7)
    sequential = [next(stream) for _ in range(profile.s7_appends)]
    bursts = _items(profile.s7_threads, profile.s7_items)
    seq_ms: dict[str, list[float]] = {layer: [] for layer in LAYERS}
    hop_ms: list[float] = []
    rates: dict[str, list[float]] = {layer: [] for layer in LAYERS}
    for round_ in range(profile.s7_repeats):
        prefix = workdir / f"s7-{round_}"
        seq_ms["trio"] += await _trio_sequential(Path(f"{prefix}-trio-seq.db"), sequential)
        latencies, hops = await trio.to_thread.run_sync(
            asyncio.run, _aio_sequential(Path(f"{prefix}-aio-seq.db"), sequential)
        )
        seq_ms["aio"] += latencies
        hop_ms += hops
        seq_ms["blocking"] += await trio.to_thread.run_sync(
            _blocking_sequential, Path(f"{prefix}-blocking-seq.db"), sequential
        )
        rates["trio"].append(await _trio_burst(Path(f"{prefix}-trio-burst.db"), bursts))
        rates["aio"].append(
            await trio.to_thread.run_sync(
                asyncio.run, _aio_burst(Path(f"{prefix}-aio-burst.db"), bursts)
            )
        )
        rates["blocking"].append(
            await trio.to_thread.run_sync(
                _blocking_burst, Path(f"{prefix}-blocking-burst.db"), bursts
            )
        )

    await trio.lowlevel.checkpoint()
    summary = {layer: summarize(seq_ms[layer]) for layer in LAYERS}
    hop = summarize(hop_ms)
    rate = {layer: median(rates[layer]) for layer in LAYERS}
    figures = []
    for layer in LAYERS:
        figures += [
            Figure(
                key=f"sequential_p50_ms.{layer}",
                label=f"sequential append p50, {layer}",
                value=summary[layer].p50,
                unit="ms",
            ),
            Figure(
                key=f"sequential_p99_ms.{layer}",
                label=f"sequential append p99, {layer}",
                value=summary[layer].p99,
                unit="ms",
            ),
        ]
    figures += [
        Figure(key="hop_p50_ms", label="portal round trip p50 (asyncio)", value=hop.p50, unit="ms"),
        Figure(
            key="sequential_p50_ratio.aio",
            label="sequential append p50, asyncio / trio",
            value=summary["aio"].p50 / summary["trio"].p50,
            unit="x",
            target=Target(op="<=", threshold=1.5),
        ),
        Figure(
            key="sequential_p50_over_floor.aio",
            label="sequential append p50, asyncio / (trio + round trip)",
            value=summary["aio"].p50 / (summary["trio"].p50 + hop.p50),
            unit="x",
        ),
        Figure(
            key="sequential_p50_ratio.blocking",
            label="sequential append p50, threads / trio",
            value=summary["blocking"].p50 / summary["trio"].p50,
            unit="x",
        ),
    ]
    for layer in LAYERS:
        figures.append(
            Figure(
                key=f"burst_items_per_s.{layer}",
                label=f"burst items/s, {layer}",
                value=rate[layer],
                unit="items/s",
            )
        )
    figures += [
        Figure(
            key="burst_ratio.aio",
            label="burst items/s, asyncio / trio",
            value=rate["aio"] / rate["trio"],
            unit="x",
            target=Target(op=">=", threshold=0.8),
        ),
        Figure(
            key="burst_ratio.blocking",
            label="burst items/s, threads / trio",
            value=rate["blocking"] / rate["trio"],
            unit="x",
        ),
    ]
    return ScenarioResult(
        id=ID,
        title=TITLE,
        figures=tuple(figures),
        params={
            "sequential_appends": profile.s7_appends,
            "burst_threads": profile.s7_threads,
            "burst_items": profile.s7_items,
            "repeats": profile.s7_repeats,
        },
        series={"sequential_ms": {layer: cdf_points(seq_ms[layer]) for layer in LAYERS}},
    )
