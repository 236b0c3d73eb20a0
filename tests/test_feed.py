"""The change feed's delivery rules, on the Feed alone (store-level tests live elsewhere)."""

from __future__ import annotations

import trio
import trio.testing

from threadstore._feed import Feed, ThreadEvent
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
