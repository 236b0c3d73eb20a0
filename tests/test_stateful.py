"""A hypothesis state machine drives a real store against a plain model of its contract.

Each example opens one store on a fresh file and keeps it open across the rules; the store
lives in a trio run on a background thread (``TrioLoop``) and every rule calls into it with
``trio.from_thread.run``, so one rule's work is finished when the next rule starts (appends
made with ``append_nowait`` excepted: their commits may overlap later rules, as in real use).

The model knows, per thread, every call and its items, and how each call ended:
acknowledged (``append`` returned, a receipt's ``durable()`` returned), failed
(``AppendFailedError``: nothing of it may be stored) or still pending. Faults (injected
``busy``/``ioerr``/``full`` statement errors on log and projection writes, by seed) are
switched on and off by a rule; errors are accepted only where the contract allows them
(e.g. ``ProjectionFailedError`` only while faults are on). Checked after the rules that
observe: the log holds exactly the acknowledged calls, dense and in call order; visible
metadata is always the fold of a prefix of the log, and of the whole log once ``flush_all``
returned with faults off (or after a reopen); a barrier that returned is visible; the
statistics stay consistent.

Commit faults (which fail whole group commits, also of archive and delete jobs) are
exercised deterministically in ``test_faults.py`` instead: here they would make outcomes
depend on how the writer happened to group jobs.
"""

from __future__ import annotations

import tempfile
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, TypeVar

import attrs
import pytest
import trio
from _helpers import fold_log, no_backoff
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from threadstore import (
    AppendFailedError,
    InvalidItemError,
    Item,
    ProjectionFailedError,
    Receipt,
    Store,
    StoredItem,
    StoreStatistics,
    ThreadDiscardedError,
    ThreadExistsError,
    ThreadMeta,
    ThreadNotFoundError,
    ThreadStoreError,
    WriteFailedError,
    open_store,
)
from threadstore.testing import Faults

if TYPE_CHECKING:
    from threadstore.postgres import PostgresFaults

T = TypeVar("T")

#: Bound on any one call into the store; a hang fails the example instead of the run.
GUARD_S: Final = 20
#: Projection gives up after two quick attempts, so failures for good happen under faults.
RETRY: Final = no_backoff(2)
#: Caller-chosen ids, few so that they collide, are deleted and created again.
OWN_IDS: Final = ("a", "b", 'it\'s "c"')

#: Examples run, and errors the store raised by type, in this process (for the report).
EXAMPLES: list[int] = [0]
SEEN: Counter[str] = Counter()
#: History edits that took effect (rewinds, forks, compactions appended), for the report.
EDITS: Counter[str] = Counter()


class TrioLoop:
    """A trio run on a background thread that the test's thread calls into.

    ``call(fn, *args)`` runs ``await fn(*args)`` in that run and returns its result or raises
    its exception. ``nursery`` is a nursery of the run, for tasks that outlive one call.
    """

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._crash: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name="trio-loop", daemon=True)
        self._thread.start()
        if not self._ready.wait(GUARD_S):
            raise RuntimeError("the trio loop did not start")

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported by close()
            self._crash.append(exc)
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        async def guarded() -> T:
            with trio.fail_after(GUARD_S):
                return await fn(*args)

        return trio.from_thread.run(guarded, trio_token=self._token)

    def call_sync(self, fn: Callable[..., T], *args: Any) -> T:
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def close(self) -> None:
        """Stop the run and join its thread; raise what crashed it, if anything did."""
        with suppress(trio.RunFinishedError):
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(GUARD_S)
        assert not self._thread.is_alive(), "the trio loop did not stop"
        if self._crash:
            raise self._crash[0]


@attrs.define
class Call:
    """One append-like call: its items and how it ended."""

    items: tuple[Item, ...]
    state: Literal["acked", "failed", "pending"]
    receipt: Receipt | None = None
    #: Faults were on at some point while it was pending: it may fail.
    faulty: bool = False
    #: Made after the thread's last discard: once acknowledged, its projection (which folds
    #: what the discard skipped) is pending work, so metadata converges again.
    after_discard: bool = True


@attrs.define
class ModelThread:
    id: str
    calls: list[Call] = attrs.Factory(list)
    archived: bool = False
    #: A discard may have left the metadata behind the log until the next acknowledged call.
    discarded: bool = False

    def acked_items(self) -> list[tuple[str, dict[str, Any]]]:
        return [
            (item.kind, dict(item.data))
            for call in self.calls
            if call.state == "acked"
            for item in call.items
        ]

    def log(self) -> list[tuple[int, str, dict[str, Any]]]:
        """``(seq, kind, data)`` of the thread's log: its acknowledged items, numbered."""
        return [(seq, kind, data) for seq, (kind, data) in enumerate(self.acked_items(), 1)]

    def visible(self) -> list[tuple[int, str, dict[str, Any]]]:
        """The context rule: the items of the log no rewind took out. A ``rewind`` keeps
        what is shown at that point through its ``to_seq`` (it brings back nothing an
        earlier rewind hid); ``rewind`` and ``fork`` items are never shown."""
        shown: list[tuple[int, str, dict[str, Any]]] = []
        for seq, kind, data in self.log():
            if kind == "rewind":
                shown = [entry for entry in shown if entry[0] <= data["to_seq"]]
            elif kind != "fork":
                shown.append((seq, kind, data))
        return shown

    def context(self) -> list[tuple[int, str, dict[str, Any]]]:
        """What ``read_context`` returns: the visible items from the latest compaction on."""
        shown = self.visible()
        starts = [n for n, (_, kind, _) in enumerate(shown) if kind == "compaction"]
        return shown[starts[-1] :] if starts else shown

    def may_fail(self, faults_on: bool) -> bool:
        """Whether an append now may raise AppendFailedError."""
        return faults_on or any(c.state == "pending" and c.faulty for c in self.calls)


def fold(meta: ThreadMeta, items: Sequence[StoredItem]) -> ThreadMeta:
    """The metadata the built-in projection derives from ``items`` (the archived flag aside):
    the pure reference fold, history edits included (``_helpers.fold_log``)."""
    expected, _ = fold_log(
        items,
        thread_id=meta.id,
        created_at=meta.created_at,
        namespace=meta.namespace,
        archived_at=meta.archived_at,
    )
    return expected


TEXT = st.text(alphabet=st.sampled_from("ab z'\"%_é🧵\x00"), max_size=6)
KINDS: Final = (
    "user_message",
    "assistant_message",
    "reasoning",
    "turn_started",
    "turn_completed",
    "turn_aborted",
    "error",
    "goal",
    "title",
    "token_usage",
    "tool_call",
    "tool_result",
    "note",
    "compaction",
)
SPECS = st.lists(st.tuples(st.sampled_from(KINDS), TEXT), min_size=1, max_size=3)
PICK = st.integers(min_value=0, max_value=1000)


def make_item(kind: str, text: str) -> Item:
    """An item of ``kind`` built from ``text`` with the kind's constructor."""
    simple: dict[str, Callable[[str], Item]] = {
        "user_message": Item.user_message,
        "assistant_message": Item.assistant_message,
        "reasoning": Item.reasoning,
        "turn_started": Item.turn_started,
        "turn_completed": Item.turn_completed,
        "error": Item.error,
        "goal": Item.goal,
        "title": Item.title,
    }
    if kind in simple:
        return simple[kind](text)
    if kind == "compaction":
        return Item.compaction(text)
    if kind == "turn_aborted":
        return Item.turn_aborted(text, "stopped")
    if kind == "token_usage":
        return Item.token_usage(len(text), 2 * len(text))
    if kind == "tool_call":
        return Item.tool_call("search", {"q": text, "n": [1, 2.5, None]}, f"call {text}")
    if kind == "tool_result":
        return Item.tool_result(f"call {text}", {"rows": [text]}, is_error=len(text) % 2 == 1)
    return Item(kind=kind, data={"text": text, "nested": {"list": [text, True]}})


async def _durable(receipt: Receipt) -> None:
    await receipt.durable()


class StoreMachine(RuleBasedStateMachine):
    """The store against the model; ``base`` is the directory for this test's files.

    On an engine without a fault seam or persistence (``memory``), faults stay off and the
    store is never reopened; every other rule runs the same."""

    base: ClassVar[Path]
    engine: ClassVar[str]
    #: Makes a fresh database per example (``postgres``): one factory, or none.
    new_database: ClassVar[tuple[Callable[[], str], ...]] = ()

    def __init__(self) -> None:
        super().__init__()
        self.loop = TrioLoop()
        self.path = Path(tempfile.mkdtemp(dir=self.base)) / "store.db"
        self.target: str | Path = ":memory:"
        if self.engine == "sqlite":
            self.target = self.path
        elif self.new_database:
            self.target = self.new_database[0]()
        self.faults = self.new_faults(0, 0.0)
        self.faults_on = False
        self.threads: dict[str, ModelThread] = {}  # live threads, by id
        self.deleted: set[str] = set()
        self.store: Store | None = None
        self._release: trio.Event | None = None
        self._closed: trio.Event | None = None
        self._close_error: list[Exception] = []
        self.acked_since_open = 0
        self.appends_since_open = 0

    # -- the store's lifetime --------------------------------------------------------------

    async def _hold(
        self, *, task_status: trio.TaskStatus[Store] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Own the open store until released (open_store must be left by the task that
        entered it); errors on the way out are kept for ``_close``."""
        release = self._release = trio.Event()
        closed = self._closed = trio.Event()
        started = False
        try:
            async with open_store(
                self.target,
                faults=self.faults if self.has_faults else None,
                retry=RETRY,
                retry_interval=None,
            ) as store:
                task_status.started(store)
                started = True
                await release.wait()
        except Exception as exc:
            if not started:
                raise
            self._close_error.append(exc)
            await trio.lowlevel.checkpoint()
        finally:
            closed.set()

    async def _open(self) -> Store:
        store: Store = await self.loop.nursery.start(self._hold)
        return store

    async def _close(self) -> None:
        assert self._release is not None
        assert self._closed is not None
        self._release.set()
        await self._closed.wait()

    @property
    def has_faults(self) -> bool:
        """Whether the engine has a fault seam (SQLite's, PostgreSQL's)."""
        return self.engine in ("sqlite", "postgres")

    def new_faults(self, seed: int, probability: float) -> Faults | PostgresFaults:
        """The engine's fault seam (every kind of fault it has), enabled."""
        if self.engine == "postgres":  # (psycopg is there when this engine runs)
            from threadstore.postgres import PostgresFaults as PgFaults

            return PgFaults(seed=seed, probability=probability)
        return Faults(seed=seed, probability=probability, kinds=("busy", "ioerr", "full", "commit"))

    @property
    def persistent(self) -> bool:
        """Whether the store outlives a close (it can be reopened)."""
        return self.engine != "memory"

    def open(self) -> None:
        self.store = self.loop.call(self._open)
        self.acked_since_open = self.appends_since_open = 0

    def close(self) -> None:
        self.loop.call(self._close)
        self.store = None
        if self._close_error:
            raise self._close_error.pop()

    @property
    def s(self) -> Store:
        assert self.store is not None
        return self.store

    def attempt(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T | ThreadStoreError:
        """Call into the store; return the result or the ThreadStoreError it raised."""
        try:
            return self.loop.call(fn, *args)
        except ThreadStoreError as exc:
            SEEN[type(exc).__name__] += 1
            return exc

    def expect(self, outcome: object, *allowed: type[ThreadStoreError]) -> bool:
        """True if ``outcome`` is not an error; fail unless its type is ``allowed``."""
        if not isinstance(outcome, ThreadStoreError):
            return True
        assert isinstance(outcome, allowed), f"unexpected {outcome!r}"
        return False

    def pick(self, n: int) -> str:
        """A live thread, or now and then a deleted one."""
        if self.deleted and (n % 8 == 7 or not self.threads):
            return sorted(self.deleted)[n // 8 % len(self.deleted)]
        return sorted(self.threads)[n % len(self.threads)]

    def has_threads(self) -> bool:
        return bool(self.threads or self.deleted)

    # -- the model's bookkeeping -----------------------------------------------------------

    def acked(self, thread: ModelThread, call: Call, *, appended: bool = True) -> None:
        EDITS.update(item.kind for item in call.items if item.kind in ("rewind", "compaction"))
        call.state = "acked"
        call.receipt = None
        if call.after_discard:
            thread.discarded = False
        if appended:  # (create_thread's items are not counted as appended)
            self.acked_since_open += len(call.items)

    def resolve(self, thread: ModelThread) -> None:
        """Wait for the thread's pending ``append_nowait`` calls; file how they ended."""
        for call in thread.calls:
            if call.state == "pending":
                assert call.receipt is not None
                outcome = self.attempt(_durable, call.receipt)
                if self.expect(outcome, AppendFailedError):
                    self.acked(thread, call)
                else:
                    assert call.faulty, f"append failed without faults: {outcome!r}"
                    call.state, call.receipt = "failed", None

    def resolve_all(self) -> None:
        for thread in self.threads.values():
            self.resolve(thread)

    def append_call(
        self, tid: str, specs: list[tuple[str, str]], fn: Callable[..., Awaitable[Receipt]]
    ) -> tuple[Call | None, Receipt | ThreadStoreError]:
        """Run an awaited append-like call; for a live thread return its model call."""
        items = tuple(make_item(kind, text) for kind, text in specs)
        outcome = self.attempt(fn, tid, *items)
        thread = self.threads.get(tid)
        if thread is None:
            self.expect(outcome, ThreadNotFoundError)
            assert isinstance(outcome, ThreadNotFoundError), "append to a deleted thread worked"
            return None, outcome
        call = Call(items=items, state="failed")
        thread.calls.append(call)
        self.appends_since_open += 1
        return call, outcome

    # -- rules -------------------------------------------------------------------------------

    @initialize(seed=st.integers(0, 2**16), faults_on=st.booleans())
    def start(self, seed: int, faults_on: bool) -> None:
        """Open the store with two threads (one goal-first), faults on or off."""
        EXAMPLES[0] += 1
        self.faults = self.new_faults(seed, 0.6)
        self.faults.enabled = False
        self.open()
        self.create(goal="the goal", title=None, own=None)
        self.create(goal=None, title=None, own=OWN_IDS[0])
        assert len(self.threads) == 2
        self.faults.enabled = self.faults_on = faults_on and self.has_faults

    @rule(
        goal=st.none() | TEXT,
        title=st.none() | TEXT,
        own=st.none() | st.sampled_from(OWN_IDS),
    )
    def create(self, goal: str | None, title: str | None, own: str | None) -> None:
        outcome = self.attempt(partial_create(self.s, goal, title, own))
        if own is not None and own in self.threads:
            self.expect(outcome, ThreadExistsError)
            assert isinstance(outcome, ThreadExistsError), "an id was taken twice"
            return
        if not self.expect(outcome, AppendFailedError):
            assert self.faults_on
            return
        assert isinstance(outcome, ThreadMeta)
        items = [Item.goal(goal)] if goal is not None else []
        if title is not None:
            items.append(Item.title(title))
        assert outcome.seq == len(items)
        assert (outcome.goal, outcome.title) == (goal, title)
        if own is not None:
            assert outcome.id == own
        thread = self.threads[outcome.id] = ModelThread(outcome.id)
        self.deleted.discard(outcome.id)
        call = Call(items=tuple(items), state="failed")
        thread.calls.append(call)
        self.acked(thread, call, appended=False)

    @precondition(has_threads)
    @rule(n=PICK, specs=SPECS)
    def append(self, n: int, specs: list[tuple[str, str]]) -> None:
        tid = self.pick(n)
        may_fail = tid in self.threads and self.threads[tid].may_fail(self.faults_on)
        call, outcome = self.append_call(tid, specs, self.s.append)
        if call is None:
            return
        if self.expect(outcome, AppendFailedError):
            assert isinstance(outcome, Receipt)
            self.acked(self.threads[tid], call)
        else:
            assert may_fail, f"append failed without faults: {outcome!r}"

    @precondition(has_threads)
    @rule(n=PICK, specs=SPECS)
    def append_nowait(self, n: int, specs: list[tuple[str, str]]) -> None:
        tid = self.pick(n)
        items = tuple(make_item(kind, text) for kind, text in specs)
        try:
            receipt = self.loop.call_sync(self.s.append_nowait, tid, *items)
        except ThreadNotFoundError:
            assert tid not in self.threads, "append_nowait to a live thread was refused"
            return
        assert tid in self.threads, "append_nowait to a deleted thread worked"
        self.threads[tid].calls.append(
            Call(items=items, state="pending", receipt=receipt, faulty=self.faults_on)
        )
        self.appends_since_open += 1

    @precondition(has_threads)
    @rule(n=PICK, specs=SPECS)
    def append_and_flush(self, n: int, specs: list[tuple[str, str]]) -> None:
        tid = self.pick(n)
        may_fail = tid in self.threads and self.threads[tid].may_fail(self.faults_on)
        call, outcome = self.append_call(tid, specs, self.s.append_and_flush)
        if call is None:
            return
        thread = self.threads[tid]
        if isinstance(outcome, AppendFailedError):
            assert may_fail, f"append failed without faults: {outcome!r}"
            return
        if isinstance(outcome, ProjectionFailedError):
            assert self.faults_on, f"projection failed without faults: {outcome!r}"
            self.acked(thread, call)  # durable: only the barrier failed
            return
        self.expect(outcome)
        assert isinstance(outcome, Receipt)
        self.acked(thread, call)
        meta = self.loop.call(self.s.get_thread, tid)
        assert meta.seq >= outcome.seq, "append_and_flush returned before visible"

    @precondition(has_threads)
    @rule(n=PICK)
    def flush(self, n: int) -> None:
        tid = self.pick(n)
        thread = self.threads.get(tid)
        outcome = self.attempt(self.s.flush, tid)
        if thread is None:
            assert isinstance(outcome, ThreadNotFoundError), "flush of a deleted thread worked"
            return
        may_fail = thread.may_fail(self.faults_on)
        discarded = thread.discarded
        self.resolve(thread)
        if isinstance(outcome, AppendFailedError):
            assert may_fail, f"flush reported a failed append without faults: {outcome!r}"
        elif isinstance(outcome, ProjectionFailedError):
            assert self.faults_on, f"projection failed without faults: {outcome!r}"
        elif isinstance(outcome, ThreadDiscardedError):
            assert discarded, f"flush reported a discard that did not happen: {outcome!r}"
        else:
            self.expect(outcome)
            meta = self.loop.call(self.s.get_thread, tid)
            assert meta.seq >= len(thread.acked_items()), "flush returned before visible"

    @precondition(has_threads)
    @rule()
    def flush_all(self) -> None:
        outcome = self.attempt(self.s.flush_all)
        discard_errors = self.discard_errors()
        self.resolve_all()
        if isinstance(outcome, ProjectionFailedError):
            assert self.faults_on, f"projection failed without faults: {outcome!r}"
            return
        if not self.expect(outcome, *discard_errors):
            return
        if not self.faults_on:
            self.check_converged()

    @precondition(has_threads)
    @rule(n=PICK)
    def discard(self, n: int) -> None:
        tid = self.pick(n)
        outcome = self.attempt(self.s.discard, tid)
        thread = self.threads.get(tid)
        if thread is None:
            assert isinstance(outcome, ThreadNotFoundError), "discard of a deleted thread worked"
            return
        self.expect(outcome)
        meta = self.loop.call(self.s.get_thread, tid)
        pending = any(c.state == "pending" for c in thread.calls)
        if pending or meta.seq < len(thread.acked_items()):
            thread.discarded = True
        for call in thread.calls:
            call.after_discard = False

    @precondition(has_threads)
    @rule(n=PICK)
    def delete(self, n: int) -> None:
        tid = self.pick(n)
        outcome = self.attempt(self.s.delete_thread, tid)
        if tid not in self.threads:
            assert isinstance(outcome, ThreadNotFoundError), "deleted a thread twice"
            return
        if isinstance(outcome, WriteFailedError):
            # A failed COMMIT (injected): nothing was deleted and the thread stays usable.
            assert self.faults_on, f"delete failed without faults: {outcome!r}"
            assert not isinstance(outcome, AppendFailedError)
            assert isinstance(self.attempt(self.s.get_thread, tid), ThreadMeta)
            return
        self.expect(outcome)
        del self.threads[tid]
        self.deleted.add(tid)
        for gone in (self.s.get_thread, self.s.read_items):
            assert isinstance(self.attempt(gone, tid), ThreadNotFoundError)

    @precondition(has_threads)
    @rule(n=PICK, archive=st.booleans())
    def archive(self, n: int, archive: bool) -> None:
        tid = self.pick(n)
        fn = self.s.archive_thread if archive else self.s.unarchive_thread
        outcome = self.attempt(fn, tid)
        thread = self.threads.get(tid)
        if thread is None:
            assert isinstance(outcome, ThreadNotFoundError), "archived a deleted thread"
            return
        may_fail = thread.may_fail(self.faults_on)
        if isinstance(outcome, AppendFailedError):
            assert may_fail, f"archive reported a failed append without faults: {outcome!r}"
        elif isinstance(outcome, ProjectionFailedError):
            assert self.faults_on, f"projection failed without faults: {outcome!r}"
        elif isinstance(outcome, WriteFailedError):
            assert self.faults_on, f"archive failed without faults: {outcome!r}"  # a COMMIT
        else:
            self.expect(outcome)
            assert isinstance(outcome, ThreadMeta)
            assert (outcome.archived_at is not None) == archive
            thread.archived = archive

    @precondition(has_threads)
    @rule(n=PICK, title=TEXT)
    def update_title(self, n: int, title: str) -> None:
        tid = self.pick(n)
        thread = self.threads.get(tid)
        may_fail = thread is not None and thread.may_fail(self.faults_on)
        outcome = self.attempt(update_title, self.s, tid, title)
        if thread is None:
            assert isinstance(outcome, ThreadNotFoundError), "updated a deleted thread"
            return
        call = Call(items=(Item.title(title),), state="failed")
        thread.calls.append(call)
        self.appends_since_open += 1
        if isinstance(outcome, AppendFailedError):
            assert may_fail, f"update failed without faults: {outcome!r}"
        elif isinstance(outcome, ProjectionFailedError):
            assert self.faults_on, f"projection failed without faults: {outcome!r}"
            self.acked(thread, call)  # recorded in the log; only the barrier failed
        else:
            self.expect(outcome)
            assert isinstance(outcome, ThreadMeta)
            assert outcome.title == title
            self.acked(thread, call)

    @precondition(has_threads)
    @rule(n=PICK, summary=TEXT, specs=st.lists(st.tuples(st.sampled_from(KINDS), TEXT), max_size=2))
    def compact(self, n: int, summary: str, specs: list[tuple[str, str]]) -> None:
        """Append a compaction (``read_context`` starts there), maybe with items after it."""
        tid = self.pick(n)
        may_fail = tid in self.threads and self.threads[tid].may_fail(self.faults_on)
        call, outcome = self.append_call(tid, [("compaction", summary), *specs], self.s.append)
        if call is None:
            return
        if self.expect(outcome, AppendFailedError):
            self.acked(self.threads[tid], call)
        else:
            assert may_fail, f"append failed without faults: {outcome!r}"

    @precondition(has_threads)
    @rule(n=PICK, back=st.integers(-1, 8))
    def rewind(self, n: int, back: int) -> None:
        """Rewind ``back`` items from the end (to a hidden seq too); -1: past the end."""
        tid = self.pick(n)
        thread = self.threads.get(tid)
        if thread is None:
            assert isinstance(self.attempt(self.s.rewind, tid, 0), ThreadNotFoundError)
            return
        self.resolve(thread)  # the seqs the rewind is about are settled
        last = len(thread.acked_items())
        to_seq = last + 1 if back < 0 else max(last - back, 0)
        outcome = self.attempt(self.s.rewind, tid, to_seq)
        if back < 0:
            assert isinstance(outcome, InvalidItemError), "rewind past the end worked"
            return  # (nothing written: check_logs compares the log with the model)
        call = Call(items=(Item(kind="rewind", data={"to_seq": to_seq}),), state="failed")
        thread.calls.append(call)
        self.appends_since_open += 1
        if isinstance(outcome, AppendFailedError):
            assert self.faults_on, f"rewind failed without faults: {outcome!r}"
            return
        self.acked(thread, call)
        if isinstance(outcome, ProjectionFailedError):
            assert self.faults_on, f"projection failed without faults: {outcome!r}"
            return  # recorded in the log; only the barrier failed
        self.expect(outcome)
        assert isinstance(outcome, ThreadMeta)
        items = self.loop.call(self.s.read_items, tid)
        assert outcome.seq == len(items) == last + 1, "rewind returned before visible"
        assert outcome == fold(outcome, items)
        assert outcome.item_count == len(thread.visible())

    @precondition(has_threads)
    @rule(
        n=PICK,
        back=st.none() | st.integers(-1, 6),
        own=st.none() | st.sampled_from(OWN_IDS),
        title=st.none() | TEXT,
    )
    def fork(self, n: int, back: int | None, own: str | None, title: str | None) -> None:
        """Fork at ``back`` items from the end (None: all of it; -1: past the end)."""
        tid = self.pick(n)
        source = self.threads.get(tid)
        if source is None:
            assert isinstance(
                self.attempt(fork_thread, self.s, tid, None, own, title), ThreadNotFoundError
            )
            return
        self.resolve(source)
        last = len(source.acked_items())
        at = None if back is None else last + 1 if back < 0 else max(last - back, 0)
        outcome = self.attempt(fork_thread, self.s, tid, at, own, title)
        if at is not None and at > last:
            assert isinstance(outcome, InvalidItemError), "fork past the end worked"
            return
        if own is not None and own in self.threads:
            assert isinstance(outcome, ThreadExistsError), "forked onto a live thread"
            return
        if isinstance(outcome, WriteFailedError):
            # A failed transaction (injected): nothing of the fork was written.
            assert self.faults_on, f"fork failed without faults: {outcome!r}"
            assert not isinstance(outcome, AppendFailedError), "the source was stored"
            if own is not None:
                assert isinstance(self.attempt(self.s.get_thread, own), ThreadNotFoundError)
            return
        self.expect(outcome)
        assert isinstance(outcome, ThreadMeta)
        at = last if at is None else at
        copies = [(kind, data) for seq, kind, data in source.visible() if seq <= at]
        marker = Item(kind="fork", data={"from": tid, "at_seq": at})
        titled = () if title is None else (Item.title(title),)  # last: the fork's title wins
        items = (marker, *(Item(kind=kind, data=data) for kind, data in copies), *titled)
        assert (outcome.forked_from, outcome.forked_at) == (tid, at)
        assert outcome.seq == len(items), "fork returned before its metadata was written"
        if own is not None:
            assert outcome.id == own
        thread = self.threads[outcome.id] = ModelThread(outcome.id)
        self.deleted.discard(outcome.id)
        call = Call(items=items, state="failed")
        thread.calls.append(call)
        self.acked(thread, call, appended=False)
        EDITS["fork"] += 1
        # The copies keep their times (and the fork's metadata is the fold of its log).
        forked = self.loop.call(self.s.read_items, outcome.id)
        assert outcome == fold(outcome, forked)
        by_seq = {i.seq: i for i in self.loop.call(self.s.read_items, tid)}
        copied = [by_seq[seq].created_at for seq, _, _ in source.visible() if seq <= at]
        assert [i.created_at for i in forked[1 : 1 + len(copied)]] == copied
        if title is not None:
            assert outcome.title == title

    @rule(on=st.booleans())
    def switch_faults(self, on: bool) -> None:
        """Faults on, or off and let the store settle (a last failure may still surface)."""
        on = on and self.has_faults
        self.faults_on = on
        if on:
            self.faults.enabled = True
            for thread in self.threads.values():
                for call in thread.calls:
                    call.faulty = call.faulty or call.state == "pending"
            return
        self.faults_off()

    def faults_off(self) -> None:
        """Stop faults and let the store settle: a fault drawn just before may still fail a
        projection for good once (the work is kept); from then on barriers succeed."""
        self.loop.call_sync(self.faults.stop)
        self.faults_on = False
        outcome = self.attempt(self.s.flush_all)
        self.expect(outcome, ProjectionFailedError, *self.discard_errors())
        self.resolve_all()

    def discard_errors(self) -> tuple[type[ThreadStoreError], ...]:
        """ThreadDiscardedError, if a discard may have left some thread's metadata behind."""
        return (ThreadDiscardedError,) if any(t.discarded for t in self.threads.values()) else ()

    @precondition(lambda self: self.persistent)
    @rule()
    def reopen(self) -> None:
        self.close()
        self.resolve_all()  # the close committed whatever was accepted
        self.open()
        for thread in self.threads.values():
            thread.discarded = False  # opening re-projects lagging threads
        self.check_logs()
        if not self.faults_on:
            for tid in self.threads:
                items = self.loop.call(self.s.read_items, tid)
                meta = self.loop.call(self.s.get_thread, tid)
                assert meta == fold(meta, items), "open did not re-project a lagging thread"

    @precondition(has_threads)
    @rule()
    def check(self) -> None:
        self.resolve_all()
        self.check_logs()

    # -- checks ------------------------------------------------------------------------------

    def check_logs(self) -> None:
        """Every live thread's log is exactly its acknowledged calls; its metadata the fold
        of a prefix of it; deleted threads are gone."""
        for tid, thread in self.threads.items():
            items = self.loop.call(self.s.read_items, tid)
            assert [i.seq for i in items] == list(range(1, len(items) + 1)), "seqs not dense"
            assert [(i.kind, dict(i.data)) for i in items] == thread.acked_items()
            meta = self.loop.call(self.s.get_thread, tid)
            assert meta.seq <= len(items), "metadata ahead of the log"
            assert meta == fold(meta, items[: meta.seq]), "metadata is no fold of the log"
            assert (meta.archived_at is not None) == thread.archived
            self.check_context(tid, thread, items)
        for tid in self.deleted:
            assert isinstance(self.attempt(self.s.read_items, tid), ThreadNotFoundError)

    def check_context(
        self, tid: str, thread: ModelThread, items: Sequence[StoredItem] | None = None
    ) -> None:
        """``read_context`` is the model's context: the very items of the log (times too),
        and with a limit its newest ones."""
        expected = thread.context()
        got = self.loop.call(self.s.read_context, tid)
        assert [(i.seq, i.kind, dict(i.data)) for i in got] == expected, "context differs"
        if items is not None:
            assert got == [items[seq - 1] for seq, _, _ in expected]
        if expected:
            limit = 1 + len(expected) // 2
            tail = self.loop.call(self.s.read_context, tid, limit)
            assert tail == got[-limit:]

    def check_converged(self) -> None:
        """After flush_all with faults off: metadata is the fold of the whole log."""
        self.check_logs()
        for tid, thread in self.threads.items():
            if thread.discarded:
                continue  # converges with its next acknowledged call (or the next open)
            items = self.loop.call(self.s.read_items, tid)
            meta = self.loop.call(self.s.get_thread, tid)
            assert meta.seq == len(items), "flush_all returned before everything was visible"
            # The context statistics fold the visible items; the attributes every item.
            assert meta == fold(meta, items)
            visible = thread.visible()
            assert meta.item_count == len(visible)
            assert meta.turn_count == sum(kind == "turn_started" for _, kind, _ in visible)
        stats = self.loop.call_sync(self.s.statistics)
        assert stats.lagging_threads == 0

    @invariant()
    def context_matches_the_model(self) -> None:
        """Every thread with no call in flight: ``read_context`` is the model's context."""
        if self.store is None:
            return
        for tid, thread in self.threads.items():
            if not any(call.state == "pending" for call in thread.calls):
                self.check_context(tid, thread)

    @invariant()
    def statistics_are_consistent(self) -> None:
        if self.store is None:
            return
        stats: StoreStatistics = self.loop.call_sync(self.s.statistics)
        assert stats.live_actors >= 0
        assert stats.lagging_threads >= 0
        assert stats.appends >= self.appends_since_open
        assert stats.items_appended >= self.acked_since_open

    def teardown(self) -> None:
        try:
            if self.store is not None:
                self.faults_off()
                self.expect(self.attempt(self.s.flush_all), *self.discard_errors())
                self.check_converged()
                if self.persistent:
                    self.close()
                    # A fresh open (no faults) re-projects even what a discard left behind.
                    self.faults = self.new_faults(0, 0.0)
                    self.open()
                self.check_logs()
                for tid, thread in self.threads.items():
                    if not self.persistent and thread.discarded:
                        continue  # only a reopen re-projects what a discard left behind
                    items = self.loop.call(self.s.read_items, tid)
                    meta = self.loop.call(self.s.get_thread, tid)
                    assert meta.seq == len(items)
                self.close()
        finally:
            self.loop.close()


def partial_create(
    store: Store, goal: str | None, title: str | None, own: str | None
) -> Callable[[], Awaitable[ThreadMeta]]:
    return lambda: store.create_thread(goal=goal, title=title, thread_id=own)


async def fork_thread(
    store: Store, tid: str, at_seq: int | None, own: str | None, title: str | None
) -> ThreadMeta:
    return await store.fork(tid, at_seq=at_seq, thread_id=own, title=title)


async def update_title(store: Store, tid: str, title: str) -> ThreadMeta:
    return await store.update_thread(tid, title=title)


def _run(
    base: Path,
    engine: str,
    machine_settings: settings,
    new_database: Callable[[], str] | None = None,
) -> None:
    class Machine(StoreMachine):
        pass

    Machine.base = base
    Machine.engine = engine
    Machine.new_database = () if new_database is None else (new_database,)
    before = EXAMPLES[0]
    SEEN.clear()
    EDITS.clear()
    run_state_machine_as_test(Machine, settings=machine_settings)
    print(
        f"stateful examples run: {EXAMPLES[0] - before}; errors seen: {dict(SEEN)}; "
        f"history edits: {dict(EDITS)}"
    )


COMMON: Final[dict[str, Any]] = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow],
}


def _databases(engine: str, request: pytest.FixtureRequest) -> Callable[[], str] | None:
    if engine != "postgres":
        return None
    new: Callable[[], str] = request.getfixturevalue("postgres_databases")
    return new


def test_store_matches_the_model(
    tmp_path: Path, engine: str, request: pytest.FixtureRequest
) -> None:
    _run(
        tmp_path,
        engine,
        settings(max_examples=50, stateful_step_count=30, derandomize=True, **COMMON),
        _databases(engine, request),
    )


@pytest.mark.soak
def test_store_matches_the_model_soak(
    tmp_path: Path, engine: str, request: pytest.FixtureRequest
) -> None:
    _run(
        tmp_path,
        engine,
        settings(max_examples=400, stateful_step_count=60, **COMMON),
        _databases(engine, request),
    )
