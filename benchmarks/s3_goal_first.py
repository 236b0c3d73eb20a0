"""S3 — goal-first threads: from ``create_thread(goal=...)`` until listed in the top 50.

Each creation is timed from the call until ``list_threads(limit=50)``, called right after
``create_thread`` returns, has answered; the thread must be in that page. Measured idle
(back-to-back creations) and again while an S2-style burst (one task per thread awaiting
``append`` of one item at a time) runs concurrently. A miss under load is counted as
"outranked" when all 50 listed threads were legitimately updated after the new thread
(``updated_at``), i.e. the order, not the store, pushed it out of the page.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Final

import trio

from threadstore import Store, open_store

from ._burst import burst, make_threads
from ._figures import Figure, ScenarioResult, Target
from ._profile import Profile
from ._stats import summarize
from ._workload import item_stream

ID: Final = "S3"
TITLE: Final = "goal-first thread to listed"
BURST_THREADS: Final = 100


async def timed_creations(store: Store, count: int, tag: str) -> dict[str, Any]:
    """``count`` goal-first creations, each timed until ``list_threads(limit=50)`` called
    right after it has answered; whether the page held the new thread (also used by S11)."""
    total_ms: list[float] = []
    create_ms: list[float] = []
    list_ms: list[float] = []
    listed = outranked = 0
    for index in range(count):
        begin = time.perf_counter()
        meta = await store.create_thread(goal=f"{tag} goal {index}: ship the onboarding flow")
        created = time.perf_counter()
        page = await store.list_threads(limit=50)
        done = time.perf_counter()
        total_ms.append((done - begin) * 1000)
        create_ms.append((created - begin) * 1000)
        list_ms.append((done - created) * 1000)
        if any(t.id == meta.id for t in page.threads):
            listed += 1
        elif len(page.threads) == 50 and all(t.updated_at > meta.updated_at for t in page.threads):
            outranked += 1
    await trio.lowlevel.checkpoint()
    return {
        "total": summarize(total_ms),
        "create": summarize(create_ms),
        "list": summarize(list_ms),
        "listed": listed,
        "outranked": outranked,
        "count": count,
    }


async def run(profile: Profile, workdir: Path) -> ScenarioResult:
    count = profile.s3_creates
    async with open_store(workdir / "s3.db") as store:
        # A few threads already there, as in a real sidebar.
        await make_threads(store, 100, prefix="existing")
        await store.flush_all()
        idle = await timed_creations(store, count, "idle")

        burst_ids = await make_threads(store, BURST_THREADS, prefix="burst")
        await store.flush_all()
        items = []
        for index in range(BURST_THREADS):
            stream = item_stream(3000 + index)
            items.append([next(stream) for _ in range(100)])
        stop = trio.Event()
        loaded: dict[str, Any] = {}

        async def measure() -> None:
            await trio.sleep(0.05)  # let the burst get going
            loaded.update(await timed_creations(store, count, "loaded"))
            stop.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(measure)
            background = await burst(store, burst_ids, items, until=stop)
        await store.flush_all()

    figures: list[Figure] = []
    for name, res, p99_target in (("idle", idle, 1.5), ("under load", loaded, 5.0)):
        key = name.replace(" ", "_")
        figures += [
            Figure(
                key=f"listed_p50_ms.{key}",
                label=f"create -> listed p50, {name}",
                value=res["total"].p50,
                unit="ms",
            ),
            Figure(
                key=f"listed_p99_ms.{key}",
                label=f"create -> listed p99, {name}",
                value=res["total"].p99,
                unit="ms",
                target=Target(op="<", threshold=p99_target),
            ),
            Figure(
                key=f"create_p50_ms.{key}",
                label=f"create_thread alone p50 / p99 {res['create'].p99:.3g} ms, {name}",
                value=res["create"].p50,
                unit="ms",
            ),
            Figure(
                key=f"list_p50_ms.{key}",
                label=f"list_threads(limit=50) alone p50 / p99 {res['list'].p99:.3g} ms, {name}",
                value=res["list"].p50,
                unit="ms",
            ),
            Figure(
                key=f"listed_count.{key}",
                label=f"new threads listed at once, {name} (of {res['count']})",
                value=res["listed"],
                target=Target(op=">=", threshold=res["count"]),
            ),
        ]
        if res["outranked"]:
            figures.append(
                Figure(
                    key=f"outranked_count.{key}",
                    label=f"not listed, outranked by newer updates, {name}",
                    value=res["outranked"],
                )
            )
    figures.append(
        Figure(
            key="background_items_per_s",
            label="background burst items/s during the loaded creations",
            value=background.items_per_s,
            unit="items/s",
        )
    )
    return ScenarioResult(
        id=ID,
        title=TITLE,
        figures=tuple(figures),
        params={"creates": count, "burst_threads": BURST_THREADS},
    )
