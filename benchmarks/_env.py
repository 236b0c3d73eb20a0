"""The machine, the versions, the SQLite settings a store really used, and process memory."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import resource
import sqlite3
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any, Final

import structlog
import trio

from threadstore import Store

__all__ = [
    "REPO_ROOT",
    "child_env",
    "configure_logging",
    "machine_info",
    "peak_rss_mb",
    "rss_mb",
    "sqlite_settings",
]

#: The directory holding ``threadstore/`` and ``benchmarks/`` (PYTHONPATH for children).
REPO_ROOT: Final = Path(__file__).resolve().parent.parent

_SYNCHRONOUS: Final = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def configure_logging() -> None:
    """Drop the store's debug/info events (they would distort the figures); warnings go to
    stderr, so stdout carries only the report (or a child's protocol).
    """
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def child_env() -> dict[str, str]:
    """The environment for a ``python -m benchmarks._child`` process."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    return env


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def machine_info() -> dict[str, Any]:
    """Sync; call outside trio. What the figures were measured on."""
    status = _git("status", "--porcelain", "--", "threadstore", "workers")
    return {
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "trio": trio.__version__,
        "attrs": _version("attrs"),
        "structlog": _version("structlog"),
        "sqlite": sqlite3.sqlite_version,
        "threadstore_commit": _git("rev-parse", "--short", "HEAD"),
        "threadstore_dirty": None if status is None else bool(status),
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "executable": sys.executable,
    }


def _file_settings(path: str) -> dict[str, Any]:
    """PRAGMAs read through a fresh read-only connection (worker thread only)."""
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=5.0)
    try:
        out: dict[str, Any] = {}
        for pragma in ("journal_mode", "page_size", "auto_vacuum", "wal_autocheckpoint"):
            out[pragma] = conn.execute(f"PRAGMA {pragma}").fetchone()[0]
        (sync,) = conn.execute("PRAGMA synchronous").fetchone()
        out["synchronous_fresh_connection"] = _SYNCHRONOUS.get(sync, sync)
        return out
    finally:
        conn.close()


def _writer_settings(conn: sqlite3.Connection) -> dict[str, Any]:
    """PRAGMAs of the store's own write connection (writer thread only)."""
    (sync,) = conn.execute("PRAGMA synchronous").fetchone()
    (cache,) = conn.execute("PRAGMA cache_size").fetchone()
    (busy,) = conn.execute("PRAGMA busy_timeout").fetchone()
    return {"synchronous": _SYNCHRONOUS.get(sync, sync), "cache_size": cache, "busy_timeout": busy}


async def sqlite_settings(store: Store, durability: str) -> dict[str, Any]:
    """The SQLite settings ``store`` runs with.

    ``journal_mode`` and the other file-level settings are read back through a separate
    read-only connection in a worker thread. ``synchronous`` is per connection, so a fresh
    connection shows only SQLite's compiled default; the store's real value is read on its
    write connection through the (private) writer, when that is available.
    """
    out: dict[str, Any] = {"durability": durability}
    out.update(await trio.to_thread.run_sync(_file_settings, store.path))
    writer = getattr(getattr(store, "_engine", None), "writer", None)  # the SQLite engine's
    run = getattr(writer, "run", None)
    if callable(run):
        try:
            writer_settings = await run(_writer_settings)
        except Exception as exc:  # a private hook: report, never fail the benchmark
            out["writer_connection"] = f"unavailable: {exc!r}"
        else:
            out["writer_connection"] = writer_settings
    return out


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb() -> float:
    """Current resident set size (VmRSS), or the peak where /proc is missing."""
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of this process (VmHWM / ru_maxrss)."""
    kb = _status_kb("VmHWM")
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if sys.platform == "darwin":
            kb //= 1024
    return kb / 1024
