"""One of several processes writing one PostgreSQL store, for tests/postgres/test_writers.py.

Run as ``python pg_writer_child.py URL SEED OWN SHARED`` (``SHARED``: thread ids, comma
separated) with ``PYTHONPATH`` at the repo root. It opens the store for writing, creates
``OWN`` threads of its own (``created <thread id>`` each), prints ``ready``, then runs three
tasks that append to random threads (its own and the shared ones) until its stdin closes;
then it flushes everything it appended, prints ``done`` and exits. Each append is one line
before the call and one after it returned, each written and flushed in one ``write`` (a
line the parent reads was complete when the child died):

- ``call <text> <thread id>`` then ``ack <text> <thread id> <seq>``: an append of one user
  message whose text is ``<text>`` (unique: ``<pid>.<task>.<n>``), made by ``append``,
  ``append_nowait`` + ``durable()`` or ``append_and_flush`` (then ``<seq>`` is visible);
- ``bad <text>``: the child saw the store break a promise (the parent fails the test).
"""

from __future__ import annotations

import os
import random
import sys

import trio

from threadstore import Item, Store, open_store


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())


async def work(store: Store, rng: random.Random, threads: list[str], task: int) -> None:
    n = 0
    while True:
        tid = rng.choice(threads)
        text = f"{os.getpid()}.{task}.{n}"
        n += 1
        say(f"call {text} {tid}")
        how = rng.random()
        if how < 0.6:
            receipt = await store.append(tid, Item.user_message(text))
        elif how < 0.85:
            receipt = store.append_nowait(tid, Item.user_message(text))
            await receipt.durable()
        else:
            receipt = await store.append_and_flush(tid, Item.user_message(text))
            meta = await store.get_thread(tid)
            if meta.seq < receipt.seq:
                say(f"bad append_and_flush returned before seq {receipt.seq} was visible")
        say(f"ack {text} {tid} {receipt.seq}")
        await trio.sleep(rng.random() * 0.004)


async def main(url: str, seed: int, own: int, shared: list[str]) -> None:
    rng = random.Random(seed)
    async with open_store(url) as store:
        mine = []
        for n in range(own):
            tid = (await store.create_thread(goal=f"{os.getpid()} own {n}")).id
            mine.append(tid)
            say(f"created {tid}")
        for tid in shared:  # (another process made them: an async call looks them up)
            await store.get_thread(tid)
        say("ready")
        threads = mine + shared
        async with trio.open_nursery() as nursery:
            for task in range(3):
                nursery.start_soon(work, store, random.Random(rng.random()), threads, task)
            await trio.to_thread.run_sync(sys.stdin.read)  # until the parent closes stdin
            nursery.cancel_scope.cancel()
        await store.flush_all()
    say("done")


if __name__ == "__main__":
    trio.run(
        main,
        sys.argv[1],
        int(sys.argv[2]),
        int(sys.argv[3]),
        [t for t in sys.argv[4].split(",") if t],
    )
