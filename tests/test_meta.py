"""The metadata fold: derivation rules, patch merge laws, storage rows."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from threadstore._errors import InvalidItemError
from threadstore._items import (
    Item,
    StoredItem,
    datetime_to_us,
    encode_item,
    metadata_item,
    us_to_datetime,
)
from threadstore._meta import (
    LAST_MESSAGE_CHARS,
    PREVIEW_CHARS,
    Patch,
    Pending,
    Projection,
    ThreadMeta,
)

T0 = 1_700_000_000_000_000  # µs


def stored(
    items: Sequence[Item], *, start_seq: int = 1, start_us: int = T0 + 1
) -> list[StoredItem]:
    """``items`` numbered from ``start_seq``, one millisecond apart."""
    return [
        StoredItem(
            kind=item.kind,
            data=item.data,
            seq=start_seq + i,
            created_at=us_to_datetime(start_us + 1000 * i),
        )
        for i, item in enumerate(items)
    ]


def fold(*items: Item) -> ThreadMeta:
    projection = Projection.new("t", T0)
    if items:
        projection = projection.apply(Patch.from_items(stored(items)))
    return projection.meta


def test_new_thread_is_empty_and_idle() -> None:
    meta = Projection.new("t1", T0).meta
    created = us_to_datetime(T0)
    assert meta == ThreadMeta(
        id="t1",
        created_at=created,
        updated_at=created,
        recency_at=created,
        title=None,
        goal=None,
        preview=None,
        last_message=None,
        item_count=0,
        turn_count=0,
        status="idle",
        input_tokens=0,
        output_tokens=0,
        archived_at=None,
        extra={},
        seq=0,
    )
    assert meta.created_at.tzinfo is UTC


start, done, abort, err = (
    Item.turn_started("t"),
    Item.turn_completed("t"),
    Item.turn_aborted("t", "stop"),
    Item.error("boom"),
)


@pytest.mark.parametrize(
    ("items", "status"),
    [
        ((), "idle"),
        ((start,), "running"),
        ((start, done), "idle"),
        ((start, abort), "idle"),
        ((err,), "error"),
        ((start, err), "error"),
        ((start, err, done), "error"),
        ((start, err, abort), "error"),
        ((err, start), "running"),
        ((err, start, done), "idle"),
        ((start, done, start), "running"),
        ((Item.user_message("hi"), Item.assistant_message("yo")), "idle"),
        ((err, Item.user_message("retry?")), "error"),
    ],
)
def test_status(items: tuple[Item, ...], status: str) -> None:
    assert fold(*items).status == status


def test_status_error_survives_completion_across_batches() -> None:
    projection = Projection.new("t", T0)
    for batch in stored([start, err, done, abort]):
        projection = projection.apply(Patch.from_items([batch]))
    assert projection.meta.status == "error"


def test_preview_is_the_goal_until_the_first_user_message() -> None:
    assert fold(Item.goal("first goal")).preview == "first goal"
    assert fold(Item.goal("first goal"), Item.goal("second goal")).preview == "second goal"
    meta = fold(Item.goal("g"), Item.user_message("question"), Item.goal("new goal"))
    assert meta.preview == "question"
    assert meta.goal == "new goal"


def test_preview_is_the_first_non_blank_user_message() -> None:
    meta = fold(
        Item.user_message(""),
        Item.user_message("  \n"),
        Item.user_message("first real"),
        Item.user_message("second"),
    )
    assert meta.preview == "first real"


def test_no_preview_without_user_message_or_goal() -> None:
    meta = fold(Item.title("T"), Item.assistant_message("hello"), Item(kind="note", data={}))
    assert meta.preview is None
    assert meta.title == "T"


def test_preview_and_last_message_are_truncated() -> None:
    long = "x" * 1000
    meta = fold(Item.user_message(long), Item.assistant_message("y" * 1000))
    assert meta.preview == "x" * (PREVIEW_CHARS - 1) + "…"
    assert meta.last_message == "y" * (LAST_MESSAGE_CHARS - 1) + "…"
    exact = "z" * PREVIEW_CHARS
    assert fold(Item.user_message(exact)).preview == exact
    assert fold(Item.goal(long)).preview == "x" * (PREVIEW_CHARS - 1) + "…"
    assert fold(Item.goal(long)).goal == long  # the goal itself is kept whole


def test_last_message_title_goal_are_the_latest() -> None:
    meta = fold(
        Item.title("t1"),
        Item.goal("g1"),
        Item.assistant_message("a1"),
        Item.title("t2"),
        Item.goal("g2"),
        Item.assistant_message("a2"),
        Item.reasoning("not a message"),
    )
    assert (meta.title, meta.goal, meta.last_message) == ("t2", "g2", "a2")


def test_updated_at_and_recency_at() -> None:
    items = stored(
        [Item.user_message("hi"), Item.assistant_message("yo"), Item(kind="note", data={})]
    )
    meta = Projection.new("t", T0).apply(Patch.from_items(items)).meta
    assert meta.updated_at == items[2].created_at
    assert meta.recency_at == items[0].created_at  # assistant output does not move it

    more = stored(
        [Item.turn_started("t2"), Item.assistant_message("x")], start_seq=4, start_us=T0 + 10_000
    )
    meta = Projection.new("t", T0).apply(Patch.from_items(items + more)).meta
    assert meta.recency_at == more[0].created_at
    assert meta.updated_at == more[1].created_at


def test_timestamps_of_a_thread_without_items_are_its_creation() -> None:
    meta = Projection.new("t", T0).apply(Patch.extra_update("p", {"k": 1})).meta
    assert meta.updated_at == meta.recency_at == meta.created_at == us_to_datetime(T0)


def test_counts_tokens_and_seq() -> None:
    meta = fold(
        start,
        Item.token_usage(10, 5),
        Item.tool_call("ls", {}, "c"),
        Item.tool_result("c", []),
        done,
        start,
        Item.token_usage(1, 2),
        done,
    )
    assert meta.item_count == 8
    assert meta.seq == 8
    assert meta.turn_count == 2
    assert (meta.input_tokens, meta.output_tokens) == (11, 7)


def test_metadata_items_merge_top_level_extra() -> None:
    meta = fold(
        metadata_item({"a": 1, "b": {"x": 1}}),
        metadata_item({"b": {"y": 2}, "c": [1]}),
        metadata_item({"a": None}),
    )
    assert meta.extra == {"b": {"y": 2}, "c": [1]}


def test_projector_updates_merge_into_their_own_entry() -> None:
    projection = Projection.new("t", T0)
    projection = projection.apply(Patch.extra_update("summary", {"text": "s", "n": 1}))
    projection = projection.apply(Patch.extra_update("summary", {"n": None, "lang": "en"}))
    projection = projection.apply(Patch.extra_update("other", {"k": True}))
    assert projection.meta.extra == {"summary": {"text": "s", "lang": "en"}, "other": {"k": True}}
    # A later metadata item replaces the whole entry.
    replaced = projection.apply(Patch.from_items(stored([metadata_item({"summary": None})])))
    assert replaced.meta.extra == {"other": {"k": True}}


def test_projector_output_must_be_json() -> None:
    with pytest.raises(InvalidItemError, match=r"projector 'p' output\['k'\]"):
        Patch.extra_update("p", {"k": {1, 2}})


def test_extra_is_read_only() -> None:
    meta = fold(metadata_item({"a": 1}))
    with pytest.raises(TypeError):
        meta.extra["a"] = 2  # type: ignore[index]


def test_patch_properties() -> None:
    user = Patch.from_items(stored([Item.user_message("hi")]))
    assert user.has_user_message
    assert not user.urgent
    assert not Patch.from_items(stored([Item.user_message(" ")])).has_user_message
    for item in (Item.goal("g"), Item.title("t"), done, abort, err):
        assert Patch.from_items(stored([item])).urgent, item.kind
    for item in (start, Item.assistant_message("a"), Item.token_usage(1, 1)):
        assert not Patch.from_items(stored([item])).urgent, item.kind
    patch = Patch.from_items(stored([start, Item.assistant_message("a"), done], start_seq=4))
    assert (patch.first_seq, patch.last_seq, patch.item_count) == (4, 6, 3)
    assert patch.urgent
    projector = Patch.extra_update("p", {})
    assert (projector.first_seq, projector.last_seq) == (0, 0)


def test_patches_must_be_contiguous() -> None:
    first = Patch.from_items(stored([start]))
    third = Patch.from_items(stored([done], start_seq=3))
    with pytest.raises(ValueError, match="not contiguous"):
        first.merge(third)
    with pytest.raises(ValueError, match="does not follow"):
        Projection.new("t", T0).apply(third)


def test_projector_patch_does_not_change_seq() -> None:
    projection = Projection.new("t", T0).apply(Patch.from_items(stored([start, done])))
    after = projection.apply(Patch.extra_update("p", {"a": 1}))
    assert after.meta.seq == 2
    assert after.meta.item_count == 2


# --- property tests ---------------------------------------------------------------------------

texts = st.sampled_from(["", " ", "hi", "hello there", "é🧵", "x" * 300])
extra_values = (
    st.none()
    | st.integers(0, 3)
    | st.dictionaries(st.sampled_from(["x", "y"]), st.none() | st.integers(0, 3), max_size=2)
)
extras = st.dictionaries(st.sampled_from(["a", "b", "p"]), extra_values, max_size=3)

items_strategy = st.one_of(
    texts.map(Item.user_message),
    texts.map(Item.assistant_message),
    texts.map(Item.goal),
    texts.map(Item.title),
    texts.map(Item.reasoning),
    st.just(start),
    st.just(done),
    st.just(abort),
    st.just(err),
    st.builds(Item.token_usage, st.integers(0, 100), st.integers(0, 100)),
    extras.map(metadata_item),
    st.just(Item(kind="custom.event", data={"v": 1})),
)


@st.composite
def item_runs(draw: st.DrawFn, max_size: int = 20) -> list[StoredItem]:
    items = draw(st.lists(items_strategy, max_size=max_size))
    # Times may repeat or go back: the fold keeps the newest.
    gaps = draw(st.lists(st.integers(-5, 5), min_size=len(items), max_size=len(items)))
    result = []
    at = T0 + 100
    for seq, (item, gap) in enumerate(zip(items, gaps, strict=True), start=1):
        at += gap
        result.append(
            StoredItem(kind=item.kind, data=item.data, seq=seq, created_at=us_to_datetime(at))
        )
    return result


@st.composite
def splits(draw: st.DrawFn, items: Sequence[StoredItem]) -> list[list[StoredItem]]:
    cuts = sorted(draw(st.sets(st.integers(1, max(len(items) - 1, 1)))))
    bounds = [0, *[c for c in cuts if c < len(items)], len(items)]
    return [list(items[a:b]) for a, b in itertools.pairwise(bounds) if b > a]


@st.composite
def patch_sequences(draw: st.DrawFn) -> list[Patch]:
    """Consecutive item patches interleaved with projector patches."""
    items = draw(item_runs())
    patches: list[Patch] = []
    for chunk in draw(splits(items)):
        patches.append(Patch.from_items(chunk))
        if draw(st.booleans()):
            name = draw(st.sampled_from(["a", "p", "q"]))
            update = draw(st.dictionaries(st.sampled_from(["x", "y"]), extra_values, max_size=2))
            patches.append(Patch.extra_update(name, update))
    return patches


def apply_all(patches: Sequence[Patch]) -> Projection:
    projection = Projection.new("t", T0)
    for patch in patches:
        projection = projection.apply(patch)
    return projection


@settings(max_examples=200)
@given(st.data())
def test_merge_is_associative(data: st.DataObject) -> None:
    patches = data.draw(patch_sequences())
    while len(patches) < 3:
        patches.append(Patch.empty())
    i = data.draw(st.integers(1, len(patches) - 2))
    j = data.draw(st.integers(i + 1, len(patches) - 1))
    a, b, c = (
        _merge_all(patches[:i]),
        _merge_all(patches[i:j]),
        _merge_all(patches[j:]),
    )
    assert a.merge(b).merge(c) == a.merge(b.merge(c))
    assert Patch.empty().merge(a) == a == a.merge(Patch.empty())


def _merge_all(patches: Sequence[Patch]) -> Patch:
    result = Patch.empty()
    for patch in patches:
        result = result.merge(patch)
    return result


@settings(max_examples=200)
@given(st.data())
def test_any_batching_gives_the_same_metadata(data: st.DataObject) -> None:
    items = data.draw(item_runs())
    one_batch = apply_all([Patch.from_items(items)])
    batches = data.draw(splits(items))
    assert apply_all([Patch.from_items(b) for b in batches]) == one_batch
    assert Patch.from_items(items) == _merge_all([Patch.from_items(b) for b in batches])
    one_by_one = apply_all([Patch.from_items([item]) for item in items])
    assert one_by_one == one_batch


@settings(max_examples=200)
@given(patch_sequences())
def test_applying_a_merge_equals_applying_in_turn(patches: list[Patch]) -> None:
    # What a coalescing actor does (merge, then apply once) matches applying each patch.
    assert apply_all([_merge_all(patches)]) == apply_all(patches)


@given(item_runs(max_size=30))
def test_from_rows_is_from_items(items: list[StoredItem]) -> None:
    """The append path's one-pass fold over raw rows equals the item-by-item fold."""
    rows = [(i.seq, datetime_to_us(i.created_at), i.kind, i.data) for i in items]
    assert Patch.from_rows(rows) == Patch.from_items(items)


# -- Pending: the projection's work (log rows, folded once per write) ---------------------


def pending_of(chunk: Sequence[StoredItem]) -> Pending:
    """What the store builds when an append of ``chunk`` commits."""
    rows = [
        (i.seq, datetime_to_us(i.created_at), i.kind, encode_item(i, max_item_bytes=1 << 20))
        for i in chunk
    ]
    return Pending.of(rows, chunk)


@given(st.data())
def test_pending_folds_to_the_patch_of_its_items_whatever_the_merge_order(
    data: st.DataObject,
) -> None:
    items = data.draw(item_runs(max_size=30).filter(bool))
    chunks = [pending_of(chunk) for chunk in data.draw(splits(items))]
    # Merge in a random tree shape: (a.b).c or a.(b.c), and so on.
    while len(chunks) > 1:
        at = data.draw(st.integers(0, len(chunks) - 2))
        chunks[at : at + 2] = [chunks[at].merge(chunks[at + 1])]
    (pending,) = chunks
    patch = Patch.from_items(items)
    assert pending.fold() == patch
    assert (pending.first_seq, pending.last_seq) == (1, len(items))
    assert pending.urgent == patch.urgent
    assert pending.has_user_message == patch.has_user_message
    assert [row[0] for row in pending.log_rows()] == [i.seq for i in items]


def test_a_merged_pending_never_changes() -> None:
    """Merges extend a shared list in place; a value seen earlier keeps its own rows."""
    one, two, other_two = (
        pending_of(stored([Item.user_message("one")])),
        pending_of(stored([Item.assistant_message("two")], start_seq=2)),
        pending_of(stored([Item.assistant_message("other")], start_seq=2)),
    )
    three = pending_of(stored([Item.turn_completed("t")], start_seq=3))
    first = one.merge(two)
    longer = first.merge(three)
    fork = one.merge(other_two)  # one's list has grown past one's view: copied
    assert [r[0] for r in one.log_rows()] == [1]
    assert [r[0] for r in first.log_rows()] == [1, 2]
    assert [r[0] for r in longer.log_rows()] == [1, 2, 3]
    assert fork.fold().last_message == "other"
    assert first.fold().last_message == longer.fold().last_message == "two"
    assert longer.urgent
    assert not first.urgent
    assert Pending.empty().merge(one) is one
    assert one.merge(Pending.empty()) is one
    with pytest.raises(ValueError, match="not contiguous"):
        one.merge(three)
