"""The access layers: ``threadstore.aio`` (asyncio) and ``threadstore.blocking`` (threads).

Real stores on real files, real OS threads and real event loops. Where the order of steps
matters, a gate in the writer thread (``LogGate``) or in a projector (``ProjectorGate``)
holds the store at a known point until the test lets it go; nothing here sleeps to wait.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio
from _helpers import meta_of

import threadstore
from threadstore import (
    Item,
    StoreClosedError,
    StoredItem,
    StoreLockedError,
    ThreadMeta,
    ThreadNotFoundError,
    aio,
    blocking,
)
from threadstore._portal import MIRRORED, MIRRORED_VIEW
from threadstore.testing import Faults, Target

#: Upper bound on any wait for a gate: a broken store fails the test instead of hanging it.
GUARD_S = 30.0


class LogGate(Faults):
    """Stops the writer thread before each log job while ``closed`` is set, until released."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = threading.Event()
        self.arrived = threading.Event()
        self.opened = threading.Event()

    def before_job(self, target: Target) -> None:
        if target == "log" and self.closed.is_set():
            self.arrived.set()
            assert self.opened.wait(GUARD_S), "the test never opened the log gate"
        super().before_job(target)


class ProjectorGate:
    """A custom projector that holds every projection until ``opened`` is set."""

    name = "gate"

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.opened = threading.Event()

    def project(
        self, meta: ThreadMeta, items: Sequence[StoredItem]
    ) -> Awaitable[Mapping[str, Any]]:
        return self._wait(len(items))

    async def _wait(self, count: int) -> Mapping[str, Any]:
        self.arrived.set()
        await trio.to_thread.run_sync(self.opened.wait, GUARD_S, abandon_on_cancel=True)
        return {"seen": count}


def _seqs(items: Collection[StoredItem]) -> list[int]:
    return [item.seq for item in items]


def _public_methods(cls: type) -> dict[str, Callable[..., Any]]:
    return {
        name: member
        for name, member in vars(cls).items()
        if not name.startswith("_") and callable(member)
    }


# -- the mirrors cannot drift ----------------------------------------------------------------


_ORIGINALS = {
    "store": (threadstore.Store, MIRRORED),
    "view": (threadstore.ScopedStore, MIRRORED_VIEW),
}


@pytest.mark.parametrize("kind", sorted(_ORIGINALS))
def test_the_mirrored_lists_are_every_public_method_of_the_trio_classes(kind: str) -> None:
    original, mirrored = _ORIGINALS[kind]
    assert sorted(mirrored) == sorted(_public_methods(original))
    for name, how in mirrored.items():
        trio_method = getattr(original, name)
        assert (how in ("sync", "view")) == (
            not inspect.iscoroutinefunction(trio_method) and name != "subscribe"
        ), name


@pytest.mark.parametrize(
    ("shell", "kind"),
    [
        (aio.Store, "store"),
        (blocking.Store, "store"),
        (aio.ScopedStore, "view"),
        (blocking.ScopedStore, "view"),
    ],
    ids=["aio", "blocking", "aio-view", "blocking-view"],
)
def test_each_shell_mirrors_every_method_with_the_same_parameters(shell: type, kind: str) -> None:
    original, mirrored = _ORIGINALS[kind]
    assert sorted(_public_methods(shell)) == sorted(mirrored)
    for name in mirrored:
        ours = inspect.signature(getattr(shell, name))
        theirs = inspect.signature(getattr(original, name))
        assert list(ours.parameters.values()) == list(theirs.parameters.values()), name
        awaitable = inspect.iscoroutinefunction(getattr(original, name))
        assert inspect.iscoroutinefunction(getattr(shell, name)) == (
            awaitable and shell in (aio.Store, aio.ScopedStore)
        ), name
        assert getattr(shell, name).__doc__.startswith(
            inspect.cleandoc(getattr(original, name).__doc__)
        ), name


# -- asyncio ---------------------------------------------------------------------------------


def test_aio_round_trip_through_every_method(tmp_path: Path) -> None:
    path = tmp_path / "store.db"

    async def main() -> None:
        async with aio.open_store(path) as store:
            assert store.path == str(path)
            assert not store.read_only
            meta = await store.create_thread(goal="Plan a trip", thread_id="trip")
            assert meta.preview == "Plan a trip"
            first = store.append_nowait("trip", Item.user_message("one"))
            second = store.append_nowait("trip", Item.user_message("two"))
            assert (first.seq, second.seq) == (2, 3)  # ordered at the call
            await second.durable()
            await second.visible()
            receipt = await store.append("trip", Item.assistant_message("three"))
            await store.flush("trip", receipt.seq)
            flushed = await store.append_and_flush("trip", Item.turn_started("t1"))
            assert (await store.get_thread("trip")).seq == flushed.seq == 5
            await store.flush_all()
            items = await store.read_items("trip", after_seq=1, limit=2)
            assert [i.data for i in items] == [{"text": "one"}, {"text": "two"}]
            assert (await store.update_thread("trip", title="Lisbon")).title == "Lisbon"
            assert (await store.archive_thread("trip")).archived_at is not None
            assert (await store.list_threads()).threads == ()
            assert (await store.unarchive_thread("trip")).archived_at is None
            await store.create_thread(goal="Second", thread_id="other")
            page = await store.list_threads(limit=1)
            rest = await store.list_threads(limit=1, cursor=page.next_cursor)
            assert [t.id for t in page.threads + rest.threads] == ["other", "trip"]
            await store.discard("trip")
            await store.delete_thread("other")
            with pytest.raises(ThreadNotFoundError):
                await store.get_thread("other")
            stats = store.statistics()
            assert stats.appends >= 4
            assert stats.items_appended >= 4

    asyncio.run(main())


def test_aio_errors_are_the_trio_stores_and_nothing_is_written(tmp_path: Path) -> None:
    async def main() -> None:
        async with aio.open_store(tmp_path / "store.db") as store:
            meta = await store.create_thread(goal="g")
            with pytest.raises(threadstore.InvalidItemError):
                await store.append(meta.id, Item.user_message("ok"), "not an item")  # type: ignore[arg-type]
            with pytest.raises(threadstore.InvalidItemError):
                store.append_nowait(meta.id, Item(kind="note", data={"x": float("nan")}))
            with pytest.raises(ThreadNotFoundError):
                await store.append("missing", Item.user_message("hi"))
            with pytest.raises(threadstore.ThreadExistsError):
                await store.create_thread(thread_id=meta.id)
            with pytest.raises(threadstore.InvalidCursorError):
                await store.list_threads(cursor="forged")
            assert _seqs(await store.read_items(meta.id)) == [1]

    asyncio.run(main())


def test_aio_from_many_loops_in_many_threads_at_once(tmp_path: Path) -> None:
    """Each OS thread runs its own loop against one handle opened by the main loop."""
    loops, calls = 4, 50
    done: list[str] = []

    async def worker(store: aio.Store, index: int) -> None:
        own = await store.create_thread(goal=f"worker {index}")
        for n in range(calls):
            await store.append(own.id, Item.user_message(f"{index}:{n}"))
            await store.append("shared", Item.assistant_message(f"{index}:{n}"))
        await store.flush(own.id)
        done.append(own.id)

    async def main() -> None:
        async with aio.open_store(tmp_path / "store.db") as store:
            await store.create_thread(goal="shared", thread_id="shared")
            threads = [
                threading.Thread(target=asyncio.run, args=(worker(store, i),)) for i in range(loops)
            ]
            for thread in threads:
                thread.start()
            await worker(store, loops)  # the opening loop takes part too
            for thread in threads:
                await asyncio.to_thread(thread.join, GUARD_S)
            await store.flush_all()
            assert len(done) == loops + 1
            shared = await store.read_items("shared")
            assert _seqs(shared) == list(range(1, 2 + (loops + 1) * calls))
            for tid in done:
                meta = await store.get_thread(tid)
                assert meta.item_count == calls + 1
                assert meta.seq == calls + 1
            assert (await store.get_thread("shared")).item_count == 1 + (loops + 1) * calls

    asyncio.run(main())


def test_a_cancelled_asyncio_append_is_still_committed_and_projected(tmp_path: Path) -> None:
    gate = LogGate()

    async def main() -> None:
        async with aio.open_store(tmp_path / "store.db", faults=gate) as store:
            meta = await store.create_thread(thread_id="t")
            gate.closed.set()
            task = asyncio.create_task(
                store.append("t", Item.user_message("a"), Item.assistant_message("b"))
            )
            await asyncio.to_thread(gate.arrived.wait, GUARD_S)  # accepted, in the writer
            task.cancel()
            gate.opened.set()
            with pytest.raises(asyncio.CancelledError):
                await task
            gate.closed.clear()
            await store.flush("t")
            assert _seqs(await store.read_items("t")) == [1, 2]
            meta = await store.get_thread("t")
            assert (meta.item_count, meta.preview, meta.last_message) == (2, "a", "b")
            # The thread is not wedged: later appends and barriers work.
            receipt = await store.append_and_flush("t", Item.user_message("c"))
            assert receipt.seq == 3

    asyncio.run(main())


def test_asyncio_timeout_on_a_barrier_leaves_the_store_working(tmp_path: Path) -> None:
    gate = ProjectorGate()

    async def main() -> None:
        async with aio.open_store(tmp_path / "store.db", projectors=[gate]) as store:
            await store.create_thread(thread_id="t")
            receipt = await store.append("t", Item.user_message("hi"))
            waiting = asyncio.create_task(receipt.visible())
            await asyncio.to_thread(gate.arrived.wait, GUARD_S)
            waiting.cancel()  # as asyncio.timeout would
            with pytest.raises(asyncio.CancelledError):
                await waiting
            gate.opened.set()
            await store.flush("t")
            meta = await store.get_thread("t")
            assert meta.preview == "hi"
            assert meta.extra["gate"] == {"seen": 1}

    asyncio.run(main())


def test_cancelling_many_asyncio_appends_never_half_applies(tmp_path: Path) -> None:
    """Appends of three items each, cancelled at every stage: each call's items are stored
    all together or not at all, seqs stay dense, and the metadata counts the log."""

    async def main() -> None:
        async with aio.open_store(tmp_path / "store.db") as store:
            await store.create_thread(thread_id="t")
            tasks = []
            for n in range(60):
                items = [Item.user_message(f"{n}/{k}") for k in range(3)]
                tasks.append(asyncio.create_task(store.append("t", *items)))
                if n % 3 == 0:
                    await asyncio.sleep(0)  # let some calls get further before their cancel
                if n % 2 == 0:
                    tasks[-1].cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            await store.flush_all()
            stored = await store.read_items("t")
            assert _seqs(stored) == list(range(1, len(stored) + 1))
            by_call: dict[str, list[str]] = {}
            for item in stored:
                call, k = item.data["text"].split("/")
                by_call.setdefault(call, []).append(k)
            assert all(ks == ["0", "1", "2"] for ks in by_call.values())
            completed = {str(n) for n, r in enumerate(results) if not isinstance(r, BaseException)}
            assert completed <= set(by_call)  # every returned receipt's items are there
            assert (await store.get_thread("t")).item_count == len(stored)

    asyncio.run(main())


def test_aio_subscription_sees_changes_and_ends_when_the_store_closes(tmp_path: Path) -> None:
    async def main() -> None:
        seen: list[tuple[str, str]] = []
        async with aio.open_store(tmp_path / "store.db") as store:
            subscribed = asyncio.Event()

            async def follow() -> None:
                async with store.subscribe(buffer=16) as events:
                    subscribed.set()
                    async for event in events:
                        seen.append((event.type, meta_of(event).id))

            follower = asyncio.create_task(follow())
            await subscribed.wait()
            await store.create_thread(goal="g", thread_id="t")
            await store.append_and_flush("t", Item.user_message("hi"))
            await store.delete_thread("t")
        await asyncio.wait_for(follower, GUARD_S)  # ended normally with the store
        assert seen[0] == ("created", "t")
        assert seen[-1] == ("deleted", "t")
        assert ("updated", "t") in seen

    asyncio.run(main())


def test_aio_subscribe_and_calls_after_close_raise_store_closed(tmp_path: Path) -> None:
    async def main() -> None:
        async with aio.open_store(tmp_path / "store.db") as store:
            pass
        with pytest.raises(StoreClosedError):
            await store.get_thread("t")
        with pytest.raises(StoreClosedError):
            store.append_nowait("t", Item.user_message("hi"))
        with pytest.raises(StoreClosedError):
            async with store.subscribe():
                pass

    asyncio.run(main())


def test_trio_subscribe_on_a_closed_store_raises_store_closed(tmp_path: Path) -> None:
    async def main() -> None:
        async with threadstore.open_store(tmp_path / "store.db") as store:
            pass
        with pytest.raises(StoreClosedError):
            async with store.subscribe():
                pass

    trio.run(main)


def test_aio_open_errors_reach_the_opener(tmp_path: Path) -> None:
    path = tmp_path / "store.db"

    async def main() -> None:
        with pytest.raises(ValueError, match="durability"):
            async with aio.open_store(path, durability="sometimes"):
                pass
        with blocking.open_store(path), pytest.raises(StoreLockedError):
            async with aio.open_store(path):
                pass

    asyncio.run(main())


def test_a_flush_in_flight_at_close_raises_store_closed_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    gate = ProjectorGate()

    async def main() -> None:
        async with aio.open_store(path, projectors=[gate], shutdown_timeout=0.05) as store:
            await store.create_thread(thread_id="t")
            receipt = await store.append("t", Item.user_message("kept"))
            barrier = asyncio.create_task(store.flush("t"))
            await asyncio.to_thread(gate.arrived.wait, GUARD_S)
        with pytest.raises(StoreClosedError):
            await barrier
        assert receipt.seq == 1

    asyncio.run(main())
    gate.opened.set()
    with blocking.open_store(path) as store:  # recovery projects what the close left
        assert [i.data for i in store.read_items("t")] == [{"text": "kept"}]
        assert store.get_thread("t").preview == "kept"


# -- threads ---------------------------------------------------------------------------------


def test_blocking_from_many_threads_at_once(tmp_path: Path) -> None:
    workers, calls = 8, 40
    with blocking.open_store(tmp_path / "store.db") as store:
        store.create_thread(goal="shared", thread_id="shared")
        errors: list[BaseException] = []

        def work(index: int) -> None:
            try:
                for n in range(calls):
                    receipt = store.append("shared", Item.user_message(f"{index}:{n}"))
                    if n % 10 == 0:
                        receipt.visible()
            except BaseException as exc:  # reported by the test thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(GUARD_S)
        assert errors == []
        store.flush_all()
        items = store.read_items("shared")
        assert _seqs(items) == list(range(1, 2 + workers * calls))
        texts = [i.data["text"] for i in items[1:]]
        for index in range(workers):  # each thread's appends landed in its call order
            own = [t for t in texts if t.startswith(f"{index}:")]
            assert own == [f"{index}:{n}" for n in range(calls)]
        assert store.get_thread("shared").item_count == 1 + workers * calls


def test_blocking_subscription_iterates_and_ends_with_the_store(tmp_path: Path) -> None:
    seen: list[str] = []
    subscribed = threading.Event()
    with blocking.open_store(tmp_path / "store.db") as store:

        def follow() -> None:
            with store.subscribe() as events:
                subscribed.set()
                seen.extend(event.type for event in events)

        follower = threading.Thread(target=follow)
        follower.start()
        assert subscribed.wait(GUARD_S)
        store.create_thread(goal="g", thread_id="t")
        store.archive_thread("t")
    follower.join(GUARD_S)
    assert not follower.is_alive()
    assert seen == ["created", "archived"]


def test_blocking_and_aio_subscriptions_resume_from_a_cursor(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with blocking.open_store(path) as store:
        first = store.create_thread(goal="first")
        second = store.create_thread(goal="second")
        store.delete_thread(first.id)
        with store.subscribe(first.change, buffer=1) as events:  # replay, one at a time
            replayed = [(e.type, meta_of(e).id) for _, e in zip(range(2), events, strict=False)]
    assert replayed == [("updated", second.id), ("deleted", first.id)]

    async def resume() -> tuple[list[str], str]:
        async with aio.open_store(path) as store:
            third = await store.create_thread(goal="third")
            async with store.subscribe(second.change) as events:
                seen = []
                async for event in events:
                    seen.append(meta_of(event).id)
                    if event.change == third.change:
                        return seen, third.id
        raise AssertionError("the subscription ended early")  # pragma: no cover

    seen, third = asyncio.run(resume())
    assert seen == [first.id, third]  # the deletion, then the new thread


def test_ctrl_c_in_a_blocked_thread_cancels_only_the_wait(tmp_path: Path) -> None:
    """SIGINT while the main thread waits for visibility: KeyboardInterrupt reaches the
    caller, the append it made is still committed and projected, the store keeps working."""
    gate = ProjectorGate()
    main = threading.main_thread().ident
    assert main == threading.get_ident()

    def interrupt_once_held() -> None:
        assert gate.arrived.wait(GUARD_S)
        signal.pthread_kill(main, signal.SIGINT)

    with blocking.open_store(tmp_path / "store.db", projectors=[gate]) as store:
        store.create_thread(thread_id="t")
        interrupter = threading.Thread(target=interrupt_once_held)
        interrupter.start()
        with pytest.raises(KeyboardInterrupt):
            store.append_and_flush("t", Item.user_message("hi"))
        interrupter.join(GUARD_S)
        gate.opened.set()
        store.flush("t")
        meta = store.get_thread("t")
        assert (meta.preview, meta.item_count) == ("hi", 1)


def test_a_blocking_call_from_the_stores_own_thread_raises(tmp_path: Path) -> None:
    with blocking.open_store(tmp_path / "store.db") as store:
        with pytest.raises(RuntimeError, match="deadlock"):
            store._portal.run_sync(lambda _: store.statistics())
        assert store.statistics().appends == 0


def test_blocking_calls_after_close_raise_store_closed(tmp_path: Path) -> None:
    with blocking.open_store(tmp_path / "store.db") as store:
        meta = store.create_thread(goal="g")
    with pytest.raises(StoreClosedError):
        store.append(meta.id, Item.user_message("late"))
    with pytest.raises(StoreClosedError):
        store.statistics()
    with blocking.open_store(tmp_path / "store.db", read_only=True) as reader:
        assert reader.read_only
        assert _seqs(reader.read_items(meta.id)) == [1]


def test_the_callers_trace_parent_travels_through_asyncio_and_threads(tmp_path: Path) -> None:
    async def append_traced(store: aio.Store) -> None:
        with structlog.contextvars.bound_contextvars(trace_parent="from-asyncio"):
            await store.append_and_flush("t", Item.user_message("hi"))

    with structlog.testing.capture_logs() as logs:
        with blocking.open_store(tmp_path / "store.db") as store:
            store.create_thread(thread_id="t")
            with structlog.contextvars.bound_contextvars(trace_parent="from-a-thread"):
                store.append("t", Item.user_message("hi")).visible()
        asyncio.run(_with_aio(tmp_path / "store.db", append_traced))
    traces = [e["trace_parent"] for e in logs if e["event"] == "projection.applied"]
    assert traces == ["from-a-thread", "from-asyncio"]


async def _with_aio(path: Path, body: Callable[[aio.Store], Awaitable[None]]) -> None:
    async with aio.open_store(path) as store:
        await body(store)


def test_a_handle_never_closed_drains_at_interpreter_exit(tmp_path: Path) -> None:
    """A program that forgets to leave the block loses nothing: at exit the store drains."""
    path = tmp_path / "store.db"
    program = (
        "import sys\n"
        "from threadstore import Item, blocking\n"
        "opened = blocking.open_store(sys.argv[1])\n"
        "store = opened.__enter__()  # and never left\n"
        "store.create_thread(thread_id='t')\n"
        "for n in range(50):\n"
        "    store.append_nowait('t', Item.user_message(f'm{n}'))\n"
        "print('appended')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, str(path)],
        capture_output=True,
        text=True,
        timeout=GUARD_S,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "appended\n", "")
    with blocking.open_store(path) as store:
        assert store.statistics().lagging_threads == 0  # nothing left to recover
        meta = store.get_thread("t")
        assert (meta.item_count, meta.last_message, meta.preview) == (50, None, "m0")
        assert len(store.read_items("t")) == 50


def test_views_and_history_edits_through_the_blocking_layer(tmp_path: Path) -> None:
    with blocking.open_store(tmp_path / "store.db") as store:
        alice, bob = store.scoped("acme/alice"), store.scoped("acme/bob")
        assert alice.namespace == "acme/alice"
        meta = alice.create_thread(goal="trip")
        alice.append(meta.id, Item.user_message("q1"), Item.assistant_message("a1"))
        alice.append(meta.id, Item.user_message("q2"))
        with pytest.raises(ThreadNotFoundError):
            bob.get_thread(meta.id)
        with pytest.raises(ThreadNotFoundError):
            bob.append(meta.id, Item.user_message("not yours"))
        assert [t.id for t in bob.list_threads().threads] == []
        assert alice.rewind(meta.id, 3).item_count == 3
        fork = alice.fork(meta.id, at_seq=2, title="branch")
        assert fork.namespace == "acme/alice"
        texts = [i.data.get("text") for i in alice.read_context(fork.id)]
        assert texts == ["trip", "q1", "branch"]
        assert len(store.read_items(meta.id)) == 5  # nothing left the log
        assert {t.id for t in store.list_threads(namespace="acme/alice").threads} == {
            meta.id,
            fork.id,
        }


def test_a_scoped_asyncio_subscription_sees_its_namespace_only(tmp_path: Path) -> None:
    async def main() -> None:
        async with aio.open_store(tmp_path / "store.db") as store:
            mine: list[str] = []
            view = store.scoped("a")
            async with view.subscribe() as events:
                await store.create_thread(goal="theirs", namespace="b")
                created = await view.create_thread(goal="mine")
                async for event in events:
                    mine.append(meta_of(event).id)
                    if meta_of(event).id == created.id:
                        break
            assert mine == [created.id]
            assert (await view.append_and_flush(created.id, Item.user_message("x"))).seq == 2

    asyncio.run(main())
