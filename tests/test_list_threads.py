"""list_threads through the store: orders, ties, search, keyset pages, cursors, limits."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Literal

import pytest
import trio
from _helpers import listed_ids

from threadstore import InvalidCursorError, InvalidItemError, Item, Store, open_store
from threadstore._meta import Projection
from threadstore.sqlite._engine import ListedMetas as _ListedMetas
from threadstore.sqlite._rows import meta_from_values, projection_to_row

OrderBy = Literal["updated_at", "created_at", "recency_at"]
ORDERS: tuple[OrderBy, ...] = ("updated_at", "created_at", "recency_at")


# -- list_threads -----------------------------------------------------------------------


@pytest.mark.parametrize("descending", [False, True], ids=["asc", "desc"])
@pytest.mark.parametrize("order_by", ORDERS)
async def test_list_orders(store: Store, order_by: OrderBy, descending: bool) -> None:
    t = [(await store.create_thread(title=f"t{n}")).id for n in range(4)]
    await store.append_and_flush(t[1], Item.user_message("moves t1 up every list"))
    await store.append_and_flush(t[0], Item.assistant_message("moves t0 up updated_at only"))
    expected_ascending = {
        "created_at": [t[0], t[1], t[2], t[3]],
        "updated_at": [t[2], t[3], t[1], t[0]],
        "recency_at": [t[0], t[2], t[3], t[1]],
    }[order_by]

    ids = await listed_ids(store, order_by=order_by, descending=descending)

    assert ids == (expected_ascending[::-1] if descending else expected_ascending)


def _give_every_thread_the_same_times(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE threads SET created_at = 5, updated_at = 5, recency_at = 5")
    conn.close()


@pytest.mark.parametrize("descending", [False, True], ids=["asc", "desc"])
@pytest.mark.parametrize("order_by", ORDERS)
async def test_list_ties_are_broken_by_id(
    store_path: Path, order_by: OrderBy, descending: bool
) -> None:
    async with open_store(store_path) as store:
        for tid in ("b", "d", "a", "c", "e"):
            await store.create_thread(thread_id=tid, title=tid)
    # Threads written by another process (or after a clock step) can share a timestamp.
    await trio.to_thread.run_sync(_give_every_thread_the_same_times, store_path)

    async with open_store(store_path, read_only=True) as store:
        full = await listed_ids(store, order_by=order_by, descending=descending)
        paged: list[str] = []
        cursor = None
        while True:
            page = await store.list_threads(
                limit=2, cursor=cursor, order_by=order_by, descending=descending
            )
            paged += [m.id for m in page.threads]
            if (cursor := page.next_cursor) is None:
                break

    expected = ["a", "b", "c", "d", "e"]
    assert full == paged == (expected[::-1] if descending else expected)


async def test_search_matches_title_preview_goal_case_insensitively(store: Store) -> None:
    alpha = (await store.create_thread(title="Alpha Report")).id
    percent = (await store.create_thread(title="done 100% now")).id
    under = (await store.create_thread(title="snake_case name")).id
    goal = (await store.create_thread(goal="Find the DELTA")).id
    preview = (await store.create_thread()).id
    await store.append_and_flush(preview, Item.user_message("Epsilon question"))
    plain = (await store.create_thread(title="100 percent snakecase")).id

    async def search(text: str) -> set[str]:
        return set(await listed_ids(store, search=text))

    assert await search("alpha REPORT") == {alpha}
    assert await search("delta") == {goal}
    assert await search("EPSILON") == {preview}
    assert await search("%") == {percent}
    assert await search("100%") == {percent}
    assert await search("_") == {under}
    assert await search("e_c") == {under}
    assert await search("100") == {percent, plain}
    assert await search("no such text") == set()
    assert await search("") == {alpha, percent, under, goal, preview, plain}


@pytest.mark.parametrize("descending", [False, True], ids=["asc", "desc"])
@pytest.mark.parametrize("order_by", ORDERS)
async def test_pagination_visits_every_thread_exactly_once(
    store: Store, order_by: OrderBy, descending: bool
) -> None:
    created = {(await store.create_thread(title=f"t{n}")).id for n in range(25)}
    seen: list[str] = []
    sizes: list[int] = []
    cursor: str | None = None
    while True:
        page = await store.list_threads(
            limit=7,
            cursor=cursor,
            order_by=order_by,
            descending=descending,
        )
        seen += [m.id for m in page.threads]
        sizes.append(len(page.threads))
        if (cursor := page.next_cursor) is None:
            break
        if descending:
            # A listed thread updated mid-walk moves to the front (already visited): the
            # walk neither repeats it nor skips anything.
            await store.append_and_flush(seen[0], Item.user_message(f"bump {len(seen)}"))

    assert sizes == [7, 7, 7, 4]
    assert len(seen) == len(set(seen)) == 25
    assert set(seen) == created


def _flip(token: str, index: int) -> str:
    char = "B" if token[index] == "A" else "A"
    return token[:index] + char + token[index + 1 :]


async def test_tampered_foreign_or_reused_cursor_is_rejected(store: Store, tmp_path: Path) -> None:
    for n in range(3):
        await store.create_thread(title=f"t{n}")
    cursor = (await store.list_threads(limit=1)).next_cursor
    assert cursor is not None
    async with open_store(tmp_path / "other.db") as other:
        for n in range(3):
            await other.create_thread(title=f"t{n}")
        foreign = (await other.list_threads(limit=1)).next_cursor
    assert foreign is not None

    for index in (0, len(cursor) // 2, len(cursor) - 2):
        with pytest.raises(InvalidCursorError, match="tampered"):
            await store.list_threads(limit=1, cursor=_flip(cursor, index))
    with pytest.raises(InvalidCursorError, match="another store"):
        await store.list_threads(limit=1, cursor=foreign)
    for changed in (
        {"order_by": "created_at"},
        {"descending": False},
        {"archived": True},
        {"search": "t"},
        {"include_empty": True},
    ):
        with pytest.raises(InvalidCursorError, match="different query"):
            await store.list_threads(limit=1, cursor=cursor, **changed)
    # The genuine cursor still works, also with another limit.
    assert len((await store.list_threads(limit=5, cursor=cursor)).threads) == 2


async def test_listing_reuses_unchanged_rows_and_decodes_changed_ones(store: Store) -> None:
    a = await store.create_thread(goal="goal a")
    b = await store.create_thread(goal="goal b")
    first = {meta.id: meta for meta in (await store.list_threads()).threads}
    await store.append_and_flush(a.id, Item.user_message("a new preview"))
    second = {meta.id: meta for meta in (await store.list_threads()).threads}
    assert second[a.id].preview == "a new preview"
    assert second[a.id] == await store.get_thread(a.id) != first[a.id]
    assert second[b.id] == await store.get_thread(b.id)
    assert second[b.id] is first[b.id], "an unchanged row was decoded again"


def test_listed_metas_are_bounded_and_always_equal_a_fresh_decode() -> None:
    metas = _ListedMetas(size=2)
    rows = [
        (*projection_to_row(Projection.new(f"t{n}", created_at_us=n)).values(),) for n in range(3)
    ]
    first = metas.decode(rows)
    assert first == tuple(meta_from_values(row) for row in rows)
    assert metas.decode(rows[2:])[0] is first[2]
    again = metas.decode(rows[:1])[0]
    assert again == first[0]
    assert again is not first[0], "the oldest entry was not forgotten"


@pytest.mark.parametrize("limit", [0, -1, 1001, "5", 2.0, True], ids=repr)
async def test_list_limit_out_of_range_is_rejected(store: Store, limit: object) -> None:
    with pytest.raises(InvalidItemError, match=r"limit must be an int in 1\.\.1000"):
        await store.list_threads(limit=limit)  # type: ignore[arg-type]


async def test_list_limit_bounds_are_accepted(store: Store) -> None:
    for n in range(3):
        await store.create_thread(title=f"t{n}")
    assert len((await store.list_threads(limit=1)).threads) == 1
    assert len((await store.list_threads(limit=1000)).threads) == 3
