"""The SQLite engine's metadata row codec (``threadstore.sqlite._rows``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_meta import T0, apply_all, item_runs, stored

from threadstore import Item, StoredItem
from threadstore._items import metadata_item
from threadstore._meta import Patch, Projection
from threadstore.sqlite._rows import meta_from_values, projection_from_row, projection_to_row
from threadstore.sqlite._sql import THREAD_COLUMNS

ROW_COLUMNS = {
    "id",
    "created_at",
    "updated_at",
    "recency_at",
    "title",
    "goal",
    "preview",
    "last_message",
    "item_count",
    "turn_count",
    "status",
    "input_tokens",
    "output_tokens",
    "archived_at",
    "extra",
    "seq",
    "namespace",
    "forked_from",
    "forked_at",
    "change",
    "has_user_message",
}


@settings(max_examples=200)
@given(item_runs(), st.none() | st.integers(0, 2**53))
def test_row_round_trip(items: list[StoredItem], archived_at: int | None) -> None:
    projection = apply_all([Patch.from_items(items)]).with_archived_at(archived_at)
    row = projection_to_row(projection)
    assert set(row) == ROW_COLUMNS
    assert projection_from_row(row) == projection
    assert isinstance(row["extra"], str)
    assert row["has_user_message"] in (0, 1)
    # Listing decodes the same values as a tuple, in the column order the store selects.
    assert tuple(row) == THREAD_COLUMNS[: len(row)]
    assert meta_from_values((*row.values(), 99)) == projection.meta


def test_row_values() -> None:
    projection = Projection.new("t", T0).apply(
        Patch.from_items(stored([Item.user_message("q"), metadata_item({"k": "é"})]))
    )
    row = projection_to_row(projection.with_archived_at(T0 + 5))
    assert row == {
        "id": "t",
        "created_at": T0,
        "updated_at": T0 + 1001,
        "recency_at": T0 + 1,
        "title": None,
        "goal": None,
        "preview": "q",
        "last_message": None,
        "item_count": 2,
        "turn_count": 0,
        "status": "idle",
        "input_tokens": 0,
        "output_tokens": 0,
        "archived_at": T0 + 5,
        "extra": '{"k":"é"}',
        "seq": 2,
        "namespace": "",
        "forked_from": None,
        "forked_at": None,
        "change": 0,
        "has_user_message": 1,
    }
    archived = projection_from_row(row).meta.archived_at
    assert archived == datetime.fromtimestamp((T0 + 5) / 1e6, UTC)


def test_from_row_rejects_unknown_status() -> None:
    row: dict[str, Any] = projection_to_row(Projection.new("t", T0))
    row["status"] = "sleeping"
    with pytest.raises(ValueError, match="sleeping"):
        projection_from_row(row)
