"""What every store's worker process shares: the workloads, timing, commit counting.

Standard library only: the peer workers import this module inside their own pinned virtual
environments, where neither threadstore nor trio is installed. Each worker supplies an
:class:`Adapter` (how its store creates a thread, appends one item, lists the top threads)
and a ``gather`` for its event loop (asyncio for the peers, trio for threadstore); the
workloads themselves are written once, here, so every store runs exactly the same code.

Protocol: the runner writes one :class:`Request` as JSON on the worker's stdin; the worker
prints one JSON object (the result) as the last line of its stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import sqlite3
import sys
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, Self

WORKLOADS = ("burst", "sequential", "goal_first", "list")

#: PRAGMA synchronous values by number.
SYNCHRONOUS_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}

#: The settings every store gets in the "matched" runs (threadstore: ``durability="full"``).
MATCHED_PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
    "PRAGMA busy_timeout = 5000",
)


@dataclass(frozen=True)
class Params:
    """Workload sizes. Quick and ``--full`` differ only in ``list_threads``."""

    burst_threads: int = 100
    burst_items: int = 100
    sequential_items: int = 1_000
    goal_threads: int = 200
    list_threads: int = 2_000
    list_samples: int = 200
    list_limit: int = 50
    populate_concurrency: int = 8

    @classmethod
    def smoke(cls) -> Params:
        """Tiny sizes for checking that everything runs (not for figures)."""
        return cls(
            burst_threads=10,
            burst_items=10,
            sequential_items=50,
            goal_threads=60,
            list_threads=100,
            list_samples=20,
        )


@dataclass(frozen=True)
class Request:
    """One workload for one store at one setting, on a fresh database file ``db``, or on a
    fresh PostgreSQL database ``url`` (a libpq URL; the stores on PostgreSQL)."""

    workload: str
    settings: str
    db: str
    params: Params = field(default_factory=Params)
    url: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Request:
        raw = json.loads(text)
        return cls(
            workload=str(raw["workload"]),
            settings=str(raw["settings"]),
            db=str(raw["db"]),
            params=Params(**raw["params"]),
            url=None if raw.get("url") is None else str(raw["url"]),
        )


class Adapter(Protocol):
    """One store, driven the same way by every workload."""

    async def open(self) -> dict[str, Any]:
        """Open the store at the request's settings; return the settings in effect."""

    async def new_thread(self, goal: str | None) -> str:
        """Create a thread; with a goal, also store it as the first message (goal-first)."""

    async def append(self, thread_id: str, text: str) -> None:
        """Append one user message; return when the store says it is stored."""

    async def list_top(self, limit: int) -> list[str]:
        """The ids of the ``limit`` most recently updated threads, newest first."""

    async def release(self, thread_id: str) -> None:
        """Drop per-thread resources the workload no longer needs (e.g. connections)."""

    async def close(self) -> None:
        """Close the store (and every connection it opened)."""

    def extra(self) -> dict[str, Any]:
        """Store-specific figures to keep in the result (may be empty)."""


Gather = Callable[[Sequence[Callable[[], Awaitable[None]]]], Awaitable[None]]


# -- payloads ----------------------------------------------------------------------------

_LOREM = (
    "The build spends most of its time in the integration suite, which starts a fresh "
    "database for every test module and waits for migrations; caching the migrated template "
    "and cloning it per module would remove about four minutes. The second largest cost is "
    "the container image, rebuilt on every push although its inputs rarely change; keying "
    "the layer cache on the lock file would skip it on most runs. Flaky network tests retry "
    "three times with a fixed delay, which hides real failures and adds minutes when the "
    "mirror is slow. "
) * 3


def message_text(n: int, tag: str = "m") -> str:
    """A deterministic user message of about 400 characters (the same for every store)."""
    start = (n * 37) % (len(_LOREM) - 400)
    return f"[{tag}{n}] " + _LOREM[start : start + 400]


# -- statistics --------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) of already sorted values, linearly interpolated."""
    if not sorted_values:
        return float("nan")
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean of durations given in seconds, in milliseconds."""
    values = sorted(s * 1000.0 for s in seconds)
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": round(percentile(values, 0.50), 4),
        "p90": round(percentile(values, 0.90), 4),
        "p99": round(percentile(values, 0.99), 4),
        "max": round(values[-1], 4),
        "mean": round(sum(values) / len(values), 4),
    }


# -- commit counting -----------------------------------------------------------------------


class _Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.write_commits = 0
        #: Every counting connection still alive (threadstore reads its writer's settings).
        self.connections: weakref.WeakSet[CountingConnection] = weakref.WeakSet()

    def add(self) -> None:
        with self.lock:
            self.write_commits += 1


COMMITS = _Counter()


class CountingConnection(sqlite3.Connection):
    """A connection that counts its committed write transactions.

    A write transaction has committed when, after a statement or ``commit()``, the
    connection is outside a transaction and ``total_changes`` moved since the last time it
    was: this catches ``commit()``, an explicit ``COMMIT``/``END`` and autocommit writes
    alike. A rollback just resets the mark. Costs well under a microsecond per statement
    (unlike ``set_trace_callback``, which expands every bound parameter into the SQL text).
    Transactions that change no row (reads, schema no-ops) are not counted.
    """

    _mark = 0

    def _note(self) -> None:
        if not self.in_transaction:
            changes = self.total_changes
            if changes != self._mark:
                self._mark = changes
                COMMITS.add()

    def execute(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        try:
            return super().execute(*args, **kwargs)
        finally:
            self._note()

    def executemany(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        try:
            return super().executemany(*args, **kwargs)
        finally:
            self._note()

    def executescript(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        try:
            return super().executescript(*args, **kwargs)
        finally:
            self._note()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._note()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._mark = self.total_changes

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        if not args and "factory" not in kwargs:
            kwargs["factory"] = CountingCursor
        return super().cursor(*args, **kwargs)


class CountingCursor(sqlite3.Cursor):
    """Cursor statements are counted like connection statements."""

    def _note(self) -> None:
        conn = self.connection
        if isinstance(conn, CountingConnection):
            conn._note()

    def execute(self, *args: Any, **kwargs: Any) -> Self:
        try:
            return super().execute(*args, **kwargs)
        finally:
            self._note()

    def executemany(self, *args: Any, **kwargs: Any) -> Self:
        try:
            return super().executemany(*args, **kwargs)
        finally:
            self._note()

    def executescript(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        try:
            return super().executescript(*args, **kwargs)
        finally:
            self._note()


_original_connect = sqlite3.connect


def _counting_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
    kwargs.setdefault("factory", CountingConnection)
    conn: sqlite3.Connection = _original_connect(*args, **kwargs)
    if isinstance(conn, CountingConnection):
        with COMMITS.lock:
            COMMITS.connections.add(conn)
    return conn


def install_commit_counter() -> None:
    """Make every later ``sqlite3.connect`` in this process return a counting connection.

    Call before the store is imported or opened: the stores look ``sqlite3.connect`` up when
    they connect (directly, or through aiosqlite's worker thread).
    """
    sqlite3.connect = _counting_connect  # type: ignore[assignment]


def read_pragmas(conn: sqlite3.Connection) -> dict[str, Any]:
    """The SQLite settings in effect on ``conn`` (sync: call it in a worker thread)."""
    journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    sync = int(conn.execute("PRAGMA synchronous").fetchone()[0])
    busy = int(conn.execute("PRAGMA busy_timeout").fetchone()[0])
    return {
        "journal_mode": str(journal).lower(),
        "synchronous": SYNCHRONOUS_NAMES.get(sync, str(sync)),
        "busy_timeout_ms": busy,
    }


def apply_matched(conn: sqlite3.Connection) -> None:
    """Set the matched settings (WAL, synchronous=FULL, busy_timeout=5000) on ``conn``."""
    for pragma in MATCHED_PRAGMAS:
        conn.execute(pragma)


# -- workloads -----------------------------------------------------------------------------


class _Errors:
    def __init__(self) -> None:
        self.count = 0
        self.first: str | None = None

    def add(self, exc: BaseException) -> None:
        self.count += 1
        if self.first is None:
            self.first = f"{type(exc).__name__}: {exc}"[:300]

    def as_dict(self) -> dict[str, Any]:
        return {"errors": self.count, "first_error": self.first}


async def _burst(adapter: Adapter, p: Params, gather: Gather) -> dict[str, Any]:
    """``burst_threads`` tasks at once, each appending ``burst_items`` items, one at a time."""
    threads = [await adapter.new_thread(None) for _ in range(p.burst_threads)]
    latencies: list[float] = []
    errors = _Errors()

    def task(index: int, thread_id: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:  # noqa: ASYNC910 (sizes are never 0)
            for i in range(p.burst_items):
                text = message_text(index * p.burst_items + i, "b")
                t0 = time.perf_counter()
                try:
                    await adapter.append(thread_id, text)
                except Exception as exc:
                    errors.add(exc)
                    continue
                latencies.append(time.perf_counter() - t0)

        return run

    commits_before = COMMITS.write_commits
    t0 = time.perf_counter()
    await gather([task(n, tid) for n, tid in enumerate(threads)])
    elapsed = time.perf_counter() - t0
    commits = COMMITS.write_commits - commits_before
    stored = len(latencies)
    return {
        "threads": p.burst_threads,
        "items": stored,
        "seconds": round(elapsed, 4),
        "items_per_s": round(stored / elapsed, 1) if elapsed > 0 else None,
        "latency_ms": summarize_ms(latencies),
        "commits": commits,
        "commits_per_item": round(commits / stored, 4) if stored else None,
        **errors.as_dict(),
    }


async def _sequential(adapter: Adapter, p: Params, gather: Gather) -> dict[str, Any]:
    """One thread, ``sequential_items`` appends one after another."""
    thread_id = await adapter.new_thread(None)
    latencies: list[float] = []
    errors = _Errors()
    commits_before = COMMITS.write_commits
    for i in range(p.sequential_items):
        text = message_text(i, "s")
        t0 = time.perf_counter()
        try:
            await adapter.append(thread_id, text)
        except Exception as exc:
            errors.add(exc)
            continue
        latencies.append(time.perf_counter() - t0)
    commits = COMMITS.write_commits - commits_before
    return {
        "items": len(latencies),
        "latency_ms": summarize_ms(latencies),
        "commits_per_item": round(commits / len(latencies), 4) if latencies else None,
        **errors.as_dict(),
    }


async def _goal_first(adapter: Adapter, p: Params, gather: Gather) -> dict[str, Any]:
    """Create ``goal_threads`` goal-first threads back to back; after each, list the top.

    The time is from the start of the creation to the return of the first list call made
    right after it; ``missing`` counts the new threads that list did not show.
    """
    latencies: list[float] = []
    missing = 0
    missing_after_first_page = 0
    errors = _Errors()
    for n in range(p.goal_threads):
        goal = message_text(n, "goal")
        t0 = time.perf_counter()
        try:
            thread_id = await adapter.new_thread(goal)
            top = await adapter.list_top(p.list_limit)
        except Exception as exc:
            errors.add(exc)
            continue
        latencies.append(time.perf_counter() - t0)
        if thread_id not in top:
            missing += 1
            if n >= p.list_limit:
                missing_after_first_page += 1
        await adapter.release(thread_id)
    final = await adapter.list_top(p.list_limit)
    return {
        "threads": p.goal_threads,
        "listed_at_end": len(final),
        "latency_ms": summarize_ms(latencies),
        "missing": missing,
        "missing_once_over_limit": missing_after_first_page,
        **errors.as_dict(),
    }


async def _list(adapter: Adapter, p: Params, gather: Gather) -> dict[str, Any]:
    """Populate ``list_threads`` threads (one message each), then time top-N lists."""
    counter = iter(range(p.list_threads))
    errors = _Errors()

    async def populate() -> None:  # noqa: ASYNC910 (sizes are never 0)
        for n in counter:
            try:
                thread_id = await adapter.new_thread(message_text(n, "l"))
            except Exception as exc:
                errors.add(exc)
                continue
            await adapter.release(thread_id)

    t0 = time.perf_counter()
    await gather([populate for _ in range(p.populate_concurrency)])
    populate_seconds = time.perf_counter() - t0
    for _ in range(10):  # warm-up
        await adapter.list_top(p.list_limit)
    latencies: list[float] = []
    listed = 0
    for _ in range(p.list_samples):
        t0 = time.perf_counter()
        top = await adapter.list_top(p.list_limit)
        latencies.append(time.perf_counter() - t0)
        listed = len(top)
    return {
        "threads": p.list_threads,
        "populate_seconds": round(populate_seconds, 3),
        "listed": listed,
        "latency_ms": summarize_ms(latencies),
        **errors.as_dict(),
    }


_RUNNERS: dict[str, Callable[[Adapter, Params, Gather], Awaitable[dict[str, Any]]]] = {
    "burst": _burst,
    "sequential": _sequential,
    "goal_first": _goal_first,
    "list": _list,
}


async def run_workload(request: Request, adapter: Adapter, gather: Gather) -> dict[str, Any]:
    """Open the store, run the request's workload, close the store; return the figures."""
    settings = await adapter.open()
    try:
        result = await _RUNNERS[request.workload](adapter, request.params, gather)
        result["store_extra"] = adapter.extra()
    finally:
        await adapter.close()
    result["sqlite_settings"] = settings
    return result


# -- worker process plumbing -------------------------------------------------------------


def read_request() -> Request:
    """The request the runner wrote on stdin."""
    return Request.from_json(sys.stdin.read())


def db_bytes(path: str) -> int:
    """Size of the database file plus its ``-wal`` (after the store closed)."""
    total = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(FileNotFoundError):
            total += os.path.getsize(path + suffix)
    return total


def versions(*distributions: str) -> dict[str, str | None]:
    """Installed versions of the given distributions (None when not installed)."""
    found: dict[str, str | None] = {}
    for name in distributions:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def emit(
    request: Request,
    result: dict[str, Any],
    dists: Sequence[str],
    fallback_versions: dict[str, str] | None = None,
) -> None:
    """Complete ``result`` with the environment and print it as the last stdout line.

    ``fallback_versions`` names what to report for a distribution that is not installed
    (threadstore imported from the source tree).
    """
    result["workload"] = request.workload
    result["settings"] = request.settings
    result["db_bytes"] = db_bytes(request.db)
    result["python"] = platform.python_version()
    result["sqlite"] = sqlite3.sqlite_version
    found = versions(*dists)
    for name, fallback in (fallback_versions or {}).items():
        if found.get(name) is None:
            found[name] = fallback
    result["versions"] = found
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()


async def asyncio_gather(fns: Sequence[Callable[[], Awaitable[None]]]) -> None:
    """The asyncio workers' way to run one round of calls at once (``run_workload``'s
    ``gather``)."""
    await asyncio.gather(*(fn() for fn in fns))
