"""S10 — the change feed: catch-up from the store, and the delay to another process.

- **Catch-up**: a store of ``s10_threads`` goal-first threads; a subscriber with the default
  buffer replays them all from ``since=0`` (each thread once, from the change index, a
  buffer's worth per read). Baseline in the same store: listing every thread with
  ``list_threads`` pages of 1,000 (the fastest way to read them all otherwise).
- **Cross-process delay**: a reader process opens the store read-only (no lock) and
  subscribes; the writer (this process) creates ``s10_events`` threads one at a time and
  waits for each to show up there. The delay is from ``create_thread`` returning (the
  thread is committed and listed) to the reader receiving its event, on the machine's one
  monotonic clock; the reader polls every 50 ms (the default ``feed_poll_interval``).
  Commits are paced at random points of the poll cycle. Baseline: the same delay to a
  subscriber in the writing process.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

import trio

from threadstore import Store, open_store
from threadstore.sqlite import DEFAULTS

from ._burst import make_threads
from ._figures import Figure, ScenarioResult, Target
from ._profile import Profile
from ._stats import summarize

ID: Final = "S10"
TITLE: Final = "change feed: catch-up and cross-process delay"
REPO: Final = Path(__file__).resolve().parent.parent


async def _replay(store: Store, expected: int) -> tuple[float, int]:
    begin = time.perf_counter()
    seen = set()
    async with store.subscribe(since=0) as events:
        async for event in events:
            if event.thread is not None:
                seen.add(event.thread.id)
            if len(seen) == expected:
                break
    return time.perf_counter() - begin, store.statistics().feed_catch_ups


async def _list_all(store: Store) -> tuple[float, int]:
    begin = time.perf_counter()
    count, cursor = 0, None
    while True:
        page = await store.list_threads(limit=1000, cursor=cursor, include_empty=True)
        count += len(page.threads)
        cursor = page.next_cursor
        if cursor is None:
            return time.perf_counter() - begin, count


async def _local_delays(store: Store, count: int) -> list[float]:
    delays = []
    async with store.subscribe() as events:
        for n in range(count):
            meta = await store.create_thread(goal=f"local {n}")
            done = time.monotonic()
            async for event in events:
                if event.thread is not None and event.thread.id == meta.id:
                    delays.append((time.monotonic() - done) * 1000)
                    break
    return delays


async def _remote_delays(store: Store, path: Path, count: int, poll: float) -> list[float]:
    env = {"PYTHONPATH": str(REPO)}
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "benchmarks._feed_child", str(path), str(poll)],
        stdout=subprocess.PIPE,
        env=env,
    )
    stdout = proc.stdout
    assert stdout is not None
    buffer = b""

    async def line() -> str:
        nonlocal buffer
        while b"\n" not in buffer:
            chunk = await stdout.receive_some()
            if not chunk:
                raise RuntimeError("the S10 reader process exited")
            buffer += chunk
        text, _, buffer = buffer.partition(b"\n")
        return text.decode()  # noqa: ASYNC910 - no checkpoint only when the line is buffered

    try:
        assert await line() == "ready"
        delays = []
        pacing = random.Random(10)
        for n in range(count):
            # Commits land at random points of the reader's poll cycle, as in real use
            # (pacing, not synchronisation: the wait below is on the reader's line).
            await trio.sleep(pacing.uniform(0, poll))
            meta = await store.create_thread(goal=f"remote {n}")
            done = time.monotonic()
            while True:
                tid, at = (await line()).split()
                if tid == meta.id:
                    delays.append((float(at) - done) * 1000)
                    break
        return delays
    finally:
        proc.kill()
        with trio.CancelScope(shield=True):
            await proc.wait()
            await stdout.aclose()


async def run(profile: Profile, workdir: Path) -> ScenarioResult:
    threads, count = profile.s10_threads, profile.s10_events
    poll = DEFAULTS.feed_poll_interval
    path = workdir / "s10.db"
    async with open_store(path) as store:
        await make_threads(store, threads, prefix="feed")
        await store.flush_all()
        list_s, listed = await _list_all(store)
        replay_s, catch_ups = await _replay(store, threads)
        local = summarize(await _local_delays(store, count))
        remote = summarize(await _remote_delays(store, path, count, poll))
    replay_rate = threads / replay_s
    figures = (
        Figure(
            key="catch_up_changes_per_s",
            label=f"catch-up replay of {threads:,} threads (since=0)",
            value=replay_rate,
            unit="changes/s",
        ),
        Figure(
            key="list_all_threads_per_s",
            label="listing every thread, pages of 1,000 (baseline)",
            value=listed / list_s,
            unit="threads/s",
        ),
        Figure(
            key="catch_up_over_listing",
            label="catch-up rate / listing rate",
            value=replay_rate / (listed / list_s),
            unit="x",
            target=Target(op=">=", threshold=0.5, note="replaying costs at most 2x a listing"),
        ),
        Figure(
            key="local_delay_p50_ms", label="delay, same process p50", value=local.p50, unit="ms"
        ),
        Figure(
            key="remote_delay_p50_ms",
            label=f"delay, read-only reader process p50 (polls every {poll * 1000:.0f} ms)",
            value=remote.p50,
            unit="ms",
        ),
        Figure(
            key="remote_delay_p99_ms",
            label="delay, read-only reader process p99",
            value=remote.p99,
            unit="ms",
            target=Target(op="<=", threshold=poll * 1000 + 50, note="one poll interval + 50 ms"),
        ),
    )
    return ScenarioResult(
        id=ID,
        title=TITLE,
        figures=figures,
        params={"threads": threads, "events": count, "poll_s": poll, "catch_up_reads": catch_ups},
    )
