"""The scenarios, and running one or several of them (each in its own ``trio.run``)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Final

import attrs
import trio

from threadstore import open_store

from . import (
    s1_append,
    s2_burst,
    s3_goal_first,
    s4_list,
    s5_many_threads,
    s6_recovery,
    s7_access,
    s8_history,
    s9_adk,
    s10_feed,
    s11_postgres,
)
from ._burst import burst, make_threads
from ._figures import ScenarioResult
from ._profile import Profile
from ._workload import item_stream

__all__ = ["SCENARIOS", "Scenario", "run_scenario"]


@attrs.frozen(kw_only=True)
class Scenario:
    id: str
    title: str
    run: Callable[[Profile, Path], Awaitable[ScenarioResult]]


SCENARIOS: Final = {
    module.ID: Scenario(id=module.ID, title=module.TITLE, run=module.run)
    for module in (
        s1_append,
        s2_burst,
        s3_goal_first,
        s4_list,
        s5_many_threads,
        s6_recovery,
        s7_access,
        s8_history,
        s9_adk,
        s10_feed,
        s11_postgres,
    )
}


_warmed_up = False


async def _warm_up(workdir: Path) -> None:
    """Exercise every code path once, so the first scenario does not pay for first calls."""
    async with open_store(workdir / "warm-up.db") as store:
        ids = await make_threads(store, 10, tasks=10)
        stream = item_stream(0)
        await burst(store, ids, [[next(stream) for _ in range(10)] for _ in ids])
        await store.append_and_flush(ids[0], next(stream))
        await store.list_threads(limit=50)
        await store.get_thread(ids[0])
        await store.read_items(ids[0])
        await store.flush_all()


async def _bounded(scenario: Scenario, profile: Profile, workdir: Path) -> ScenarioResult:
    global _warmed_up
    if not _warmed_up:
        await _warm_up(workdir)
        _warmed_up = True
    with trio.fail_after(profile.timeout_s):
        return await scenario.run(profile, workdir)


def run_scenario(scenario_id: str, profile: Profile) -> ScenarioResult:
    """Run one scenario in a fresh trio run and a fresh temporary directory. Sync.

    The first call in a process warms up the store's code paths first (not timed). Raises
    ``trio.TooSlowError`` if the scenario runs longer than ``profile.timeout_s``.
    """
    scenario = SCENARIOS[scenario_id]
    with tempfile.TemporaryDirectory(prefix=f"threadstore-bench-{scenario_id}-") as tmp:
        begin = time.perf_counter()
        result = trio.run(_bounded, scenario, profile, Path(tmp))
        wall = time.perf_counter() - begin
    return attrs.evolve(result, wall_s=wall)


def select(only: Iterable[str] | None) -> list[str]:
    """Scenario ids in suite order; ``only`` (case-insensitive ids) restricts them."""
    if only is None:
        return list(SCENARIOS)
    wanted = {item.strip().upper() for item in only if item.strip()}
    unknown = wanted - set(SCENARIOS)
    if unknown:
        raise ValueError(f"unknown scenario(s) {sorted(unknown)}; known: {list(SCENARIOS)}")
    return [sid for sid in SCENARIOS if sid in wanted]
