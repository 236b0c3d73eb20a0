"""The change feed: change numbers, lossless catch-up, resume, tombstones, other processes.

A subscriber's view is built the way the docs tell users to: apply events in order
(upsert; remove on ``deleted``; clear on ``reset``). The tests compare it with what the
store lists, over archived and unarchived, empty and non-empty threads.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import hypothesis.strategies as st
import pytest
import trio
import trio.testing
from _helpers import View, apply
from _process import Child, spawn_child
from hypothesis import HealthCheck, given, settings

from threadstore import (
    Item,
    Store,
    StoreClosedError,
    ThreadEvent,
    ThreadNotFoundError,
    open_store,
)
from threadstore.demo import list_all

#: Every thread the store lists, archived or not, empty or not (the demo's sidebar check).
listing = list_all


def latest(store: Store) -> int:
    """The newest change the store published (every change of a writable store is)."""
    return store._feed.last


async def follow(events: AsyncIterator[ThreadEvent], view: View, through: int) -> int:
    """Apply events until the one with change ``through``; return how many were applied."""
    count = 0
    with trio.fail_after(30):
        async for event in events:
            apply(view, event)
            count += 1
            if event.change >= through:
                return count
    raise AssertionError("the subscription ended early")


# -- change numbers and what is published ---------------------------------------------------


async def test_each_committed_change_is_published_with_a_rising_change_number(
    store: Store,
) -> None:
    received: list[ThreadEvent] = []
    async with store.subscribe() as events:
        meta = await store.create_thread(goal="ship it")
        tid = meta.id
        await store.append_and_flush(tid, Item.user_message("hello"))
        await store.archive_thread(tid)
        await store.unarchive_thread(tid)
        await store.delete_thread(tid)
        with trio.fail_after(10):
            while len(received) < 5:
                received.append(await events.__anext__())
        assert store.statistics().subscribers == 1
    assert store.statistics().subscribers == 0
    assert [(e.type, e.thread.id if e.thread else None) for e in received] == [
        ("created", tid),
        ("updated", tid),
        ("archived", tid),
        ("unarchived", tid),
        ("deleted", tid),
    ]
    changes = [e.change for e in received]
    assert changes == sorted(set(changes))  # strictly increasing
    assert meta.change == changes[0]  # what create_thread returned carries its change
    assert all(e.thread is not None and e.thread.change == e.change for e in received)
    assert store.statistics().feed_events >= 5


async def test_updated_events_carry_the_committed_metadata_and_change(store: Store) -> None:
    tid = (await store.create_thread()).id
    async with store.subscribe() as events:
        await store.append_and_flush(tid, Item.user_message("first question"))
        with trio.fail_after(10):
            event = await events.__anext__()
    stored = await store.get_thread(tid)
    assert event.type == "updated"
    assert event.thread == stored
    assert event.change == stored.change
    assert stored.preview == "first question"


async def test_a_projection_that_changes_nothing_publishes_nothing(store: Store) -> None:
    tid = (await store.create_thread(goal="g")).id
    async with store.subscribe() as events:
        before = latest(store)
        await store.flush(tid)
        await store.flush_all()
        assert latest(store) == before
        await store.append_and_flush(tid, Item.user_message("now"))
        with trio.fail_after(10):
            assert (await events.__anext__()).type == "updated"


async def test_concurrent_appends_to_many_threads_arrive_in_change_order(store: Store) -> None:
    tids = [(await store.create_thread()).id for _ in range(12)]
    received: list[ThreadEvent] = []
    async with store.subscribe(buffer=100_000) as events:

        async def stream(tid: str) -> None:
            for n in range(15):
                await store.append(tid, Item.assistant_message(f"{tid} {n}"))
                if n % 5 == 4:
                    await store.flush(tid)

        async with trio.open_nursery() as nursery:
            for tid in tids:
                nursery.start_soon(stream, tid)
        await store.flush_all()
        target = latest(store)
        with trio.fail_after(30):
            async for event in events:
                received.append(event)
                if event.change >= target:
                    break
    changes = [e.change for e in received]
    assert changes == sorted(set(changes))
    view: View = {}
    for event in received:
        apply(view, event)
    for tid in tids:  # the last event of each thread is its committed metadata
        assert view[tid] == await store.get_thread(tid)
        assert view[tid].item_count == 15
    assert store.statistics().feed_catch_ups == 0  # the buffer never filled


async def test_a_burst_inside_the_projection_delay_gives_few_events(store_target: str) -> None:
    async with open_store(store_target, projection_delay=0.2) as store:
        tid = (await store.create_thread(goal="stream")).id
        async with store.subscribe() as events:
            for n in range(100):
                store.append_nowait(tid, Item.assistant_message(f"chunk {n}"))
            await store.flush(tid)
            target = latest(store)
            updates = await follow(events, {}, target)
        assert 1 <= updates <= 3
        assert (await store.get_thread(tid)).item_count == 101


@pytest.mark.engines("sqlite")
async def test_urgent_items_publish_at_once_inside_a_long_delay(store_target: str) -> None:
    async with open_store(store_target, projection_delay=3600) as store:
        tid = (await store.create_thread()).id
        async with store.subscribe() as events:
            await store.append(tid, Item.assistant_message("streamed"))
            await store.append(tid, Item.turn_completed("t1"))  # urgent: no hour-long wait
            with trio.fail_after(10):  # (far below the delay: only urgency can explain it)
                event = await events.__anext__()
        assert event.thread is not None
        assert event.thread.status == "idle"
        assert event.thread.item_count == 2


# -- lossless catch-up -----------------------------------------------------------------------


async def test_a_stuck_subscriber_converges_exactly(store: Store) -> None:
    """Hundreds of updates, creations, archives and deletions while the subscriber reads
    nothing with a buffer of four: it catches up from the store to exactly the listing."""
    view: View = {}
    async with store.subscribe(buffer=4) as events:
        tids = [(await store.create_thread(goal=f"goal {n}")).id for n in range(40)]
        for round_ in range(5):
            for n, tid in enumerate(tids):
                store.append_nowait(tid, Item.user_message(f"r{round_} t{n}"))
            await store.flush_all()
        for tid in tids[:10]:
            await store.delete_thread(tid)
        for tid in tids[10:15]:
            await store.archive_thread(tid)
        await store.update_thread(tids[20], title="renamed")
        tids += [(await store.create_thread(title=f"late {n}")).id for n in range(10)]
        empty = await store.create_thread()  # listed only with include_empty
        await store.flush_all()
        assert store.statistics().subscribers == 1
        applied = await follow(events, view, latest(store))
    assert view == await listing(store)
    assert len(view) == 41
    assert empty.id in view
    assert applied < 300  # caught up once per thread, not once per change
    assert store.statistics().feed_catch_ups >= 2


async def test_a_slow_subscriber_never_stalls_projection(store: Store) -> None:
    tid = (await store.create_thread()).id
    async with store.subscribe(buffer=1):  # never read
        for n in range(50):
            await store.append_and_flush(tid, Item.assistant_message(f"chunk {n}"))
    assert (await store.get_thread(tid)).item_count == 50


async def test_scoped_subscriptions_see_their_namespace_only_also_when_catching_up(
    store: Store,
) -> None:
    view: View = {}
    async with store.scoped("acme").subscribe(buffer=2) as events:
        for n in range(6):
            await store.create_thread(goal=f"a{n}", namespace="acme")
            await store.create_thread(goal=f"b{n}", namespace="globex")
        gone = await store.create_thread(goal="gone", namespace="acme")
        await store.delete_thread(gone.id)
        last_acme = latest(store)
        await store.delete_thread((await store.create_thread(namespace="globex")).id)
        await follow(events, view, last_acme)
    assert {meta.namespace for meta in view.values()} == {"acme"}
    expected = (await store.list_threads(namespace="acme", include_empty=True)).threads
    assert view == {meta.id: meta for meta in expected}


# -- resume, tombstones and reset --------------------------------------------------------------


async def test_resume_from_a_cursor_after_close_and_reopen(store_path: Path) -> None:
    view: View = {}
    async with open_store(store_path) as store:
        tids = [(await store.create_thread(goal=f"g{n}")).id for n in range(5)]
        async with store.subscribe(since=0) as events:
            await follow(events, view, latest(store))
        cursor = latest(store)
    async with open_store(store_path) as store:  # while nobody listened
        await store.append_and_flush(tids[0], Item.user_message("more"))
        await store.delete_thread(tids[1])
        await store.archive_thread(tids[2])
        new = await store.create_thread(goal="new")
    async with open_store(store_path) as store, store.subscribe(since=cursor) as events:
        replayed: list[ThreadEvent] = []
        with trio.fail_after(10):
            async for event in events:
                replayed.append(event)
                apply(view, event)
                if event.change >= latest(store):
                    break
        assert view == await listing(store)
    assert {(e.type, e.thread.id if e.thread else None) for e in replayed} == {
        ("updated", tids[0]),
        ("deleted", tids[1]),
        ("updated", tids[2]),
        ("updated", new.id),
    }
    assert view[tids[2]].archived_at is not None


async def test_replay_of_pruned_deletions_starts_with_a_reset(store_target: str) -> None:
    async with open_store(store_target, tombstone_retention=0) as store:
        keep = await store.create_thread(goal="keep")
        first = await store.create_thread(goal="first")
        second = await store.create_thread(goal="second")
        cursor = latest(store)
        await store.delete_thread(first.id)
        await store.delete_thread(second.id)  # prunes the first deletion's tombstone
        view: View = {first.id: first, second.id: second, keep.id: keep}  # a stale view
        async with store.subscribe(since=cursor) as events:
            with trio.fail_after(10):
                assert (await events.__anext__()).type == "reset"
                view.clear()
                await follow(events, view, latest(store))
        assert view == await listing(store) == {keep.id: await store.get_thread(keep.id)}


async def test_replay_keeps_deletions_within_the_retention(store: Store) -> None:
    tids = [(await store.create_thread(goal=f"g{n}")).id for n in range(3)]
    cursor = latest(store)
    view: View = {tid: await store.get_thread(tid) for tid in tids}
    for tid in tids[:2]:
        await store.delete_thread(tid)
    async with store.subscribe(since=cursor) as events:
        kinds = []
        with trio.fail_after(10):
            async for event in events:
                kinds.append(event.type)
                apply(view, event)
                if event.change >= latest(store):
                    break
    assert kinds == ["deleted", "deleted"]
    assert set(view) == {tids[2]}


async def test_a_cursor_the_store_does_not_know_gets_a_reset(store: Store) -> None:
    tid = (await store.create_thread(goal="g")).id
    async with store.subscribe(since=latest(store) + 1000) as events:
        with trio.fail_after(10):
            assert (await events.__anext__()).type == "reset"
            event = await events.__anext__()
    assert event.type == "updated"
    assert event.thread is not None
    assert event.thread.id == tid


async def test_a_recreated_thread_id_replays_as_deleted_then_present(store: Store) -> None:
    first = await store.create_thread(thread_id="same", goal="one")
    cursor = latest(store)
    await store.delete_thread(first.id)
    with pytest.raises(ThreadNotFoundError):
        await store.get_thread("same")
    await store.create_thread(thread_id="same", goal="two")
    view: View = {"same": first}
    async with store.subscribe(since=cursor) as events:
        await follow(events, view, latest(store))
    assert view["same"].goal == "two"
    assert view == await listing(store)


# -- lifecycle and bad input ------------------------------------------------------------------


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
    if store_target.startswith("postgresql://"):
        # Several processes may write it: a subscriber that read the change index (woken by
        # the commit's NOTIFY before this process published it) sees each thread once, as
        # "updated"; it still ends with both threads, the append projected.
        assert len(seen) >= 2, seen
        assert set(seen) <= {"created", "updated"}, seen
    else:
        assert seen == ["created", "created", "updated"]  # the append: projected at close


async def test_cancelling_the_reader_unsubscribes(store: Store) -> None:
    with trio.CancelScope() as scope:
        async with store.subscribe() as events:
            assert store.statistics().subscribers == 1
            scope.cancel()
            await events.__anext__()
    assert scope.cancelled_caught
    assert store.statistics().subscribers == 0
    await store.create_thread(goal="after")  # publishing to nobody is fine


async def test_subscribing_to_a_closed_store_raises(store_target: str) -> None:
    async with open_store(store_target) as store:
        pass
    with pytest.raises(StoreClosedError):
        async with store.subscribe():
            pass  # pragma: no cover


@pytest.mark.parametrize(
    ("since", "buffer", "message"),
    [
        (-1, 8, "since"),
        ("0", 8, "since"),
        (True, 8, "since"),
        (None, 0, "buffer"),
        (None, 1.5, "buffer"),
    ],
)
async def test_bad_subscribe_arguments_are_refused(
    store: Store, since: object, buffer: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        async with store.subscribe(since, buffer=buffer):  # type: ignore[arg-type]
            pass  # pragma: no cover
    assert store.statistics().subscribers == 0


# -- other processes -----------------------------------------------------------------------


async def test_a_read_only_store_follows_its_writer(store_path: Path) -> None:
    async with open_store(store_path) as writer:
        await writer.create_thread(goal="before")
        async with (
            open_store(store_path, read_only=True, feed_poll_interval=0.01) as reader,
            reader.subscribe() as events,
        ):
            meta = await writer.create_thread(goal="after")
            with trio.fail_after(10):
                event = await events.__anext__()
            assert event.thread == meta
            assert event.type == "updated"
            await writer.append_and_flush(meta.id, Item.user_message("hi"))
            await writer.delete_thread(meta.id)
            view: View = {meta.id: meta}
            await follow(events, view, latest(writer))
            assert meta.id not in view
            assert reader.statistics().feed_catch_ups >= 2


class FeedChild(Child):
    async def event(self) -> dict[str, object]:
        return dict(json.loads(await self.expect_line()))


async def test_a_reader_process_follows_a_writer_process(store_path: Path) -> None:
    async with open_store(store_path) as store:
        old = await store.create_thread(goal="old")
        async with spawn_child("feed_child.py", str(store_path), kind=FeedChild) as child:
            with trio.fail_after(30):
                assert await child.expect_line() == "ready"
                created = [(await store.create_thread(goal=f"live {n}")).id for n in range(5)]
                await store.delete_thread(old.id)
                await store.append_and_flush(created[0], Item.user_message("question"))
                present: set[str] = {old.id}
                previews: dict[str, object] = {}
                changes: list[int] = []
                while True:
                    event = await child.event()
                    changes.append(int(str(event["change"])))
                    tid = str(event["id"])
                    if event["type"] == "deleted":
                        present.discard(tid)
                    else:
                        present.add(tid)
                        previews[tid] = event["preview"]
                    if changes[-1] >= latest(store):
                        break
    assert present == set(created)
    assert previews[created[0]] == "question"
    assert changes == sorted(set(changes))


async def test_a_reader_process_resumes_and_filters_by_namespace(store_path: Path) -> None:
    async with open_store(store_path) as store:
        await store.create_thread(goal="a", namespace="acme")
        cursor = latest(store)
        mine = await store.create_thread(goal="b", namespace="acme")
        await store.create_thread(goal="c", namespace="globex")
        args = (str(store_path), "--since", str(cursor), "--namespace", "acme")
        async with spawn_child("feed_child.py", *args, kind=FeedChild) as child:
            with trio.fail_after(30):
                assert await child.expect_line() == "ready"
                event = await child.event()
                assert (event["id"], event["namespace"]) == (mine.id, "acme")
                late = await store.create_thread(goal="d", namespace="acme")
                event = await child.event()
                assert event["id"] == late.id


# -- the property ---------------------------------------------------------------------------

_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.integers(0, 3)),
        st.tuples(st.just("append"), st.integers(0, 9)),
        st.tuples(st.just("archive"), st.integers(0, 9)),
        st.tuples(st.just("delete"), st.integers(0, 9)),
        st.tuples(st.just("rewind"), st.integers(0, 9)),
        st.tuples(st.just("fork"), st.integers(0, 9)),
        st.tuples(st.just("read"), st.integers(0, 6)),
    ),
    max_size=40,
)


async def _converges(target: str, ops: list[tuple[str, int]], buffer: int) -> None:
    """Run ``ops`` against a fresh store while a subscriber reads only at ``read`` steps
    (a few events each, waiting briefly for each); at the end its view is the listing."""
    async with open_store(target) as store, store.subscribe(buffer=buffer) as events:
        view: View = {}
        seen = 0
        tids: list[str] = []
        deleted: set[str] = set()
        for op, n in ops:
            live = [tid for tid in tids if tid not in deleted]
            if op == "create":
                goal = None if n == 0 else f"goal {n}"
                tids.append((await store.create_thread(goal=goal)).id)
            elif op == "read":
                for _ in range(n):  # a pause ends: the subscriber reads a few events
                    if latest(store) <= seen:
                        break
                    with trio.move_on_after(0.05):
                        event = await events.__anext__()
                        apply(view, event)
                        seen = max(seen, event.change)
            elif live:
                tid = live[n % len(live)]
                if op == "append":
                    store.append_nowait(tid, Item.user_message(f"m{n}"))
                elif op == "archive":
                    await store.archive_thread(tid)
                elif op == "rewind":
                    await store.rewind(tid, 0)
                elif op == "fork":
                    tids.append((await store.fork(tid)).id)
                else:
                    await store.delete_thread(tid)
                    deleted.add(tid)
        await store.flush_all()
        if latest(store) > seen:
            await follow(events, view, latest(store))
        assert view == await listing(store)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_OPS, buffer=st.integers(1, 5))
def test_any_interleaving_of_changes_and_pauses_converges(
    ops: list[tuple[str, int]], buffer: int
) -> None:
    """The in-memory engine, on a fake clock: many interleavings, fast."""
    trio.run(
        _converges, ":memory:", ops, buffer, clock=trio.testing.MockClock(autojump_threshold=0)
    )


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_OPS, buffer=st.integers(1, 5))
def test_any_interleaving_converges_on_sqlite(ops: list[tuple[str, int]], buffer: int) -> None:
    """The same property on real SQLite files (its writer thread, its reader threads)."""
    with tempfile.TemporaryDirectory() as directory:
        trio.run(_converges, str(Path(directory) / "store.db"), ops, buffer)
