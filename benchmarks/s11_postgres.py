"""S11 — the PostgreSQL engine beside the SQLite engine, in the same run (issue #19).

A throwaway server is started from the machine's PostgreSQL binaries (``tests/_pg.py``, via
:mod:`benchmarks._postgres`: initdb, a Unix socket of its own, ``fsync=off``), and each
measurement below runs once on ``open_store("postgresql://...")`` (a database of its own,
``create_database()``) and once on a SQLite file, both at ``durability="normal"`` and through
the public API only:

- the S2 burst: one task per thread awaiting ``append`` of one item at a time (100 x 100;
  repeated, the engines alternating; the median run by items/s is reported);
- goal-first to listed, idle (S3): ``create_thread(goal=...)`` until
  ``list_threads(limit=50)`` called right after it has answered, with 100 threads already
  there; the new thread must be on that page;
- ``list_threads(limit=50)`` with 10,000 threads of 20 items (S4's population).

The figures are the PostgreSQL engine's against SQLite's on the same machine in the same
process, as ratios; the target is the issue's: burst items/s at least half SQLite's. Without
PostgreSQL binaries or psycopg the scenario is reported as skipped with the reason
(``THREADSTORE_REQUIRE_POSTGRES=1`` makes that a failure, as in the tests).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any, Final, Literal

import trio

from threadstore import Item, open_store

from . import _postgres
from ._burst import burst, make_threads
from ._figures import Figure, ScenarioResult, Target
from ._profile import Profile
from ._stats import Summary, median, summarize, timed_calls
from ._workload import item_stream
from .s3_goal_first import timed_creations
from .s4_list import populate

ID: Final = "S11"
TITLE: Final = "PostgreSQL engine beside SQLite: burst, goal-first, list"

Engine = Literal["postgres", "sqlite"]
ENGINES: Final[tuple[Engine, ...]] = ("postgres", "sqlite")
NAMES: Final[dict[Engine, str]] = {"postgres": "PostgreSQL", "sqlite": "SQLite"}
#: Issue #19: the PostgreSQL engine's burst at least half the SQLite engine's items/s.
MIN_BURST_RATIO: Final = 0.5
#: Threads already in the store before the goal-first creations (as in S3).
EXISTING_THREADS: Final = 100
#: Items per thread when listing (as in S4).
LIST_ITEMS: Final = 20
#: Threads per ``append_nowait`` round when populating, as in S4 (a group commit of 400
#: threads x 20 items, about 4 MB, hung the engine's pipelined commit once: transactions
#: over 1 MB now go unpipelined, see tests/postgres: a group commit of megabytes).
POPULATE_CHUNK: Final = 1_000
#: Set (to anything but 0) to fail rather than skip when no server can be started.
REQUIRE_ENV: Final = "THREADSTORE_REQUIRE_POSTGRES"


def _items(threads: int, per_thread: int) -> list[list[Item]]:
    out = []
    for index in range(threads):
        stream = item_stream(1000 + index)
        out.append([next(stream) for _ in range(per_thread)])
    return out


class _Targets:
    """Where each measurement's fresh store lives: a new database, or a new file."""

    def __init__(self, server: _postgres.Server, workdir: Path) -> None:
        self.server = server
        self.workdir = workdir

    async def fresh(self, engine: Engine, name: str) -> str:
        if engine == "sqlite":
            await trio.lowlevel.checkpoint()
            return str(self.workdir / f"s11-{name}.db")
        database = await trio.to_thread.run_sync(self.server.create_database)
        return self.server.url(database)


async def _burst_once(target: str, items: list[list[Item]]) -> dict[str, Any]:
    async with open_store(target) as store:
        thread_ids = await make_threads(store, len(items))
        await store.flush_all()
        result = await burst(store, thread_ids, items)
        await store.flush_all()
    return {"items_per_s": result.items_per_s, "append": summarize(result.latencies_ms)}


async def _goal_first(target: str, creates: int) -> dict[str, Any]:
    async with open_store(target) as store:
        await make_threads(store, EXISTING_THREADS, prefix="existing")
        await store.flush_all()
        return await timed_creations(store, creates, "s11")


async def _listing(target: str, threads: int, calls: int) -> dict[str, Any]:
    async with open_store(target) as store:
        begin = time.perf_counter()
        await populate(store, threads, LIST_ITEMS, chunk=POPULATE_CHUNK)
        populate_s = time.perf_counter() - begin

        async def list_page() -> None:
            await store.list_threads(limit=50)

        latencies = await timed_calls(list_page, calls)
    return {
        "list": summarize(latencies),
        "populate_items_per_s": threads * LIST_ITEMS / populate_s,
    }


async def _warm_up(target: str) -> None:
    """The PostgreSQL engine's first calls (driver import, prepared statements), untimed."""
    await _burst_once(target, _items(10, 10))


def _server_settings(server: _postgres.Server) -> dict[str, Any]:
    """The server's version and the settings that decide what a commit costs (sync)."""
    import psycopg

    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        out: dict[str, Any] = {}
        for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers"):
            row = conn.execute(f"SHOW {name}").fetchone()
            out[name] = None if row is None else row[0]
    out["store_durability"] = "normal (the store sets synchronous_commit=off)"
    return out


def _skipped(reason: str) -> ScenarioResult:
    return ScenarioResult(id=ID, title=TITLE, figures=(), notes=(f"skipped: {reason}",))


def _describe(exc: BaseException) -> str:
    """The error, with the end of the tool's own output when initdb or pg_ctl failed."""
    text = repr(exc)
    output = getattr(exc, "stderr", None)
    if isinstance(output, bytes) and output.strip():
        text += ": " + output.decode(errors="replace").strip()[-300:]
    return text


def _required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


async def run(profile: Profile, workdir: Path) -> ScenarioResult:
    reason = await trio.to_thread.run_sync(_postgres.unavailable)
    if reason is not None:
        if _required():
            raise RuntimeError(reason)
        return _skipped(reason)
    try:
        server = await trio.to_thread.run_sync(_postgres.start)
    except (OSError, subprocess.CalledProcessError, KeyError) as exc:
        if _required():
            raise
        return _skipped(f"the PostgreSQL server did not start: {_describe(exc)}")
    try:
        return await _measure(profile, _Targets(server, workdir), server)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(server.stop)


async def _measure(profile: Profile, targets: _Targets, server: _postgres.Server) -> ScenarioResult:
    settings = await trio.to_thread.run_sync(_server_settings, server)
    await _warm_up(await targets.fresh("postgres", "warm-up"))

    items = _items(profile.s11_threads, profile.s11_items)
    bursts: dict[Engine, list[dict[str, Any]]] = {engine: [] for engine in ENGINES}
    for rep in range(profile.s11_repeats):
        for engine in ENGINES:
            target = await targets.fresh(engine, f"burst-{rep}")
            bursts[engine].append(await _burst_once(target, items))

    goal: dict[Engine, dict[str, Any]] = {}
    listing: dict[Engine, dict[str, Any]] = {}
    for engine in ENGINES:
        goal[engine] = await _goal_first(
            await targets.fresh(engine, "goal-first"), profile.s11_creates
        )
    for engine in ENGINES:
        listing[engine] = await _listing(
            await targets.fresh(engine, "list"), profile.s11_list_threads, profile.s11_calls
        )

    rate = {engine: median(r["items_per_s"] for r in bursts[engine]) for engine in ENGINES}
    mid: dict[Engine, Summary] = {}
    for engine in ENGINES:
        ranked = sorted(bursts[engine], key=lambda r: float(r["items_per_s"]))
        mid[engine] = ranked[(len(ranked) - 1) // 2]["append"]

    shape = f"{profile.s11_threads} x {profile.s11_items}"
    scale = f"{profile.s11_list_threads:,} threads"
    figures: list[Figure] = []
    for engine in ENGINES:
        name = NAMES[engine]
        figures += [
            Figure(
                key=f"burst_items_per_s.{engine}",
                label=f"{name}: burst {shape} items/s",
                value=rate[engine],
                unit="items/s",
            ),
            *_p50_p99(
                f"burst_append_{{}}_ms.{engine}", f"{name}: append {{}} in the burst", mid[engine]
            ),
        ]
    figures.append(
        Figure(
            key="burst_items_per_s_ratio",
            label="burst items/s, PostgreSQL / SQLite",
            value=rate["postgres"] / rate["sqlite"],
            unit="x",
            target=Target(op=">=", threshold=MIN_BURST_RATIO, note="issue #19"),
        )
    )
    creates = profile.s11_creates
    for engine in ENGINES:
        name = NAMES[engine]
        figures += [
            *_p50_p99(
                f"listed_{{}}_ms.{engine}",
                f"{name}: goal-first create -> listed {{}}",
                goal[engine]["total"],
            ),
            Figure(
                key=f"listed_count.{engine}",
                label=f"{name}: new threads listed at once (of {creates})",
                value=goal[engine]["listed"],
                target=Target(op=">=", threshold=creates),
            ),
        ]
    figures.append(
        Figure(
            key="listed_p50_ratio",
            label="goal-first create -> listed p50, PostgreSQL / SQLite",
            value=goal["postgres"]["total"].p50 / goal["sqlite"]["total"].p50,
            unit="x",
        )
    )
    for engine in ENGINES:
        name = NAMES[engine]
        figures += [
            *_p50_p99(
                f"list_{{}}_ms.{engine}",
                f"{name}: list_threads(50) {{}}, {scale}",
                listing[engine]["list"],
            ),
            Figure(
                key=f"populate_items_per_s.{engine}",
                label=f"{name}: populate {scale} x {LIST_ITEMS} items",
                value=listing[engine]["populate_items_per_s"],
                unit="items/s",
            ),
        ]
    figures.append(
        Figure(
            key="list_p50_ratio",
            label=f"list_threads(50) p50 at {scale}, PostgreSQL / SQLite",
            value=listing["postgres"]["list"].p50 / listing["sqlite"]["list"].p50,
            unit="x",
        )
    )
    return ScenarioResult(
        id=ID,
        title=TITLE,
        figures=tuple(figures),
        params={
            "burst_threads": profile.s11_threads,
            "burst_items_per_thread": profile.s11_items,
            "repeats": profile.s11_repeats,
            "creates": creates,
            "existing_threads": EXISTING_THREADS,
            "list_threads": profile.s11_list_threads,
            "list_items_per_thread": LIST_ITEMS,
            "list_calls": profile.s11_calls,
            "durability": "normal",
            "postgres_server": settings,
            "burst_items_per_s_runs": {
                engine: [round(r["items_per_s"], 1) for r in bursts[engine]] for engine in ENGINES
            },
        },
        series={
            engine: {"burst_items_per_s": [r["items_per_s"] for r in bursts[engine]]}
            for engine in ENGINES
        },
    )


def _p50_p99(key: str, label: str, summary: Summary) -> tuple[Figure, Figure]:
    """The p50 and p99 figures (in ms) of ``summary``: ``{}`` in ``key`` and ``label``
    becomes ``p50`` / ``p99``."""
    return (
        Figure(key=key.format("p50"), label=label.format("p50"), value=summary.p50, unit="ms"),
        Figure(key=key.format("p99"), label=label.format("p99"), value=summary.p99, unit="ms"),
    )
