"""A child process for tests/test_logging.py: an application that configures no structlog.

Run as ``python quiet_child.py PATH [--debug] [--fail-once]`` with ``PYTHONPATH`` at the
repo root. It opens a store at PATH, creates three threads and appends to each (as the
caller bound to ``trace_parent=req-1``), flushes, lists and closes the store, printing
only its own lines: ``created <n>``, ``listed <n>``, ``closed``. ``--debug`` calls
``logging.basicConfig(level=logging.DEBUG)`` first (stdlib logging, on stderr); otherwise
stdlib logging is unconfigured too. ``--fail-once`` installs a projector whose first call
raises, so the store logs one ``worker.retry`` warning.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
import trio

import threadstore
from threadstore import Item, StoredItem, ThreadMeta


class FailOnce:
    """Raises on its first call, returns nothing afterwards."""

    name = "fail_once"

    def __init__(self) -> None:
        self.calls = 0

    def project(self, meta: ThreadMeta, items: Sequence[StoredItem]) -> Mapping[str, Any] | None:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("first call fails")
        return None


def report(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(path: str, fail_once: bool) -> None:
    projectors = [FailOnce()] if fail_once else []
    async with threadstore.open_store(path, projectors=projectors) as store:
        structlog.contextvars.bind_contextvars(trace_parent="req-1")
        ids = [(await store.create_thread(goal=f"goal {i}")).id for i in range(3)]
        report(f"created {len(ids)}")
        for tid in ids:
            await store.append(tid, Item.user_message("hi"), Item.assistant_message("hello"))
        await store.flush_all()
        page = await store.list_threads()
        report(f"listed {len(page.threads)}")
    report("closed")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--fail-once", action="store_true")
    args = parser.parse_args()
    if args.debug:
        logging.basicConfig(level=logging.DEBUG)
    trio.run(main, args.path, args.fail_once)
