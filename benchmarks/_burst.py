"""The S2-style burst against the store (also S3's background load), and counter deltas."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence

import attrs
import trio

from threadstore import Item, Store, StoreStatistics

from ._stats import CpuSplit, cpu_clock

__all__ = ["BurstResult", "burst", "make_threads", "stats_delta"]


@attrs.frozen(kw_only=True)
class BurstResult:
    items: int
    #: From the start until the last append returned.
    seconds: float
    #: ``time.perf_counter()`` when the last append returned.
    ended_at: float
    latencies_ms: tuple[float, ...]
    #: CPU from the start until every appending task ended (see :class:`CpuSplit`).
    cpu: CpuSplit

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else float("nan")


async def make_threads(
    store: Store, count: int, *, prefix: str = "bench", goal: bool = True, tasks: int = 50
) -> list[str]:
    """Create ``count`` threads (goal-first unless ``goal=False``: then empty) from ``tasks``
    concurrent tasks; return their ids in creation-index order.
    """
    ids: list[str] = [""] * count

    async def creator(offset: int) -> None:
        for index in range(offset, count, tasks):
            text = f"{prefix} thread {index}" if goal else None
            meta = await store.create_thread(goal=text)
            ids[index] = meta.id
        await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        for offset in range(min(tasks, count)):
            nursery.start_soon(creator, offset)
    return ids


async def burst(
    store: Store,
    thread_ids: Sequence[str],
    items: Sequence[Sequence[Item]],
    *,
    until: trio.Event | None = None,
) -> BurstResult:
    """One task per thread, each awaiting ``store.append`` of one item at a time.

    Without ``until`` every task appends its items once; with it, tasks cycle through their
    items until the event is set.
    """
    latencies: list[float] = []
    ends: list[float] = []

    async def task(thread_id: str, mine: Sequence[Item]) -> None:
        source = mine if until is None else itertools.cycle(mine)
        for item in source:
            if until is not None and until.is_set():
                break
            begin = time.perf_counter()
            await store.append(thread_id, item)
            latencies.append((time.perf_counter() - begin) * 1000)
        ends.append(time.perf_counter())
        await trio.lowlevel.checkpoint()

    start = time.perf_counter()
    cpu = cpu_clock()
    async with trio.open_nursery() as nursery:
        for thread_id, mine in zip(thread_ids, items, strict=True):
            nursery.start_soon(task, thread_id, mine)
    used = cpu()
    ended = max(ends, default=start)
    return BurstResult(
        items=len(latencies),
        seconds=ended - start,
        ended_at=ended,
        latencies_ms=tuple(latencies),
        cpu=used,
    )


def stats_delta(before: StoreStatistics, after: StoreStatistics) -> dict[str, int]:
    """Counter differences (``after - before``) of the monotonic fields."""
    fields = (
        "appends",
        "items_appended",
        "log_commits",
        "projection_writes",
        "patches_coalesced",
        "retries",
        "projection_failures",
    )
    return {name: getattr(after, name) - getattr(before, name) for name in fields}
