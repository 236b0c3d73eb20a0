"""The write lanes' policy, as pure logic: a fake clock, no threads, no database."""

from __future__ import annotations

import itertools

import pytest

from threadstore._config import Lanes
from threadstore._lanes import WriteLanes

SETTINGS = Lanes()


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lanes(settings: Lanes = SETTINGS) -> tuple[WriteLanes[int, str], Clock]:
    clock = Clock()
    counter = itertools.count()
    return WriteLanes(settings, lambda: next(counter), clock), clock


def jobs_of(groups: list[tuple[int, list[str]]]) -> list[str]:
    return [job for _, jobs in groups for job in jobs]


def test_ordinary_jobs_form_wake_groups_and_commit_together() -> None:
    policy, _ = lanes()
    wakes = [policy.submit(f"a{i}", "now")[1] for i in range(SETTINGS.wake_group + 1)]
    assert wakes == [True] + [False] * (SETTINGS.wake_group - 1) + [True]
    assert policy.ready()
    groups = policy.take()
    assert [len(jobs) for _, jobs in groups] == [SETTINGS.wake_group, 1]
    assert not policy.ready()
    assert policy.take() == []


def test_a_transaction_takes_at_most_max_batch_ordinary_jobs() -> None:
    policy, _ = lanes(Lanes(max_batch=4, wake_group=2))
    for i in range(10):
        policy.submit(f"a{i}", "now")
    assert jobs_of(policy.take()) == ["a0", "a1", "a2", "a3"]
    assert jobs_of(policy.take()) == ["a4", "a5", "a6", "a7"]
    assert jobs_of(policy.take()) == ["a8", "a9"]


def test_first_goes_ahead_of_everything_queued() -> None:
    policy, _ = lanes()
    policy.submit("a", "now")
    batch, wake = policy.submit("create", "first")
    assert wake
    groups = policy.take()
    assert groups[0] == (batch, ["create"])
    assert jobs_of(groups) == ["create", "a"]


def test_deferred_waits_for_a_quiet_log_then_goes_whole() -> None:
    policy, clock = lanes()
    policy.log_committed()  # appends are streaming
    policy.submit("p1", "deferred")
    assert not policy.ready()
    assert policy.timeout() == pytest.approx(SETTINGS.quiet)
    clock.now += SETTINGS.quiet
    assert policy.ready()
    assert jobs_of(policy.take()) == ["p1"]


def test_under_load_deferred_goes_after_the_interval_one_group_at_a_time() -> None:
    policy, clock = lanes(Lanes(deferred_group=2))
    for i in range(4):
        policy.submit(f"p{i}", "deferred")
    policy.submit("a0", "now")  # appends keep coming: the log is never quiet
    policy.log_committed()
    assert jobs_of(policy.take()) == ["a0"]
    assert not policy.ready()
    assert policy.timeout() == pytest.approx(SETTINGS.quiet)
    clock.now += SETTINGS.projection_interval
    policy.submit("a1", "now")
    assert jobs_of(policy.take()) == ["a1", "p0", "p1"]  # the oldest group only
    policy.submit("a2", "now")
    assert jobs_of(policy.take()) == ["a2", "p2", "p3"]


def test_a_deferred_job_joins_only_a_young_group() -> None:
    policy, clock = lanes()
    first, wake = policy.submit("p0", "deferred")
    assert wake
    assert policy.submit("p1", "deferred") == (first, False)
    clock.now += SETTINGS.quiet
    second, wake = policy.submit("p2", "deferred")
    assert wake
    assert second != first


def test_a_full_deferred_lane_goes_without_waiting() -> None:
    policy, _ = lanes(Lanes(max_batch=4, deferred_group=2))
    policy.log_committed()
    for i in range(4):
        policy.submit(f"p{i}", "deferred")
    assert policy.ready()


def test_expedite_sends_deferred_and_soon_with_the_next_transaction() -> None:
    policy, _ = lanes()
    assert not policy.expedite()  # nothing queued: nothing to wake
    policy.log_committed()
    policy.submit("p", "deferred")
    for i in range(3 * SETTINGS.soon_group):
        policy.submit(f"s{i}", "soon")
    assert policy.expedite()
    assert not policy.expedite()  # once
    taken = jobs_of(policy.take())
    assert taken[-1] == "p"
    assert len(taken) == 3 * SETTINGS.soon_group + 1
    assert policy.take() == []
    policy.submit("q", "deferred")
    assert policy.expedite()  # the flag was reset once the lanes emptied


def test_soon_takes_the_oldest_group_or_a_share_of_the_lane() -> None:
    policy, _ = lanes()
    groups = 2 * SETTINGS.soon_share + 1
    for i in range(groups * SETTINGS.soon_group):
        policy.submit(f"s{i}", "soon")
    per_transaction = []
    while taken := policy.take():
        per_transaction.append(len(taken))
    # ceil(remaining / soon_share) groups each: 17 -> 14 -> 12 -> 10 -> 8, then one each
    assert per_transaction == [3, 2, 2, 2] + [1] * 8
    assert sum(per_transaction) == groups


def test_stopping_takes_everything_and_then_reports_stop() -> None:
    policy, _ = lanes()
    policy.log_committed()
    policy.submit("p", "deferred")
    for i in range(2 * SETTINGS.soon_group):
        policy.submit(f"s{i}", "soon")
    policy.stop()
    assert policy.stopping
    assert policy.ready()
    assert len(jobs_of(policy.take())) == 2 * SETTINGS.soon_group + 1
    assert not policy.ready()


def test_newest_batches_are_those_a_drain_waits_for() -> None:
    policy, _ = lanes()
    assert policy.newest_batches() == []
    soon, _ = policy.submit("s", "soon")
    deferred, _ = policy.submit("p", "deferred")
    assert policy.newest_batches() == [soon, deferred]


def test_timeout_is_none_without_deferred_work() -> None:
    policy, _ = lanes()
    policy.submit("a", "now")
    assert policy.timeout() is None


def test_lane_settings_reject_empty_groups() -> None:
    with pytest.raises(ValueError, match="soon_share must be an int >= 1"):
        Lanes(soon_share=0)
