"""A child process that owns a threadstore, for tests/sqlite/test_store_process.py.

Run as ``python store_child.py PATH MODE [options]`` with ``PYTHONPATH`` at the repo root.
It reports over stdout, one flushed line per event:

- ``thread <id>`` for each thread it created, then ``ready`` once they are durable;
- in ``stream`` mode, ``ack <thread id> <seq>`` right after each ``store.append`` returned:
  every acknowledged line names items the store promised are durable.

Modes: ``hold`` keeps the store open until stdin reaches EOF, then closes it normally;
``stream`` appends to every thread (one task per thread) until it is killed or interrupted;
``cancel`` queues ``--appends`` rounds with ``append_nowait`` (printing ``ack`` for each
accepted receipt: the store must commit it on the way out), then cancels a scope around
the whole ``open_store`` block and prints ``closed`` once the block has been left.
``--block-after N`` installs a projector whose N-th and later calls never return, so the
metadata is guaranteed to lag the log. Nothing here catches ``KeyboardInterrupt``.
Log output (structlog, INFO and up) goes to stderr so stdout carries only the protocol.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import structlog
import trio

import threadstore
from threadstore import Item, StoredItem, ThreadMeta


class StallingProjector:
    """Counts the items it saw; from its ``block_after``-th call on it never returns."""

    name = "stall"

    def __init__(self, block_after: int) -> None:
        self.block_after = block_after
        self.calls = 0

    async def project(self, meta: ThreadMeta, items: Sequence[StoredItem]) -> Mapping[str, Any]:
        self.calls += 1
        await trio.lowlevel.checkpoint()
        if self.calls >= self.block_after:
            await trio.sleep_forever()
        seen = meta.extra.get(self.name, {}).get("seen", 0)
        return {"seen": seen + len(items)}


def report(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def round_items(index: int, n: int) -> list[Item]:
    """What the n-th append (from 1) to the index-th thread holds."""
    items = [Item.user_message(f"u{index}-{n}")]
    if n % 2 == 0:
        items.append(Item.assistant_message(f"a{index}-{n}"))
    return items


async def stream(store: threadstore.Store, thread_id: str, index: int) -> None:
    n = 0
    while True:
        n += 1
        receipt = await store.append(thread_id, *round_items(index, n))
        report(f"ack {receipt.thread_id} {receipt.seq}")


async def main(args: argparse.Namespace) -> None:
    durability: Literal["normal", "full"] = args.durability
    projectors = [] if args.block_after is None else [StallingProjector(args.block_after)]
    with trio.CancelScope() as scope:
        async with threadstore.open_store(
            args.path,
            durability=durability,
            projectors=projectors,
            shutdown_timeout=args.shutdown_timeout,
        ) as store:
            thread_ids = []
            for i in range(args.threads):
                meta = await store.create_thread(goal=f"goal {i}")
                thread_ids.append(meta.id)
                report(f"thread {meta.id}")
            report("ready")
            if args.mode == "hold":
                await trio.to_thread.run_sync(sys.stdin.read)
                return
            if args.mode == "cancel":
                for n in range(1, args.appends + 1):
                    for i, thread_id in enumerate(thread_ids):
                        receipt = store.append_nowait(thread_id, *round_items(i, n))
                        report(f"ack {receipt.thread_id} {receipt.seq}")
                scope.cancel()
                await trio.sleep_forever()
            async with trio.open_nursery() as nursery:
                for i, thread_id in enumerate(thread_ids):
                    nursery.start_soon(stream, store, thread_id, i)
    report("closed")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("mode", choices=["hold", "stream", "cancel"])
    parser.add_argument("--durability", choices=["normal", "full"], default="normal")
    parser.add_argument("--threads", type=int, default=3)
    parser.add_argument("--block-after", type=int, default=None)
    parser.add_argument("--appends", type=int, default=20)
    parser.add_argument("--shutdown-timeout", type=float, default=5.0)
    parser.add_argument(
        "--ki-at-checkpoints",
        action="store_true",
        help="trio.run(..., restrict_keyboard_interrupt_to_checkpoints=True)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    args = parse(sys.argv[1:])
    trio.run(main, args, restrict_keyboard_interrupt_to_checkpoints=args.ki_at_checkpoints)
