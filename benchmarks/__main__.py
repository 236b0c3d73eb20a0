"""``python -m benchmarks``: run the scenarios, print the table, save JSON and a plot.

Scenarios (each also runs alone: ``--only S2``):

- S1 append latency vs write-through (``append_and_flush``), projectors of 0/10/100 ms
- S2 burst of 100 threads x 100 items, "normal" and "full", vs a bare group-commit loop
- S3 goal-first thread: create -> listed in the top 50, idle and under a burst
- S4 list/get/read latency with 10,000 threads (100,000 with ``--full``)
- S5 20,000 threads touched once (100,000 with ``--full``): live actors, memory
- S6 SIGKILL with lagging metadata: time ``open_store`` to recover, check consistency
- S7 the asyncio and thread access layers against the trio store (sequential and burst)
- S8 history edits on a 10,000-item thread: fork, read_context, rewind
- S9 ADK sessions: list_sessions at 2,000 (10,000 with ``--full``) against ADK's own SQLite
- S10 the change feed: catch-up replay rate vs listing, delay to a subscriber in another process
- S11 the PostgreSQL engine on a throwaway server beside SQLite: S2's burst, S3's goal-first
  to listed, S4's list at 10,000 threads (skipped, with the reason, without PostgreSQL)

Quick by default (about 2-3 minutes on 2 cores), ``--full`` for the larger scales,
``--smoke`` for tiny ones (CI, under 30 s). Results go to ``benchmarks/results/`` as
``<UTC timestamp>.json`` and ``latest.json``, the plot to ``latest.png``; the table in
``docs/performance.md`` is then regenerated from ``latest.json`` (:mod:`benchmarks.docs`).
The exit status is 1 if a scenario crashed; missed targets are reported, never fatal.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from . import docs
from ._env import configure_logging, machine_info
from ._figures import ScenarioResult
from ._profile import PROFILES
from ._report import markdown_table, plot, report_json, write_json
from ._suite import SCENARIOS, run_scenario, select

RESULTS: Final = Path(__file__).resolve().parent / "results"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--full", action="store_true", help="larger scales (S4/S5 at 100k)")
    scale.add_argument("--smoke", action="store_true", help="tiny scales (< 30 s in total)")
    parser.add_argument(
        "--only", metavar="S2,S3", help=f"comma-separated scenarios of {','.join(SCENARIOS)}"
    )
    parser.add_argument("--no-plot", action="store_true", help="do not draw latest.png")
    parser.add_argument("--no-save", action="store_true", help="write no files at all")
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="output directory (default %(default)s)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    profile = PROFILES["full" if args.full else "smoke" if args.smoke else "quick"]
    try:
        selected = select(None if args.only is None else args.only.split(","))
    except ValueError as exc:
        _parser().error(str(exc))
    configure_logging()
    machine = machine_info()
    timestamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    print(
        f"threadstore benchmarks ({profile.name}): {', '.join(selected)} on "
        f"{machine['cpu_count']} CPUs, Python {machine['python']}, trio {machine['trio']}, "
        f"SQLite {machine['sqlite']}",
        file=sys.stderr,
        flush=True,
    )
    results: dict[str, ScenarioResult] = {}
    errors: dict[str, str] = {}
    begin = time.perf_counter()
    for sid in selected:
        print(f"[{sid}] {SCENARIOS[sid].title} ...", file=sys.stderr, flush=True)
        try:
            results[sid] = run_scenario(sid, profile)
        except Exception as exc:  # report it, run the rest, exit 1
            errors[sid] = "".join(traceback.format_exception(exc))
            print(f"[{sid}] FAILED:\n{errors[sid]}", file=sys.stderr, flush=True)
            continue
        print(f"[{sid}] done in {results[sid].wall_s:.1f} s", file=sys.stderr, flush=True)
    wall = time.perf_counter() - begin
    if hasattr(os, "getloadavg"):
        machine["loadavg_at_end"] = list(os.getloadavg())

    print(markdown_table(results))
    print(f"\n{profile.name} run, {wall:.1f} s wall", file=sys.stderr)
    if not args.no_save:
        report = report_json(
            timestamp=timestamp,
            profile=profile.name,
            argv=list(sys.argv[1:] if argv is None else argv),
            machine=machine,
            results=results,
            errors=errors,
            wall_s=wall,
        )
        path = write_json(report, args.results, timestamp)
        print(f"wrote {path} and latest.json", file=sys.stderr)
        if not args.no_plot:
            caption = (
                f"threadstore {machine['threadstore_commit'] or ''} {profile.name} run "
                f"{timestamp}: {machine['cpu_count']} CPUs, {machine['platform']}, "
                f"Python {machine['python']}, trio {machine['trio']}, SQLite {machine['sqlite']}"
            )
            try:
                png = plot(results, args.results / "latest.png", caption)
            except ImportError:
                print(
                    "matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr
                )
            else:
                print(f"wrote {png}", file=sys.stderr)
        if args.results.resolve() == RESULTS and docs.update(results=RESULTS):
            print(f"updated {docs.DOC} from latest.json", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
