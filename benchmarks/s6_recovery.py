"""S6 — crash recovery: SIGKILL a writer whose metadata lags, then time ``open_store``.

A child process (``benchmarks/_child.py burst``) appends to its threads from one task per
thread while its projector never returns, so no thread's metadata follows its log. Once it
has reported ``--kill-after`` acknowledged appends the parent kills it with SIGKILL, counts
the lagging threads straight from the file, and times ``open_store``, which re-projects
every lagging thread before it returns. Then it checks, through the public API, that each
thread's ``get_thread(t).seq`` is its last item's seq and that no acknowledged item is
missing; a second, clean open is timed as the reference.
"""

from __future__ import annotations

import math
import os
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any, Final

import trio

from threadstore import Store, open_store

from ._env import REPO_ROOT, child_env
from ._figures import Figure, ScenarioResult, Target
from ._profile import Profile

ID: Final = "S6"
TITLE: Final = "recovery after SIGKILL with lagging metadata"


def _lag(path: str) -> tuple[int, int]:
    """(threads whose metadata lags, items they lag by), read-only, from the file itself."""
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=5.0)
    try:
        threads, items = conn.execute(
            "SELECT count(*), coalesce(sum(last_seq - seq), 0) FROM threads WHERE seq < last_seq"
        ).fetchone()
        return int(threads), int(items)
    finally:
        conn.close()


async def _crash(path: Path, threads: int, kill_after: int, log: Path) -> dict[str, Any]:
    """Run the child until ``kill_after`` acks, SIGKILL it; return what it acknowledged."""
    command = [sys.executable, "-m", "benchmarks._child", "burst", str(path)]
    command += ["--threads", str(threads)]
    acked: dict[str, int] = {}
    acks = 0
    buffer = b""

    def parse(data: bytes | bytearray) -> None:
        nonlocal buffer, acks
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            parts = line.decode().split()
            if len(parts) == 3 and parts[0] == "ack":
                acks += 1
                acked[parts[1]] = max(acked.get(parts[1], 0), int(parts[2]))

    with log.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            command, stdout=subprocess.PIPE, stderr=stderr, cwd=str(REPO_ROOT), env=child_env()
        )
        try:
            assert process.stdout is not None
            with trio.fail_after(120):
                async for chunk in process.stdout:
                    parse(chunk)
                    if acks >= kill_after:
                        break
                killed_at = time.perf_counter()
                process.kill()  # SIGKILL
                # Lines written before the kill are acknowledged appends too.
                async for chunk in process.stdout:
                    parse(chunk)
                await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()
    if process.returncode != -9:
        output = await trio.Path(log).read_text(errors="replace")
        raise RuntimeError(f"S6 child ended with {process.returncode} before the kill: {output}")
    return {"acked": acked, "acks": acks, "killed_at": killed_at}


async def _all_threads(store: Store) -> list[str]:
    ids: list[str] = []
    cursor: str | None = None
    while True:
        page = await store.list_threads(limit=1000, cursor=cursor, include_empty=True)
        ids += [meta.id for meta in page.threads]
        cursor = page.next_cursor
        if cursor is None:
            return ids


async def _verify(store: Store, acked: dict[str, int]) -> dict[str, int]:
    """Count threads whose metadata is not exactly at their last item, and lost acks."""
    inconsistent = lost = 0
    ids = await _all_threads(store)
    for thread_id in ids:
        meta = await store.get_thread(thread_id)
        # Nothing may follow meta.seq in the log, and meta.seq itself must be there.
        tail = await store.read_items(thread_id, after_seq=max(0, meta.seq - 1))
        last = tail[-1].seq if tail else 0
        if meta.seq != last:
            inconsistent += 1
    listed = set(ids)
    for thread_id, acked_seq in acked.items():
        if thread_id not in listed:
            lost += acked_seq
            continue
        tail = await store.read_items(thread_id, after_seq=acked_seq - 1, limit=1)
        if not tail or tail[0].seq != acked_seq:
            lost += 1
    return {"checked": len(ids), "inconsistent": inconsistent, "lost": lost}


async def run(profile: Profile, workdir: Path) -> ScenarioResult:
    path = workdir / "s6.db"
    crash = await _crash(path, profile.s6_threads, profile.s6_kill_after, workdir / "s6.log")
    try:
        lag_threads, lag_items = await trio.to_thread.run_sync(_lag, str(path))
    except sqlite3.Error:  # a schema change: the count is informational only
        lag_threads = lag_items = -1

    begin = time.perf_counter()
    async with open_store(path) as store:
        recovery_s = time.perf_counter() - begin
        checks = await _verify(store, crash["acked"])
    begin = time.perf_counter()
    async with open_store(path):
        clean_s = time.perf_counter() - begin

    figures = [
        Figure(
            key="acked_before_kill",
            label="appends acknowledged before SIGKILL",
            value=crash["acks"],
        ),
        Figure(
            key="lagging_threads",
            label="threads whose metadata lagged at open",
            value=lag_threads,
        ),
        Figure(key="lagging_items", label="items they lagged by", value=lag_items),
        Figure(
            key="recovery_open_ms",
            label="open_store with re-projection",
            value=recovery_s * 1000,
            unit="ms",
        ),
        Figure(
            key="recovery_ms_per_thread",
            label="open_store with re-projection / lagging thread",
            value=recovery_s * 1000 / lag_threads if lag_threads > 0 else math.nan,
            unit="ms",
        ),
        Figure(
            key="clean_open_ms",
            label="clean open_store (reference)",
            value=clean_s * 1000,
            unit="ms",
        ),
        Figure(
            key="inconsistent_threads",
            label=f"threads with get_thread(t).seq != last item seq (of {checks['checked']})",
            value=checks["inconsistent"],
            target=Target(op="==", threshold=0),
        ),
        Figure(
            key="threads_missing_acknowledged_items",
            label="threads missing their last acknowledged item",
            value=checks["lost"],
            target=Target(op="==", threshold=0),
        ),
    ]
    return ScenarioResult(
        id=ID,
        title=TITLE,
        figures=tuple(figures),
        params={
            "threads": profile.s6_threads,
            "kill_after": profile.s6_kill_after,
            "threads_acknowledged": len(crash["acked"]),
        },
    )
