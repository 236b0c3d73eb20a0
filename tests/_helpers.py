"""Test helpers shared by the test modules (defined once, imported everywhere)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import trio

import workers
from threadstore import Store, StoredItem, ThreadMeta

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
