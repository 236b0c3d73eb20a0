"""Items: constructors, validation and encoding, thread ids, clocks."""

from __future__ import annotations

import itertools
import json
import math
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from threadstore._errors import InvalidItemError
from threadstore._items import (
    BUILTIN_KINDS,
    URGENT_KINDS,
    Item,
    StoredItem,
    Timestamps,
    datetime_to_us,
    decode_data,
    encode_item,
    metadata_item,
    new_thread_id,
    normalize_json,
    us_to_datetime,
    validate_thread_id,
)

MIB = 1024 * 1024


def roundtrip(item: Item, max_item_bytes: int = MIB) -> Mapping[str, Any]:
    return decode_data(encode_item(item, max_item_bytes=max_item_bytes))


@pytest.mark.parametrize(
    ("item", "kind", "data"),
    [
        (Item.user_message("hi"), "user_message", {"text": "hi"}),
        (Item.assistant_message("yo"), "assistant_message", {"text": "yo"}),
        (Item.reasoning("hmm"), "reasoning", {"text": "hmm"}),
        (
            Item.tool_call("grep", {"pattern": "x", "n": [1, 2]}, "c1"),
            "tool_call",
            {"name": "grep", "arguments": {"pattern": "x", "n": [1, 2]}, "call_id": "c1"},
        ),
        (
            Item.tool_result("c1", ["a", None]),
            "tool_result",
            {"call_id": "c1", "output": ["a", None], "is_error": False},
        ),
        (
            Item.tool_result("c1", "boom", is_error=True),
            "tool_result",
            {"call_id": "c1", "output": "boom", "is_error": True},
        ),
        (Item.turn_started("t1"), "turn_started", {"turn_id": "t1"}),
        (Item.turn_completed("t1"), "turn_completed", {"turn_id": "t1"}),
        (
            Item.turn_aborted("t1", "cancelled"),
            "turn_aborted",
            {"turn_id": "t1", "reason": "cancelled"},
        ),
        (Item.goal("fix bug"), "goal", {"text": "fix bug"}),
        (Item.title("Bug"), "title", {"text": "Bug"}),
        (Item.token_usage(3, 4), "token_usage", {"input": 3, "output": 4}),
        (Item.error("oops"), "error", {"message": "oops"}),
        (metadata_item({"a": 1, "b": None}), "metadata", {"extra": {"a": 1, "b": None}}),
    ],
)
def test_constructors_store_arguments_under_parameter_names(
    item: Item, kind: str, data: dict[str, Any]
) -> None:
    assert item.kind == kind
    assert item.data == data
    assert kind in BUILTIN_KINDS
    # Every constructor's output passes validation and round-trips through JSON.
    assert roundtrip(item) == data


def test_urgent_kinds() -> None:
    assert frozenset({"goal", "title", "turn_completed", "turn_aborted", "error"}) == URGENT_KINDS


def test_item_data_is_a_read_only_copy() -> None:
    source: dict[str, Any] = {"text": "a"}
    item = Item(kind="note", data=source)
    source["text"] = "changed"
    assert item.data == {"text": "a"}
    with pytest.raises(TypeError):
        item.data["text"] = "b"  # type: ignore[index]


def test_items_compare_by_value() -> None:
    assert Item.user_message("a") == Item(kind="user_message", data={"text": "a"})
    assert Item.user_message("a") != Item.user_message("b")
    assert Item.user_message("a") != Item.assistant_message("a")


def test_stored_item_adds_seq_and_time() -> None:
    at = datetime(2024, 1, 2, tzinfo=UTC)
    stored = StoredItem(kind="goal", data={"text": "g"}, seq=3, created_at=at)
    assert stored.seq == 3
    assert stored.created_at == at
    assert stored.data == {"text": "g"}


def test_custom_kinds_are_accepted() -> None:
    for kind in ("x", "my.plugin:event-1", "a" * 64, "z_9"):
        assert roundtrip(Item(kind=kind, data={"v": 1})) == {"v": 1}


def test_encoding_is_canonical_json() -> None:
    text = encode_item(Item(kind="note", data={"a": [1, 2.5], "b": "é"}), max_item_bytes=MIB)
    assert text == '{"a":[1,2.5],"b":"é"}'


def test_tuples_and_nested_mappings_become_json_arrays_and_objects() -> None:
    item = Item(kind="note", data={"t": (1, 2), "m": {"k": (3,)}})
    assert roundtrip(item) == {"t": [1, 2], "m": {"k": [3]}}


@pytest.mark.parametrize(
    "text",
    [
        'it\'s "quoted" \\ backslash',
        "'); DROP TABLE x;--",
        "nul\x00inside",
        "emoji 🧵👩🏽‍💻 and 中文",
        "\u2028line separators\u2029",
        "",
    ],
)
def test_tricky_text_round_trips_verbatim(text: str) -> None:
    assert roundtrip(Item.user_message(text))["text"] == text
    assert roundtrip(Item(kind="note", data={text: text}))[text] == text


def invalid(item: Item, max_item_bytes: int = MIB) -> str:
    with pytest.raises(InvalidItemError) as info:
        encode_item(item, max_item_bytes=max_item_bytes)
    return str(info.value)


@pytest.mark.parametrize("kind", ["", "User", "1abc", "a b", "a/b", "é", "a" * 65, "x\n"])
def test_invalid_kind_is_rejected(kind: str) -> None:
    message = invalid(Item(kind=kind, data={}))
    assert "kind" in message
    assert repr(kind)[:20] in message


def test_non_str_kind_is_rejected() -> None:
    message = invalid(Item(kind=5, data={}))  # type: ignore[arg-type]
    assert "kind 5" in message


def test_data_that_is_not_a_mapping_is_rejected() -> None:
    message = invalid(Item(kind="note", data=[1, 2]))  # type: ignore[arg-type]
    assert "mapping" in message
    assert "[1, 2]" in message


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque>"


@pytest.mark.parametrize(
    ("data", "path", "shown"),
    [
        ({"obj": Opaque()}, "data['obj']", "<Opaque>"),
        ({"args": [1, 2, {3}]}, "data['args'][2]", "{3}"),
        ({"b": b"bytes"}, "data['b']", "b'bytes'"),
        ({"n": math.nan}, "data['n']", "nan"),
        ({"n": [math.inf]}, "data['n'][0]", "inf"),
        ({"n": -math.inf}, "data['n']", "-inf"),
        ({"m": {1: "int key"}}, "data['m']", "key 1"),
        ({"m": {(1, 2): "tuple key"}}, "data['m']", "key (1, 2)"),
        ({"m": {None: "none key"}}, "data['m']", "key None"),
        ({"s": "lone \ud800 surrogate"}, "data['s']", "UTF-8"),
        ({"lone \udfff key": 1}, "data key", "UTF-8"),
    ],
)
def test_non_json_data_is_rejected_with_its_path(
    data: dict[Any, Any], path: str, shown: str
) -> None:
    message = invalid(Item(kind="note", data=data))
    assert path in message
    assert shown in message


def test_self_referencing_data_is_rejected() -> None:
    loop: list[Any] = []
    loop.append(loop)
    assert "nested deeper" in invalid(Item(kind="note", data={"loop": loop}))


def test_deep_but_reasonable_nesting_is_accepted() -> None:
    value: Any = "leaf"
    for _ in range(100):
        value = [value]
    assert roundtrip(Item(kind="note", data={"v": value})) == {"v": value}


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        (Item(kind="user_message", data={"text": 5}), "data['text'] must be a str, got 5"),
        (Item(kind="user_message", data={}), "data['text'] is missing"),
        (Item(kind="goal", data={"text": None}), "data['text'] must be a str, got None"),
        (
            Item(kind="tool_call", data={"name": "n", "call_id": "c"}),
            "data['arguments'] is missing",
        ),
        (
            Item(kind="tool_result", data={"call_id": "c", "output": 1, "is_error": "no"}),
            "data['is_error'] must be a bool",
        ),
        (Item.token_usage(-1, 2), "data['input'] must be an int >= 0, got -1"),
        (Item.token_usage(1, True), "data['output'] must be an int >= 0, got True"),
        (Item.token_usage(1.5, 2), "data['input'] must be an int >= 0, got 1.5"),  # type: ignore[arg-type]
        (Item(kind="token_usage", data={"input": 1}), "data['output'] is missing"),
        (Item(kind="turn_aborted", data={"turn_id": "t"}), "data['reason'] is missing"),
        (Item(kind="error", data={"text": "wrong key"}), "data['message'] is missing"),
        (Item(kind="metadata", data={"extra": [1]}), "data['extra'] must be a mapping"),
    ],
)
def test_builtin_kinds_need_their_fields(item: Item, problem: str) -> None:
    message = invalid(item)
    assert item.kind in message
    assert problem in message


def test_builtin_kinds_allow_extra_keys() -> None:
    item = Item(kind="user_message", data={"text": "hi", "attachments": ["a.png"]})
    assert roundtrip(item) == {"text": "hi", "attachments": ["a.png"]}


def test_size_limit_counts_utf8_bytes_of_kind_and_json() -> None:
    overhead = len("note") + len('{"t":""}')
    exact = Item(kind="note", data={"t": "x" * (MIB - overhead)})
    assert len(roundtrip(exact)["t"]) == MIB - overhead
    message = invalid(Item(kind="note", data={"t": "x" * (MIB - overhead + 1)}))
    assert f"{MIB + 1} bytes" in message
    assert f"max_item_bytes={MIB}" in message
    # Multi-byte characters count by their UTF-8 size.
    euro = "€" * ((MIB - overhead) // 3 + 1)
    assert "max_item_bytes" in invalid(Item(kind="note", data={"t": euro}))


@pytest.mark.parametrize("value", ["a", "x" * 128, "thread 1", "ünïcödé-🧵", "a:b/c#1"])
def test_valid_thread_ids(value: str) -> None:
    assert validate_thread_id(value) == value


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "1-128 characters"),
        ("x" * 129, "1-128 characters"),
        (" lead", "whitespace"),
        ("trail ", "whitespace"),
        ("tab\there", "unprintable"),
        ("new\nline", "unprintable"),
        ("nul\x00", "unprintable"),
        ("a\u00a0b", "unprintable"),
        (42, "must be a str"),
        (None, "must be a str"),
        (b"bytes", "must be a str"),
    ],
)
def test_invalid_thread_ids(value: object, problem: str) -> None:
    with pytest.raises(InvalidItemError) as info:
        validate_thread_id(value)
    assert problem in str(info.value)
    assert repr(value)[:10] in str(info.value)


def test_new_thread_ids_are_uuid7_in_creation_order() -> None:
    ids = [new_thread_id() for _ in range(10_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    for text in (ids[0], ids[-1]):
        parsed = uuid.UUID(text)
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


def test_new_thread_id_embeds_the_current_time() -> None:
    before = datetime.now(UTC)
    ms = uuid.UUID(new_thread_id()).int >> 80
    after = datetime.now(UTC)
    assert before - timedelta(milliseconds=2) <= us_to_datetime(ms * 1000) <= after


def test_timestamps_strictly_increase() -> None:
    clock = Timestamps()
    values = [clock.next_us() for _ in range(10_000)]
    assert all(a < b for a, b in itertools.pairwise(values))
    now_us = datetime_to_us(datetime.now(UTC))
    assert abs(values[0] - now_us) < 10_000_000


def test_timestamps_do_not_go_back_with_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Timestamps()
    monkeypatch.setattr("time.time_ns", lambda: 5_000_000_000)
    first = clock.next_us()
    monkeypatch.setattr("time.time_ns", lambda: 1_000_000_000)
    assert clock.next_us() == first + 1
    assert first == 5_000_000


@given(
    st.integers(
        min_value=datetime_to_us(datetime.min.replace(tzinfo=UTC)),
        max_value=datetime_to_us(datetime.max.replace(tzinfo=UTC)),
    )
)
def test_microsecond_conversions_are_exact(us: int) -> None:
    dt = us_to_datetime(us)
    assert dt.tzinfo is not None
    assert dt.utcoffset() == timedelta(0)
    assert datetime_to_us(dt) == us


def test_datetime_to_us_handles_other_zones_and_rejects_naive() -> None:
    plus_two = datetime(1970, 1, 1, 2, 0, 0, 1, tzinfo=timezone(timedelta(hours=2)))
    assert datetime_to_us(plus_two) == 1
    with pytest.raises(ValueError, match="naive"):
        datetime_to_us(datetime(2024, 1, 1))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=60)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_any_json_object_round_trips(data: dict[str, Any]) -> None:
    text = encode_item(Item(kind="note", data=data), max_item_bytes=MIB)
    assert decode_data(text) == data
    assert json.loads(text) == data


_json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # NaN and infinities included: both paths must reject them
    st.text(),
    st.sampled_from(["\ud800", "a\udfffb", "NUL\x00", "🧵"]),
)
_json_like = st.recursive(
    _json_leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(st.text(max_size=5), st.integers()), inner, max_size=4),
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=8), _json_like, max_size=5))
def test_encode_item_fast_path_agrees_with_the_validating_path(data: dict[str, Any]) -> None:
    """Plain data takes a fast path; whatever the path, the result (or error) is the same."""
    try:
        expected: str | None = json.dumps(
            normalize_json(data), ensure_ascii=False, allow_nan=False, separators=(",", ":")
        )
    except InvalidItemError:
        expected = None
    try:
        actual: str | None = encode_item(Item(kind="custom.x", data=data), max_item_bytes=1 << 20)
    except InvalidItemError:
        actual = None
    assert actual == expected
