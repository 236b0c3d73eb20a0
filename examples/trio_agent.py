"""An agent loop on trio: stream two turns into a thread, then list it.

python examples/trio_agent.py [STORE_PATH]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import trio

import threadstore
from threadstore import Item

from _agent import turn


async def main(path: Path) -> None:
    async with threadstore.open_store(path) as store:
        meta = await store.create_thread(title="Flaky CI")
        for n, question in enumerate(["why is CI flaky?", "how do we fix it?"]):
            await store.append(meta.id, Item.user_message(question))
            for item in turn(f"turn-{n}", question):
                await store.append(meta.id, item)  # returns once durable, not projected
        await store.flush(meta.id)  # barrier: the metadata shows every item
        (listed,) = (await store.list_threads()).threads
        print(f"{listed.title}: {listed.preview!r}")
        print(f"status={listed.status} items={listed.item_count} turns={listed.turn_count}")
        print(f"tokens in/out={listed.input_tokens}/{listed.output_tokens}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        trio.run(main, Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tmp, "threads.db"))
