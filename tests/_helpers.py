"""Test helpers shared by the test modules (defined once, imported everywhere)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

import trio

import workers
from threadstore import Store, StoredItem, ThreadEvent, ThreadMeta
from threadstore._meta import LAST_MESSAGE_CHARS, PREVIEW_CHARS

#: Generous guard against a hung barrier; never a timing assertion.
GUARD_S = 10


def fast_retry(attempts: int = 3) -> workers.RetryPolicy:
    """A retry policy that gives up after ``attempts`` quick tries (failure tests stay fast)."""
    return workers.RetryPolicy(attempts=attempts, base_delay=0.001, max_delay=0.01)


def no_backoff(attempts: int) -> workers.RetryPolicy:
    """A retry policy that retries at once, ``attempts`` times in all."""
    return workers.RetryPolicy(attempts=attempts, base_delay=0, max_delay=0, jitter=0)


#: Gives up after three quick attempts, so failure tests stay fast.
FAST_RETRY = fast_retry(3)


class GatedProjector:
    """A projector whose every call waits until the test lets it through.

    Each call is recorded as ``(meta, items)`` before it waits. ``release(n)`` lets ``n``
    calls through; ``fail_next(n)`` makes the next ``n`` calls that pass the gate raise;
    ``open()`` lets every call through from now on. Returns ``{"calls": n}`` (the calls so
    far), or with ``report="seen"`` ``{"seen": n}`` (the items seen so far, carried in
    ``meta.extra``).
    """

    name = "gated"

    def __init__(self, report: Literal["calls", "seen"] = "calls") -> None:
        self.report = report
        self.calls: list[tuple[ThreadMeta, list[StoredItem]]] = []
        self.permits = 0
        self.failures = 0
        self.always_open = False
        self._changed = trio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def release(self, n: int = 1) -> None:
        self.permits += n
        self._notify()

    def fail_next(self, n: int = 1) -> None:
        self.failures += n

    def open(self) -> None:
        self.always_open = True
        self._notify()

    async def wait_calls(self, n: int) -> None:
        """Block until at least ``n`` calls have entered the projector."""
        await trio.lowlevel.checkpoint()
        with trio.fail_after(GUARD_S):
            while len(self.calls) < n:
                await self._changed.wait()

    async def project(self, meta: ThreadMeta, items: Sequence[StoredItem]) -> Mapping[str, Any]:
        self.calls.append((meta, list(items)))
        self._notify()
        await trio.lowlevel.checkpoint()
        while not self.always_open and self.permits == 0:
            await self._changed.wait()
        if not self.always_open:
            self.permits -= 1
        if self.failures:
            self.failures -= 1
            raise RuntimeError(f"gated projector failure on call {len(self.calls)}")
        if self.report == "seen":
            return {"seen": meta.extra.get(self.name, {}).get("seen", 0) + len(items)}
        return {"calls": len(self.calls)}


async def settle(store: Store, thread_id: str, seq: int | None = None) -> ThreadMeta:
    """Flush ``thread_id`` (guarded against hanging) and return its visible metadata."""
    with trio.fail_after(GUARD_S):
        await store.flush(thread_id, seq)
    return await store.get_thread(thread_id)


async def items_of(store: Store, thread_id: str) -> list[tuple[int, str, dict[str, Any]]]:
    """``(seq, kind, data)`` of every item in the thread's log."""
    return [(i.seq, i.kind, dict(i.data)) for i in await store.read_items(thread_id)]


async def listed_ids(store: Store, **kwargs: Any) -> list[str]:
    page = await store.list_threads(limit=1000, **kwargs)
    return [meta.id for meta in page.threads]


# -- a pure reference of the metadata fold, history edits included --------------------------


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def visible_items(log: Sequence[StoredItem]) -> list[StoredItem]:
    """A literal reading of the context rule: the items of ``log`` no rewind took out.

    A ``rewind`` keeps what is shown at that point through its ``to_seq`` (so it brings
    back nothing an earlier rewind hid); ``rewind`` and ``fork`` items are never shown.
    """
    shown: list[StoredItem] = []
    for item in log:
        if item.kind == "rewind":
            shown = [i for i in shown if i.seq <= item.data["to_seq"]]
        elif item.kind != "fork":
            shown.append(item)
    return shown


def context_from(log: Sequence[StoredItem]) -> list[StoredItem]:
    """What ``read_context`` returns: the visible items from the latest visible compaction on."""
    shown = visible_items(log)
    starts = [n for n, item in enumerate(shown) if item.kind == "compaction"]
    return shown[starts[-1] :] if starts else shown


def fold_log(
    log: Sequence[StoredItem],
    *,
    thread_id: str = "t",
    created_at: datetime,
    namespace: str = "",
    archived_at: datetime | None = None,
) -> tuple[ThreadMeta, bool]:
    """The metadata of a thread with ``log`` (in seq order), by the rules of DESIGN 3.2, and
    whether its preview comes from a user message. Independent of ``threadstore._meta``.

    Attributes (title, goal, extra, the fork fields, ``updated_at``, ``seq``) fold over every
    item of the log; the context statistics (counts, token sums, preview, last message,
    status, ``recency_at``) over the visible items only. A compaction is an item like any
    other here: it only moves where ``read_context`` starts. Before any (visible, non-blank)
    user message the preview is the thread's goal, the attribute: after a rewind that hid
    a later goal the preview still shows the goal the thread has.
    """
    title: str | None = None
    goal: str | None = None
    forked_from: str | None = None
    forked_at: int | None = None
    extra: dict[str, Any] = {}
    updated = created_at
    for item in log:
        updated = max(updated, item.created_at)
        text = item.data.get("text")
        if item.kind == "title" and isinstance(text, str):
            title = text
        elif item.kind == "goal" and isinstance(text, str):
            goal = text
        elif item.kind == "metadata" and isinstance(item.data.get("extra"), Mapping):
            for key, value in item.data["extra"].items():
                if value is None:
                    extra.pop(key, None)
                else:
                    extra[key] = value
        elif item.kind == "fork":
            forked_from, forked_at = item.data["from"], item.data["at_seq"]

    shown = visible_items(log)
    status: Literal["idle", "running", "error"] = "idle"
    turns = input_tokens = output_tokens = 0
    first_user: str | None = None
    last_message: str | None = None
    recency = created_at
    for item in shown:
        kind, text = item.kind, item.data.get("text")
        if kind == "turn_started":
            status, turns, recency = "running", turns + 1, max(recency, item.created_at)
        elif kind == "error":
            status = "error"
        elif kind in ("turn_completed", "turn_aborted") and status == "running":
            status = "idle"
        elif kind == "user_message" and isinstance(text, str):
            recency = max(recency, item.created_at)
            if first_user is None and text.strip():
                first_user = text
        elif kind == "assistant_message" and isinstance(text, str):
            last_message = text
        elif kind == "token_usage":
            input_tokens += item.data.get("input", 0)
            output_tokens += item.data.get("output", 0)
    if first_user is not None:
        preview: str | None = _cut(first_user, PREVIEW_CHARS)
    elif goal is not None and goal.strip():
        preview = _cut(goal, PREVIEW_CHARS)
    else:
        preview = None
    meta = ThreadMeta(
        id=thread_id,
        created_at=created_at,
        updated_at=updated,
        recency_at=recency,
        title=title,
        goal=goal,
        preview=preview,
        last_message=None if last_message is None else _cut(last_message, LAST_MESSAGE_CHARS),
        item_count=len(shown),
        turn_count=turns,
        status=status,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        archived_at=archived_at,
        extra=extra,
        seq=log[-1].seq if log else 0,
        namespace=namespace,
        forked_from=forked_from,
        forked_at=forked_at,
    )
    return meta, first_user is not None


def meta_of(event: ThreadEvent) -> ThreadMeta:
    """The metadata an event carries (every event but a ``reset`` carries one)."""
    assert event.thread is not None, f"{event.type} event without a thread"
    return event.thread


#: A change-feed subscriber's view: thread id -> metadata, as events left it.
View = dict[str, ThreadMeta]


def apply(view: View, event: ThreadEvent) -> None:
    """Apply one feed event to ``view``: reset clears, deleted removes, others upsert."""
    if event.type == "reset":
        view.clear()
        return
    assert event.thread is not None
    if event.type == "deleted":
        view.pop(event.thread.id, None)
    else:
        view[event.thread.id] = event.thread
