"""Child processes for S5 and S6: ``python -m benchmarks._child MODE PATH [options]``.

Run with ``PYTHONPATH`` at the repo root. Modes:

- ``many``: touch ``--threads`` threads once (create + one append each, from 100 tasks),
  ``flush_all``, and print one JSON line with timings, ``live_actors`` and resident memory
  (a fresh process, so the memory figures are not blurred by earlier scenarios).
- ``burst``: open the store with a projector that never returns (so metadata lags the log),
  create ``--threads`` goal-first threads, print ``ready``, then append from one task per
  thread forever, printing ``ack <thread id> <seq>`` (flushed) after every ``append``
  returned: each such line names items the store promised are durable. The parent kills
  the process with SIGKILL.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import trio

from threadstore import Item, Store, StoredItem, ThreadMeta, open_store

from ._burst import make_threads
from ._env import configure_logging, peak_rss_mb, rss_mb
from ._workload import item_stream

WORKERS = 100


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def many(path: str, threads: int) -> None:
    gc.collect()
    rss_start = rss_mb()
    peak_start = peak_rss_mb()
    begin = time.perf_counter()
    async with open_store(path) as store:
        rss_open = rss_mb()
        opened = time.perf_counter()

        async def worker(offset: int) -> None:
            for index in range(offset, threads, WORKERS):
                meta = await store.create_thread()
                await store.append(meta.id, Item.user_message(f"hello from thread {index}"))
            await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            for offset in range(WORKERS):
                nursery.start_soon(worker, offset)
        touched = time.perf_counter()
        live_before_drain = store.statistics().live_actors
        await store.flush_all()
        drained = time.perf_counter()
        stats = store.statistics()
        live_after_1s = stats.live_actors
        waited = 0.0
        while live_after_1s and waited < 1.0:
            await trio.sleep(0.05)
            waited += 0.05
            live_after_1s = store.statistics().live_actors
        gc.collect()
        rss_end = rss_mb()
        peak = peak_rss_mb()
    closed = time.perf_counter()
    out: dict[str, Any] = {
        "threads": threads,
        "open_s": opened - begin,
        "touch_s": touched - opened,
        "flush_all_s": drained - touched,
        "close_s": closed - drained,
        "live_actors_before_drain": live_before_drain,
        "live_actors_after_drain": stats.live_actors,
        "live_actors_after_1s": live_after_1s,
        "lagging_threads_after_drain": stats.lagging_threads,
        "projection_writes": stats.projection_writes,
        "rss_start_mb": rss_start,
        "rss_open_mb": rss_open,
        "rss_end_mb": rss_end,
        "peak_rss_mb": peak,
        "peak_rss_start_mb": peak_start,
    }
    _say(json.dumps(out))


class StalledProjector:
    """A custom projector that never returns: the thread's metadata stops at its creation."""

    name = "stalled"

    async def project(self, meta: ThreadMeta, items: Sequence[StoredItem]) -> Mapping[str, Any]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")


async def _appender(store: Store, thread_id: str, seed: int) -> None:
    for item in item_stream(seed):
        receipt = await store.append(thread_id, item)
        _say(f"ack {receipt.thread_id} {receipt.seq}")
    await trio.lowlevel.checkpoint()  # never reached: the stream is endless


async def burst(path: str, threads: int, durability: Literal["normal", "full"]) -> None:
    async with open_store(path, durability=durability, projectors=[StalledProjector()]) as store:
        ids = await make_threads(store, threads, prefix="recover")
        _say("ready")
        async with trio.open_nursery() as nursery:
            for index, thread_id in enumerate(ids):
                nursery.start_soon(_appender, store, thread_id, 6000 + index)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._child")
    parser.add_argument("mode", choices=("many", "burst"))
    parser.add_argument("path")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--durability", choices=("normal", "full"), default="normal")
    args = parser.parse_args(argv)
    configure_logging()
    if args.mode == "many":
        trio.run(many, args.path, args.threads)
    else:
        trio.run(burst, args.path, args.threads, args.durability)


if __name__ == "__main__":
    main()
