"""Child processes for tests/sqlite/test_files.py: racing writers, a streaming writer, a reader.

Run as ``python files_child.py MODE PATH [options]`` with ``PYTHONPATH`` at the repo root.
Each reports over stdout, one flushed line per event; stdin carries the parent's orders.

- ``race``: prints ``waiting``, waits for a line on stdin, then opens the store as writer.
  If it wins it prints ``won``, creates a thread with goal ``by <pid>``, prints ``created``,
  keeps the store until stdin reaches EOF and prints ``closed``; if it loses it prints
  ``locked <StoreLockedError.holder>`` and exits 0.
- ``writer``: creates ``--threads`` threads, prints ``ready``, waits for a line on stdin,
  then appends ``--items`` items (1-5 per call, ``append`` and ``append_nowait`` from
  ``--tasks`` tasks, a new thread every 1000 items), printing ``progress <items>`` every
  500 items and ``done <items>`` at the end, then closes the store and prints ``closed``.
- ``reader``: opens the store read-only and checks it pass after pass until stdin reaches
  EOF; prints ``pass <n> <threads> <items>`` after each pass and ``summary <passes>`` at
  the end. Any error or inconsistency is printed as ``error <text>`` and exits 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from datetime import datetime

import structlog
import trio

import threadstore
from threadstore import Item, StoreLockedError, ThreadMeta


def report(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def race(path: str) -> None:
    report("waiting")
    await trio.to_thread.run_sync(sys.stdin.readline)
    try:
        async with threadstore.open_store(path) as store:
            report("won")
            await store.create_thread(goal=f"by {os.getpid()}")
            report("created")
            await trio.to_thread.run_sync(sys.stdin.read)
    except StoreLockedError as exc:
        report(f"locked {exc.holder}")
        return
    report("closed")


async def write(path: str, items: int, threads: int, tasks: int) -> None:
    async with threadstore.open_store(path) as store:
        thread_ids = [(await store.create_thread(goal=f"goal {i}")).id for i in range(threads)]
        report("ready")
        await trio.to_thread.run_sync(sys.stdin.readline)
        written = 0
        rng = random.Random(0)

        async def stream(task: int) -> None:
            nonlocal written
            await trio.lowlevel.checkpoint()
            while written < items:
                count = min(rng.randint(1, 5), items - written)
                batch = [
                    Item.user_message(
                        f"task {task} item {written + j} " + "x" * rng.randint(0, 400)
                    )
                    for j in range(count)
                ]
                before = written
                written = after = written + count
                thread_id = rng.choice(thread_ids)
                if rng.random() < 0.5:
                    await store.append(thread_id, *batch)
                else:
                    await store.append_nowait(thread_id, *batch).durable()
                if after // 1000 > before // 1000:
                    thread_ids.append((await store.create_thread(goal=f"goal {after}")).id)
                if after // 500 > before // 500:
                    report(f"progress {after}")

        async with trio.open_nursery() as nursery:
            for task in range(tasks):
                nursery.start_soon(stream, task)
        report(f"done {written}")
    report("closed")


class Inconsistent(Exception):
    pass


def ordered(metas: list[ThreadMeta], key: str, descending: bool) -> bool:
    keys: list[tuple[datetime, str]] = [(getattr(m, key), m.id) for m in metas]
    return keys == sorted(keys, reverse=descending)


async def read(path: str) -> None:
    """Pass after pass: every listing and read is consistent with what came before."""
    stop = trio.Event()

    async def wait_for_eof() -> None:
        await trio.to_thread.run_sync(sys.stdin.read)
        stop.set()

    seen_seq: dict[str, int] = {}  # thread -> highest metadata seq seen: never goes back
    rng = random.Random(0)
    passes = 0
    async with (
        threadstore.open_store(path, read_only=True) as store,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(wait_for_eof)
        while not stop.is_set():
            # Every thread once, in creation order, in small pages: none missing or repeated.
            listed: list[ThreadMeta] = []
            cursor = None
            while True:
                page = await store.list_threads(
                    limit=7,
                    cursor=cursor,
                    order_by="created_at",
                    descending=False,
                    include_empty=True,
                )
                if not ordered(list(page.threads), "created_at", descending=False):
                    raise Inconsistent(f"a created_at page is out of order: {page.threads}")
                listed += page.threads
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
            ids = [meta.id for meta in listed]
            if len(set(ids)) != len(ids):
                raise Inconsistent(f"a thread is listed twice in one pass: {ids}")
            missing = set(seen_seq) - set(ids)
            if missing:
                raise Inconsistent(f"threads disappeared from the listing: {sorted(missing)}")
            for meta in listed:
                if meta.item_count != meta.seq:
                    raise Inconsistent(f"{meta.id}: item_count {meta.item_count} != seq {meta.seq}")
                if meta.seq < seen_seq.get(meta.id, 0):
                    raise Inconsistent(f"{meta.id}: metadata went back to seq {meta.seq}")
                seen_seq[meta.id] = meta.seq
            # The newest-first listing: each page ordered, no thread on two pages.
            page = await store.list_threads(limit=50)
            if not ordered(list(page.threads), "updated_at", descending=True):
                raise Inconsistent(f"an updated_at page is out of order: {page.threads}")
            if page.next_cursor is not None:
                following = await store.list_threads(limit=50, cursor=page.next_cursor)
                if not ordered(list(following.threads), "updated_at", descending=True):
                    raise Inconsistent("the second updated_at page is out of order")
                # A thread updated between the two reads moves to the front, never back.
                twice = {m.id for m in page.threads} & {m.id for m in following.threads}
                if twice:
                    raise Inconsistent(f"threads on both newest-first pages: {sorted(twice)}")
            # The log of one thread: dense, and never behind the metadata seen before.
            thread_id = rng.choice(ids)
            stored = await store.read_items(thread_id)
            if [item.seq for item in stored] != list(range(1, len(stored) + 1)):
                raise Inconsistent(f"{thread_id}: seqs are not dense")
            if len(stored) < seen_seq[thread_id]:
                raise Inconsistent(f"{thread_id}: log ends before the metadata's seq")
            passes += 1
            report(f"pass {passes} {len(listed)} {sum(seen_seq.values())}")
        nursery.cancel_scope.cancel()
    report(f"summary {passes}")


async def main(args: argparse.Namespace) -> None:
    if args.mode == "race":
        await race(args.path)
    elif args.mode == "writer":
        await write(args.path, args.items, args.threads, args.tasks)
    else:
        try:
            await read(args.path)
        except Exception as exc:
            report(f"error {exc!r}")
            raise SystemExit(1) from exc


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["race", "writer", "reader"])
    parser.add_argument("path")
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=4)
    return parser.parse_args(argv)


if __name__ == "__main__":
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    trio.run(main, parse(sys.argv[1:]))
