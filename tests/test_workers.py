"""The keyed actor pool in ``workers``: coalescing, barriers, retries, discard, shutdown.

Every test drives the pool through an ``apply`` the test controls (:class:`Gate`): it records
what each call received, and blocks each call until the test releases it, with success or with
an error. Concurrency is ordered with ``wait_all_tasks_blocked`` and time is the MockClock's.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs
import pytest
import structlog
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked as settle

from workers import (
    ActorPool,
    PoolClosedError,
    PoolStatistics,
    RetryPolicy,
    ShutdownReport,
    WorkDiscardedError,
    WorkersError,
    WorkFailedError,
    always_retry,
    open_pool,
)

# -- helpers --------------------------------------------------------------------------------


@attrs.frozen
class Log:
    """Work for tests: merging concatenates, so each apply shows exactly what it covered."""

    entries: tuple[str, ...]

    def merge(self, other: Log, /) -> Log:
        return Log(self.entries + other.entries)


def w(*entries: str) -> Log:
    return Log(entries)


@attrs.define(eq=False)
class Call:
    """One call of the gated apply."""

    key: str
    work: Log
    at: float
    context: dict[str, Any]
    state: str = "running"  # running -> applied | failed | cancelled
    error: Exception | None = None
    released: trio.Event = attrs.field(factory=trio.Event)

    def release(self, error: Exception | None = None) -> None:
        self.error = error
        self.released.set()


class Gate:
    """An apply the test drives. Holding: each call blocks until released. Not holding: each
    call returns at once, raising the next scripted error if there is one."""

    def __init__(self, *, hold: bool = True, errors: tuple[Exception, ...] = ()) -> None:
        self.hold = hold
        self.errors = list(errors)
        self.calls: list[Call] = []

    async def __call__(self, key: str, work: Log) -> None:
        call = Call(
            key=key,
            work=work,
            at=trio.current_time(),
            context=structlog.contextvars.get_contextvars(),
        )
        self.calls.append(call)
        try:
            if self.hold:
                await call.released.wait()
            else:
                if self.errors:
                    call.error = self.errors.pop(0)
                await trio.lowlevel.checkpoint()
        except trio.Cancelled:
            call.state = "cancelled"
            raise
        if call.error is not None:
            call.state = "failed"
            raise call.error
        call.state = "applied"

    def works(self, key: str | None = None) -> list[tuple[str, ...]]:
        """What every call received, in call order."""
        return [c.work.entries for c in self.calls if key is None or c.key == key]

    def applied(self, key: str | None = None) -> list[tuple[str, ...]]:
        """What the successful calls received, in call order."""
        return [
            c.work.entries
            for c in self.calls
            if c.state == "applied" and (key is None or c.key == key)
        ]


@attrs.define(eq=False)
class Barrier:
    """Outcome of a ``pool.wait`` running in the background."""

    done: bool = False
    error: BaseException | None = None
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)


def start_barrier(
    nursery: trio.Nursery, pool: ActorPool[str, Log], key: str, generation: int | None = None
) -> Barrier:
    barrier = Barrier()

    async def run() -> None:  # noqa: ASYNC910 - test apply
        try:
            await pool.wait(key, generation)
        except WorkersError as exc:
            barrier.error = exc
        barrier.done = True

    nursery.start_soon(run)
    return barrier


def start_discard(nursery: trio.Nursery, pool: ActorPool[str, Log], key: str) -> Barrier:
    """Run ``pool.discard`` in the background, in a cancel scope the test can cancel."""
    outcome = Barrier()

    async def run() -> None:
        with outcome.scope:
            await pool.discard(key)
            outcome.done = True

    nursery.start_soon(run)
    return outcome


async def advance(clock: trio.testing.MockClock, seconds: float) -> None:
    """Move virtual time forward and let everything that became due run."""
    clock.jump(seconds)
    await settle()


def stats(pool: ActorPool[str, Log], **expected: int) -> None:
    """Assert the named statistics fields."""
    actual = attrs.asdict(pool.statistics())
    assert {k: actual[k] for k in expected} == expected


# -- submit and coalescing --------------------------------------------------------------------


async def test_submit_returns_while_apply_is_blocked(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate()
    async with open_pool(gate) as pool:
        g1 = pool.submit("k", w("a"))
        await settle()
        assert gate.works() == [("a",)]

        g2 = pool.submit("k", w("b"))  # sync: returns although the apply is blocked

        assert g2 > g1
        assert gate.calls[0].state == "running"
        assert pool.lag("k") == 2
        assert pool.pending_keys() == ["k"]
        assert pool.statistics() == PoolStatistics(
            submits=2,
            applies=0,
            merged_submits=0,
            retries=0,
            failures=0,
            discards=0,
            live_actors=1,
            live_keys=1,
            pending_keys=1,
            max_lag=2,
            largest_backlog=1,
        )

        gate.calls[0].release()
        await settle()
        assert gate.works() == [("a",), ("b",)]
        assert pool.lag("k") == 1
        gate.calls[1].release()
        await pool.wait("k")
        assert gate.applied() == [("a",), ("b",)]
        stats(pool, applies=2, live_actors=0, live_keys=0, pending_keys=0, max_lag=0)
        assert pool.lag("k") == 0
        assert pool.pending_keys() == []


async def test_submits_during_apply_merge_into_one_and_barrier_ignores_later_submits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate()
    async with open_pool(gate) as pool, trio.open_nursery() as nursery:
        pool.submit("k", w("a"))
        await settle()
        barrier = start_barrier(nursery, pool, "k")  # through "a", the generation current now
        await settle()
        for entry in "bcde":
            pool.submit("k", w(entry))

        gate.calls[0].release()
        await settle()

        # The barrier returned while the merged apply of the later submits is still blocked.
        assert barrier.done
        assert barrier.error is None
        assert gate.works() == [("a",), ("b", "c", "d", "e")]
        assert gate.calls[1].state == "running"
        assert pool.lag("k") == 4

        gate.calls[1].release()
        await pool.wait("k")
        assert gate.applied() == [("a",), ("b", "c", "d", "e")]
        stats(pool, submits=5, applies=2, merged_submits=3, largest_backlog=4, live_keys=0)


async def test_keys_are_independent(autojump_clock: trio.testing.MockClock) -> None:
    gate = Gate()
    async with open_pool(gate) as pool:
        pool.submit("x", w("x1"))
        pool.submit("y", w("y1"))
        await settle()
        assert sorted(gate.works()) == [("x1",), ("y1",)]
        stats(pool, live_actors=2, pending_keys=2)
        for call in gate.calls:
            call.release()
        await pool.wait_all()
        stats(pool, applies=2, live_actors=0, live_keys=0)


# -- failures and retries ---------------------------------------------------------------------


async def test_failure_superseded_by_queued_generation_does_not_fail_its_barrier(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate()
    async with (
        open_pool(gate, retry=RetryPolicy(attempts=1)) as pool,
        trio.open_nursery() as nursery,
    ):
        g1 = pool.submit("k", w("a"))
        await settle()
        first = start_barrier(nursery, pool, "k", g1)
        g2 = pool.submit("k", w("b"))
        second = start_barrier(nursery, pool, "k", g2)
        await settle()

        boom = OSError("disk busy")
        gate.calls[0].release(boom)
        await settle()

        assert isinstance(first.error, WorkFailedError)
        assert first.error.__cause__ is boom
        assert (first.error.key, first.error.generation, first.error.attempts) == ("k", g1, 1)
        assert not second.done
        # The next apply covers the failed work and what queued behind it.
        assert gate.works() == [("a",), ("a", "b")]

        gate.calls[1].release()
        await settle()
        assert second.done
        assert second.error is None
        stats(pool, failures=1, applies=1, retries=0, pending_keys=0)


async def test_transient_error_is_retried_and_the_retry_covers_work_queued_meanwhile(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate()
    policy = RetryPolicy(attempts=3, base_delay=0.5, jitter=0)
    async with open_pool(gate, retry=policy) as pool, trio.open_nursery() as nursery:
        g1 = pool.submit("k", w("a"))
        first = start_barrier(nursery, pool, "k", g1)
        await settle()
        gate.calls[0].release(OSError("transient"))
        await settle()
        stats(pool, retries=1)
        g2 = pool.submit("k", w("b"))  # during the backoff
        second = start_barrier(nursery, pool, "k", g2)
        await settle()
        assert len(gate.calls) == 1

        await advance(autojump_clock, 0.5)
        assert gate.works() == [("a",), ("a", "b")]
        assert gate.calls[1].at - gate.calls[0].at == pytest.approx(0.5)
        gate.calls[1].release()
        await settle()

        assert (first.done, first.error, second.done, second.error) == (True, None, True, None)
        assert gate.applied() == [("a", "b")]
        stats(pool, retries=1, failures=0, applies=1, live_keys=0)


async def test_retries_with_instant_backoff_every_barrier_returns(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate(hold=False, errors=(OSError("transient"),))
    async with open_pool(gate, retry=RetryPolicy(attempts=3)) as pool:
        pool.submit("k", w("a"))
        pool.submit("k", w("b"))
        await pool.wait("k")
        assert gate.works() == [("a", "b"), ("a", "b")]
        assert gate.applied() == [("a", "b")]
        stats(pool, retries=1, failures=0, applies=1)


async def test_exhausted_failure_fails_covering_barrier_and_keeps_the_work(
    autojump_clock: trio.testing.MockClock,
) -> None:
    errors = (OSError("one"), OSError("two"))
    gate = Gate(hold=False, errors=errors)
    async with open_pool(gate, retry=RetryPolicy(attempts=2, jitter=0)) as pool:
        g = pool.submit("k", w("a"))
        with pytest.raises(WorkFailedError) as info:
            await pool.wait("k")
        assert info.value.__cause__ is errors[1]
        assert (info.value.generation, info.value.attempts) == (g, 2)
        assert pool.pending_keys() == ["k"]
        assert pool.lag("k") == 1
        stats(pool, failures=1, retries=1, applies=0, live_actors=0, live_keys=1, pending_keys=1)

        # A later barrier starts another round; the apply receives the kept work.
        await pool.wait("k")
        assert gate.works() == [("a",), ("a",), ("a",)]
        assert gate.applied() == [("a",)]
        assert pool.pending_keys() == []
        stats(pool, failures=1, applies=1, live_keys=0)


async def test_later_submit_restarts_parked_work(autojump_clock: trio.testing.MockClock) -> None:
    gate = Gate(hold=False, errors=(OSError("down"),))
    async with open_pool(gate, retry=RetryPolicy(attempts=1)) as pool:
        pool.submit("k", w("a"))
        with pytest.raises(WorkFailedError):
            await pool.wait("k")
        await settle()
        assert len(gate.calls) == 1  # parked: nothing retries on its own

        pool.submit("k", w("b"))
        await pool.wait("k")
        assert gate.works() == [("a",), ("a", "b")]
        assert gate.applied() == [("a", "b")]
        stats(pool, failures=1, applies=1, live_keys=0)


async def test_failure_while_newer_work_waits_goes_on_without_parking(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate()
    async with open_pool(gate, retry=RetryPolicy(attempts=1)) as pool:
        pool.submit("k", w("a"))
        await settle()
        pool.submit("k", w("b"))
        gate.calls[0].release(OSError("down"))
        await settle()
        # Newer work counts as the next submit: the kept work is retried with it at once.
        assert gate.works() == [("a",), ("a", "b")]
        gate.calls[1].release()
        await pool.wait("k")
        assert gate.applied() == [("a", "b")]


async def test_retry_interval_restarts_parked_work(autojump_clock: trio.testing.MockClock) -> None:
    gate = Gate(hold=False, errors=(OSError("down"), OSError("still down")))
    async with open_pool(gate, retry=RetryPolicy(attempts=1), retry_interval=10.0) as pool:
        start = trio.current_time()
        pool.submit("k", w("a"))
        await settle()
        assert gate.works() == [("a",)]
        assert pool.pending_keys() == ["k"]

        await advance(autojump_clock, 10.0)
        assert gate.works() == [("a",), ("a",)]
        await advance(autojump_clock, 10.0)
        assert gate.works() == [("a",), ("a",), ("a",)]
        assert gate.applied() == [("a",)]
        assert [c.at - start for c in gate.calls] == pytest.approx([0.0, 10.0, 20.0])
        assert pool.pending_keys() == []
        stats(pool, failures=2, applies=1, live_keys=0)

        # Nothing parked: the periodic retry has nothing to do.
        await advance(autojump_clock, 10.0)
        assert len(gate.calls) == 3
        assert pool.retry_parked() == 0


async def test_retry_parked_restarts_and_counts(autojump_clock: trio.testing.MockClock) -> None:
    gate = Gate(hold=False, errors=(OSError("x"), OSError("y")))
    async with open_pool(gate, retry=RetryPolicy(attempts=1)) as pool:
        pool.submit("x", w("x1"))
        pool.submit("y", w("y1"))
        await settle()
        assert sorted(pool.pending_keys()) == ["x", "y"]
        assert pool.retry_parked() == 2
        await settle()
        assert sorted(gate.applied()) == [("x1",), ("y1",)]
        assert pool.pending_keys() == []


async def test_non_retryable_error_fails_after_one_attempt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bad = ValueError("malformed")
    gate = Gate(hold=False, errors=(bad,))
    policy = RetryPolicy(attempts=5, retryable=lambda exc: not isinstance(exc, ValueError))
    async with open_pool(gate, retry=policy) as pool:
        pool.submit("k", w("a"))
        with pytest.raises(WorkFailedError) as info:
            await pool.wait("k")
        assert info.value.attempts == 1
        assert info.value.__cause__ is bad
        assert len(gate.calls) == 1
        stats(pool, retries=0, failures=1)


async def test_failure_before_barrier_started_does_not_fail_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate()
    async with open_pool(gate, retry=RetryPolicy(attempts=1)) as pool:
        pool.submit("k", w("a"))
        await settle()
        pool.submit("k", w("b"))
        gate.calls[0].release(OSError("old news"))
        await settle()
        # The failure happened before this barrier: it waits for the attempt now running.
        async with trio.open_nursery() as nursery:
            barrier = start_barrier(nursery, pool, "k")
            await settle()
            assert not barrier.done
            gate.calls[1].release()
        assert (barrier.done, barrier.error) == (True, None)


async def test_wait_all_skips_failed_and_discarded_keys(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate()
    async with open_pool(gate, retry=RetryPolicy(attempts=1)) as pool:
        pool.submit("bad", w("b1"))
        pool.submit("good", w("g1"))
        pool.submit("gone", w("x1"))
        await settle()
        pool.submit("gone", w("x2"))
        calls = {c.key: c for c in gate.calls}
        finished = Barrier()

        async def run_wait_all() -> None:
            await pool.wait_all()
            finished.done = True

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_wait_all)
            await settle()
            calls["bad"].release(OSError("no"))
            calls["good"].release()
            await settle()
            assert not finished.done  # "gone" is still running
            start_discard(nursery, pool, "gone")
            await settle()
            calls["gone"].release()
        assert finished.done
        assert sorted(gate.applied()) == [("g1",), ("x1",)]
        assert pool.pending_keys() == ["bad"]
        await pool.discard("bad")


# -- explicit generations ---------------------------------------------------------------------


async def test_explicit_generations_must_increase(autojump_clock: trio.testing.MockClock) -> None:
    gate = Gate(hold=False)
    async with open_pool(gate, delay=1.0) as pool:
        assert pool.submit("k", w("a"), generation=10) == 10
        for stale in (10, 3):
            with pytest.raises(ValueError, match="does not exceed 10"):
                pool.submit("k", w("stale"), generation=stale)
        assert pool.submit("k", w("b"), generation=12) == 12
        with pytest.raises(ValueError, match="not submitted yet"):
            await pool.wait("k", 13)
        await pool.wait("k", 11)
        assert gate.applied() == [("a", "b")]
        stats(pool, submits=2, applies=1)
        # A key with no live state has nothing to wait for.
        await pool.wait("k", 99)


async def test_default_generation_after_explicit_ones_still_increases(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate()
    async with open_pool(gate) as pool:
        assert pool.submit("k", w("a"), generation=100) == 100
        await settle()
        g = pool.submit("k", w("b"))
        assert g == 101  # not the pool-wide counter's 1, which would go backwards
        gate.calls[0].release()
        await settle()
        gate.calls[1].release()
        await pool.wait("k", g)
        assert gate.applied() == [("a",), ("b",)]


async def test_applied_floor_sets_the_watermark_of_a_new_key(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate()
    floors = {"k": 7}
    async with open_pool(gate, applied_floor=lambda key: floors.get(key, 0)) as pool:
        assert pool.submit("k", w("8-10"), generation=10) == 10
        assert pool.lag("k") == 3
        await pool.wait("k", 7)  # already applied before the pool saw the key
        async with trio.open_nursery() as nursery:
            barrier = start_barrier(nursery, pool, "k", 8)
            await settle()
            assert not barrier.done
            gate.calls[0].release()
        assert (barrier.done, barrier.error) == (True, None)
        assert gate.applied() == [("8-10",)]


async def test_applied_floor_rejects_generation_already_applied(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate()
    async with open_pool(gate, applied_floor=lambda key: 7) as pool:
        for stale in (7, 5):
            with pytest.raises(ValueError, match="does not exceed 7"):
                pool.submit("k", w("old"), generation=stale)
        await settle()
        assert gate.calls == []
        stats(pool, submits=0, live_keys=0)


# -- coalescing window and urgent work --------------------------------------------------------


async def test_delay_window_coalesces_submits_into_one_apply(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate(hold=False)
    async with open_pool(gate, delay=1.0) as pool:
        start = trio.current_time()
        pool.submit("k", w("a"))
        await advance(autojump_clock, 0.2)
        pool.submit("k", w("b"))
        await advance(autojump_clock, 0.3)
        pool.submit("k", w("c"))
        await settle()
        assert gate.calls == []

        await advance(autojump_clock, 0.5)  # to the end of the window, exactly
        assert gate.works() == [("a", "b", "c")]
        assert gate.calls[0].at - start == pytest.approx(1.0)
        stats(pool, applies=1, merged_submits=2)


async def test_a_barrier_cuts_the_window_short(autojump_clock: trio.testing.MockClock) -> None:
    """Someone waiting for the work is reason enough to apply it now."""
    gate = Gate(hold=False)
    async with open_pool(gate, delay=10.0) as pool:
        start = trio.current_time()
        pool.submit("k", w("a"))
        await advance(autojump_clock, 0.5)
        generation = pool.submit("k", w("b"))
        await pool.wait("k", generation)
        assert gate.works() == [("a", "b")]
        assert gate.calls[0].at - start == pytest.approx(0.5)

        # Work submitted after the barrier's generation keeps its window.
        pool.submit("k", w("c"))
        await pool.wait("k", generation)
        await advance(autojump_clock, 5.0)
        assert len(gate.calls) == 1
        await advance(autojump_clock, 5.0)
        assert gate.works() == [("a", "b"), ("c",)]


async def test_urgent_submit_skips_the_window_and_takes_earlier_work(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate(hold=False)
    async with open_pool(gate, delay=1.0) as pool:
        start = trio.current_time()
        pool.submit("k", w("a"))
        await advance(autojump_clock, 0.2)
        pool.submit("k", w("b"))
        await advance(autojump_clock, 0.1)
        pool.submit("k", w("urgent"), urgent=True)
        await settle()
        assert gate.works() == [("a", "b", "urgent")]
        assert gate.calls[0].at - start == pytest.approx(0.3)

        # Ordinary work after it waits for its own window again.
        pool.submit("k", w("c"))
        await advance(autojump_clock, 0.5)
        assert len(gate.calls) == 1
        await advance(autojump_clock, 0.5)
        assert gate.works() == [("a", "b", "urgent"), ("c",)]
        assert gate.calls[1].at - start == pytest.approx(1.3)


async def test_first_submit_urgent_applies_at_once(autojump_clock: trio.testing.MockClock) -> None:
    gate = Gate(hold=False)
    async with open_pool(gate, delay=5.0) as pool:
        start = trio.current_time()
        pool.submit("k", w("a"), urgent=True)
        await settle()
        assert gate.works() == [("a",)]
        assert gate.calls[0].at == start


async def test_negative_delay_is_rejected() -> None:
    with pytest.raises(ValueError, match="delay must be >= 0"):
        async with open_pool(Gate(), delay=-0.5):
            pass  # pragma: no cover


# -- shutdown ---------------------------------------------------------------------------------


async def test_shutdown_applies_queued_work_and_refuses_new_work(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate(hold=False)
    reached_after_shutdown = False
    async with open_pool(gate, delay=10.0) as pool:
        start = trio.current_time()
        pool.submit("x", w("x1"))
        pool.submit("x", w("x2"))
        pool.submit("y", w("y1"))
        await settle()
        assert gate.calls == []  # inside the coalescing window

        report = await pool.shutdown(5.0)

        assert report == ShutdownReport(leftover=(), timed_out=False)
        assert pool.closing
        assert sorted(gate.applied()) == [("x1", "x2"), ("y1",)]
        assert all(c.at == start for c in gate.calls)  # the window was cut short
        with pytest.raises(PoolClosedError):
            pool.submit("x", w("late"))
        # The block goes on running after shutdown returns.
        await pool.wait("x")
        await trio.lowlevel.checkpoint()
        assert await pool.shutdown(5.0) == ShutdownReport(leftover=(), timed_out=False)
        reached_after_shutdown = True
    assert reached_after_shutdown
    stats(pool, applies=2, live_actors=0, live_keys=0)


async def test_shutdown_past_deadline_reports_leftover_and_fails_barriers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate()
    async with open_pool(gate, shutdown_timeout=1.0) as pool, trio.open_nursery() as nursery:
        pool.submit("stuck", w("s1"))
        pool.submit("fine", w("f1"))
        await settle()
        pool.submit("stuck", w("s2"))
        barrier = start_barrier(nursery, pool, "stuck")
        next(c for c in gate.calls if c.key == "fine").release()
        await settle()

        report = await pool.shutdown(1.0)
        await settle()

        assert report == ShutdownReport(leftover=("stuck",), timed_out=True)
        assert isinstance(barrier.error, PoolClosedError)
        assert next(c for c in gate.calls if c.key == "stuck").state == "cancelled"
        assert gate.applied() == [("f1",)]
        assert pool.pending_keys() == ["stuck"]
        with pytest.raises(PoolClosedError):
            await pool.wait("stuck")
        await pool.wait("fine")


async def test_shutdown_gives_parked_work_one_more_round(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate(hold=False, errors=(OSError("down"),))
    async with open_pool(gate, retry=RetryPolicy(attempts=1)) as pool:
        pool.submit("k", w("a"))
        await settle()
        assert pool.pending_keys() == ["k"]
        report = await pool.shutdown(5.0)
        assert report == ShutdownReport(leftover=(), timed_out=False)
        assert gate.applied() == [("a",)]


async def test_work_failing_during_shutdown_is_leftover(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate()
    async with open_pool(gate, retry=RetryPolicy(attempts=1)) as pool, trio.open_nursery() as n:
        pool.submit("slow", w("s1"))
        pool.submit("bad", w("b1"))
        await settle()
        calls = {c.key: c for c in gate.calls}
        report: list[ShutdownReport] = []

        async def shut() -> None:
            report.append(await pool.shutdown(10.0))

        n.start_soon(shut)
        await settle()
        calls["bad"].release(OSError("down"))
        await settle()
        # Parked during shutdown: a new barrier can no longer be satisfied.
        with pytest.raises(PoolClosedError):
            await pool.wait("bad")
        calls["slow"].release()
        await settle()
        assert report == [ShutdownReport(leftover=("bad",), timed_out=False)]


async def test_shutdown_completes_when_its_caller_is_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate()
    async with open_pool(gate) as pool:
        pool.submit("k", w("a"))
        await settle()
        with trio.CancelScope() as scope:
            scope.cancel()
            report = await pool.shutdown(2.0)
        await settle()
        assert report == ShutdownReport(leftover=("k",), timed_out=True)
        assert gate.calls[0].state == "cancelled"


async def test_leaving_the_block_shuts_down(autojump_clock: trio.testing.MockClock) -> None:
    gate = Gate(hold=False)
    async with open_pool(gate, delay=60.0) as pool:
        pool.submit("k", w("a"))
    assert pool.closing
    assert gate.applied() == [("a",)]
    with pytest.raises(PoolClosedError):
        pool.submit("k", w("b"))
    assert pool.retry_parked() == 0


# -- discard ----------------------------------------------------------------------------------


async def test_discard_waits_for_in_flight_apply_and_drops_queued_work(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate()
    async with open_pool(gate) as pool, trio.open_nursery() as nursery:
        g1 = pool.submit("k", w("a"))
        await settle()
        g2 = pool.submit("k", w("b"))
        in_flight = start_barrier(nursery, pool, "k", g1)
        queued = start_barrier(nursery, pool, "k", g2)
        discard = start_discard(nursery, pool, "k")
        await settle()
        assert not discard.done  # the running apply is not interrupted

        gate.calls[0].release()
        await settle()

        assert discard.done
        assert (in_flight.done, in_flight.error) == (True, None)
        assert isinstance(queued.error, WorkDiscardedError)
        assert (queued.error.key, queued.error.generation) == ("k", g2)
        assert gate.works() == [("a",)]
        stats(pool, discards=1, applies=1, live_keys=0, live_actors=0)
        assert pool.pending_keys() == []

        # Idempotent: nothing else changes.
        before = pool.statistics()
        await pool.discard("k")
        await pool.discard("never-seen")
        assert pool.statistics() == before
        assert gate.works() == [("a",)]


async def test_discard_in_flight_apply_that_fails_drops_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate()
    async with open_pool(gate) as pool, trio.open_nursery() as nursery:
        g1 = pool.submit("k", w("a"))
        await settle()
        barrier = start_barrier(nursery, pool, "k", g1)
        discard = start_discard(nursery, pool, "k")
        await settle()
        gate.calls[0].release(OSError("down"))
        await settle()
        assert discard.done
        assert isinstance(barrier.error, WorkDiscardedError)
        assert len(gate.calls) == 1  # no retry of discarded work
        stats(pool, retries=0, failures=0, live_keys=0)


async def test_discard_survives_caller_cancellation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate()
    async with open_pool(gate) as pool, trio.open_nursery() as nursery:
        pool.submit("k", w("a"))
        await settle()
        g2 = pool.submit("k", w("b"))
        queued = start_barrier(nursery, pool, "k", g2)
        discard = start_discard(nursery, pool, "k")
        await settle()
        discard.scope.cancel()
        await settle()
        assert not discard.done  # the caller gave up waiting

        gate.calls[0].release()
        await settle()
        assert isinstance(queued.error, WorkDiscardedError)
        assert gate.works() == [("a",)]
        assert pool.pending_keys() == []
        stats(pool, live_keys=0, live_actors=0, applies=1)


async def test_discard_during_backoff_stops_retries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate(hold=False, errors=(OSError("down"),) * 5)
    policy = RetryPolicy(attempts=5, base_delay=1.0, jitter=0)
    async with open_pool(gate, retry=policy) as pool, trio.open_nursery() as nursery:
        g = pool.submit("k", w("a"))
        barrier = start_barrier(nursery, pool, "k", g)
        await settle()
        stats(pool, retries=1)
        await pool.discard("k")
        await settle()
        assert isinstance(barrier.error, WorkDiscardedError)

        await advance(autojump_clock, 100.0)
        assert len(gate.calls) == 1
        stats(pool, retries=1, failures=0, live_actors=0, live_keys=0)


async def test_discard_during_window_and_of_parked_work(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate(hold=False, errors=(OSError("down"),))
    async with open_pool(gate, delay=1.0, retry=RetryPolicy(attempts=1)) as pool:
        pool.submit("win", w("w1"))
        await settle()
        await pool.discard("win")
        pool.submit("parked", w("p1"), urgent=True)
        with pytest.raises(WorkFailedError):
            await pool.wait("parked")
        assert pool.pending_keys() == ["parked"]
        await pool.discard("parked")
        await pool.wait("parked")  # no live state left
        await advance(autojump_clock, 5.0)
        assert gate.works() == [("p1",)]
        assert pool.pending_keys() == []
        stats(pool, discards=2, applies=0, live_keys=0, live_actors=0)


async def test_submit_after_discard_of_running_apply_is_applied(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate()
    async with open_pool(gate) as pool, trio.open_nursery() as nursery:
        pool.submit("k", w("a"))
        await settle()
        pool.submit("k", w("dropped"))
        discard = start_discard(nursery, pool, "k")
        await settle()
        g = pool.submit("k", w("after"))
        gate.calls[0].release(OSError("down"))
        await settle()
        assert discard.done
        assert gate.works() == [("a",), ("after",)]
        gate.calls[1].release()
        await pool.wait("k", g)
        assert gate.applied() == [("after",)]


async def test_restore_takes_a_discard_back(autojump_clock: trio.testing.MockClock) -> None:
    """The operation after a discard did not happen: the caller queues work standing for
    what was dropped, and barriers for those generations wait for it instead of raising."""
    gate = Gate()
    async with open_pool(gate, delay=60.0) as pool, trio.open_nursery() as nursery:
        pool.submit("k", w("a"), generation=1)
        pool.submit("k", w("b"), generation=2)  # both wait in the coalescing window
        await pool.discard("k")
        await settle()  # (the actor retires: the restore starts the key afresh)

        pool.restore("k", w("a+b+c"), 3, urgent=True)  # 3: committed while it was discarded
        assert pool.lag("k") == 3
        barrier = start_barrier(nursery, pool, "k", 2)
        await settle()
        assert not barrier.done  # waits for the restored work: no WorkDiscardedError
        assert gate.works() == [("a+b+c",)]  # urgent: no window
        gate.calls[0].release()
        await settle()
        assert (barrier.done, barrier.error) == (True, None)
        await pool.wait("k", 3)
        assert pool.lag("k") == 0
        stats(pool, discards=1, applies=1)


async def test_restore_goes_ahead_of_work_submitted_since_the_discard(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate()
    async with open_pool(gate, delay=60.0) as pool, trio.open_nursery() as nursery:
        pool.submit("k", w("a"), generation=1)
        await pool.discard("k")
        pool.submit("k", w("c"), generation=3)  # the key is live: its discard is on record
        pool.restore("k", w("a+b"), 2, urgent=True)
        dropped = start_barrier(nursery, pool, "k", 1)
        await settle()
        assert gate.works() == [("a+b", "c")]  # one apply, the restored work first
        assert not dropped.done  # waits for it, instead of raising WorkDiscardedError
        gate.calls[0].release()
        await pool.wait("k", 3)
        await settle()
        assert (dropped.done, dropped.error) == (True, None)
        assert pool.lag("k") == 0


async def test_restore_clears_the_discard_record_of_a_live_key(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate()
    async with open_pool(gate) as pool, trio.open_nursery() as nursery:
        pool.submit("k", w("a"), generation=1)
        await settle()  # "a" is being applied (held)
        pool.submit("k", w("b"), generation=2)
        discard = start_discard(nursery, pool, "k")
        await settle()
        pool.submit("k", w("c"), generation=3)  # after the discard: kept, keeps the key live
        gate.calls[0].release()
        await settle()
        assert discard.done
        assert gate.works() == [("a",), ("c",)]  # "b" was dropped; "c" is being applied
        pool.restore("k", w("b again"), 2)
        barrier = start_barrier(nursery, pool, "k", 2)
        await settle()
        assert not barrier.done  # waits, where the discard record alone would raise
        gate.calls[1].release()
        await settle()
        assert (barrier.done, barrier.error) == (True, None)
        assert gate.works() == [("a",), ("c",), ("b again",)]
        pool.restore("k", w("applied already"), 2)  # the live key has applied 3: nothing
        gate.calls[2].release()
        await pool.wait("k", 3)
        await settle()
        assert gate.works() == [("a",), ("c",), ("b again",)]


async def test_restore_of_applied_or_retired_keys(autojump_clock: trio.testing.MockClock) -> None:
    gate = Gate(hold=False)
    floors = {"old": 5}
    async with open_pool(gate, applied_floor=lambda key: floors.get(key, 0)) as pool:
        pool.restore("old", w("nothing to redo"), 5)  # already applied: nothing queued
        await settle()
        assert gate.calls == []
        assert pool.pending_keys() == []
        # A key with no live state (its actor retired after the discard) starts from its
        # applied floor.
        pool.restore("old", w("6-7"), 7)
        await pool.wait("old", 7)
        assert gate.applied() == [("6-7",)]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pool.shutdown, 1.0)
            await settle()
            with pytest.raises(PoolClosedError):
                pool.restore("late", w("x"), 1)


async def test_discard_completes_when_shutdown_cancels_the_running_apply(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate()
    async with open_pool(gate) as pool, trio.open_nursery() as nursery:
        pool.submit("k", w("a"))
        await settle()
        discard = start_discard(nursery, pool, "k")
        await settle()
        report = await pool.shutdown(1.0)
        await settle()
        assert report.timed_out
        assert gate.calls[0].state == "cancelled"
        assert discard.done
        assert pool.pending_keys() == []


# -- trace context ----------------------------------------------------------------------------


def _apply_events(logs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [e for e in logs if e["event"] == "worker.apply"]


async def test_submitter_trace_reaches_the_apply(autojump_clock: trio.testing.MockClock) -> None:
    gate = Gate(hold=False)
    merge = structlog.contextvars.merge_contextvars
    async with open_pool(gate) as pool:
        with structlog.testing.capture_logs(processors=[merge]) as logs:
            with structlog.contextvars.bound_contextvars(trace_parent="t1", user="alice"):
                pool.submit("k", w("a"))
            await pool.wait("k")
    [event] = _apply_events(logs)
    assert event["trace_parent"] == "t1"
    assert event["user"] == "alice"
    assert event["queue_age_ms"] == 0.0
    assert event["key"] == "k"
    assert "merged" not in event
    assert gate.calls[0].context == {"trace_parent": "t1", "user": "alice", "queue_age_ms": 0.0}


async def test_merged_work_carries_every_trace_parent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate()
    merge = structlog.contextvars.merge_contextvars

    async def submit_as(trace: str, entry: str) -> None:
        structlog.contextvars.bind_contextvars(trace_parent=trace)
        pool.submit("k", w(entry))
        await trio.lowlevel.checkpoint()

    async with open_pool(gate) as pool:
        with structlog.testing.capture_logs(processors=[merge]) as logs:
            async with trio.open_nursery() as nursery:
                for trace, entry in [("t1", "a"), ("t2", "b"), ("t3", "c")]:
                    nursery.start_soon(submit_as, trace, entry)
                    await settle()
            await advance(autojump_clock, 0.25)
            gate.calls[0].release()
            await settle()
            gate.calls[1].release()
            await pool.wait("k")
    first, second = _apply_events(logs)
    assert gate.works() == [("a",), ("b", "c")]
    assert first["trace_parent"] == "t1"
    assert second["trace_parent"] == ["t2", "t3"]
    assert second["merged"] == 2
    assert second["queue_age_ms"] == pytest.approx(250.0)
    assert gate.calls[1].context == {
        "trace_parent": ["t2", "t3"],
        "merged": 2,
        "queue_age_ms": pytest.approx(250.0),
    }


async def test_explicit_context_replaces_the_submitters(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate(hold=False)
    async with open_pool(gate) as pool:
        with structlog.contextvars.bound_contextvars(trace_parent="committer"):
            pool.submit("k", w("a"), context={"trace_parent": "appender"})
        await pool.wait("k")
    assert gate.calls[0].context == {"trace_parent": "appender", "queue_age_ms": 0.0}


async def test_actor_does_not_leak_first_submitters_context(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = Gate()
    merge = structlog.contextvars.merge_contextvars
    policy = RetryPolicy(attempts=2, jitter=0)
    async with open_pool(gate, retry=policy) as pool:
        with structlog.testing.capture_logs(processors=[merge]) as logs:
            with structlog.contextvars.bound_contextvars(trace_parent="t1", user="alice"):
                pool.submit("k", w("a"))  # spawns the actor from alice's context
            await settle()
            with structlog.contextvars.bound_contextvars(trace_parent="t2"):
                pool.submit("k", w("b"))
            gate.calls[0].release()
            await settle()
            gate.calls[1].release(OSError("transient"))
            await settle()
            await advance(autojump_clock, 1.0)
            gate.calls[2].release()
            await pool.wait("k")
    assert gate.works() == [("a",), ("b",), ("b",)]
    assert gate.calls[1].context == {"trace_parent": "t2", "queue_age_ms": 0.0}
    later = [e for e in logs if e["event"] != "worker.apply" or e["trace_parent"] == "t2"]
    assert later
    assert all("user" not in e for e in later)
    # The retry of b's work is logged with b's submitter trace, not alice's.
    [retry] = [e for e in logs if e["event"] == "worker.retry"]
    assert retry["trace_parent"] == "t2"


async def test_failure_event_carries_the_trace(autojump_clock: trio.testing.MockClock) -> None:
    gate = Gate(hold=False, errors=(OSError("down"),))
    merge = structlog.contextvars.merge_contextvars
    async with open_pool(gate, retry=RetryPolicy(attempts=1)) as pool:
        with structlog.testing.capture_logs(processors=[merge]) as logs:
            with structlog.contextvars.bound_contextvars(trace_parent="t1"):
                pool.submit("k", w("a"))
            with pytest.raises(WorkFailedError):
                await pool.wait("k")
            await pool.discard("k")
    [failed] = [e for e in logs if e["event"] == "worker.failed"]
    assert failed["trace_parent"] == "t1"
    assert failed["attempts"] == 1


# -- retry policy -----------------------------------------------------------------------------


def test_retry_delay_is_exponential_and_capped() -> None:
    policy = RetryPolicy(base_delay=0.1, max_delay=1.0, jitter=0)
    rng = random.Random(0)
    assert [policy.delay(n, rng) for n in range(1, 7)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    )


def test_retry_delay_jitter_stays_in_bounds() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=4.0, jitter=0.25)
    rng = random.Random(42)
    for attempt, nominal in [(1, 1.0), (2, 2.0), (3, 4.0), (9, 4.0)]:
        delays = [policy.delay(attempt, rng) for _ in range(200)]
        assert all(0.75 * nominal <= d <= 1.25 * nominal for d in delays)
        assert len(set(delays)) > 1


def test_retry_policy_validation_and_should_retry() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="jitter"):
        RetryPolicy(jitter=1.5)
    with pytest.raises(ValueError, match="base_delay"):
        RetryPolicy(base_delay=-1)
    policy = RetryPolicy(attempts=3)
    assert policy.retryable is always_retry
    assert [policy.should_retry(OSError(), n) for n in (1, 2, 3)] == [True, True, False]
    assert RetryPolicy(base_delay=0, jitter=1.0).delay(1, random.Random(1)) == 0.0


# -- scale ------------------------------------------------------------------------------------


@pytest.fixture
def quiet_logs() -> Iterator[None]:
    """Drop debug events at the logger (as a production config would): rendering 100,000
    ``worker.apply`` lines would dwarf the pool's own cost."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    try:
        yield
    finally:
        structlog.configure(wrapper_class=saved["wrapper_class"])


@pytest.mark.slow
@pytest.mark.usefixtures("quiet_logs")
async def test_idle_actors_retire_across_many_keys(
    autojump_clock: trio.testing.MockClock,
) -> None:
    applied = 0

    async def apply(key: int, work: Log) -> None:  # noqa: ASYNC910 - test apply
        nonlocal applied
        applied += 1

    count = 100_000
    work = w("x")
    async with open_pool(apply) as pool:
        for key in range(count):
            pool.submit(key, work)
        assert pool.statistics().live_actors == count
        await pool.wait_all()
        s = pool.statistics()
    assert applied == count
    assert (s.applies, s.live_actors, s.live_keys, s.pending_keys) == (count, 0, 0, 0)
