"""The in-memory engine: no threads, no files, and store logic on a fake clock.

Everything the contract suite checks runs on this engine too (``[memory]`` test ids); here
is what only it has: with ``trio.testing.MockClock`` the store's timing (the projection
window, the write lanes' intervals, retry backoff) is deterministic.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import trio
import trio.testing
from _helpers import GatedProjector, meta_of

import workers
from threadstore import Item, ProjectionFailedError, open_store
from threadstore._config import Lanes
from threadstore.testing import Faults

WINDOW = 2.0


async def test_runs_without_threads_or_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    before = threading.active_count()
    async with open_store(":memory:") as store:
        tid = (await store.create_thread(goal="in memory")).id
        await store.append_and_flush(tid, Item.user_message("hi"))
        assert (await store.get_thread(tid)).preview == "hi"
        assert threading.active_count() == before
        assert store.path == ":memory:"
    assert await trio.to_thread.run_sync(lambda: list(tmp_path.iterdir())) == []


async def test_every_open_starts_empty() -> None:
    async with open_store(":memory:") as store:
        await store.create_thread(goal="gone with the store")
    async with open_store(":memory:") as store:
        assert (await store.list_threads(include_empty=True)).threads == ()


@pytest.mark.parametrize("options", [{"read_only": True}, {"faults": Faults()}], ids=repr)
async def test_options_without_meaning_in_memory_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="':memory:' store takes neither"):
        async with open_store(":memory:", **options):  # type: ignore[arg-type]
            pytest.fail("opened")


async def test_projection_window_is_exact_on_a_fake_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_store(":memory:", projection_delay=WINDOW) as store,
        store.subscribe() as events,
    ):
        tid = (await store.create_thread()).id
        assert (await anext(events)).type == "created"
        start = trio.current_time()
        await store.append(tid, Item.user_message("first: urgent"))
        event = await anext(events)
        assert (meta_of(event).seq, trio.current_time()) == (1, start)  # no window for it
        await store.append(tid, Item.assistant_message("ordinary"))
        event = await anext(events)
        assert (meta_of(event).last_message, meta_of(event).seq) == ("ordinary", 2)
        assert trio.current_time() - start == pytest.approx(WINDOW)


async def test_deferred_metadata_writes_wait_for_a_quiet_log(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_store(":memory:") as store, store.subscribe() as events:
        tid = (await store.create_thread(goal="g")).id
        assert (await anext(events)).type == "created"
        await store.append(tid, Item.assistant_message("a"))
        committed = trio.current_time()
        # The projection write goes to the deferred lane; with no appends behind it, it
        # commits once the log has been quiet for the lanes' interval, on the fake clock.
        event = await anext(events)
        assert meta_of(event).seq == 2
        assert trio.current_time() - committed == pytest.approx(Lanes().quiet)


async def test_retry_backoff_is_deterministic_on_a_fake_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = GatedProjector()
    gate.open()
    gate.fail_next(3)
    policy = workers.RetryPolicy(attempts=3, base_delay=1.0, max_delay=10.0, jitter=0)
    async with open_store(":memory:", projectors=[gate], retry=policy) as store:
        tid = (await store.create_thread()).id
        start = trio.current_time()
        with pytest.raises(ProjectionFailedError) as info:
            await store.append_and_flush(tid, Item.user_message("x"))
        assert info.value.attempts == 3
        assert trio.current_time() - start == pytest.approx(1.0 + 2.0)  # two backoffs
        gate.fail_next(0)
        await store.flush(tid)  # the kept work goes through on the next barrier
        assert (await store.get_thread(tid)).preview == "x"
        assert trio.current_time() - start == pytest.approx(3.0)


async def test_a_full_subscriber_costs_the_writers_no_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_store(":memory:") as store, store.subscribe(buffer=1) as events:
        start = trio.current_time()
        tids = [(await store.create_thread(goal=f"goal {n}")).id for n in range(5)]
        assert trio.current_time() == start  # nobody waited for the subscriber
        first = await anext(events)  # buffered before the buffer filled
        caught_up = [meta_of(await anext(events)).id for _ in tids[1:]]
        assert [meta_of(first).id, *caught_up] == tids
        assert store.statistics().feed_catch_ups >= 1
