"""The change feed: delivery rules on the Feed alone, then what the store publishes."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from threadstore import Item, ReadOnlyStoreError, Store, open_store
from threadstore._feed import MUST_DELIVER_WAIT, Feed, ThreadEvent
from threadstore._meta import Projection


def event(kind: str = "updated", thread_id: str = "t") -> ThreadEvent:
    meta = Projection.new(thread_id, 1_700_000_000_000_000).meta
    return ThreadEvent(type=kind, thread=meta)  # type: ignore[arg-type]


async def test_subscriber_receives_events_in_order() -> None:
    feed = Feed()
    async with feed.subscribe() as events:
        assert feed.subscribers == 1
        for name in ("a", "b", "c"):
            feed.publish_nowait(event(thread_id=name))
        feed.close()
        received = [e.thread.id async for e in events]
    assert received == ["a", "b", "c"]
    assert feed.subscribers == 0


async def test_ordinary_updates_are_dropped_when_the_buffer_is_full() -> None:
    feed = Feed()
    async with feed.subscribe(buffer=2) as events:
        for name in ("a", "b", "c", "d"):
            await feed.publish(event(thread_id=name), must_deliver=False)
        feed.close()
        received = [e.thread.id async for e in events]
    assert received == ["a", "b"]
    assert feed.drops == 2
    assert feed.must_deliver_drops == 0


async def test_must_deliver_waits_for_a_reader_within_the_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    feed = Feed(must_deliver_wait=1.0)
    got: list[str] = []
    async with feed.subscribe(buffer=1) as events:
        await feed.publish(event("created", "a"), must_deliver=True)

        async def reader() -> None:
            await trio.sleep(0.5)  # a slow consumer, within the bound (fake clock)
            async for e in events:
                got.append(e.thread.id)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await feed.publish(event("created", "b"), must_deliver=True)
            feed.close()
    assert got == ["a", "b"]
    assert feed.must_deliver_drops == 0


async def test_must_deliver_gives_up_after_the_bound_and_counts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    feed = Feed(must_deliver_wait=0.25)
    async with feed.subscribe(buffer=1):
        await feed.publish(event("created", "a"), must_deliver=True)
        start = trio.current_time()
        await feed.publish(event("deleted", "b"), must_deliver=True)  # nobody reads
        waited = trio.current_time() - start
    assert feed.must_deliver_drops == 1
    assert 0.25 <= waited < 1.0  # bounded (fake clock: exact, not wall time)


async def test_closed_subscriber_is_forgotten() -> None:
    feed = Feed()
    async with feed.subscribe():
        pass
    await feed.publish(event(), must_deliver=True)
    assert feed.subscribers == 0
    assert feed.drops == feed.must_deliver_drops == 0


async def test_subscribing_after_close_ends_at_once() -> None:
    feed = Feed()
    feed.close()
    async with feed.subscribe() as events:
        assert [e async for e in events] == []


# -- the store's feed ---------------------------------------------------------------------


async def test_store_publishes_each_change_after_it_committed(store_target: str) -> None:
    received: list[tuple[str, str, int]] = []
    async with open_store(store_target) as store:
        async with store.subscribe() as events:
            meta = await store.create_thread(goal="ship it")
            tid = meta.id
            await store.append_and_flush(tid, Item.user_message("hello"))
            await store.archive_thread(tid)
            await store.unarchive_thread(tid)
            await store.delete_thread(tid)
            while len(received) < 5:
                event = await events.__anext__()
                received.append((event.type, event.thread.id, event.thread.seq))
        assert store.statistics().subscribers == 0
    assert received == [
        ("created", tid, 1),
        ("updated", tid, 2),
        ("archived", tid, 2),
        ("unarchived", tid, 2),
        ("deleted", tid, 2),
    ]


async def test_updated_events_carry_the_committed_metadata(store: Store) -> None:
    tid = (await store.create_thread()).id
    async with store.subscribe() as events:
        assert store.statistics().subscribers == 1
        await store.append_and_flush(tid, Item.user_message("first question"))
        event = await events.__anext__()
    assert event.type == "updated"
    assert event.thread == await store.get_thread(tid)
    assert event.thread.preview == "first question"


async def test_subscriptions_end_when_the_store_closes(store_target: str) -> None:
    seen: list[str] = []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, open_store(store_target) as store:
            ready = trio.Event()

            async def listen() -> None:
                async with store.subscribe() as events:
                    ready.set()
                    async for event in events:  # ends when the store closes
                        seen.append(event.type)

            nursery.start_soon(listen)
            await ready.wait()
            await store.create_thread(goal="g")
            store.append_nowait((await store.create_thread()).id, Item.user_message("x"))
    assert seen == ["created", "created", "updated"]  # the queued append: projected at close


async def test_a_slow_subscriber_loses_ordinary_updates_but_never_stalls_projection(
    store: Store,
) -> None:
    tid = (await store.create_thread()).id
    async with store.subscribe(buffer=1) as events:  # never read until the end
        for n in range(20):
            await store.append_and_flush(tid, Item.assistant_message(f"chunk {n}"))
        stats = store.statistics()
        assert stats.feed_drops >= 18  # one buffered, the rest dropped
        assert stats.feed_must_deliver_drops == 0
        first = await events.__anext__()
    assert first.type == "updated"
    assert (await store.get_thread(tid)).item_count == 20


async def test_must_deliver_events_wait_a_bounded_time_then_are_counted(store: Store) -> None:
    async with store.subscribe(buffer=1) as events:
        await store.create_thread(goal="one")  # fills the buffer
        start = trio.current_time()
        await store.create_thread(goal="two")  # waits MUST_DELIVER_WAIT for room, then drops
        assert trio.current_time() - start >= MUST_DELIVER_WAIT
        assert store.statistics().feed_must_deliver_drops == 1
        assert (await events.__anext__()).thread.goal == "one"


async def test_a_read_only_store_has_no_feed(store_path: Path) -> None:
    async with open_store(store_path):
        pass
    async with open_store(store_path, read_only=True) as reader:
        with pytest.raises(ReadOnlyStoreError, match="read-only"):
            async with reader.subscribe():
                pass  # pragma: no cover
