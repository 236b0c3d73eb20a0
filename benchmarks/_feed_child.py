"""The reader process of S10: ``python -m benchmarks._feed_child PATH POLL_S``.

Opens the store read-only (no lock: the writer is the parent), subscribes from now on,
prints ``ready``, then for every event one line ``<thread id> <time.monotonic()>`` (flushed):
``CLOCK_MONOTONIC`` is one clock for every process of the machine, so the parent can
subtract its own commit time from it. Runs until killed.
"""

from __future__ import annotations

import sys
import time

import trio

from threadstore import open_store


async def main(path: str, poll: float) -> None:
    async with (
        open_store(path, read_only=True, feed_poll_interval=poll) as store,
        store.subscribe() as events,
    ):
        print("ready", flush=True)
        async for event in events:
            if event.thread is not None:
                print(f"{event.thread.id} {time.monotonic()}", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], float(sys.argv[2]))
