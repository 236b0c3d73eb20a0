"""S5 — many threads touched once: memory stays bounded by threads with work.

In a fresh child process (so earlier scenarios do not blur its memory): 100,000 threads
(quick: 20,000) are each created and given one append, from 100 tasks; then ``flush_all``.
Reported: ``live_actors`` after the drain (idle actors must retire) and resident-memory
growth from before ``open_store`` to after the drain. The 150 MB target is stated for
100,000 threads; smaller runs are held to it scaled linearly (1.5 MB per 1,000 threads).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Final

import trio

from ._env import REPO_ROOT, child_env
from ._figures import Figure, ScenarioResult, Target
from ._profile import Profile

ID: Final = "S5"
TITLE: Final = "many threads touched once"
BUDGET_MB: Final = 150.0
BUDGET_THREADS: Final = 100_000


async def run(profile: Profile, workdir: Path) -> ScenarioResult:
    threads = profile.s5_threads
    command = [
        sys.executable,
        "-m",
        "benchmarks._child",
        "many",
        str(workdir / "s5.db"),
        "--threads",
        str(threads),
    ]
    with trio.fail_after(max(120.0, threads / 100)):
        done = await trio.run_process(
            command,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=str(REPO_ROOT),
            env=child_env(),
        )
    if done.returncode != 0:
        raise RuntimeError(
            f"S5 child failed ({done.returncode}): {done.stderr.decode(errors='replace')[-2000:]}"
        )
    out: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    growth = out["rss_end_mb"] - out["rss_start_mb"]
    peak_growth = out["peak_rss_mb"] - out["rss_start_mb"]
    budget = BUDGET_MB * threads / BUDGET_THREADS
    scaled = "" if threads == BUDGET_THREADS else f" (150 MB @100k scaled to {threads:,})"
    figures = [
        Figure(
            key="threads_per_s",
            label=f"create + append per thread, {threads:,} threads (100 tasks)",
            value=threads / out["touch_s"],
            unit="threads/s",
        ),
        Figure(
            key="flush_all_ms",
            label="flush_all after the last append",
            value=out["flush_all_s"] * 1000,
            unit="ms",
        ),
        Figure(
            key="live_actors_after_drain",
            label="live actors right after flush_all",
            value=out["live_actors_after_drain"],
            target=Target(op="==", threshold=0),
        ),
        Figure(
            key="live_actors_after_1s",
            label="live actors after up to 1 s idle",
            value=out["live_actors_after_1s"],
        ),
        Figure(
            key="rss_growth_mb",
            label=f"RSS growth, before open_store -> drained, {threads:,} threads",
            value=growth,
            unit="MB",
            target=Target(op="<", threshold=budget, note=scaled.strip(" ()")),
        ),
        Figure(
            key="rss_growth_kib_per_thread",
            label="RSS growth per thread",
            value=growth * 1024 / threads if threads else math.nan,
            unit="KiB",
        ),
        Figure(
            key="rss_peak_growth_mb",
            label="peak RSS growth (VmHWM), whole run",
            value=peak_growth,
            unit="MB",
        ),
        Figure(
            key="rss_open_mb",
            label="RSS growth of opening the empty store",
            value=out["rss_open_mb"] - out["rss_start_mb"],
            unit="MB",
        ),
    ]
    return ScenarioResult(
        id=ID,
        title=TITLE,
        figures=tuple(figures),
        params={"threads": threads, "child": {k: _round(v) for k, v in out.items()}},
    )


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value
