"""The change feed: ``ThreadEvent``s published after metadata commits, per subscriber buffers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final, Literal

import attrs
import trio

from ._config import Limits, Timeouts
from ._meta import ThreadMeta

__all__ = ["EventType", "Feed", "ThreadEvent"]

EventType = Literal["created", "updated", "archived", "unarchived", "deleted"]

#: How long a must-deliver event waits for room in a full subscriber buffer.
MUST_DELIVER_WAIT: Final = Timeouts().must_deliver_wait  # the default (see _config)
_LIMITS: Final = Limits()


@attrs.frozen(kw_only=True)
class ThreadEvent:
    """A change to a thread, published after its metadata committed.

    ``thread`` is the metadata as committed (for ``deleted``: as it was before deletion).
    """

    type: EventType
    thread: ThreadMeta


class Feed:
    """Fan-out of thread events to subscribers, each with a bounded buffer.

    Ordinary updates are dropped for a subscriber whose buffer is full (counted in
    ``drops``). Must-deliver events (created, deleted, archived, unarchived, and updates
    caused by urgent items) wait up to ``must_deliver_wait`` seconds per full subscriber,
    then are dropped and counted in ``must_deliver_drops``: a slow subscriber never stalls
    the publisher longer than that.
    """

    def __init__(self, must_deliver_wait: float = MUST_DELIVER_WAIT) -> None:
        #: Each subscription's channel and the namespace it follows (None: every one).
        self._subscribers: dict[trio.MemorySendChannel[ThreadEvent], str | None] = {}
        self._wait = must_deliver_wait
        self._closed = False
        self.drops = 0
        self.must_deliver_drops = 0

    @property
    def subscribers(self) -> int:
        """How many subscriptions are open."""
        return len(self._subscribers)

    @asynccontextmanager
    async def subscribe(
        self, buffer: int = _LIMITS.feed_buffer, namespace: str | None = None
    ) -> AsyncIterator[AsyncIterator[ThreadEvent]]:
        """Open a subscription (to ``namespace``'s threads only, unless None); iterate it
        for events. It ends when the store closes."""
        if buffer < 1:
            raise ValueError(f"buffer must be >= 1, not {buffer!r}")
        send, receive = trio.open_memory_channel[ThreadEvent](buffer)
        if self._closed:
            send.close()
        else:
            self._subscribers[send] = namespace
        try:
            async with receive:
                yield receive
        finally:
            self._subscribers.pop(send, None)
            send.close()

    def publish_nowait(self, event: ThreadEvent) -> None:
        """Offer an ordinary event to every subscriber; full buffers drop it. Sync."""
        for send in self._following(event):
            try:
                send.send_nowait(event)
            except trio.WouldBlock:
                self.drops += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.pop(send, None)

    def _following(self, event: ThreadEvent) -> list[trio.MemorySendChannel[ThreadEvent]]:
        namespace = event.thread.namespace
        return [s for s, ns in self._subscribers.items() if ns is None or ns == namespace]

    async def publish(self, event: ThreadEvent, *, must_deliver: bool) -> None:
        """Deliver ``event``; a must-deliver event waits a bounded time per full buffer.

        Never raises for a subscriber's state; cancellation propagates.
        """
        if not must_deliver:
            self.publish_nowait(event)
            await trio.lowlevel.checkpoint()
            return
        for send in self._following(event):
            try:
                send.send_nowait(event)
                continue
            except trio.WouldBlock:
                pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.pop(send, None)
                continue
            with trio.move_on_after(self._wait):
                try:
                    await send.send(event)
                    continue
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._subscribers.pop(send, None)
                    continue
            self.must_deliver_drops += 1
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        """End every subscription (iterators finish after draining their buffers)."""
        self._closed = True
        for send in self._subscribers:
            send.close()
        self._subscribers.clear()
