"""Items (the entries of a thread's log), their validation and JSON encoding, ids and clocks.

Everything here is pure: no I/O, no trio. ``encode_item`` is the single gate every item passes
before it is queued, so bad input is rejected before anything is written.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import types
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from ._errors import InvalidItemError, shorten

__all__ = [
    "BUILTIN_KINDS",
    "METADATA_KIND",
    "URGENT_KINDS",
    "Item",
    "StoredItem",
    "Timestamps",
    "datetime_to_us",
    "decode_data",
    "encode_item",
    "metadata_item",
    "new_thread_id",
    "normalize_json",
    "us_to_datetime",
    "validate_namespace",
    "validate_thread_id",
]

#: The kind of the internal item ``update_thread(extra=...)`` records: ``{"extra": {...}}``.
METADATA_KIND = "metadata"

#: Nesting deeper than this is rejected (it also catches self-referencing containers).
MAX_JSON_DEPTH = 256

_KIND_RE = re.compile(r"[a-z][a-z0-9_.:-]{0,63}")


def _readonly(data: Mapping[str, Any]) -> Mapping[str, Any]:
    # Copy so later changes to the caller's dict do not leak in; anything that is not a mapping
    # is kept as is for ``encode_item`` to reject with a clear message.
    if isinstance(data, Mapping):
        return types.MappingProxyType(dict(data))
    return data


@attrs.frozen(kw_only=True)
class Item:
    """One entry of a thread's log: a ``kind`` and a JSON-serializable ``data`` mapping.

    ``data`` is copied on construction and exposed read-only. Nothing is validated here;
    ``encode_item`` (called by every append) does that.
    """

    kind: str
    data: Mapping[str, Any] = attrs.field(converter=_readonly)

    @classmethod
    def user_message(cls, text: str) -> Item:
        """A message the user sent."""
        return Item(kind="user_message", data={"text": text})

    @classmethod
    def assistant_message(cls, text: str) -> Item:
        """Text the assistant produced."""
        return Item(kind="assistant_message", data={"text": text})

    @classmethod
    def reasoning(cls, text: str) -> Item:
        """The assistant's reasoning text."""
        return Item(kind="reasoning", data={"text": text})

    @classmethod
    def tool_call(cls, name: str, arguments: Any, call_id: str) -> Item:
        """A call of tool ``name``; ``arguments`` is any JSON value."""
        return Item(
            kind="tool_call", data={"name": name, "arguments": arguments, "call_id": call_id}
        )

    @classmethod
    def tool_result(cls, call_id: str, output: Any, is_error: bool = False) -> Item:
        """The result of the tool call ``call_id``; ``output`` is any JSON value."""
        return Item(
            kind="tool_result", data={"call_id": call_id, "output": output, "is_error": is_error}
        )

    @classmethod
    def turn_started(cls, turn_id: str) -> Item:
        """A turn began: the thread is ``running``."""
        return Item(kind="turn_started", data={"turn_id": turn_id})

    @classmethod
    def turn_completed(cls, turn_id: str) -> Item:
        """A turn ended normally."""
        return Item(kind="turn_completed", data={"turn_id": turn_id})

    @classmethod
    def turn_aborted(cls, turn_id: str, reason: str) -> Item:
        """A turn was cut short."""
        return Item(kind="turn_aborted", data={"turn_id": turn_id, "reason": reason})

    @classmethod
    def goal(cls, text: str) -> Item:
        """The thread's goal (the preview until the first user message)."""
        return Item(kind="goal", data={"text": text})

    @classmethod
    def title(cls, text: str) -> Item:
        """The thread's title."""
        return Item(kind="title", data={"text": text})

    @classmethod
    def token_usage(cls, input: int, output: int) -> Item:
        """Tokens consumed; summed into the thread's metadata."""
        return Item(kind="token_usage", data={"input": input, "output": output})

    @classmethod
    def error(cls, message: str) -> Item:
        """An error: the thread's status is ``error`` until the next turn starts."""
        return Item(kind="error", data={"message": message})

    @classmethod
    def compaction(cls, summary: str) -> Item:
        """A summary standing for everything before it: ``read_context`` starts here."""
        return Item(kind="compaction", data={"summary": summary})


@attrs.frozen(kw_only=True)
class StoredItem(Item):
    """An item as stored: with its ``seq`` in the thread and its UTC ``created_at``."""

    seq: int
    created_at: datetime


def metadata_item(extra: Mapping[str, Any]) -> Item:
    """The item ``update_thread(extra=...)`` records: top-level keys merge into ``extra``.

    A value of ``None`` deletes the key.
    """
    return Item(kind=METADATA_KIND, data={"extra": dict(extra)})


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _is_bool(value: object) -> bool:
    return isinstance(value, bool)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_any(value: object) -> bool:
    return True


def _is_mapping(value: object) -> bool:
    return isinstance(value, Mapping)


_Field = tuple[str, Callable[[object], bool], str]
_TEXT: tuple[_Field, ...] = (("text", _is_str, "a str"),)
_TURN: _Field = ("turn_id", _is_str, "a str")

# The fields each built-in kind's data must have (extra keys are allowed).
_SCHEMAS: dict[str, tuple[_Field, ...]] = {
    "user_message": _TEXT,
    "assistant_message": _TEXT,
    "reasoning": _TEXT,
    "tool_call": (
        ("name", _is_str, "a str"),
        ("arguments", _is_any, "a JSON value"),
        ("call_id", _is_str, "a str"),
    ),
    "tool_result": (
        ("call_id", _is_str, "a str"),
        ("output", _is_any, "a JSON value"),
        ("is_error", _is_bool, "a bool"),
    ),
    "turn_started": (_TURN,),
    "turn_completed": (_TURN,),
    "turn_aborted": (_TURN, ("reason", _is_str, "a str")),
    "goal": _TEXT,
    "title": _TEXT,
    "token_usage": (
        ("input", _is_count, "an int >= 0"),
        ("output", _is_count, "an int >= 0"),
    ),
    "error": (("message", _is_str, "a str"),),
    "compaction": (("summary", _is_str, "a str"),),
    METADATA_KIND: (("extra", _is_mapping, "a mapping"),),
    # The store's own history edits (``Store.rewind``/``fork``; ``append`` refuses them).
    "rewind": (("to_seq", _is_count, "an int >= 0"),),
    "fork": (("from", _is_str, "a str"), ("at_seq", _is_count, "an int >= 0")),
}

#: Kinds the built-in projection understands; their data is checked against their constructor.
BUILTIN_KINDS: frozenset[str] = frozenset(_SCHEMAS)

#: Kinds projected at once even inside a ``projection_delay`` window.
URGENT_KINDS: frozenset[str] = frozenset(
    {"goal", "title", "turn_completed", "turn_aborted", "error"}
)


def normalize_json(value: object, path: str = "data", *, _depth: int = 0) -> Any:
    """Return ``value`` as plain JSON types (dict, list, str, int, float, bool, None).

    Tuples become lists and mappings become dicts. Raise ``InvalidItemError`` naming the
    ``path`` of the first value JSON cannot represent exactly: other objects, NaN/Infinity,
    non-str keys, strings that cannot be encoded as UTF-8, or nesting deeper than 256 levels.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidItemError(f"{path} is {shorten(value)}, which JSON cannot represent")
        return float(value)
    if isinstance(value, str):
        _check_utf8(value, path)
        return str(value)
    if _depth >= MAX_JSON_DEPTH:
        raise InvalidItemError(
            f"{_shorten_path(path)} is nested deeper than {MAX_JSON_DEPTH} levels "
            "(or contains itself)"
        )
    if isinstance(value, Mapping):
        result: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidItemError(
                    f"{path} has a key {shorten(key)} of type {type(key).__name__}; "
                    "JSON object keys must be str"
                )
            _check_utf8(key, f"{path} key")
            result[str(key)] = normalize_json(item, f"{path}[{key!r}]", _depth=_depth + 1)
        return result
    if isinstance(value, list | tuple):
        return [
            normalize_json(item, f"{path}[{index}]", _depth=_depth + 1)
            for index, item in enumerate(value)
        ]
    raise InvalidItemError(
        f"{path} is {shorten(value)} of type {type(value).__name__}, which is not JSON"
    )


def _shorten_path(path: str, limit: int = 80) -> str:
    """A value's path cut to its start and end, for messages about deep nesting."""
    if len(path) <= limit:
        return path
    return path[: limit // 2] + "…" + path[-limit // 2 :]


def _check_utf8(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidItemError(
            f"{path} is {shorten(text)}, which cannot be encoded as UTF-8 ({exc.reason})"
        ) from None


def _plain(value: object, depth: int) -> bool:
    """Whether ``value`` is made of exact JSON types only (dict with str keys, list, str,
    int, float, bool, None) within ``MAX_JSON_DEPTH``: what ``json.dumps`` encodes as is."""
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return True
    if depth >= MAX_JSON_DEPTH:
        return False
    if kind is dict:
        return all(
            type(k) is str and _plain(v, depth + 1)
            for k, v in value.items()  # type: ignore[attr-defined]
        )
    if kind is list:
        return all(_plain(v, depth + 1) for v in value)  # type: ignore[attr-defined]
    return False


#: The one encoder every item goes through (building one per call costs more than encoding).
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _refuse(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _fast_encoder() -> Callable[[Any], str]:
    """``_ENCODER.encode`` for values :func:`_plain` accepted, without its per-call setup.

    ``JSONEncoder.encode`` builds a C encoder for every call, which costs more than encoding
    a chat message does, on the trio thread's per-item path (S2's CPU per item); this one is
    built once. It skips the circular-reference check, which a plain value cannot need
    (:func:`_plain` bounds the depth, so it has no cycle), and otherwise writes exactly what
    ``_ENCODER`` writes (a property test checks).
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    escape = getattr(json.encoder, "c_encode_basestring", None)
    if make is None or escape is None:  # pragma: no cover - a Python without _json
        return _ENCODER.encode
    encoder = make(None, _refuse, escape, None, ":", ",", False, False, False)

    def encode(value: Any) -> str:
        return "".join(encoder(value, 0))

    return encode


_encode_plain = _fast_encoder()
#: Kinds already checked against ``_KIND_RE`` (bounded: a stream of made-up kinds stays cheap).
_KINDS_SEEN: set[str] = set(_SCHEMAS)
_KINDS_SEEN_MAX = 4096


def _valid_kind(kind: object) -> bool:
    if type(kind) is str and kind in _KINDS_SEEN:
        return True
    if not isinstance(kind, str) or _KIND_RE.fullmatch(kind) is None:
        return False
    if type(kind) is str and len(_KINDS_SEEN) < _KINDS_SEEN_MAX:
        _KINDS_SEEN.add(kind)
    return True


def encode_item(item: Item, *, max_item_bytes: int) -> str:
    """Validate ``item`` and return the canonical JSON text of its data.

    Raise ``InvalidItemError`` for an invalid kind, data that is not a JSON object, a built-in
    kind whose data lacks its constructor's fields (or has them with the wrong type), or an
    item whose kind plus JSON exceed ``max_item_bytes`` UTF-8 bytes.
    """
    kind: Any = item.kind
    if not _valid_kind(kind):
        raise InvalidItemError(
            f"item kind {shorten(kind)} is invalid: it must be a str matching "
            "[a-z][a-z0-9_.:-]{0,63}"
        )
    data: object = item.data
    if type(data) is not types.MappingProxyType and not isinstance(data, Mapping):
        raise InvalidItemError(
            f"{kind} item: data must be a mapping, got {shorten(data)} "
            f"of type {type(data).__name__}"
        )
    plain: Any = dict(data)
    text: str | None = None
    for key, value in plain.items():
        if type(key) is not str or not _plain(value, 1):
            break
    else:
        # Fast path: exact JSON types already; the encoder checks floats.
        try:
            text = _encode_plain(plain)
        except ValueError:
            text = None  # the slow path below names the offending value
    if text is None:
        try:
            plain = normalize_json(data)
        except InvalidItemError as exc:
            raise InvalidItemError(f"{kind} item: {exc}") from None
    for name, check, expected in _SCHEMAS.get(kind, ()):
        if name not in plain:
            raise InvalidItemError(f"{kind} item: data[{name!r}] is missing")
        if not check(plain[name]):
            raise InvalidItemError(
                f"{kind} item: data[{name!r}] must be {expected}, got {shorten(plain[name])}"
            )
    if text is None:
        text = _ENCODER.encode(plain)
    if text.isascii():  # one byte per character, and no lone surrogates
        size = len(kind) + len(text)
    else:
        try:
            size = len(kind) + len(text.encode("utf-8"))
        except UnicodeEncodeError:
            # A lone surrogate: normalize_json names where it is.
            try:
                normalize_json(data)
            except InvalidItemError as exc:
                raise InvalidItemError(f"{kind} item: {exc}") from None
            raise  # pragma: no cover - normalize_json raised already
    if size > max_item_bytes:
        raise InvalidItemError(
            f"{kind} item is {size} bytes encoded, over max_item_bytes={max_item_bytes}"
        )
    return text


def decode_data(text: str) -> Mapping[str, Any]:
    """Parse the JSON text ``encode_item`` made back into a read-only mapping."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"stored item data is not a JSON object: {shorten(text)}")
    return types.MappingProxyType(value)


def validate_namespace(value: object) -> str:
    """Return ``value`` if it is a valid namespace, else raise ``InvalidItemError``.

    A namespace is ``""`` (the default) or, like a thread id, 1-128 printable characters
    with no whitespace at either end.
    """
    if not isinstance(value, str):
        raise InvalidItemError(
            f"namespace must be a str, got {shorten(value)} of type {type(value).__name__}"
        )
    if value and (len(value) > 128 or not value.isprintable() or value != value.strip()):
        raise InvalidItemError(
            f"namespace {shorten(value)} must be '' or 1-128 printable characters "
            "without whitespace at the ends"
        )
    return value


def validate_thread_id(value: object) -> str:
    """Return ``value`` if it is a valid thread id, else raise ``InvalidItemError``.

    A thread id is a str of 1-128 printable characters with no whitespace at either end.
    """
    if not isinstance(value, str):
        raise InvalidItemError(
            f"thread id must be a str, got {shorten(value)} of type {type(value).__name__}"
        )
    if not 1 <= len(value) <= 128:
        raise InvalidItemError(
            f"thread id {shorten(value)} must be 1-128 characters long, not {len(value)}"
        )
    if not value.isprintable():
        raise InvalidItemError(f"thread id {shorten(value)} contains unprintable characters")
    if value != value.strip():
        raise InvalidItemError(f"thread id {shorten(value)} has whitespace at an end")
    return value


_RAND_BITS = 74  # 12 bits rand_a + 62 bits rand_b
_uuid_lock = threading.Lock()
_uuid_last = (0, 0)  # (unix ms, 74-bit random part) of the previous id


def new_thread_id() -> str:
    """Return a new UUIDv7 string (RFC 9562).

    Ids made by this process sort, as strings, in the order they were made: when the
    millisecond has not advanced, the random part of the previous id is incremented.
    """
    global _uuid_last
    with _uuid_lock:
        ms = time.time_ns() // 1_000_000
        last_ms, last_rand = _uuid_last
        if ms > last_ms:
            rand = int.from_bytes(os.urandom(10)) >> (80 - _RAND_BITS)
        else:
            ms, rand = last_ms, last_rand + 1
            if rand >> _RAND_BITS:  # the random part overflowed: borrow the next millisecond
                ms, rand = ms + 1, 0
        _uuid_last = (ms, rand)
    rand_a = rand >> 62
    rand_b = rand & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return str(uuid.UUID(int=value))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


class Timestamps:
    """A clock of microseconds since the epoch that never repeats or goes back."""

    def __init__(self) -> None:
        self._last = 0

    def next_us(self) -> int:
        """Return the wall clock in microseconds, or the previous value + 1 if that is larger."""
        now = time.time_ns() // 1000
        if now <= self._last:
            now = self._last + 1
        self._last = now
        return now


def us_to_datetime(us: int) -> datetime:
    """Microseconds since the epoch as an aware UTC datetime (exact)."""
    return _EPOCH + timedelta(0, 0, us)


def datetime_to_us(dt: datetime) -> int:
    """An aware datetime as microseconds since the epoch (exact)."""
    if dt.tzinfo is None:
        raise ValueError(f"datetime {dt!r} is naive; pass an aware (UTC) datetime")
    return (dt - _EPOCH) // _ONE_US
