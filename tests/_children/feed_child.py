"""A child process that follows a store's change feed read-only, for tests/test_feed.py.

Run as ``python feed_child.py PATH [--since N] [--poll SECONDS] [--namespace NS]`` with
``PYTHONPATH`` at the repo root. It opens the store with ``read_only=True`` (no lock: the
writer is another process), subscribes, prints ``ready``, then one flushed JSON line per
event: ``{"type", "change", "id", "namespace", "preview"}`` (``id`` null for a reset).
It runs until killed.
"""

from __future__ import annotations

import argparse
import json
import sys

import trio

import threadstore


async def main(path: str, since: int | None, poll: float, namespace: str | None) -> None:
    async with threadstore.open_store(path, read_only=True, feed_poll_interval=poll) as store:
        source = store if namespace is None else store.scoped(namespace)
        async with source.subscribe(since) as events:
            print("ready", flush=True)
            async for event in events:
                thread = event.thread
                line = {
                    "type": event.type,
                    "change": event.change,
                    "id": None if thread is None else thread.id,
                    "namespace": None if thread is None else thread.namespace,
                    "preview": None if thread is None else thread.preview,
                }
                print(json.dumps(line), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--since", type=int, default=None)
    parser.add_argument("--poll", type=float, default=0.02)
    parser.add_argument("--namespace", default=None)
    args = parser.parse_args()
    trio.run(main, args.path, args.since, args.poll, args.namespace)
    sys.exit(0)
