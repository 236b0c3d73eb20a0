"""``python -m benchmarks.peers``: run every store through the same workloads; print a table.

Each (store, settings, workload) runs in a fresh process on a fresh database file: the peers
with the Python of their pinned environment (``.venv/openai``, ``.venv/langgraph``, created
on first use), threadstore with this Python. The PostgreSQL rows (LangGraph
``AsyncPostgresSaver``, ADK ``DatabaseSessionService``, threadstore at ``pg-full`` and
``pg-normal``) run the burst and sequential workloads on one throwaway server started from
the machine's PostgreSQL binaries (``tests/_pg.py``), each run in a fresh database; without
the binaries those rows are left out and the run says why. Results go to
``benchmarks/results/peers-<UTC timestamp>.json`` and ``benchmarks/results/peers-latest.json``,
and the peers table in ``docs/performance.md`` is regenerated (:mod:`benchmarks.docs`).

Quick by default (list scale 2,000 threads); ``--full`` lists at 10,000.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from . import common, report, venvs

REPO = venvs.PEERS_DIR.parent.parent
RESULTS_DIR = REPO / "benchmarks" / "results"

STORES = ("openai", "langgraph", "langgraph_pg", "adk_pg", "threadstore")
#: Rows of the table, in order: (store, settings).
CONFIGS = (
    ("openai", "shipped"),
    ("openai", "matched"),
    ("langgraph", "shipped"),
    ("langgraph", "matched"),
    ("threadstore", "full"),
    ("threadstore", "normal"),
    ("langgraph_pg", "shipped"),
    ("langgraph_pg", "pool"),
    ("adk_pg", "shipped"),
    ("threadstore", "pg-full"),
    ("threadstore", "pg-normal"),
)
#: What the PostgreSQL rows run (the peers there keep no list of threads to time).
POSTGRES_WORKLOADS = ("burst", "sequential")

# Imports this folder as the package ``peers`` (without ``benchmarks/__init__.py`` and
# without putting ``benchmarks/`` on sys.path, where its modules could shadow others), then
# runs ``peers.worker_<store>`` as ``__main__``.
_BOOT = """\
import importlib.util, runpy, sys
folder, module = sys.argv[1], sys.argv[2]
del sys.argv[1:3]
spec = importlib.util.spec_from_file_location(
    "peers", folder + "/__init__.py", submodule_search_locations=[folder]
)
package = importlib.util.module_from_spec(spec)
sys.modules["peers"] = package
spec.loader.exec_module(package)
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


class WorkerFailed(Exception):
    pass


def _run_worker(
    python: str, store: str, request: common.Request, *, cwd: str, timeout: float, isolated: bool
) -> dict[str, Any]:
    env = dict(os.environ)
    if isolated:
        command = [python, "-I", "-c", _BOOT]
    else:
        # threadstore: importable from the repository even when not installed.
        command = [python, "-c", _BOOT]
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    command += [str(venvs.PEERS_DIR), f"peers.worker_{store}"]
    try:
        proc = subprocess.run(
            command,
            input=request.to_json(),
            capture_output=True,
            text=True,
            cwd=cwd,
            env=env,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise WorkerFailed(f"timed out after {timeout:.0f} s") from exc
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
        raise WorkerFailed(f"exit {proc.returncode}: " + " | ".join(tail))
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _filesystem(path: str) -> str | None:
    """The type of the filesystem holding ``path`` (from /proc/mounts), if known."""
    best: tuple[str, str | None] = ("", None)
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if (
                    len(fields) >= 3
                    and path.startswith(fields[1])
                    and len(fields[1]) >= len(best[0])
                ):
                    best = (fields[1], fields[2])
    except OSError:
        pass
    return best[1]


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_info(workdir: str) -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "workdir": workdir,
        "workdir_filesystem": _filesystem(workdir),
    }


def _server_settings(server: Any) -> dict[str, Any]:
    """The throwaway server's version and the settings that decide what a commit costs."""
    import psycopg

    out: dict[str, Any] = {}
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers"):
            row = conn.execute(f"SHOW {name}").fetchone()
            out[name] = None if row is None else row[0]
    return out


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peers",
        description="threadstore against the stores users pick today "
        "(OpenAI Agents SQLiteSession, LangGraph AsyncSqliteSaver + AsyncSqliteStore; on "
        "PostgreSQL, LangGraph AsyncPostgresSaver and ADK DatabaseSessionService), "
        "each in its own pinned virtual environment.",
    )
    parser.add_argument(
        "--full", action="store_true", help="list at 10,000 threads (default: 2,000)"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: checks that everything runs"
    )
    parser.add_argument(
        "--only",
        default=",".join(STORES),
        help="comma-separated stores to run (default: %(default)s)",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(common.WORKLOADS),
        help="comma-separated workloads (default: %(default)s)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="burst runs per store and settings, in rounds; the median by items/s is "
        "reported (default: %(default)s)",
    )
    parser.add_argument("--workdir", help="where the database files go (default: a temp dir)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per workload process")
    parser.add_argument("--no-save", action="store_true", help="do not write results JSON")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    for option, allowed in (("only", STORES), ("workloads", common.WORKLOADS)):
        chosen = [x.strip() for x in getattr(args, option).split(",") if x.strip()]
        unknown = sorted(set(chosen) - set(allowed))
        if unknown or not chosen:
            parser.error(f"--{option}: unknown {unknown}; choose from {', '.join(allowed)}")
        setattr(args, option, chosen)
    return args


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _server_stats(server: Any, database: str, empty_bytes: int = 0) -> dict[str, Any]:
    """Growth over an empty database (``empty_bytes``) and committed transactions of
    ``database``, once its sessions have ended (a backend reports its counters when it
    exits)."""
    import psycopg

    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,)
            ).fetchone()
            if row is None or row[0] == 0:
                break
            time.sleep(0.05)
        time.sleep(0.2)
        size = conn.execute("SELECT pg_database_size(%s)", (database,)).fetchone()
        stats = conn.execute(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = %s",
            (database,),
        ).fetchone()
    return {
        "db_bytes": None if size is None else int(size[0]) - empty_bytes,
        "server_transactions": None if stats is None else int(stats[0]),
        "server_rollbacks": None if stats is None else int(stats[1]),
    }


def _run_one(
    store: str,
    settings: str,
    workload: str,
    params: common.Params,
    pythons: dict[str, str],
    workdir: str,
    args: argparse.Namespace,
    server: Any = None,
    empty_bytes: int = 0,
) -> dict[str, Any]:
    """Run one workload in a fresh process on a fresh database; the result or the failure.

    A PostgreSQL row gets a fresh database on ``server``, dropped afterwards, and its
    size and committed transactions (the whole process's, setup included) in the result.
    """
    run_dir = tempfile.mkdtemp(prefix=f"{store}-{settings}-{workload}-", dir=workdir)
    database = server.create_database() if server is not None else None
    request = common.Request(
        workload=workload,
        settings=settings,
        db=os.path.join(run_dir, "bench.db"),
        params=params,
        url=None if database is None else server.url(database),
    )
    load = _loadavg()
    t0 = time.perf_counter()
    print(f"{workload:<10} {store:<11} {settings:<8} ...", end="", file=sys.stderr)
    sys.stderr.flush()
    try:
        result = _run_worker(
            pythons[store],
            store,
            request,
            cwd=run_dir,
            timeout=args.timeout,
            isolated=store != "threadstore",
        )
    except WorkerFailed as exc:
        result = {"failed": str(exc)}
        print(f" FAILED ({exc})", file=sys.stderr)
    else:
        print(f" {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    if database is not None:
        result.update(_server_stats(server, database, empty_bytes))
        items, tx = result.get("items"), result.get("server_transactions")
        if isinstance(items, int) and items > 0 and isinstance(tx, int):
            result["server_transactions_per_item"] = round(tx / items, 4)
        server.drop_database(database)
    result["loadavg_before"] = load
    result["process_seconds"] = round(time.perf_counter() - t0, 2)
    return result


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median items/s (a failed run, if any failed), with every run's
    items/s alongside."""
    failed = [run for run in runs if "failed" in run]
    if len(runs) == 1 or failed:
        return failed[0] if failed else runs[0]
    ordered = sorted(runs, key=lambda run: float(run.get("items_per_s") or 0.0))
    median = dict(ordered[len(ordered) // 2])
    median["items_per_s_runs"] = [run.get("items_per_s") for run in runs]
    return median


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    params = common.Params.smoke() if args.smoke else common.Params()
    if args.full:
        params = dataclasses.replace(params, list_threads=10_000)
    mode = "smoke" if args.smoke else "full" if args.full else "quick"

    pythons: dict[str, str] = {"threadstore": sys.executable}
    venv_info: dict[str, Any] = {}
    for store in args.only:
        if store in venvs.PEERS:
            venv = venvs.ensure(store)
            pythons[store] = str(venv.python)
            venv_info[store] = {
                "path": str(venv.path.relative_to(REPO)),
                "requirements": str(venv.requirements.relative_to(REPO)),
                "pins": list(venv.pins),
                "created_seconds": venv.created_seconds,
            }

    workdir = args.workdir or tempfile.mkdtemp(prefix="threadstore-peers-")
    os.makedirs(workdir, exist_ok=True)
    rows: list[dict[str, Any]] = [
        {"store": store, "settings": settings, "workloads": {}}
        for store, settings in CONFIGS
        if store in args.only
    ]
    skipped: list[str] = []
    server: Any = None
    postgres_server: dict[str, Any] | None = None
    empty_bytes = 0
    if any(report.on_postgres(row["store"], row["settings"]) for row in rows):
        from benchmarks import _postgres  # (not at the top: peer processes import this package)

        reason = _postgres.unavailable()
        if reason is None:
            print("starting a throwaway PostgreSQL server ...", file=sys.stderr)
            server = _postgres.start()
            postgres_server = _server_settings(server)
            empty = server.create_database()
            empty_bytes = int(_server_stats(server, empty)["db_bytes"] or 0)
            server.drop_database(empty)
            postgres_server["empty_database_bytes"] = empty_bytes
        else:
            skipped.append(f"PostgreSQL rows left out: {reason}")
            print(skipped[-1], file=sys.stderr)
            rows = [r for r in rows if not report.on_postgres(r["store"], r["settings"])]
    load_before = _loadavg()
    started = time.perf_counter()
    try:
        # Workload by workload, so the stores compared in one column ran close together;
        # the burst in rounds (every store once per round), reported by its median run,
        # because one run on a shared machine can be off by half either way.
        for workload in args.workloads:
            rounds = args.repeat if workload == "burst" and not args.smoke else 1
            runs: dict[int, list[dict[str, Any]]] = {id(row): [] for row in rows}
            todo = [
                row
                for row in rows
                if workload in POSTGRES_WORKLOADS
                or not report.on_postgres(row["store"], row["settings"])
            ]
            for _ in range(rounds):
                for row in todo:
                    on_pg = report.on_postgres(row["store"], row["settings"])
                    runs[id(row)].append(
                        _run_one(
                            row["store"],
                            row["settings"],
                            workload,
                            params,
                            pythons,
                            workdir,
                            args,
                            server if on_pg else None,
                            empty_bytes,
                        )
                    )
            for row in todo:
                row["workloads"][workload] = _median_run(runs[id(row)])
    finally:
        if server is not None:
            server.stop()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    run_seconds = round(time.perf_counter() - started, 1)

    for row in rows:
        first: dict[str, Any] = next(iter(row["workloads"].values()), {})
        row["versions"] = first.get("versions")
        row["python"] = first.get("python")
        row["sqlite"] = first.get("sqlite")
        row["sqlite_settings"] = report.in_effect(row)

    table = report.markdown_table(rows, params.list_threads)
    pg_table = report.postgres_table(rows)
    verdict = report.postgres_verdict(rows)
    notes = skipped + report.problems(rows)
    print()
    print(table)
    if pg_table:
        print()
        print(pg_table)
        for line in verdict:
            print(f"\n{line}")
    for note in notes:
        print(f"- {note}")
    print(f"\n({mode} run: {run_seconds:.0f} s excluding environment creation)")

    if not args.no_save:
        now = datetime.datetime.now(datetime.UTC)
        document = {
            "kind": "threadstore peers benchmark",
            "created_at": now.isoformat(timespec="seconds"),
            "mode": mode,
            "git_commit": _git_commit(),
            "machine": machine_info(workdir),
            "params": dataclasses.asdict(params),
            "matched_pragmas": list(common.MATCHED_PRAGMAS),
            "environments": venv_info,
            "run_seconds": run_seconds,
            "loadavg_before": load_before,
            "loadavg_after": _loadavg(),
            "rows": rows,
            "table_markdown": table,
            "postgres_table_markdown": pg_table,
            "postgres_verdict": verdict,
            "postgres_server": postgres_server,
            "problems": notes,
        }
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        text = json.dumps(document, indent=2) + "\n"
        stamped = RESULTS_DIR / f"peers-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
        stamped.write_text(text, encoding="utf-8")
        (RESULTS_DIR / "peers-latest.json").write_text(text, encoding="utf-8")
        print(f"wrote {stamped.relative_to(REPO)} and peers-latest.json", file=sys.stderr)
        from benchmarks import docs  # (not at the top: peer processes import this package)

        if docs.update(results=RESULTS_DIR):
            print(f"updated {docs.DOC} from peers-latest.json", file=sys.stderr)
    failed = any("failed" in r for row in rows for r in row["workloads"].values())
    return 1 if failed else 0
