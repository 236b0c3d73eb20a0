"""Percentiles, latency summaries and the event-loop heartbeat. Times are in milliseconds."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

import attrs
import trio

__all__ = [
    "CpuSplit",
    "Heartbeat",
    "Summary",
    "cdf_points",
    "cpu_clock",
    "heartbeat",
    "median",
    "quantile",
    "summarize",
    "timed_calls",
]

T = TypeVar("T")


def quantile(values: Iterable[float], q: float) -> float:
    """The ``q``-quantile (0..1) by linear interpolation between order statistics; NaN if empty."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    pos = q * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median(values: Iterable[float]) -> float:
    return quantile(values, 0.5)


@attrs.frozen(kw_only=True)
class Summary:
    """A latency distribution in milliseconds."""

    n: int
    p50: float
    p99: float
    max: float
    mean: float


def summarize(samples_ms: Sequence[float]) -> Summary:
    if not samples_ms:
        return Summary(n=0, p50=math.nan, p99=math.nan, max=math.nan, mean=math.nan)
    return Summary(
        n=len(samples_ms),
        p50=quantile(samples_ms, 0.5),
        p99=quantile(samples_ms, 0.99),
        max=max(samples_ms),
        mean=sum(samples_ms) / len(samples_ms),
    )


@attrs.frozen
class CpuSplit:
    """CPU seconds spent over an interval: on the calling (trio) thread, and on every other
    thread of the process (the store's writer, readers and checkpointer; the bare loop's
    writer). Under one GIL, ``loop_s + other_s`` close to the wall time means the threads
    took turns rather than ran side by side."""

    loop_s: float
    other_s: float

    def per_item_us(self, items: int) -> tuple[float, float]:
        """``(loop, other)`` in microseconds per item."""
        n = max(1, items)
        return self.loop_s / n * 1e6, self.other_s / n * 1e6


def cpu_clock() -> Callable[[], CpuSplit]:
    """Start measuring CPU time; the returned function gives the split since the start.

    Call both on the trio thread (``time.thread_time`` is the calling thread's clock).
    """
    loop0, all0 = time.thread_time(), time.process_time()

    def since() -> CpuSplit:
        loop = time.thread_time() - loop0
        return CpuSplit(loop_s=loop, other_s=max(0.0, time.process_time() - all0 - loop))

    return since


def cdf_points(samples_ms: Sequence[float], points: int = 200) -> list[float]:
    """``points`` evenly spaced quantiles (0..1) of the samples: enough to draw a CDF."""
    if not samples_ms:
        return []
    ordered = sorted(samples_ms)
    if len(ordered) <= points:
        return [round(v, 4) for v in ordered]
    return [round(quantile(ordered, i / (points - 1)), 4) for i in range(points)]


async def timed_calls(fn: Callable[[], Awaitable[T]], calls: int, warmup: int = 10) -> list[float]:
    """Await ``fn()`` ``warmup`` times untimed, then ``calls`` times; return each latency (ms)."""
    for _ in range(warmup):
        await fn()
    samples: list[float] = []
    for _ in range(calls):
        start = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - start) * 1000)
    await trio.lowlevel.checkpoint()
    return samples


class Heartbeat:
    """A task sleeping ``interval`` in a loop; ``overshoot_ms`` is how late each wake-up was.

    A store that blocks the trio thread (SQLite on the event loop, long sync loops) shows up
    here as large overshoots; an idle loop shows the timer granularity (~0.1 ms on Linux).
    """

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.overshoot_ms: list[float] = []

    async def beat(self) -> None:
        while True:
            start = time.perf_counter()
            await trio.sleep(self.interval)
            late = time.perf_counter() - start - self.interval
            self.overshoot_ms.append(max(0.0, late) * 1000)

    def summary(self) -> Summary:
        return summarize(self.overshoot_ms)


@asynccontextmanager
async def heartbeat(interval: float = 0.001) -> AsyncIterator[Heartbeat]:
    """Run a :class:`Heartbeat` for the duration of the block."""
    beat = Heartbeat(interval)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(beat.beat)
        try:
            yield beat
        finally:
            nursery.cancel_scope.cancel()
