"""Property: whatever the interleaving of submits, failures, releases, barriers and time,
every submitted work is applied exactly once per key, in submit order."""

from __future__ import annotations

import random
from collections import defaultdict

import attrs
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from trio.testing import wait_all_tasks_blocked as settle

from workers import ActorPool, RetryPolicy, WorkFailedError, open_pool

KEYS = ("a", "b")


@attrs.frozen
class Log:
    entries: tuple[str, ...]

    def merge(self, other: Log, /) -> Log:
        return Log(self.entries + other.entries)


@attrs.frozen
class Submit:
    key: str
    urgent: bool


@attrs.frozen
class Release:
    """Let the key's running apply finish, successfully or with an error."""

    key: str
    fail: bool


@attrs.frozen
class Barrier:
    key: str


@attrs.frozen
class Elapse:
    seconds: float


Op = Submit | Release | Barrier | Elapse

keys = st.sampled_from(KEYS)
operations = st.lists(
    st.one_of(
        st.builds(Submit, keys, st.booleans()),
        st.builds(Release, keys, st.booleans()),
        st.builds(Release, keys, st.booleans()),
        st.builds(Barrier, keys),
        st.builds(Elapse, st.sampled_from([0.01, 0.1, 1.0])),
    ),
    max_size=40,
)


class ScriptedApply:
    """Each call blocks until the test releases it (with success or an error), until
    ``open()``; successful calls append what they received to ``applied[key]``."""

    def __init__(self) -> None:
        self.is_open = False
        self.running: dict[str, tuple[trio.Event, list[bool]]] = {}
        self.applied: dict[str, list[str]] = defaultdict(list)
        self.successes = 0

    async def __call__(self, key: str, work: Log) -> None:  # noqa: ASYNC910 - test apply
        assert key not in self.running, "two applies for one key at once"
        if not self.is_open:
            released, fail = trio.Event(), [False]
            self.running[key] = (released, fail)
            try:
                await released.wait()
            finally:
                del self.running[key]
            if fail[0]:
                raise OSError(f"scripted failure for {key}")
        self.applied[key].extend(work.entries)
        self.successes += 1

    def release(self, key: str, fail: bool) -> None:
        if key in self.running:
            released, box = self.running[key]
            box[0] = fail
            released.set()

    def open(self) -> None:
        self.is_open = True
        for key in list(self.running):
            self.release(key, fail=False)


async def scenario(
    ops: list[Op], delay: float, attempts: int, clock: trio.testing.MockClock
) -> None:
    apply = ScriptedApply()
    submitted: dict[str, list[str]] = defaultdict(list)
    policy = RetryPolicy(attempts=attempts, base_delay=0.05, jitter=0.5)
    barrier_errors: list[BaseException] = []

    async def barrier(pool: ActorPool[str, Log], key: str) -> None:
        expected = list(submitted[key])
        try:
            await pool.wait(key)
        except WorkFailedError:
            return  # noqa: ASYNC910 - test barrier
        except BaseException as exc:  # pragma: no cover - reported below
            barrier_errors.append(exc)
            raise
        # A barrier that returns has seen all work submitted before it, applied in order.
        assert apply.applied[key][: len(expected)] == expected

    # A hang (a barrier or an actor that never finishes) fails in virtual time.
    with trio.fail_after(10_000):
        async with (
            open_pool(apply, delay=delay, retry=policy, rng=random.Random(7)) as pool,
            trio.open_nursery() as nursery,
        ):
            for n, op in enumerate(ops):
                match op:
                    case Submit(key, urgent):
                        entry = f"{key}{n}"
                        submitted[key].append(entry)
                        pool.submit(key, Log((entry,)), urgent=urgent)
                    case Release(key, fail):
                        apply.release(key, fail)
                    case Barrier(key):
                        nursery.start_soon(barrier, pool, key)
                    case Elapse(seconds):
                        clock.jump(seconds)
                await settle()

            # Let everything finish: no more failures, time runs freely, parked work restarts.
            apply.open()
            clock.autojump_threshold = 0
            pool.retry_parked()
            await pool.wait_all()
            stats = pool.statistics()

    assert barrier_errors == []
    for key in KEYS:
        assert apply.applied[key] == submitted[key]
    assert stats.applies == apply.successes
    assert stats.submits == sum(len(v) for v in submitted.values())
    assert (stats.live_keys, stats.live_actors, stats.pending_keys) == (0, 0, 0)


@settings(max_examples=100, deadline=None)
@given(ops=operations, delay=st.sampled_from([0.0, 0.05]), attempts=st.integers(1, 3))
def test_every_submitted_work_is_applied_once_in_order(
    ops: list[Op], delay: float, attempts: int
) -> None:
    clock = trio.testing.MockClock()
    trio.run(scenario, ops, delay, attempts, clock, clock=clock)
