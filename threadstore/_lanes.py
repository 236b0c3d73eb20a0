"""The write lanes: which queued writes go in a group-committing writer's next transaction.

Pure logic, no I/O, no threads, with the clock injected: an engine's writer thread holds its
own lock around every call and only drives it (as hypercorn drives its protocol state
machines). Four ways in (:meth:`WriteLanes.submit`):

- ``"now"``: the ordinary lane (log appends, deletes, ...). Jobs are grouped at submit time
  into groups of at most :attr:`Lanes.wake_group`, each with one batch (the writer's wake-up
  handle); every transaction takes the queued groups, up to :attr:`Lanes.max_batch` jobs.
- ``"first"``: ahead of everything queued (a new thread's creation).
- ``"soon"``: urgent metadata writes, in groups of :attr:`Lanes.soon_group`; each transaction
  takes the oldest group, or the oldest 1/:attr:`Lanes.soon_share` of them if that is more
  (all of them once expedited or stopping).
- ``"deferred"``: ordinary metadata writes. They commit once the log has been quiet for
  :attr:`Lanes.quiet`, after at most :attr:`Lanes.projection_interval` under load (then one
  group of :attr:`Lanes.deferred_group` per transaction), or at once after
  :meth:`WriteLanes.expedite` or on stop.

Deferred and soon jobs may commit after jobs queued later: only for jobs whose order
relative to those does not matter (metadata writes of committed items).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, Literal, TypeVar

from ._config import Lanes

__all__ = ["LaneName", "WriteLanes"]

B = TypeVar("B")  # the writer's handle for one group (what its waiters wait on)
J = TypeVar("J")  # a job

LaneName = Literal["now", "first", "soon", "deferred"]


class WriteLanes(Generic[B, J]):
    """The queued jobs of one writer, by lane. Not thread-safe: the writer serialises calls.

    ``new_batch`` makes the handle of a new group; ``clock`` is ``time.monotonic`` unless a
    test injects another.
    """

    def __init__(
        self,
        settings: Lanes,
        new_batch: Callable[[], B],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._new_batch = new_batch
        self._clock = clock
        #: The ordinary lane: groups of at most ``wake_group`` jobs, formed at submit time.
        self._groups: list[tuple[B, list[J]]] = []
        #: The deferred lane: groups of at most ``deferred_group`` jobs, oldest first, each
        #: with the time its first job came. While appends stream in, a thread's projection
        #: waits here and its later patches merge upstream, so it costs one write per
        #: interval.
        self._deferred: list[tuple[B, list[J], float]] = []
        #: The soon lane: groups of at most ``soon_group`` jobs.
        self._soon: list[tuple[B, list[J]]] = []
        self._expedite = False
        self._stopping = False
        self._last_log_commit = 0.0

    # -- the queue side -----------------------------------------------------------------

    def submit(self, job: J, lane: LaneName) -> tuple[B, bool]:
        """Queue ``job``; its group's handle, and whether the writer must be woken (a new
        group was formed)."""
        settings = self.settings
        if lane == "now":
            return self.submit_now(job)
        if lane == "soon":
            return self._join(self._soon, job, settings.soon_group)
        if lane == "deferred":
            now = self._clock()
            tail = self._deferred[-1] if self._deferred else None
            # A job joins the newest group only while that group is young, so it is not
            # flushed long before its own interval is up.
            if (
                tail is None
                or len(tail[1]) >= settings.deferred_group
                or now - tail[2] >= settings.quiet
            ):
                tail = (self._new_batch(), [], now)
                self._deferred.append(tail)
                tail[1].append(job)
                return tail[0], True
            tail[1].append(job)
            return tail[0], False
        batch = self._new_batch()  # "first"
        self._groups.insert(0, (batch, [job]))
        return batch, True

    def submit_now(self, job: J) -> tuple[B, bool]:
        """``submit(job, "now")``, for the hot path of log appends."""
        groups = self._groups
        if groups and len(groups[-1][1]) < self.settings.wake_group:
            batch, jobs = groups[-1]
            jobs.append(job)
            return batch, False
        batch = self._new_batch()
        groups.append((batch, [job]))
        return batch, True

    def _join(self, groups: list[tuple[B, list[J]]], job: J, size: int) -> tuple[B, bool]:
        """Add ``job`` to the newest of ``groups``, or to a new one if that one has ``size``
        jobs already."""
        if groups and len(groups[-1][1]) < size:
            batch, jobs = groups[-1]
            jobs.append(job)
            return batch, False
        batch = self._new_batch()
        groups.append((batch, [job]))
        return batch, True

    def expedite(self) -> bool:
        """Commit the deferred and soon lanes with the next transaction; whether the writer
        must be woken."""
        if (self._deferred or self._soon) and not self._expedite:
            self._expedite = True
            return True
        return False

    def stop(self) -> None:
        """The writer stops: everything queued goes with the next transactions."""
        self._stopping = True

    def newest_batches(self) -> list[B]:
        """The newest group of the soon and deferred lanes (what a drain waits for)."""
        return [lane[-1][0] for lane in (self._soon, self._deferred) if lane]

    # -- the writer side ----------------------------------------------------------------

    def log_committed(self) -> None:
        """A transaction that appended log items committed (the log was not quiet)."""
        self._last_log_commit = self._clock()

    def ready(self) -> bool:
        """Whether a transaction is due now."""
        return bool(self._groups or self._soon or self._deferred_due(self._clock()))

    @property
    def stopping(self) -> bool:
        return self._stopping

    def timeout(self) -> float | None:
        """How long the writer may sleep before the deferred lane is due (None: until
        woken)."""
        if not self._deferred:
            return None
        settings = self.settings
        due = min(
            self._deferred[0][2] + settings.projection_interval,
            self._last_log_commit + settings.quiet,
        )
        return max(0.0, due - self._clock())

    def take(self) -> list[tuple[B, list[J]]]:
        """The groups of the next transaction (empty if none is due), removed from the
        lanes: the queued ordinary groups (up to ``max_batch`` jobs), then soon groups,
        then the deferred lane if it is due."""
        now = self._clock()
        settings = self.settings
        deferred = self._take_deferred(now) if self._deferred_due(now) else []
        groups: list[tuple[B, list[J]]] = []
        taken = 0
        while self._groups and taken + len(self._groups[0][1]) <= settings.max_batch:
            groups.append(self._groups.pop(0))
            taken += len(groups[-1][1])
        if self._expedite or self._stopping:
            soon, self._soon = self._soon, []
        else:
            # The oldest group, or a share of the lane if that is more: the lane keeps up
            # with any steady rate of urgent writes (its length settles at about
            # ``soon_share`` transactions' worth) while a sudden crowd is spread over a few.
            take = max(1, -(-len(self._soon) // settings.soon_share))
            soon = self._soon[:take]
            del self._soon[:take]
        if not self._deferred and not self._soon:
            self._expedite = False
        return groups + soon + deferred

    def _all_deferred_due(self, now: float) -> bool:
        """Whether the whole deferred lane goes now: someone waits, the writer stops, or
        the log has been quiet (no appends to hold up)."""
        return (
            self._expedite
            or self._stopping
            or (not self._groups and now - self._last_log_commit >= self.settings.quiet)
        )

    def _deferred_due(self, now: float) -> bool:
        if not self._deferred:
            return False
        settings = self.settings
        return (
            self._all_deferred_due(now)
            or now - self._deferred[0][2] >= settings.projection_interval
            or len(self._deferred) * settings.deferred_group >= settings.max_batch
        )

    def _take_deferred(self, now: float) -> list[tuple[B, list[J]]]:
        """The deferred groups of this transaction: all of them, or the oldest one."""
        if self._all_deferred_due(now):
            taken, self._deferred = self._deferred, []
        else:
            taken = [self._deferred.pop(0)]
        return [(batch, jobs) for batch, jobs, _ in taken]
