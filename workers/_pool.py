"""A keyed actor pool: per key, mergeable pending work applied by one actor at a time."""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

import attrs
import structlog
import trio

from ._errors import PoolClosedError, WorkDiscardedError, WorkFailedError
from ._logging import get_logger
from ._retry import RetryPolicy
from ._slot import Batch, Failure, Mergeable, Slot

__all__ = ["ActorPool", "PoolStatistics", "ShutdownReport", "open_pool"]

K = TypeVar("K", bound=Hashable)
W = TypeVar("W", bound=Mergeable)

log = get_logger(__name__)


@attrs.frozen(kw_only=True)
class PoolStatistics:
    """Totals since the pool opened, plus a snapshot of what is live now."""

    submits: int
    applies: int
    merged_submits: int
    retries: int
    failures: int
    discards: int
    live_actors: int
    live_keys: int
    pending_keys: int
    max_lag: int
    largest_backlog: int


@attrs.frozen(kw_only=True)
class ShutdownReport:
    """What shutdown left undone: keys that still had pending or running work."""

    leftover: tuple[Hashable, ...]
    timed_out: bool


class ActorPool(Generic[K, W]):
    """Per-key actors applying mergeable work, with generation barriers.

    Build one with :func:`open_pool`. Each key with work has one actor task that calls
    ``apply(key, work)``; work submitted while an apply runs merges into one pending batch,
    so N submits during an apply cost at most one more apply. Actors retire when their key
    has nothing left, so memory is bounded by keys with work, not by keys ever seen.
    """

    def __init__(
        self,
        apply: Callable[[K, W], Awaitable[None]],
        *,
        nursery: trio.Nursery,
        delay: float,
        retry: RetryPolicy,
        applied_floor: Callable[[K], int] | None,
        rng: random.Random,
    ) -> None:
        self._apply = apply
        self._nursery = nursery
        self._delay = delay
        self._retry = retry
        self._applied_floor = applied_floor
        self._rng = rng
        self._slots: dict[K, Slot[K, W]] = {}
        self._counter = itertools.count(1)
        self._closing = False
        self._closed = False
        self._activity = trio.Event()
        self._submits = self._applies = self._merged = self._retries = 0
        self._failures = self._discards = self._live_actors = self._largest_backlog = 0

    # -- feeding ------------------------------------------------------------------------

    def submit(
        self,
        key: K,
        work: W,
        *,
        urgent: bool = False,
        generation: int | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> int:
        """Queue ``work`` for ``key`` and return its generation. Sync; never blocks.

        The work merges into the key's pending slot (O(1) memory per key) and the key's
        actor is started if it is not running. ``urgent`` work skips the coalescing window.
        Generations increase per key: by default they come from a pool-wide counter (so they
        stay increasing after an idle key's actor retires); a caller with its own ordering,
        such as a log sequence number, passes ``generation=`` explicitly, larger than the
        key's last. The submitter's ``structlog.contextvars`` travel with the work (or
        ``context``, when the caller captured the originator's context earlier; the pool
        keeps that mapping as is, so it must not change afterwards).

        Raises :class:`PoolClosedError` once shutdown has begun, ``ValueError`` for a
        generation that does not increase.
        """
        if self._closing:
            raise PoolClosedError("the pool is shutting down")
        slot = self._slots.get(key)
        if generation is None:
            generation = next(self._counter)
            if slot is None:
                slot = self._new_slot(key, generation - 1)
            elif generation <= slot.generation:
                # The key's last generation was explicit and ran ahead of the counter.
                generation = slot.generation + 1
        else:
            last = slot.generation if slot is not None else self._floor(key)
            if generation <= last:
                raise ValueError(f"generation {generation} for key {key!r} does not exceed {last}")
            if slot is None:
                slot = self._new_slot(key, last)
        trace = structlog.contextvars.get_contextvars() if context is None else context
        now = trio.current_time() if slot.pending is None else 0.0  # (only a new batch's)
        self._merged += slot.put(work, generation, now, urgent, trace)
        self._queued(slot, urgent)
        return generation

    def _queued(self, slot: Slot[K, W], urgent: bool) -> None:
        """Work was just queued in ``slot``: count it and make sure an actor will apply it."""
        self._submits += 1
        if urgent:
            slot.wake.set()
        slot.parked = False
        self._ensure_actor(slot)

    def _floor(self, key: K) -> int:
        return self._applied_floor(key) if self._applied_floor else 0

    def _new_slot(self, key: K, applied: int) -> Slot[K, W]:
        slot: Slot[K, W] = Slot(key, applied)
        self._slots[key] = slot
        return slot

    def _ensure_actor(self, slot: Slot[K, W]) -> None:
        if not slot.actor_running and slot.pending is not None and not slot.parked:
            slot.actor_running = True
            self._live_actors += 1
            self._nursery.start_soon(self._actor, slot, name=f"actor {slot.key!r}")

    # -- barriers -----------------------------------------------------------------------

    async def wait(self, key: K, generation: int | None = None) -> None:
        """Block until work for ``key`` through ``generation`` is applied.

        ``None`` means the generation current at the call: later submits are not waited
        for. A key with no live state has nothing pending and returns at once. If the key's
        work is parked after a failure, the barrier starts another round of attempts.

        Raises :class:`WorkFailedError` (cause: the last attempt's error) if an attempt that
        covered ``generation`` fails for good while this barrier waits; a failure superseded
        by a later successful attempt covering it does not. Raises
        :class:`WorkDiscardedError` if the work was discarded, :class:`PoolClosedError` if
        the pool shut down first, ``ValueError`` for a generation beyond the key's last.
        Cancelling a waiting barrier affects nothing else.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        slot = self._slots.get(key)
        if slot is None:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        target = slot.generation if generation is None else generation
        if target > slot.generation:
            raise ValueError(
                f"generation {target} for key {key!r} not submitted yet (last is {slot.generation})"
            )
        await self._wait_slot(slot, target)

    async def _wait_slot(self, slot: Slot[K, W], target: int) -> None:
        key = slot.key
        epoch = slot.failure_epoch
        if slot.parked and slot.applied < target and not self._closing:
            slot.parked = False
            self._ensure_actor(slot)
        pending = slot.pending
        if (
            pending is not None
            and not pending.urgent
            and slot.applied < target
            and slot.in_flight < target
        ):
            # Someone waits for this work: it skips the rest of its coalescing window.
            pending.urgent = True
            slot.wake.set()
        while True:
            if slot.applied >= target:
                break
            if slot.discarded >= target:
                raise WorkDiscardedError(key, target)
            failure = slot.failure
            if slot.failure_epoch > epoch and failure is not None and failure.through >= target:
                raise WorkFailedError(key, target, failure.attempts) from failure.error
            if self._closed or (self._closing and slot.parked):
                raise PoolClosedError(f"pool shut down before generation {target} of {key!r}")
            await slot.changed()
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def wait_all(self) -> None:
        """Block until every key submitted before the call has applied its work.

        Failures and discards are not raised here (use :meth:`wait` per key for those); a
        key parked after a failure is retried once more, and counts as done if that fails.
        """
        await trio.lowlevel.checkpoint()
        # Wait on the slots themselves: a key that retires meanwhile and gets new work is a
        # new slot with generations of its own. Slots already through their target are
        # skipped without a checkpoint each (O(keys) work, not O(keys) reschedules).
        targets = [(slot, slot.generation) for slot in self._slots.values()]
        for slot, target in targets:
            if slot.applied >= target or slot.discarded >= target:
                continue
            try:
                await self._wait_slot(slot, target)
            except (WorkFailedError, WorkDiscardedError):
                continue

    # -- discard ------------------------------------------------------------------------

    async def discard(self, key: K) -> None:
        """Drop ``key``'s queued work and fail its waiting barriers with WorkDiscardedError.

        Waits for an apply already running (it is not interrupted; if it succeeds, barriers
        it covers return normally), stops any further retries, and forgets work kept after a
        failure. Idempotent. The discard takes effect at the call even if the caller is then
        cancelled while it waits for the running apply: the actor settles it.
        """
        slot = self._slots.get(key)
        if slot is None:
            await trio.lowlevel.checkpoint()
            return
        through = slot.generation
        self._discards += 1
        slot.pending = None
        slot.parked = False
        slot.failure = None
        slot.discard_serial += 1
        if slot.backoff is not None:
            slot.backoff.cancel()
        slot.wake.set()
        if slot.in_flight:
            slot.discard_request = max(slot.discard_request, through)
            log.debug("worker.discard_deferred", key=key, generation=through)
            while slot.discarded < through:
                await slot.changed()
        else:
            self._settle_discard(slot, through)
        self._maybe_retire(slot)
        await trio.lowlevel.checkpoint()

    def restore(self, key: K, work: W, generation: int, *, urgent: bool = False) -> None:
        """Take a :meth:`discard` back: queue ``work`` for everything through ``generation``.

        For a caller whose operation after the discard did not happen (a delete whose write
        failed). ``work`` must stand for all of the key's work through ``generation`` (what
        the discard dropped included); it goes ahead of anything submitted since, and
        barriers for the discarded generations wait for it instead of raising
        :class:`WorkDiscardedError`. Nothing to do if the key has applied ``generation``.
        Sync; never blocks. Raises :class:`PoolClosedError` once shutdown has begun.
        """
        if self._closing:
            raise PoolClosedError("the pool is shutting down")
        slot = self._slots.get(key)
        if slot is None:
            floor = self._floor(key)
            if generation <= floor:
                return
            slot = self._new_slot(key, floor)
        elif generation <= slot.applied:
            return
        through = max(generation, slot.generation)
        trace = structlog.contextvars.get_contextvars()
        batch: Batch[W] = Batch(
            work=work,
            through=through,
            submits=1,
            since=trio.current_time(),
            urgent=urgent,
            traces=[trace],
        )
        slot.keep(batch)  # (absorbs work submitted since the discard, which comes later)
        assert slot.pending is not None
        slot.pending.through = slot.generation = through
        slot.discarded = 0
        self._queued(slot, urgent)
        log.debug("worker.restored", key=key, generation=through)

    def _settle_discard(self, slot: Slot[K, W], through: int) -> None:
        slot.discard_request = 0
        slot.discarded = max(slot.discarded, through)
        log.debug("worker.discarded", key=slot.key, generation=through)
        slot.notify()

    # -- the actor ----------------------------------------------------------------------

    async def _actor(self, slot: Slot[K, W]) -> None:  # noqa: ASYNC910 - a spawned task; it checkpoints in each apply
        # The task was spawned from a submitter's context: forget its bindings.
        structlog.contextvars.clear_contextvars()
        try:
            while slot.pending is not None and not slot.parked:
                deadline = slot.pending.since + self._delay
                if not slot.pending.urgent and not self._closing and trio.current_time() < deadline:
                    # Coalescing window: wait for more work, an urgent submit or shutdown.
                    with trio.move_on_at(deadline):
                        await slot.wake.wait()
                    slot.wake = trio.Event()
                    continue  # re-check: the window ended, urgent work came, or a discard
                slot.wake = trio.Event()
                await self._run(slot, slot.take())
        finally:
            slot.actor_running = False
            self._live_actors -= 1
            self._maybe_retire(slot)
            self._poke()

    async def _run(self, slot: Slot[K, W], batch: Batch[W]) -> None:
        """Apply one batch with retries; afterwards the batch is applied, kept or dropped."""
        self._largest_backlog = max(self._largest_backlog, batch.submits)
        serial = slot.discard_serial
        attempt = 0
        while True:
            attempt += 1
            slot.in_flight = batch.through
            error = await self._attempt(slot, batch, attempt, serial)
            slot.in_flight = 0
            if error is None:
                self._applies += 1
                slot.applied = max(slot.applied, batch.through)
                slot.failure = None
            if slot.discard_request:
                self._settle_discard(slot, slot.discard_request)
            if error is None:
                slot.notify()
                return
            if slot.discard_serial != serial:
                return  # discarded while running: drop the work
            if not self._retry.should_retry(error, attempt):
                self._fail(slot, batch, error, attempt)
                return
            self._retries += 1
            delay = self._retry.delay(attempt, self._rng)
            with structlog.contextvars.bound_contextvars(**_trace_context(batch)):
                log.warning(
                    "worker.retry",
                    key=slot.key,
                    generation=batch.through,
                    attempt=attempt,
                    delay_s=round(delay, 4),
                    error=repr(error),
                )
            with trio.CancelScope() as slot.backoff:
                await trio.sleep(delay)
            slot.backoff = None
            if slot.discard_serial != serial:
                return
            if slot.pending is not None:
                batch.absorb(slot.take())  # the retry covers what queued meanwhile

    async def _attempt(
        self, slot: Slot[K, W], batch: Batch[W], attempt: int, serial: int
    ) -> Exception | None:
        # (bind + reset rather than ``bound_contextvars``: this runs once per apply)
        tokens = structlog.contextvars.bind_contextvars(**_trace_context(batch))
        try:
            log.debug("worker.apply", key=slot.key, generation=batch.through, attempt=attempt)
            try:
                await self._apply(slot.key, batch.work)
            except Exception as exc:
                return exc  # noqa: ASYNC910 - the caller checkpoints between attempts
            except BaseException:
                # Cancelled (shutdown past its deadline) or KeyboardInterrupt: keep the work
                # so the shutdown report names the key, then let it propagate.
                slot.in_flight = 0
                if slot.discard_serial == serial:
                    slot.keep(batch)
                if slot.discard_request:
                    # A discard is waiting for this attempt: it is over, so settle it.
                    self._settle_discard(slot, slot.discard_request)
                raise
        finally:
            structlog.contextvars.reset_contextvars(**tokens)
        return None

    def _fail(self, slot: Slot[K, W], batch: Batch[W], error: Exception, attempts: int) -> None:
        self._failures += 1
        slot.failure = Failure(through=batch.through, error=error, attempts=attempts)
        slot.failure_epoch += 1
        newer = slot.pending is not None
        slot.keep(batch)
        # Work submitted while the failing attempt ran counts as "the next submit": go on.
        slot.parked = not newer
        with structlog.contextvars.bound_contextvars(**_trace_context(batch)):
            log.error(
                "worker.failed",
                key=slot.key,
                generation=batch.through,
                attempts=attempts,
                error=repr(error),
                kept=True,
            )
        slot.notify()

    def _maybe_retire(self, slot: Slot[K, W]) -> None:
        if not slot.busy and not slot.parked and self._slots.get(slot.key) is slot:
            del self._slots[slot.key]

    def _poke(self) -> None:
        """Wake shutdown's drain loop: some actor finished a batch or stopped."""
        self._activity.set()
        self._activity = trio.Event()

    # -- periodic retry and shutdown ----------------------------------------------------

    def retry_parked(self) -> int:
        """Restart every key whose work is parked after a failure. Returns how many."""
        if self._closed:
            return 0  # the actors' nursery is gone: nothing can run any more
        parked = [slot for slot in self._slots.values() if slot.parked]
        for slot in parked:
            slot.parked = False
            self._ensure_actor(slot)
        return len(parked)

    async def _retry_loop(self, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            if self.retry_parked():
                log.info("worker.periodic_retry")

    async def shutdown(self, grace: float) -> ShutdownReport:
        """Refuse new work, drain under a deadline, then cancel the actors.

        Every queued batch is applied at once (coalescing windows are cut short) and work
        parked after a failure gets one more round. After ``grace`` seconds the actors are
        cancelled; keys that still had work are listed in the report. Barriers that can no
        longer be satisfied raise :class:`PoolClosedError`. Idempotent. Runs to completion
        even if the caller is cancelled (the drain is shielded, bounded by ``grace``).
        """
        with trio.CancelScope(shield=True):
            if self._closed:
                await trio.lowlevel.checkpoint()
                return ShutdownReport(leftover=(), timed_out=False)
            self._closing = True
            self.retry_parked()
            for slot in self._slots.values():
                slot.wake.set()
            with trio.move_on_after(grace) as scope:
                while any(s.actor_running for s in self._slots.values()):
                    await self._activity.wait()
            timed_out = scope.cancelled_caught
            leftover = tuple(k for k, s in self._slots.items() if s.busy or s.parked)
            self._closed = True
            self._nursery.cancel_scope.cancel()
            for slot in list(self._slots.values()):
                slot.notify()
            log.info(
                "pool.shutdown",
                leftover=len(leftover),
                timed_out=timed_out,
                applies=self._applies,
            )
            await trio.lowlevel.checkpoint()
        return ShutdownReport(leftover=leftover, timed_out=timed_out)

    # -- introspection ------------------------------------------------------------------

    @property
    def closing(self) -> bool:
        """True once shutdown has begun."""
        return self._closing

    def generation(self, key: K) -> int:
        """The key's last generation: submitted (and not retired), or its applied floor.
        Sync. (A caller with its own ordering submits only generations beyond it.)"""
        slot = self._slots.get(key)
        return slot.generation if slot is not None else self._floor(key)

    def lag(self, key: K) -> int:
        """Generations submitted for ``key`` but not applied (0 for a key with no state)."""
        slot = self._slots.get(key)
        return 0 if slot is None else slot.lag

    def pending_keys(self) -> list[K]:
        """Keys with work queued, running, or kept after a failure."""
        return [k for k, s in self._slots.items() if s.busy or s.parked]

    def statistics(self) -> PoolStatistics:
        """A snapshot of the counters; O(live keys)."""
        lags = [s.lag for s in self._slots.values()]
        return PoolStatistics(
            submits=self._submits,
            applies=self._applies,
            merged_submits=self._merged,
            retries=self._retries,
            failures=self._failures,
            discards=self._discards,
            live_actors=self._live_actors,
            live_keys=len(self._slots),
            pending_keys=sum(1 for s in self._slots.values() if s.busy or s.parked),
            max_lag=max(lags, default=0),
            largest_backlog=self._largest_backlog,
        )


def _trace_context(batch: Batch[Any]) -> dict[str, Any]:
    """The structlog context of a batch's events: its submitter's context (for merged work,
    the list of submitters' ``trace_parent``s) plus how long the work has been queued."""
    context: dict[str, Any]
    if batch.submits == 1:
        context = dict(batch.traces[0])
    else:
        parents = [t["trace_parent"] for t in batch.traces if "trace_parent" in t]
        context = {"trace_parent": parents, "merged": batch.submits}
    context["queue_age_ms"] = round((trio.current_time() - batch.since) * 1000, 3)
    return context


@asynccontextmanager
async def open_pool(
    apply: Callable[[K, W], Awaitable[None]],
    *,
    delay: float = 0.0,
    retry: RetryPolicy | None = None,
    shutdown_timeout: float = 5.0,
    retry_interval: float | None = None,
    applied_floor: Callable[[K], int] | None = None,
    rng: random.Random | None = None,
) -> AsyncIterator[ActorPool[K, W]]:
    """Open an :class:`ActorPool` whose actors run in a nursery this context owns.

    ``apply(key, work)`` is awaited by the key's actor; an ``Exception`` from it is retried
    per ``retry``. ``delay`` is the coalescing window for ordinary (non-urgent) work.
    ``retry_interval`` restarts work parked after a failure every so many seconds.
    ``applied_floor(key)`` tells, for explicit generations, what a key with no live state
    has already applied (default 0). Leaving the block shuts the pool down with
    ``shutdown_timeout`` unless :meth:`ActorPool.shutdown` was called already.
    """
    if delay < 0:
        raise ValueError(f"delay must be >= 0, not {delay!r}")
    try:
        async with trio.open_nursery() as outer:
            # The actors get a nursery of their own: shutdown cancels it, and cancelling
            # the nursery that runs the caller's ``async with`` body would cut it short.
            nursery: trio.Nursery = await outer.start(_actor_nursery)
            pool: ActorPool[K, W] = ActorPool(
                apply,
                nursery=nursery,
                delay=delay,
                retry=retry or RetryPolicy(),
                applied_floor=applied_floor,
                rng=rng or random.Random(),
            )
            if retry_interval is not None:
                nursery.start_soon(pool._retry_loop, retry_interval)
            try:
                yield pool
            finally:
                await pool.shutdown(shutdown_timeout)
    except BaseExceptionGroup as group:
        # Only the body and the shutdown can fail here, one at a time: re-raise the error
        # itself so ``except KeyboardInterrupt`` / ``except SomeError`` around the block work.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


async def _actor_nursery(*, task_status: trio.TaskStatus[trio.Nursery]) -> None:
    # Shielded: cancelling a scope around the pool must not cut the drain short (queued
    # work is applied on the way out); shutdown() cancels this nursery itself once the
    # drain is over or its deadline has passed.
    with trio.CancelScope(shield=True):
        async with trio.open_nursery() as nursery:
            task_status.started(nursery)
            await trio.sleep_forever()
