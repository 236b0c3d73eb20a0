"""The metadata row codec: a :class:`~threadstore._meta.Projection` as the ``threads`` table
stores it (times as integer microseconds, ``extra`` as JSON text, ``has_user_message`` 0/1),
and back. The fold itself knows nothing of rows; only this engine does."""

from __future__ import annotations

import json
import types
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from .._items import datetime_to_us
from .._meta import Projection, ThreadMeta

__all__ = [
    "ORDER_COLUMNS",
    "PROJECTED_COLUMNS",
    "THREAD_COLUMNS",
    "META_KEYS",
    "meta_from_values",
    "projection_from_row",
    "projection_to_row",
]

_STATUSES: Final = frozenset({"idle", "running", "error"})
_EMPTY: Final[Mapping[str, Any]] = types.MappingProxyType({})
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)  # (what us_to_datetime adds to)


THREAD_COLUMNS: Final = (
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
    "last_seq",
)
"""The stored columns of a thread row, in the order engines select and return them
(both SQL engines' tables have these columns)."""

PROJECTED_COLUMNS: Final = (
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
    "extra",
    "seq",
    "forked_from",
    "forked_at",
    "has_user_message",
)
"""The columns a projection write may change (not id, created_at, archived_at, last_seq; it
stamps ``change`` when one of these changed)."""

ORDER_COLUMNS: Final = frozenset({"updated_at", "created_at", "recency_at"})
"""The columns listings can order by; each has its listing indexes."""


def projection_to_row(projection: Projection) -> dict[str, object]:
    """The storage row of ``projection``, keyed by column, in the table's column order."""
    m = projection.meta
    return {
        "id": m.id,
        "created_at": datetime_to_us(m.created_at),
        "updated_at": datetime_to_us(m.updated_at),
        "recency_at": datetime_to_us(m.recency_at),
        "title": m.title,
        "goal": m.goal,
        "preview": m.preview,
        "last_message": m.last_message,
        "item_count": m.item_count,
        "turn_count": m.turn_count,
        "status": m.status,
        "input_tokens": m.input_tokens,
        "output_tokens": m.output_tokens,
        "archived_at": None if m.archived_at is None else datetime_to_us(m.archived_at),
        "extra": (
            json.dumps(dict(m.extra), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
            if m.extra
            else "{}"
        ),
        "seq": m.seq,
        "namespace": m.namespace,
        "forked_from": m.forked_from,
        "forked_at": m.forked_at,
        "change": m.change,
        "has_user_message": int(projection.has_user_message),
    }


def meta_from_values(values: Sequence[Any]) -> ThreadMeta:
    """The ``ThreadMeta`` of a stored row given as values in :func:`projection_to_row` key
    order (any values after ``has_user_message`` are ignored): what listing decodes per
    row."""
    (
        tid,
        created,
        updated,
        recency,
        title,
        goal,
        preview,
        last_message,
        item_count,
        turn_count,
        status,
        input_tokens,
        output_tokens,
        archived,
        extra_text,
        seq,
        namespace,
        forked_from,
        forked_at,
        change,
    ) = values[:20]
    if status not in _STATUSES:
        raise ValueError(f"invalid thread status in storage: {status!r}")
    return ThreadMeta(
        id=tid,
        created_at=_EPOCH + timedelta(0, 0, created),
        updated_at=_EPOCH + timedelta(0, 0, updated),
        recency_at=_EPOCH + timedelta(0, 0, recency),
        title=title,
        goal=goal,
        preview=preview,
        last_message=last_message,
        item_count=item_count,
        turn_count=turn_count,
        status=status,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        archived_at=None if archived is None else _EPOCH + timedelta(0, 0, archived),
        extra=_EMPTY if extra_text == "{}" else json.loads(extra_text),
        seq=seq,
        namespace=namespace,
        forked_from=forked_from,
        forked_at=forked_at,
        change=change,
    )


def projection_from_row(row: Mapping[str, Any]) -> Projection:
    """The inverse of :func:`projection_to_row` (for a row read by key; lists use
    :func:`meta_from_values`)."""
    meta = meta_from_values([row[key] for key in META_KEYS])
    return Projection(meta=meta, has_user_message=bool(row["has_user_message"]))


#: The keys of :func:`projection_to_row` that :func:`meta_from_values` decodes, in its order
#: (every key but ``has_user_message``), taken from the codec itself.
META_KEYS: Final[tuple[str, ...]] = tuple(projection_to_row(Projection.new("", 0)))[:-1]
