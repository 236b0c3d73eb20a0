"""An agent loop on asyncio: two agents stream at once while a sidebar follows the feed.

python examples/asyncio_agent.py [STORE_PATH]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from threadstore import Item, aio

from _agent import turn


async def agent(store: aio.Store, name: str, question: str) -> None:
    meta = await store.create_thread(title=name)
    await store.append(meta.id, Item.user_message(question))
    for item in turn(f"{name}-1", question):
        await store.append(meta.id, item)
    await store.flush(meta.id)


async def main(path: Path) -> None:
    async with aio.open_store(path) as store:
        created: list[str] = []
        following = asyncio.Event()

        async def sidebar() -> None:
            async with store.subscribe() as events:
                following.set()
                async for event in events:
                    if event.type == "created" and event.thread is not None:
                        created.append(event.thread.title or "")
                        if len(created) == 2:
                            return

        follower = asyncio.create_task(sidebar())
        await following.wait()
        await asyncio.gather(
            agent(store, "billing", "why did the cron job fail?"),
            agent(store, "search", "why is search slow?"),
        )
        await follower
        print("sidebar saw:", ", ".join(sorted(created)))
        page = await store.list_threads()
        for meta in sorted(page.threads, key=lambda meta: meta.title or ""):
            print(f"{meta.title}: {meta.preview!r} status={meta.status} items={meta.item_count}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tmp, "threads.db")))
