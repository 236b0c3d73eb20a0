"""Custom projectors through the store, and how their failures reach barriers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from _helpers import FAST_RETRY, GUARD_S, GatedProjector, settle

from threadstore import (
    Item,
    ProjectionFailedError,
    Store,
    StoredItem,
    ThreadMeta,
    open_store,
)

# -- custom projectors ------------------------------------------------------------------


class CountingProjector:
    """Sync: counts items by kind; records what it was given."""

    name = "counts"

    def __init__(self) -> None:
        self.calls: list[tuple[ThreadMeta, list[StoredItem]]] = []

    def project(self, meta: ThreadMeta, items: Sequence[StoredItem]) -> Mapping[str, Any]:
        self.calls.append((meta, list(items)))
        counts = dict(meta.extra.get(self.name, {}))
        for item in items:
            counts[item.kind] = counts.get(item.kind, 0) + 1
        return counts


class TitleProjector:
    """Async (an "LLM-generated title"): titles the thread from its first user message."""

    name = "auto_title"

    def __init__(self) -> None:
        self.calls: list[tuple[ThreadMeta, list[StoredItem]]] = []

    async def project(
        self, meta: ThreadMeta, items: Sequence[StoredItem]
    ) -> Mapping[str, Any] | None:
        self.calls.append((meta, list(items)))
        await trio.lowlevel.checkpoint()
        users = [i for i in items if i.kind == "user_message"]
        if "title" in meta.extra.get(self.name, {}) or not users:
            return None
        return {"title": str(users[0].data["text"]).title()}


async def test_projectors_see_the_metadata_before_the_batch_and_the_stored_items(
    store_path: Path,
) -> None:
    """What a projector gets equals what get_thread/read_items show: whether the store
    builds it from memory (the usual case) or reads it (after an archive or a reopen)."""
    counts = CountingProjector()
    expected: list[tuple[ThreadMeta, list[StoredItem]]] = []

    async def step(store: Store, tid: str, *items: Item) -> None:
        before = await store.get_thread(tid)
        receipt = await store.append_and_flush(tid, *items)
        expected.append((before, await store.read_items(tid, before.seq)))
        assert receipt.seq == before.seq + len(items)

    async with open_store(store_path, projectors=[counts]) as store:
        tid = (await store.create_thread(goal="fix ci")).id
        await step(store, tid, Item.user_message("look"), Item.turn_started("t"))
        await step(store, tid, Item.assistant_message("on it"))
        await store.archive_thread(tid)
        await step(store, tid, Item.turn_completed("t"))  # meta shows the archive
        await store.unarchive_thread(tid)
        await step(store, tid, Item.user_message("again"))
    async with open_store(store_path, projectors=[counts]) as store:
        await step(store, tid, Item.assistant_message("after a reopen"))

    assert len(counts.calls) == len(expected) == 5
    for (meta, items), (want_meta, want_items) in zip(counts.calls, expected, strict=True):
        assert items == want_items
        assert meta == want_meta
    assert counts.calls[2][0].archived_at is not None
    assert counts.calls[3][0].archived_at is None


async def test_sync_and_async_projectors_write_into_extra(store_target: str) -> None:
    counts, titles = CountingProjector(), TitleProjector()
    async with open_store(store_target, projectors=[counts, titles]) as store:
        tid = (await store.create_thread()).id
        await store.append_and_flush(tid, Item.turn_started("t"), Item.user_message("fix ci"))
        first = await store.get_thread(tid)
        await store.append_and_flush(tid, Item.assistant_message("ok"))
        meta = await store.get_thread(tid)

    assert dict(first.extra) == {
        "counts": {"turn_started": 1, "user_message": 1},
        "auto_title": {"title": "Fix Ci"},
    }
    assert dict(meta.extra) == {
        "counts": {"turn_started": 1, "user_message": 1, "assistant_message": 1},
        "auto_title": {"title": "Fix Ci"},  # None from the projector changed nothing
    }
    for projector in (counts, titles):
        (meta1, items1), (meta2, items2) = projector.calls
        assert (meta1.seq, [i.seq for i in items1]) == (0, [1, 2])  # meta before the batch
        assert (meta2.seq, [i.seq for i in items2]) == (2, [3])
        assert meta2 == first
        assert [i.kind for i in items1] == ["turn_started", "user_message"]


async def test_projector_that_fails_then_succeeds_is_retried(store_target: str) -> None:
    gate = GatedProjector()
    gate.open()
    gate.fail_next(2)
    async with open_store(store_target, projectors=[gate], retry=FAST_RETRY) as store:
        tid = (await store.create_thread()).id
        receipt = await store.append(tid, Item.user_message("hello"))

        meta = await settle(store, tid, receipt.seq)

        assert meta.seq == 1
        assert dict(meta.extra["gated"]) == {"calls": 3}
        stats = store.statistics()
        assert stats.retries >= 2
        assert stats.projection_failures == 0


async def test_projector_that_always_fails_fails_the_barrier_and_keeps_the_work(
    store_target: str,
) -> None:
    gate = GatedProjector()
    gate.open()
    gate.fail_next(1_000)
    async with open_store(store_target, projectors=[gate], retry=FAST_RETRY) as store:
        tid = (await store.create_thread()).id
        receipt = await store.append(tid, Item.user_message("hello"), Item.assistant_message("a"))

        with trio.fail_after(GUARD_S), pytest.raises(ProjectionFailedError) as info:
            await store.flush(tid)

        error = info.value
        assert (error.thread_id, error.seq, error.attempts) == (tid, 2, 3)
        assert isinstance(error.__cause__, RuntimeError)
        assert "gated projector failure" in str(error.__cause__)
        assert store.statistics().projection_failures >= 1
        # The append that returned is unaffected; the items are in the log; nothing partial.
        await receipt.durable()
        assert [i.seq for i in await store.read_items(tid)] == [1, 2]
        assert (await store.get_thread(tid)).seq == 0

        gate.failures = 0  # "fix" the projector: the kept work goes through on the next flush
        meta = await settle(store, tid)
        assert (meta.seq, meta.item_count, meta.preview, meta.last_message) == (2, 2, "hello", "a")
        assert "gated" in meta.extra


# -- error propagation ------------------------------------------------------------------


async def test_superseded_failure_does_not_fail_a_later_barrier(store_target: str) -> None:
    gate = GatedProjector()
    async with open_store(store_target, projectors=[gate], retry=FAST_RETRY) as store:
        tid = (await store.create_thread()).id
        await store.append(tid, Item.user_message("one"))
        gate.fail_next(3)
        for call in (1, 2):  # attempts 1 and 2 of the batch for seq 1 fail
            await gate.wait_calls(call)
            gate.release()
        await gate.wait_calls(3)  # attempt 3 (the last) is in flight
        await store.append(tid, Item.user_message("two"))  # queued behind it
        outcomes: dict[int, str] = {}

        async def barrier(seq: int) -> None:
            try:
                await store.flush(tid, seq)
            except ProjectionFailedError:
                await trio.lowlevel.checkpoint()
                outcomes[seq] = "failed"
            else:
                outcomes[seq] = "ok"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(barrier, 1)
            nursery.start_soon(barrier, 2)
            await trio.testing.wait_all_tasks_blocked()
            gate.release()  # attempt 3 fails for good: it covered seq 1 only
            await gate.wait_calls(4)  # the kept work plus seq 2 goes again
            gate.release()

        # The barrier at seq 1 saw the attempt covering it fail; seq 2's barrier was only
        # covered by the later, successful attempt.
        assert outcomes == {1: "failed", 2: "ok"}
        meta = await store.get_thread(tid)
        assert (meta.seq, meta.item_count, meta.preview) == (2, 2, "one")
        await settle(store, tid, 1)  # a barrier after the success returns normally
