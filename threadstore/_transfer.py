"""The export format: a thread as a :class:`ThreadRecord`, and records as JSON Lines.

One thread is a header line, then one line per log item in seq order::

    {"type": "thread", "format": 1, "id": "…", "namespace": "", "created_at": "…",
     "archived_at": null, "items": 2}
    {"type": "item", "thread": "…", "seq": 1, "created_at": "…", "kind": "goal",
     "data": {"text": "…"}}

Times are ISO 8601 in UTC with microseconds (exact). Items keep their kinds and data as
stored, history edits (``rewind``, ``fork``) included. These functions are pure: the store
makes and takes records (``Store.export_thread``, ``Store.import_thread``), the
``threadstore`` command reads and writes the lines.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any, Final

import attrs

from ._errors import ImportFormatError, InvalidItemError
from ._history import FORK_KIND, REWIND_KIND
from ._items import Item, StoredItem, encode_item, validate_namespace, validate_thread_id

__all__ = ["EXPORT_FORMAT", "ThreadRecord", "check_edit", "read_records", "record_lines"]

#: The ``format`` field of the header lines this code writes (and the only one it reads).
EXPORT_FORMAT: Final = 1

#: Item size when reading an export; the store importing it checks its own limit again.
_NO_SIZE_LIMIT: Final = 1 << 62


@attrs.frozen(kw_only=True)
class ThreadRecord:
    """A whole thread as exported: what ``Store.import_thread`` needs to recreate it exactly
    (its metadata is folded again from the items)."""

    id: str
    namespace: str
    created_at: datetime
    archived_at: datetime | None
    items: tuple[StoredItem, ...]
    #: Custom projectors' output as the thread's metadata holds it (``{name: mapping}``):
    #: the part of ``ThreadMeta.extra`` its log does not produce.
    extra: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)


def _time(value: datetime) -> str:
    return value.isoformat(timespec="microseconds")


def _plain(value: Any) -> Any:
    """Read-only mappings (as items are decoded) as dicts, for ``json.dumps``."""
    if isinstance(value, Mapping):
        return {key: _plain(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [_plain(inner) for inner in value]
    return value


def record_lines(record: ThreadRecord) -> Iterator[str]:
    """The JSON Lines of ``record`` (no newlines): its header, then its items."""
    dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
    yield dumps(
        {
            "type": "thread",
            "format": EXPORT_FORMAT,
            "id": record.id,
            "namespace": record.namespace,
            "created_at": _time(record.created_at),
            "archived_at": None if record.archived_at is None else _time(record.archived_at),
            "items": len(record.items),
            "extra": _plain(record.extra),
        }
    )
    for item in record.items:
        yield dumps(
            {
                "type": "item",
                "thread": record.id,
                "seq": item.seq,
                "created_at": _time(item.created_at),
                "kind": item.kind,
                "data": _plain(item.data),
            }
        )


class _Reader:
    """The state of :func:`read_records`: the thread being read and its items so far."""

    def __init__(self) -> None:
        self.header: dict[str, Any] | None = None
        self.header_line = 0
        self.expected = 0
        self.items: list[StoredItem] = []

    def finish(self, line: int) -> ThreadRecord:
        header = self.header
        assert header is not None
        if len(self.items) != self.expected:
            raise ImportFormatError(
                line,
                f"thread {header['id']!r} (line {self.header_line}) announces "
                f"{self.expected} items but has {len(self.items)}",
            )
        self.header = None
        return ThreadRecord(
            id=header["id"],
            namespace=header["namespace"],
            created_at=header["created_at"],
            archived_at=header["archived_at"],
            items=tuple(self.items),
            extra=header["extra"],
        )


def read_records(lines: Iterable[str]) -> Iterator[ThreadRecord]:
    """The records of an export's lines (blank lines are skipped), each once its last item
    is read. Raises :class:`ImportFormatError` naming the line (from 1) of the first
    malformed one: not JSON, not an object, a missing or mistyped field, an invalid id,
    namespace, kind or time, a seq out of order, an item outside a thread, or a thread
    with fewer or more items than its header announces."""
    reader = _Reader()
    number = 0
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise ImportFormatError(number, f"not JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise ImportFormatError(number, "not a JSON object")
        kind = obj.get("type")
        if kind == "thread":
            if reader.header is not None:
                yield reader.finish(number)
            reader.header = _header(number, obj)
            reader.header_line = number
            reader.expected = obj["items"]
            reader.items = []
        elif kind == "item":
            if reader.header is None:
                raise ImportFormatError(number, "an item before any thread header")
            reader.items.append(_item(number, obj, reader.header["id"], len(reader.items) + 1))
        else:
            raise ImportFormatError(number, f'"type" must be "thread" or "item", not {kind!r}')
    if reader.header is not None:
        yield reader.finish(number + 1)


def _field(line: int, obj: Mapping[str, Any], name: str, kinds: Any, what: str) -> Any:
    if name not in obj:
        raise ImportFormatError(line, f"missing field {name!r}")
    value = obj[name]
    if not isinstance(value, kinds) or (isinstance(value, bool) and kinds is int):
        raise ImportFormatError(line, f"field {name!r} must be {what}, not {value!r:.60}")
    return value


def _parse_time(line: int, obj: Mapping[str, Any], name: str) -> datetime:
    text = _field(line, obj, name, str, "an ISO 8601 time")
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ImportFormatError(
            line, f"field {name!r} is not an ISO 8601 time: {text!r:.60}"
        ) from None
    if value.tzinfo is None:
        raise ImportFormatError(line, f"field {name!r} has no time zone: {text!r:.60}")
    return value


def _header(line: int, obj: Mapping[str, Any]) -> dict[str, Any]:
    version = _field(line, obj, "format", int, "an int")
    if version != EXPORT_FORMAT:
        raise ImportFormatError(line, f"export format {version} is not {EXPORT_FORMAT}")
    try:
        thread_id = validate_thread_id(_field(line, obj, "id", str, "a str"))
        namespace = validate_namespace(_field(line, obj, "namespace", str, "a str"))
    except InvalidItemError as exc:
        raise ImportFormatError(line, str(exc)) from None
    count = _field(line, obj, "items", int, "an int")
    if count < 0:
        raise ImportFormatError(line, f"field 'items' must be >= 0, not {count}")
    archived = None if obj.get("archived_at") is None else _parse_time(line, obj, "archived_at")
    extra = obj.get("extra", {})
    if not isinstance(extra, dict) or not all(isinstance(v, dict) for v in extra.values()):
        raise ImportFormatError(line, "field 'extra' must map projector names to objects")
    return {
        "extra": extra,
        "id": thread_id,
        "namespace": namespace,
        "created_at": _parse_time(line, obj, "created_at"),
        "archived_at": archived,
        "items": count,
    }


def _item(line: int, obj: Mapping[str, Any], thread_id: str, expected_seq: int) -> StoredItem:
    owner = _field(line, obj, "thread", str, "a str")
    if owner != thread_id:
        raise ImportFormatError(line, f"an item of thread {owner!r} inside thread {thread_id!r}")
    seq = _field(line, obj, "seq", int, "an int")
    if seq != expected_seq:
        raise ImportFormatError(line, f"seq {seq} where seq {expected_seq} was expected")
    item = Item(
        kind=_field(line, obj, "kind", str, "a str"),
        data=_field(line, obj, "data", dict, "a JSON object"),
    )
    try:
        encode_item(item, max_item_bytes=_NO_SIZE_LIMIT)
        check_edit(f"seq {seq}", item.kind, item.data, seq)
    except InvalidItemError as exc:
        raise ImportFormatError(line, str(exc)) from None
    return StoredItem(
        kind=item.kind, data=item.data, seq=seq, created_at=_parse_time(line, obj, "created_at")
    )


def check_edit(where: str, kind: str, data: Any, seq: int) -> None:
    """Refuse a history edit no store could have written: a ``rewind`` past its own
    seq, a ``fork`` item after seq 1 or without its source."""
    if kind == REWIND_KIND:
        to_seq = data.get("to_seq")
        if type(to_seq) is not int or not 0 <= to_seq < seq:
            raise InvalidItemError(f"{where}: a rewind needs 'to_seq' in 0..{seq - 1}")
    elif kind == FORK_KIND:
        at_seq = data.get("at_seq")
        if seq != 1 or not isinstance(data.get("from"), str) or type(at_seq) is not int:
            raise InvalidItemError(
                f"{where}: a fork item comes first, with 'from' (a thread id) and 'at_seq'"
            )
