"""S4 — reads at scale: 10,000 threads x 20 items (100,000 with ``--full``).

The store is populated through the public API (concurrent ``create_thread``, then one
``append_nowait`` of 20 items per thread in chunks, then ``flush_all``). Timed one call at a
time: ``list_threads(limit=50)`` idle and while concurrent appenders write to random
threads, ``get_thread`` of a random thread, ``read_items`` of one thread (20 items). A bare
``trio.to_thread.run_sync`` hop, the floor of any read served from a worker thread, is
measured alongside and the list p50 is reported as a multiple of it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import trio

from threadstore import Item, Receipt, Store, StoreOverloadedError, open_store

from ._burst import make_threads
from ._figures import Figure, ScenarioResult, Target
from ._profile import Profile
from ._stats import Summary, summarize, timed_calls
from ._workload import turn_items

ID: Final = "S4"
TITLE: Final = "list / get / read at scale"
CHUNK: Final = 1_000
FLUSH_EVERY: Final = 10_000
APPENDERS: Final = 10


def _templates(count: int, size: int) -> list[list[Item]]:
    """``count`` distinct realistic ``size``-item thread logs, reused round-robin."""
    rng = random.Random(4)
    out = []
    for _ in range(count):
        items: list[Item] = []
        turn = 0
        while len(items) < size:
            turn += 1
            items.extend(turn_items(rng, turn))
        out.append(items[:size])
    return out


async def populate(store: Store, threads: int, per_thread: int, *, chunk: int = CHUNK) -> list[str]:
    """Fill ``store`` with ``threads`` threads of ``per_thread`` realistic items through the
    public API, ``append_nowait`` of ``chunk`` threads at a time; return their ids (also
    used by S11)."""
    ids = await make_threads(store, threads, prefix="scale", goal=False, tasks=100)
    templates = _templates(64, per_thread)
    for start in range(0, threads, chunk):
        last: Receipt | None = None
        for index in range(start, min(start + chunk, threads)):
            items = templates[index % len(templates)]
            try:
                last = store.append_nowait(ids[index], *items)
            except StoreOverloadedError:
                last = await store.append(ids[index], *items)
        if last is not None:
            await last.durable()
        if (start + chunk) % FLUSH_EVERY == 0:
            await store.flush_all()
    await store.flush_all()
    return ids


async def _noop_hop() -> None:
    await trio.to_thread.run_sync(int)


async def _reads(store: Store, ids: Sequence[str], calls: int) -> dict[str, Summary]:
    rng = random.Random(44)
    one = ids[len(ids) // 2]

    async def list_page() -> None:
        await store.list_threads(limit=50)

    async def get_one() -> None:
        await store.get_thread(rng.choice(ids))

    async def read_one() -> None:
        await store.read_items(one)

    return {
        "list": summarize(await timed_calls(list_page, calls)),
        "get": summarize(await timed_calls(get_one, calls)),
        "read": summarize(await timed_calls(read_one, calls)),
    }


async def run(profile: Profile, workdir: Path) -> ScenarioResult:
    threads, per_thread, calls = profile.s4_threads, profile.s4_items, profile.s4_calls
    async with open_store(workdir / "s4.db") as store:
        begin = time.perf_counter()
        ids = await populate(store, threads, per_thread)
        populate_s = time.perf_counter() - begin

        hop = summarize(await timed_calls(_noop_hop, calls))
        idle = await _reads(store, ids, calls)

        stop = trio.Event()
        written = 0
        loaded: dict[str, Summary] = {}

        async def appender(seed: int) -> None:
            nonlocal written
            rng = random.Random(seed)
            items = _templates(1, 40)[0]
            while not stop.is_set():
                await store.append(rng.choice(ids), rng.choice(items))
                written += 1
            await trio.lowlevel.checkpoint()

        async def measure() -> None:
            await trio.sleep(0.05)
            loaded.update(await _reads(store, ids, calls))
            stop.set()

        load_begin = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for seed in range(APPENDERS):
                nursery.start_soon(appender, seed)
            nursery.start_soon(measure)
        load_s = time.perf_counter() - load_begin
        await store.flush_all()

    list_target = 1.0 if threads <= 10_000 else 1.5
    scale = f"{threads:,} threads"
    figures = [
        Figure(
            key="populate_items_per_s",
            label=f"populate {scale} x {per_thread} items (create, append_nowait, flush_all)",
            value=threads * per_thread / populate_s,
            unit="items/s",
        ),
        Figure(
            key="hop_p50_ms", label="bare trio thread hop p50 (reference)", value=hop.p50, unit="ms"
        ),
        Figure(
            key="list_p50_ms.idle",
            label=f"list_threads(50) p50, idle, {scale}",
            value=idle["list"].p50,
            unit="ms",
        ),
        Figure(
            key="list_p99_ms.idle",
            label=f"list_threads(50) p99, idle, {scale}",
            value=idle["list"].p99,
            unit="ms",
            target=Target(op="<", threshold=list_target),
        ),
        Figure(
            key="list_p50_over_hop",
            label="list_threads(50) p50 / thread hop p50",
            value=idle["list"].p50 / hop.p50,
            unit="x",
        ),
        Figure(
            key="list_p50_ms.load",
            label=f"list_threads(50) p50, under write load, {scale}",
            value=loaded["list"].p50,
            unit="ms",
        ),
        Figure(
            key="list_p99_ms.load",
            label=f"list_threads(50) p99, under write load, {scale}",
            value=loaded["list"].p99,
            unit="ms",
        ),
        Figure(
            key="get_p50_ms.idle", label="get_thread p50, idle", value=idle["get"].p50, unit="ms"
        ),
        Figure(
            key="get_p99_ms.idle", label="get_thread p99, idle", value=idle["get"].p99, unit="ms"
        ),
        Figure(
            key="get_p99_ms.load",
            label="get_thread p99, under write load",
            value=loaded["get"].p99,
            unit="ms",
        ),
        Figure(
            key="read_items_p50_ms.idle",
            label=f"read_items ({per_thread} items) p50, idle",
            value=idle["read"].p50,
            unit="ms",
        ),
        Figure(
            key="read_items_p99_ms.idle",
            label=f"read_items ({per_thread} items) p99, idle",
            value=idle["read"].p99,
            unit="ms",
        ),
        Figure(
            key="load_items_per_s",
            label=f"write load during the loaded reads ({APPENDERS} appenders)",
            value=written / load_s,
            unit="items/s",
        ),
    ]
    params: dict[str, Any] = {
        "threads": threads,
        "items_per_thread": per_thread,
        "calls": calls,
        "populate_s": round(populate_s, 2),
        "appenders": APPENDERS,
    }
    return ScenarioResult(id=ID, title=TITLE, figures=tuple(figures), params=params)
