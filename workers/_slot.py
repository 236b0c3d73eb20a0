"""Per-key state of the pool: the pending slot, watermarks, failure and discard records.

Plain synchronous code: the pool's actor and API methods drive it; nothing here awaits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, Protocol, Self, TypeVar

import attrs
import trio

__all__ = ["Batch", "Failure", "Mergeable", "Slot", "TRACE_LIMIT"]

#: How many submitters' structlog contexts one pending batch remembers (memory stays O(1)).
TRACE_LIMIT = 32


class Mergeable(Protocol):
    """Work the pool can coalesce: ``a.merge(b)`` is what doing ``a`` then ``b`` would do."""

    def merge(self, other: Self, /) -> Self: ...


K = TypeVar("K")
W = TypeVar("W", bound=Mergeable)


@attrs.frozen(kw_only=True)
class Failure:
    """An attempt that failed for good, covering generations up to ``through``."""

    through: int
    error: Exception
    attempts: int


@attrs.define(kw_only=True)
class Batch(Generic[W]):
    """Work taken out of the pending slot for one apply (and its retries)."""

    work: W
    through: int
    submits: int
    since: float
    urgent: bool
    traces: list[Mapping[str, Any]]

    def absorb(self, later: Batch[W]) -> None:
        """Merge ``later`` (submitted after this batch) into this batch."""
        self.work = self.work.merge(later.work)
        self.through = later.through
        self.submits += later.submits
        self.since = min(self.since, later.since)
        self.urgent = self.urgent or later.urgent
        room = TRACE_LIMIT - len(self.traces)
        self.traces.extend(later.traces[:room])


class Slot(Generic[K, W]):
    """Everything the pool knows about one key with work (or waiters)."""

    def __init__(self, key: K, applied: int) -> None:
        self.key = key
        #: Last generation submitted.
        self.generation = applied
        #: Work through this generation is applied.
        self.applied = applied
        self.pending: Batch[W] | None = None
        #: Generation covered by the attempt now running (0: none running).
        self.in_flight = 0
        self.actor_running = False
        #: A final failure left its work in ``pending`` and nothing newer arrived: the actor
        #: stopped; the next submit, barrier or periodic retry restarts it.
        self.parked = False
        self.failure: Failure | None = None
        self.failure_epoch = 0
        #: Barriers for generations in ``(applied, discarded]`` raise WorkDiscardedError.
        self.discarded = 0
        #: A discard waiting for the running attempt to finish: the generation it covers.
        self.discard_request = 0
        #: Bumped by every discard, so an actor holding a batch knows to drop it.
        self.discard_serial = 0
        self.backoff: trio.CancelScope | None = None
        self.wake = trio.Event()
        self._changed = trio.Event()

    # -- pending slot ------------------------------------------------------------------

    def put(
        self, work: W, generation: int, now: float, urgent: bool, trace: Mapping[str, Any]
    ) -> bool:
        """Merge submitted work into the pending slot. Returns True if it merged."""
        self.generation = generation
        pending = self.pending
        if pending is None:
            self.pending = Batch(
                work=work, through=generation, submits=1, since=now, urgent=urgent, traces=[trace]
            )
            return False
        # Merge in place (what ``absorb`` of a one-submit batch does, without building it).
        pending.work = pending.work.merge(work)
        pending.through = generation
        pending.submits += 1
        pending.urgent = pending.urgent or urgent
        if len(pending.traces) < TRACE_LIMIT:
            pending.traces.append(trace)
        return True

    def take(self) -> Batch[W]:
        """Remove the pending batch for an apply."""
        batch = self.pending
        assert batch is not None
        self.pending = None
        return batch

    def keep(self, batch: Batch[W]) -> None:
        """Put a batch that could not be applied back in front of anything pending."""
        if self.pending is not None:
            batch.absorb(self.pending)
        self.pending = batch

    # -- state --------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """True while the key has work queued, running, or kept after a failure."""
        return self.pending is not None or self.in_flight > 0 or self.actor_running

    @property
    def lag(self) -> int:
        """Generations submitted but not yet applied."""
        return self.generation - self.applied

    def notify(self) -> None:
        """Wake every barrier waiting on this key so it re-checks the state."""
        self._changed.set()
        self._changed = trio.Event()

    async def changed(self) -> None:
        """Block until the next ``notify``."""
        await self._changed.wait()
