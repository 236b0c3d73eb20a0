"""The public store API, on every engine (the contract suite: each test runs per engine;
those that reopen a store file run on SQLite).

Concurrent steps are ordered with a gated projector (``_helpers.GatedProjector``) and
``trio.testing.wait_all_tasks_blocked``; barriers are guarded by ``trio.fail_after`` only so a
bug hangs for seconds instead of forever. Listing is in ``test_list_threads.py``, custom
projectors in ``test_projectors.py``; subprocess, crash-recovery and cancellation tests live
in ``sqlite/test_store_process.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio
import trio.testing
from _helpers import FAST_RETRY, GUARD_S, GatedProjector, items_of, listed_ids, settle

from threadstore import (
    InvalidCursorError,
    InvalidItemError,
    Item,
    ProjectionFailedError,
    ReadOnlyStoreError,
    Store,
    StoreClosedError,
    StoredItem,
    ThreadDiscardedError,
    ThreadExistsError,
    ThreadNotFoundError,
    ThreadStoreError,
    open_store,
)

# -- create_thread ----------------------------------------------------------------------


async def test_goal_first_thread_is_listed_at_once(store: Store) -> None:
    meta = await store.create_thread(goal="Plan the Lisbon offsite")

    page = await store.list_threads()

    assert [m.id for m in page.threads] == [meta.id]
    listed = page.threads[0]
    assert listed.preview == listed.goal == "Plan the Lisbon offsite"
    assert listed == meta == await store.get_thread(meta.id)
    assert (meta.item_count, meta.seq, meta.status) == (1, 1, "idle")
    assert await items_of(store, meta.id) == [(1, "goal", {"text": "Plan the Lisbon offsite"})]


async def test_title_only_thread_is_listed_with_its_title(store: Store) -> None:
    meta = await store.create_thread(title="Quarterly numbers")

    page = await store.list_threads()

    assert [(m.id, m.title, m.preview) for m in page.threads] == [
        (meta.id, "Quarterly numbers", None)
    ]


async def test_thread_without_goal_or_title_is_listed_only_with_include_empty(
    store: Store,
) -> None:
    meta = await store.create_thread()

    assert await listed_ids(store) == []
    assert await listed_ids(store, include_empty=True) == [meta.id]
    assert (meta.item_count, meta.seq, meta.preview, meta.title) == (0, 0, None, None)
    assert await store.read_items(meta.id) == []


async def test_caller_supplied_id_is_used_and_cannot_be_reused(store: Store) -> None:
    meta = await store.create_thread(thread_id="support/ticket-42", goal="refund")
    assert meta.id == "support/ticket-42"
    assert (await store.get_thread("support/ticket-42")).preview == "refund"

    with pytest.raises(ThreadExistsError, match="already exists") as info:
        await store.create_thread(thread_id="support/ticket-42", goal="other")

    assert info.value.thread_id == "support/ticket-42"
    assert (await store.get_thread("support/ticket-42")).goal == "refund"
    assert await listed_ids(store) == ["support/ticket-42"]


async def test_default_ids_are_uuid7_and_list_in_creation_order(store: Store) -> None:
    created = [await store.create_thread(title=f"t{i}") for i in range(6)]

    ids = [meta.id for meta in created]
    assert all(uuid.UUID(tid).version == 7 for tid in ids)
    assert sorted(ids) == ids
    times = [meta.created_at for meta in created]
    assert times == sorted(times)
    assert len(set(times)) == len(times)
    assert all(t.tzinfo is not None and t.utcoffset() == UTC.utcoffset(None) for t in times)
    assert await listed_ids(store, order_by="created_at", descending=False) == ids
    assert await listed_ids(store, order_by="created_at") == ids[::-1]


async def test_create_extra_lands_in_meta_extra(store: Store) -> None:
    meta = await store.create_thread(title="t", extra={"owner": "ana", "tags": ["a", "b"]})

    assert dict(meta.extra) == {"owner": "ana", "tags": ["a", "b"]}
    assert (await store.get_thread(meta.id)).extra == meta.extra


# -- append and read_items --------------------------------------------------------------


async def test_append_seqs_are_dense_across_calls(store: Store) -> None:
    tid = (await store.create_thread()).id

    r1 = await store.append(tid, Item.user_message("one"))
    r2 = await store.append(
        tid, Item.assistant_message("two"), Item.reasoning("three"), Item.error("four")
    )
    r3 = await store.append(tid, Item.user_message("five"))

    assert [(r.thread_id, r.seq) for r in (r1, r2, r3)] == [(tid, 1), (tid, 4), (tid, 5)]
    assert [i.seq for i in await store.read_items(tid)] == [1, 2, 3, 4, 5]


VERBATIM_TEXTS = [
    'it\'s "quoted" and `ticked`',
    "'); DROP TABLE items; --",
    "nul\x00inside and after\x00",
    "emoji 🧵🚀 and 中文 and combining é",
    "   leading and trailing whitespace\n\t",
    "",
    "x" * 10_000,
]


async def test_read_items_returns_exactly_what_was_appended(store: Store) -> None:
    tid = (await store.create_thread()).id
    appended = [Item.user_message(text) for text in VERBATIM_TEXTS] + [
        Item.tool_call("search", {"q": "a\x00b", "n": [1, 2.5, None, True]}, "call-1"),
        Item.tool_result("call-1", {"hits": []}, is_error=True),
        Item(kind="vendor.custom:event-1", data={"nested": {"deep": ["🧵", {"k": -1}]}}),
    ]

    await store.append(tid, *appended[:3])
    await store.append(tid, *appended[3:])
    stored = await store.read_items(tid)

    assert [(i.kind, dict(i.data)) for i in stored] == [(i.kind, dict(i.data)) for i in appended]
    assert [i.seq for i in stored] == list(range(1, len(appended) + 1))
    assert all(isinstance(i, StoredItem) for i in stored)
    times = [i.created_at for i in stored]
    assert times == sorted(times)
    assert all(t.tzinfo is not None for t in times)


async def test_read_items_after_seq_and_limit(store: Store) -> None:
    tid = (await store.create_thread()).id
    await store.append(tid, *(Item.user_message(str(n)) for n in range(1, 11)))

    assert [i.seq for i in await store.read_items(tid, after_seq=7)] == [8, 9, 10]
    assert [i.seq for i in await store.read_items(tid, limit=3)] == [1, 2, 3]
    assert [i.seq for i in await store.read_items(tid, after_seq=4, limit=2)] == [5, 6]
    assert await store.read_items(tid, after_seq=10) == []
    assert [i.data["text"] for i in await store.read_items(tid, after_seq=9)] == ["10"]


# -- append_nowait ----------------------------------------------------------------------


async def test_append_nowait_lands_in_call_order(store: Store) -> None:
    tid = (await store.create_thread()).id

    receipts = [store.append_nowait(tid, Item.user_message(f"m{n}")) for n in range(5)]
    receipts.append(store.append_nowait(tid, Item.assistant_message("a"), Item.reasoning("b")))

    if store._shared:  # several processes may append: the database gives seqs at commit
        with pytest.raises(ThreadStoreError, match="is given at its commit"):
            receipts[0].seq  # noqa: B018
        with trio.fail_after(GUARD_S):
            await receipts[-1].durable()
    assert [r.seq for r in receipts] == [1, 2, 3, 4, 5, 7]
    with trio.fail_after(GUARD_S):
        await receipts[-1].durable()
    texts = [i.data["text"] for i in await store.read_items(tid)]
    assert texts == ["m0", "m1", "m2", "m3", "m4", "a", "b"]
    with trio.fail_after(GUARD_S):
        await receipts[-1].visible()
        await receipts[0].visible()  # an earlier receipt is visible too, any number of times
    meta = await store.get_thread(tid)
    assert (meta.seq, meta.item_count, meta.preview, meta.last_message) == (7, 7, "m0", "a")


# -- append_and_flush -------------------------------------------------------------------


async def test_append_and_flush_returns_with_metadata_visible(store: Store) -> None:
    tid = (await store.create_thread()).id

    receipt = await store.append_and_flush(
        tid,
        Item.user_message("summarise this PDF"),
        Item.turn_started("turn-1"),
        Item.assistant_message("Here is the summary"),
    )
    meta = await store.get_thread(tid)

    assert receipt.seq == 3
    assert (meta.seq, meta.item_count, meta.turn_count) == (3, 3, 1)
    assert (meta.preview, meta.last_message, meta.status) == (
        "summarise this PDF",
        "Here is the summary",
        "running",
    )
    assert await listed_ids(store) == [tid]


# -- flush ------------------------------------------------------------------------------


async def test_flush_without_seq_waits_only_for_the_seq_current_at_the_call(
    store_target: str,
) -> None:
    gate = GatedProjector()
    async with open_store(store_target, projectors=[gate], retry=FAST_RETRY) as store:
        tid = (await store.create_thread()).id
        await store.append(tid, Item.user_message("first"))
        await gate.wait_calls(1)  # projection of seq 1 is in flight, held at the gate
        flushed: list[int] = []

        async def flusher() -> None:
            await store.flush(tid)
            flushed.append((await store.get_thread(tid)).seq)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flusher)
            await trio.testing.wait_all_tasks_blocked()
            await store.append(tid, Item.user_message("second"))  # after the flush began
            gate.release()  # let seq 1 through; seq 2's projection is held at the gate
            await gate.wait_calls(2)
        assert flushed == [1]  # returned without waiting for seq 2
        assert (await store.get_thread(tid)).seq == 1
        gate.open()
        assert (await settle(store, tid)).seq == 2


@pytest.mark.parametrize("seq", [3, -1, "1", 1.0, None.__class__], ids=repr)
async def test_flush_with_seq_out_of_range_raises(store: Store, seq: object) -> None:
    tid = (await store.create_thread()).id
    await store.append(tid, Item.user_message("a"), Item.user_message("b"))

    with pytest.raises(InvalidItemError, match=r"seq must be an int in 0\.\.2"):
        await store.flush(tid, seq)  # type: ignore[arg-type]

    await settle(store, tid, 2)
    await settle(store, tid, 0)


async def test_flush_all_makes_every_thread_visible(store: Store) -> None:
    tids = [(await store.create_thread()).id for _ in range(5)]
    for n, tid in enumerate(tids):
        for k in range(n + 1):
            store.append_nowait(tid, Item.user_message(f"{tid}-{k}"))

    with trio.fail_after(GUARD_S):
        await store.flush_all()

    for n, tid in enumerate(tids):
        meta = await store.get_thread(tid)
        assert (meta.seq, meta.item_count, meta.preview) == (n + 1, n + 1, f"{tid}-0")
    stats = store.statistics()
    assert (stats.live_actors, stats.lagging_threads, stats.max_lag) == (0, 0, 0)


# -- derivation through the store -------------------------------------------------------


async def test_a_realistic_turn_derives_metadata(store: Store) -> None:
    tid = (await store.create_thread(goal="fix the flaky build")).id
    assert (await store.get_thread(tid)).preview == "fix the flaky build"

    await store.append(tid, Item.user_message("The CI job times out, can you look?"))
    await store.append(tid, Item.turn_started("turn-1"))
    await store.append(tid, Item.reasoning("Check the logs first."))
    await store.append(tid, Item.tool_call("read_file", {"path": "ci.yml"}, "c1"))
    await store.append(tid, Item.tool_result("c1", "timeout: 10"))
    mid = await settle(store, tid)
    assert (mid.status, mid.turn_count, mid.item_count) == ("running", 1, 6)
    assert mid.preview == "The CI job times out, can you look?"
    assert mid.last_message is None

    for text in ("Looking at ci.yml.", "The timeout is 10 s.", "Raise it to 60 s."):
        await store.append(tid, Item.assistant_message(text))
    await store.append(tid, Item.token_usage(1200, 300), Item.turn_completed("turn-1"))
    meta = await settle(store, tid)
    log = await store.read_items(tid)

    assert (meta.status, meta.turn_count, meta.item_count, meta.seq) == ("idle", 1, 11, 11)
    assert (meta.input_tokens, meta.output_tokens) == (1200, 300)
    assert meta.preview == "The CI job times out, can you look?"
    assert meta.goal == "fix the flaky build"
    assert meta.last_message == "Raise it to 60 s."
    assert meta.updated_at == log[-1].created_at
    turn_started = next(i for i in log if i.kind == "turn_started")
    assert meta.recency_at == mid.recency_at == turn_started.created_at  # output does not move it


async def test_error_item_sets_status_until_the_next_turn_starts(store: Store) -> None:
    tid = (await store.create_thread()).id
    await store.append(tid, Item.user_message("go"), Item.turn_started("t1"))
    await store.append(tid, Item.error("model overloaded"))
    assert (await settle(store, tid)).status == "error"

    await store.append(tid, Item.turn_completed("t1"))
    assert (await settle(store, tid)).status == "error"

    await store.append(tid, Item.turn_started("t2"))
    assert (await settle(store, tid)).status == "running"
    await store.append(tid, Item.turn_aborted("t2", "user stopped"))
    assert (await settle(store, tid)).status == "idle"


# -- coalescing ---------------------------------------------------------------------------


async def test_appends_during_a_projection_coalesce(store_target: str) -> None:
    gate = GatedProjector()
    async with open_store(store_target, projectors=[gate], retry=FAST_RETRY) as store:
        tid = (await store.create_thread()).id
        before = store.statistics()
        await store.append(tid, Item.user_message("one"))
        await gate.wait_calls(1)  # the first projection is held in flight
        for text in ("two", "three", "four"):
            await store.append(tid, Item.assistant_message(text))
        gate.open()
        meta = await settle(store, tid)
        after = store.statistics()

    assert (meta.seq, meta.item_count, meta.preview, meta.last_message) == (4, 4, "one", "four")
    assert after.appends - before.appends == 4
    assert after.projection_writes - before.projection_writes <= 3
    assert after.patches_coalesced - before.patches_coalesced >= 1
    assert len(gate.calls) <= 3
    assert [i.seq for i in gate.calls[-1][1]] == [2, 3, 4]  # one batch for the queued three


# -- projection_delay -------------------------------------------------------------------

URGENT = {
    "goal": Item.goal("new goal"),
    "title": Item.title("new title"),
    "error": Item.error("boom"),
    "turn_completed": Item.turn_completed("t1"),
    "turn_aborted": Item.turn_aborted("t1", "stopped"),
    "first_user_message": Item.user_message("hello"),
}


@pytest.mark.parametrize("item", URGENT.values(), ids=URGENT.keys())
async def test_urgent_items_bypass_projection_delay(store_target: str, item: Item) -> None:
    async with open_store(store_target, projection_delay=3600) as store:
        tid = (await store.create_thread()).id
        receipt = await store.append(tid, item)

        meta = await settle(store, tid)  # would hang for an hour if the window applied

        assert meta.seq == receipt.seq == 1


async def test_projection_delay_holds_ordinary_updates_until_an_urgent_one(
    store_target: str,
) -> None:
    async with open_store(store_target, projection_delay=3600) as store:
        tid = (await store.create_thread()).id
        await store.append(tid, Item.user_message("first"))
        assert (await settle(store, tid)).preview == "first"  # first user message: urgent
        before = store.statistics()

        await store.append(tid, Item.assistant_message("still typing"))
        await store.append(tid, Item.user_message("second user message is not urgent"))
        await trio.testing.wait_all_tasks_blocked()
        held = await store.get_thread(tid)
        assert (held.seq, held.last_message) == (1, None)

        await store.append(tid, Item.turn_completed("t1"))
        meta = await settle(store, tid)
        after = store.statistics()

    assert (meta.seq, meta.last_message, meta.item_count) == (4, "still typing", 4)
    # The held updates went out with the urgent one, in a single write.
    assert after.projection_writes - before.projection_writes == 1
    assert after.patches_coalesced - before.patches_coalesced == 2


async def test_shutdown_drains_delayed_projection(store_path: Path) -> None:
    async with open_store(store_path, projection_delay=3600) as store:
        tid = (await store.create_thread()).id
        await store.append(tid, Item.user_message("hi"))
        await settle(store, tid)
        await store.append(tid, Item.assistant_message("delayed answer"))

    # A read-only open does not recover lagging threads: this is what shutdown wrote.
    async with open_store(store_path, read_only=True) as reader:
        meta = await reader.get_thread(tid)
    assert (meta.seq, meta.last_message) == (2, "delayed answer")


# -- discard ----------------------------------------------------------------------------


async def test_discard_waits_for_in_flight_work_and_drops_queued_work(store_target: str) -> None:
    gate = GatedProjector()
    async with open_store(store_target, projectors=[gate], retry=FAST_RETRY) as store:
        tid = (await store.create_thread()).id
        await store.append(tid, Item.user_message("one"))
        await gate.wait_calls(1)  # seq 1 in flight
        await store.append(tid, Item.assistant_message("two"))
        await store.append(tid, Item.assistant_message("three"))  # seqs 2-3 queued
        outcomes: dict[str, str] = {}

        async def run(name: str, fn: Callable[[], Awaitable[None]]) -> None:
            try:
                await fn()
            except ThreadDiscardedError as exc:
                await trio.lowlevel.checkpoint()
                outcomes[name] = f"discarded through {exc.seq}"
            else:
                outcomes[name] = "ok"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "flush 1", lambda: store.flush(tid, 1))
            nursery.start_soon(run, "flush 3", lambda: store.flush(tid, 3))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(run, "discard", lambda: store.discard(tid))
            await trio.testing.wait_all_tasks_blocked()
            assert "discard" not in outcomes  # it waits for the write in flight
            gate.release()

        assert outcomes == {"flush 1": "ok", "flush 3": "discarded through 3", "discard": "ok"}
        assert len(gate.calls) == 1  # the queued work never ran
        assert (await store.get_thread(tid)).seq == 1
        await store.discard(tid)  # idempotent
        await store.discard(tid)
        assert [i.seq for i in await store.read_items(tid)] == [1, 2, 3]  # the log is untouched

        gate.open()
        await store.append(tid, Item.assistant_message("four"))
        meta = await settle(store, tid)
        assert (meta.seq, meta.item_count, meta.last_message) == (4, 4, "four")


async def test_explicit_mutations_work_after_a_discard(store_target: str) -> None:
    gate = GatedProjector()
    async with open_store(store_target, projectors=[gate], retry=FAST_RETRY) as store:
        tid = (await store.create_thread(title="t")).id
        await store.append(tid, Item.user_message("one"))
        await gate.wait_calls(1)
        await store.append(tid, Item.assistant_message("dropped from the queue"))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.discard, tid)
            await trio.testing.wait_all_tasks_blocked()
            gate.open()

        # Nothing is pending any more: archiving has nothing to wait for.
        archived = await store.archive_thread(tid)
        assert archived.archived_at is not None
        assert (await store.unarchive_thread(tid)).archived_at is None
        updated = await store.update_thread(tid, title="renamed")
        assert (updated.title, updated.seq, updated.item_count) == ("renamed", 4, 4)
        assert updated.last_message == "dropped from the queue"  # folded from the log


# -- explicit mutations -----------------------------------------------------------------


async def test_update_thread_is_visible_logged_and_survives_reopen(store_path: Path) -> None:
    async with open_store(store_path) as store:
        tid = (await store.create_thread(goal="g")).id
        await store.append(tid, Item.user_message("hi"))
        updated = await store.update_thread(tid, title="Renamed", extra={"pinned": True, "n": 1})
        assert (updated.title, dict(updated.extra)) == ("Renamed", {"pinned": True, "n": 1})
        assert updated == await store.get_thread(tid)
        assert updated.seq == updated.item_count == 4  # nothing pending was overwritten
        updated = await store.update_thread(tid, extra={"n": None, "lang": "pt"})
        assert dict(updated.extra) == {"pinned": True, "lang": "pt"}
        assert await items_of(store, tid) == [
            (1, "goal", {"text": "g"}),
            (2, "user_message", {"text": "hi"}),
            (3, "title", {"text": "Renamed"}),
            (4, "metadata", {"extra": {"pinned": True, "n": 1}}),
            (5, "metadata", {"extra": {"n": None, "lang": "pt"}}),
        ]

    async with open_store(store_path) as store:
        meta = await store.get_thread(tid)
        assert (meta.title, dict(meta.extra), meta.preview) == (
            "Renamed",
            {"pinned": True, "lang": "pt"},
            "hi",
        )
        assert [m.title for m in (await store.list_threads(search="renamed")).threads] == [
            "Renamed"
        ]


async def test_update_thread_waits_for_pending_derived_metadata(store_target: str) -> None:
    async with open_store(store_target, projection_delay=3600) as store:
        tid = (await store.create_thread()).id
        await store.append(tid, Item.user_message("hi"))
        await store.append(tid, Item.assistant_message("held in the window"))
        meta = await store.update_thread(tid, extra={"k": "v"})

    assert (meta.seq, meta.last_message, dict(meta.extra)) == (3, "held in the window", {"k": "v"})


async def test_archive_and_unarchive_move_the_thread_between_lists(store: Store) -> None:
    keep = (await store.create_thread(title="keep")).id
    tid = (await store.create_thread(title="old")).id
    await store.append(tid, Item.user_message("pending at archive time"))

    archived = await store.archive_thread(tid)

    assert archived.archived_at is not None
    assert archived.seq == 2  # derived metadata pending at the call was projected first
    assert await listed_ids(store) == [keep]
    assert await listed_ids(store, archived=True) == [tid]
    assert (await store.get_thread(tid)).archived_at == archived.archived_at

    restored = await store.unarchive_thread(tid)

    assert restored.archived_at is None
    assert set(await listed_ids(store)) == {keep, tid}
    assert await listed_ids(store, archived=True) == []
    # Later appends keep the archived flag as set.
    await store.archive_thread(tid)
    await store.append_and_flush(tid, Item.user_message("more"))
    assert (await store.get_thread(tid)).archived_at is not None
    assert await listed_ids(store, archived=True) == [tid]


async def test_delete_thread_removes_it_everywhere(store: Store) -> None:
    other = (await store.create_thread(goal="other")).id
    tid = (await store.create_thread(goal="doomed")).id
    await store.append(tid, Item.user_message("x"))

    await store.delete_thread(tid)

    with pytest.raises(ThreadNotFoundError):
        await store.get_thread(tid)
    with pytest.raises(ThreadNotFoundError):
        await store.read_items(tid)
    with pytest.raises(ThreadNotFoundError):
        await store.append(tid, Item.user_message("again"))
    with pytest.raises(ThreadNotFoundError):
        store.append_nowait(tid, Item.user_message("again"))
    with pytest.raises(ThreadNotFoundError):
        await store.flush(tid)
    with pytest.raises(ThreadNotFoundError):
        await store.delete_thread(tid)
    assert await listed_ids(store, include_empty=True) == [other]
    assert await listed_ids(store, include_empty=True, archived=True) == []
    # The id is free again.
    fresh = await store.create_thread(thread_id=tid)
    assert (fresh.item_count, fresh.goal) == (0, None)


async def test_appends_issued_before_delete_do_not_resurrect_the_thread(store_path: Path) -> None:
    async with open_store(store_path) as store:
        tid = (await store.create_thread(goal="doomed")).id
        receipts = [store.append_nowait(tid, Item.user_message(f"m{n}")) for n in range(20)]
        await store.delete_thread(tid)
        for receipt in receipts:
            await receipt.durable()  # accepted before the delete: committed, then deleted
        with trio.fail_after(GUARD_S):
            await store.flush_all()
        with pytest.raises(ThreadNotFoundError):
            await store.get_thread(tid)
        assert await listed_ids(store, include_empty=True) == []

    async with open_store(store_path) as store:  # nothing for recovery to bring back
        with pytest.raises(ThreadNotFoundError):
            await store.read_items(tid)
        assert await listed_ids(store, include_empty=True) == []


# -- statistics -------------------------------------------------------------------------


async def test_statistics_move_as_documented(store: Store) -> None:
    start = store.statistics()
    assert (start.appends, start.items_appended, start.projection_writes) == (0, 0, 0)
    tids = [(await store.create_thread()).id for _ in range(3)]

    for tid in tids:
        await store.append(tid, Item.user_message("a"), Item.assistant_message("b"))
        store.append_nowait(tid, Item.assistant_message("c"))
    with trio.fail_after(GUARD_S):
        await store.flush_all()
    stats = store.statistics()

    assert (stats.appends, stats.items_appended) == (6, 9)
    assert 1 <= stats.log_commits <= stats.appends  # creates without items append nothing
    assert 3 <= stats.projection_writes <= 6
    assert (stats.retries, stats.projection_failures) == (0, 0)
    assert (stats.live_actors, stats.lagging_threads, stats.max_lag) == (0, 0, 0)


async def test_statistics_log_commits_count_log_transactions_only(store: Store) -> None:
    tid = (await store.create_thread()).id
    before = store.statistics()
    for n in range(5):
        await store.append_and_flush(tid, Item.user_message(str(n)))
    stats = store.statistics()

    # Each append waited for its own commit; the metadata writes in between are not log
    # commits, so "commits per append" stays honest.
    assert stats.appends - before.appends == 5
    assert stats.log_commits - before.log_commits == 5
    assert stats.projection_writes - before.projection_writes == 5


async def test_statistics_log_commits_group_concurrent_appends(store: Store) -> None:
    tids = [(await store.create_thread()).id for _ in range(4)]
    before = store.statistics()
    for n in range(50):
        store.append_nowait(tids[n % 4], Item.user_message(str(n)))
    with trio.fail_after(GUARD_S):
        await store.flush_all()
    after = store.statistics()

    assert after.appends - before.appends == 50
    assert 1 <= after.log_commits - before.log_commits <= 50


# -- trace parent -----------------------------------------------------------------------


def _applied(logs: list[Any], tid: str) -> list[Any]:
    return [e for e in logs if e["event"] == "projection.applied" and e["thread_id"] == tid]


async def test_projection_log_carries_the_appenders_trace_parent(store: Store) -> None:
    tid = (await store.create_thread()).id
    with structlog.testing.capture_logs() as logs:
        with structlog.contextvars.bound_contextvars(trace_parent="req-1"):
            receipt = await store.append(tid, Item.user_message("hi"))
        await settle(store, tid, receipt.seq)

    (event,) = _applied(logs, tid)
    assert event["trace_parent"] == "req-1"
    assert isinstance(event["queue_age_ms"], int | float)
    assert event["queue_age_ms"] >= 0
    assert event["seq"] == 1


async def test_coalesced_projection_log_carries_every_trace_parent(store_target: str) -> None:
    gate = GatedProjector()
    async with open_store(store_target, projectors=[gate], retry=FAST_RETRY) as store:
        tid = (await store.create_thread()).id

        async def append_as(trace: str, text: str) -> None:
            structlog.contextvars.bind_contextvars(trace_parent=trace)
            await store.append(tid, Item.user_message(text))

        with structlog.testing.capture_logs() as logs:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(append_as, "req-a", "a")
            await gate.wait_calls(1)  # req-a's projection is in flight
            for trace in ("req-b", "req-c"):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(append_as, trace, trace)
            gate.open()
            await settle(store, tid)

    first, second = _applied(logs, tid)
    assert (first["seq"], first["trace_parent"]) == (1, "req-a")
    assert (second["seq"], second["trace_parent"]) == (3, ["req-b", "req-c"])
    assert isinstance(second["queue_age_ms"], int | float)


# -- read-only store --------------------------------------------------------------------

WRITES: dict[str, Callable[[Store, str], Awaitable[object]]] = {
    "create_thread": lambda s, t: s.create_thread(goal="g"),
    "append": lambda s, t: s.append(t, Item.user_message("x")),
    "append_nowait": lambda s, t: _sync(lambda: s.append_nowait(t, Item.user_message("x"))),
    "append_and_flush": lambda s, t: s.append_and_flush(t, Item.user_message("x")),
    "flush": lambda s, t: s.flush(t),
    "flush_all": lambda s, t: s.flush_all(),
    "update_thread": lambda s, t: s.update_thread(t, title="x"),
    "archive_thread": lambda s, t: s.archive_thread(t),
    "unarchive_thread": lambda s, t: s.unarchive_thread(t),
    "delete_thread": lambda s, t: s.delete_thread(t),
    "discard": lambda s, t: s.discard(t),
}


async def _sync(fn: Callable[[], object]) -> object:
    await trio.lowlevel.checkpoint()
    return fn()


@pytest.mark.engines("sqlite", "postgres")  # a second, read-only opener: not :memory:
async def test_read_only_store_sees_the_writers_committed_data(store: Store) -> None:
    tid = (await store.create_thread(goal="shared")).id
    async with open_store(store.path, read_only=True) as reader:
        assert [m.id for m in (await reader.list_threads()).threads] == [tid]
        await store.append_and_flush(tid, Item.user_message("after the reader opened"))

        meta = await reader.get_thread(tid)
        items = await reader.read_items(tid)

        assert meta == await store.get_thread(tid)
        assert (meta.preview, meta.seq) == ("after the reader opened", 2)
        assert [i.kind for i in items] == ["goal", "user_message"]
        assert reader.read_only
        assert reader.statistics().appends == 0


@pytest.mark.engines("sqlite", "postgres")  # a second, read-only opener: not :memory:
@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
async def test_read_only_store_refuses_every_write(
    store: Store, write: Callable[[Store, str], Awaitable[object]]
) -> None:
    tid = (await store.create_thread(goal="shared")).id
    async with open_store(store.path, read_only=True) as reader:
        with pytest.raises(ReadOnlyStoreError, match="read-only"):
            await write(reader, tid)
    assert await items_of(store, tid) == [(1, "goal", {"text": "shared"})]
    assert await listed_ids(store, include_empty=True) == [tid]


# -- after close ------------------------------------------------------------------------


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
async def test_writes_after_close_raise_store_closed(
    store_path: Path, write: Callable[[Store, str], Awaitable[object]]
) -> None:
    async with open_store(store_path) as store:
        tid = (await store.create_thread(goal="g")).id

    with pytest.raises(StoreClosedError, match="closed"):
        await write(store, tid)

    async with open_store(store_path, read_only=True) as reader:
        assert [i.seq for i in await reader.read_items(tid)] == [1]
        assert await listed_ids(reader, include_empty=True) == [tid]


def test_errors_share_one_base() -> None:
    for error in (InvalidCursorError, ProjectionFailedError, ThreadDiscardedError):
        assert issubclass(error, ThreadStoreError)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"durability": "fast"}, "durability must be"),
        ({"reader_connections": 0}, "reader_connections must be an int >= 1"),
        ({"reader_connections": "2"}, "reader_connections must be an int >= 1"),
        ({"max_item_bytes": 0}, "max_item_bytes and max_pending_bytes must be >= 1"),
        ({"shutdown_timeout": -1}, "projection_delay and shutdown_timeout must be >= 0"),
    ],
    ids=repr,
)
async def test_open_store_rejects_bad_arguments_before_creating_anything(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    path = tmp_path / "never.db"
    with pytest.raises(ValueError, match=message):
        async with open_store(path, **kwargs):
            pytest.fail("opened")
    assert await trio.to_thread.run_sync(lambda: list(tmp_path.iterdir())) == []
