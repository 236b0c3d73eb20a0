"""A goal-first thread is listed the moment create_thread returns, before any message.

python examples/goal_first.py [STORE_PATH]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import trio

import threadstore
from threadstore import Item


async def main(path: Path) -> None:
    async with threadstore.open_store(path) as store:
        meta = await store.create_thread(goal="Migrate the billing cron jobs")
        (listed,) = (await store.list_threads()).threads  # no flush needed
        print(f"listed at once: {listed.id == meta.id} preview={listed.preview!r}")
        await store.append_and_flush(meta.id, Item.user_message("Start with the nightly one"))
        (listed,) = (await store.list_threads()).threads
        print(f"after the first message: preview={listed.preview!r} goal={listed.goal!r}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        trio.run(main, Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tmp, "threads.db"))
