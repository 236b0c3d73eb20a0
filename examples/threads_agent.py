"""Agents on plain OS threads sharing one store handle.

python examples/threads_agent.py [STORE_PATH]
"""

from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path

from threadstore import Item, blocking

from _agent import turn


def agent(store: blocking.Store, thread_id: str, question: str) -> None:
    store.append(thread_id, Item.user_message(question))
    for item in turn(f"{thread_id}-1", question):
        store.append(thread_id, item)  # blocks this thread until durable


def main(path: Path) -> None:
    with blocking.open_store(path) as store:
        questions = {"alpha": "what broke?", "beta": "who owns it?", "gamma": "when?"}
        for name in questions:
            store.create_thread(title=name, thread_id=name)
        workers = [
            threading.Thread(target=agent, args=(store, name, question))
            for name, question in questions.items()
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        store.flush_all()
        for meta in store.list_threads(order_by="created_at", descending=False).threads:
            print(f"{meta.id}: {meta.preview!r} items={meta.item_count} status={meta.status}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tmp, "threads.db"))
