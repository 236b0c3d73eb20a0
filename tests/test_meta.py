"""The metadata fold: derivation rules, patch merge laws, storage rows."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC

import attrs
import pytest
from _helpers import fold_log
from hypothesis import given, settings
from hypothesis import strategies as st

from threadstore._engine import LogRow, ProjectionWrite, fold_for_write
from threadstore._errors import InvalidItemError
from threadstore._history import context
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


# --- history edits: rewind, fork, compaction ------------------------------------------------


def rewind(to_seq: int) -> Item:
    """The item ``Store.rewind`` records (the store's own kind: ``append`` refuses it)."""
    return Item(kind="rewind", data={"to_seq": to_seq})


def edited(*items: Item) -> ThreadMeta:
    """The metadata of a log with history edits, batch by batch and as one batch, checked
    against the reference."""
    log = stored(items)
    meta = refold_in_batches([log]).meta
    assert refold_in_batches([[item] for item in log]).meta == meta
    assert reference(log).meta == meta
    return meta


def test_rewind_hides_the_later_items_from_the_context_statistics() -> None:
    meta = edited(
        start,
        Item.user_message("q1"),
        Item.assistant_message("a1"),
        done,
        start,
        Item.user_message("q2"),
        Item.token_usage(10, 5),
        Item.assistant_message("a2"),
        err,
        rewind(4),
    )
    assert (meta.item_count, meta.turn_count, meta.seq) == (4, 1, 10)
    assert (meta.preview, meta.last_message, meta.status) == ("q1", "a1", "idle")
    assert (meta.input_tokens, meta.output_tokens) == (0, 0)
    assert meta.recency_at == stored([start] * 2)[1].created_at  # q1's time, not q2's
    assert meta.updated_at == stored([start] * 10)[9].created_at  # the rewind's own time


def test_rewind_to_a_hidden_seq_resurrects_nothing() -> None:
    q1, a1, q2 = Item.user_message("q1"), Item.assistant_message("a1"), Item.user_message("q2")
    assert edited(q1, a1, q2, rewind(1), rewind(3)) == attrs.evolve(
        edited(q1, a1, q2, rewind(1)),
        seq=5,
        updated_at=stored([q1] * 5)[4].created_at,
    )
    meta = edited(q1, a1, q2, rewind(1), rewind(3))
    assert (meta.item_count, meta.preview, meta.last_message) == (1, "q1", None)
    emptied = edited(q1, a1, q2, rewind(1), rewind(3), rewind(0))
    assert (emptied.item_count, emptied.preview, emptied.recency_at) == (
        0,
        None,
        emptied.created_at,
    )
    # Appends after a rewind continue the context after its to_seq.
    again = edited(q1, a1, q2, rewind(1), rewind(3), Item.assistant_message("a1 again"))
    assert (again.item_count, again.last_message) == (2, "a1 again")


def test_a_rename_after_the_rewind_point_survives_the_rewind() -> None:
    """Title, goal and extra are attributes folded over every item: a rewind past a rename
    does not undo it (the renaming item leaves the context, and the counts)."""
    meta = edited(
        Item.title("first"),
        Item.user_message("q"),
        Item.title("renamed"),
        metadata_item({"k": 1}),
        Item.goal("new goal"),
        rewind(1),
    )
    assert (meta.title, meta.goal, meta.extra) == ("renamed", "new goal", {"k": 1})
    assert (meta.item_count, meta.preview) == (1, "new goal")  # the preview shows the goal
    # A title before the rewind point but followed by a hidden one: the hidden one wins.
    assert edited(Item.title("a"), Item.title("b"), rewind(1)).title == "b"


def test_a_compaction_does_not_change_metadata() -> None:
    """A compaction is an item like any other for the metadata (it counts as one): the
    items before it keep counting; it moves only where ``read_context`` starts."""
    before = (
        Item.goal("g"),
        start,
        Item.user_message("q1"),
        Item.token_usage(3, 4),
        Item.assistant_message("a1"),
    )
    plain = edited(*before)
    compacted = edited(*before, Item.compaction("we talked"))
    assert compacted == attrs.evolve(
        plain,
        item_count=plain.item_count + 1,
        seq=plain.seq + 1,
        updated_at=stored([start] * 6)[5].created_at,
    )
    assert compacted.status == "running"
    # Nor does one the log starts with, or one a rewind hides.
    assert edited(Item.compaction("s"), Item.user_message("q")).preview == "q"
    hidden = edited(*before, Item.compaction("we talked"), rewind(5))
    assert attrs.evolve(hidden, seq=5, updated_at=plain.updated_at) == plain


def test_a_fork_item_names_the_source_and_is_not_counted() -> None:
    meta = edited(
        Item(kind="fork", data={"from": "src", "at_seq": 7}),
        Item.title("branch"),
        Item.user_message("q"),
    )
    assert (meta.forked_from, meta.forked_at) == ("src", 7)
    assert (meta.item_count, meta.title, meta.preview, meta.seq) == (2, "branch", "q", 3)
    # A rewind to 0 hides the copies but not the fork's attributes.
    emptied = edited(
        Item(kind="fork", data={"from": "src", "at_seq": 7}),
        Item.title("branch"),
        rewind(0),
    )
    assert (emptied.forked_from, emptied.title, emptied.item_count) == ("src", "branch", 0)


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
def item_runs(draw: st.DrawFn, max_size: int = 20, edits: bool = False) -> list[StoredItem]:
    """A thread's log. With ``edits``: compactions, rewinds (to any earlier seq, hidden ones
    included) and, now and then, a ``fork`` item first, as ``Store.fork`` writes it."""
    items: list[Item | None] = []  # None: a rewind, whose to_seq is drawn below
    if edits:
        if draw(st.booleans()):
            items.append(Item(kind="fork", data={"from": "src", "at_seq": draw(st.integers(0, 9))}))
        slot = st.sampled_from(["item", "item", "item", "compaction", "rewind"])
        for kind in draw(st.lists(slot, max_size=max_size)):
            if kind == "item":
                items.append(draw(items_strategy))
            elif kind == "compaction":
                items.append(Item.compaction(draw(texts)))
            else:
                items.append(None)
    else:
        items.extend(draw(st.lists(items_strategy, max_size=max_size)))
    # Times may repeat or go back: the fold keeps the newest.
    gaps = draw(st.lists(st.integers(-5, 5), min_size=len(items), max_size=len(items)))
    result = []
    at = T0 + 100
    for seq, (item, gap) in enumerate(zip(items, gaps, strict=True), start=1):
        at += gap
        if item is None:  # 0 <= to_seq <= the last seq before it, as Store.rewind checks
            item = Item(kind="rewind", data={"to_seq": draw(st.integers(0, seq - 1))})
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
def patch_sequences(draw: st.DrawFn, edits: bool = False) -> list[Patch]:
    """Consecutive item patches interleaved with projector patches."""
    items = draw(item_runs(edits=edits))
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
    patches = data.draw(patch_sequences(edits=data.draw(st.booleans())))
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


def reference(items: Sequence[StoredItem]) -> Projection:
    """The pure reference fold (``_helpers.fold_log``) as a projection of thread "t"."""
    meta, has_user = fold_log(items, created_at=us_to_datetime(T0))
    return Projection(meta=meta, has_user_message=has_user)


def rows_of(items: Sequence[StoredItem]) -> list[LogRow]:
    """``items`` as log rows ``(seq, created_at_us, kind, data_json)``."""
    return [
        (i.seq, datetime_to_us(i.created_at), i.kind, encode_item(i, max_item_bytes=1 << 20))
        for i in items
    ]


def refold_in_batches(batches: Sequence[Sequence[StoredItem]]) -> Projection:
    """What the engines do, spelled out: apply each batch's patch; after a batch whose patch
    has ``rewound``, fold the context statistics again over the context of the log so far."""
    projection = Projection.new("t", T0)
    log: list[StoredItem] = []
    for batch in batches:
        log.extend(batch)
        patch = Patch.from_items(batch)
        projection = projection.apply(patch)
        if patch.rewound:
            visible = [(i.seq, datetime_to_us(i.created_at), i.kind, i.data) for i in context(log)]
            projection = projection.with_context(Patch.from_rows(visible))
    return projection


def write_in_batches(
    batches: Sequence[Sequence[StoredItem]], from_log: Sequence[bool]
) -> Projection:
    """The engines' own ``fold_for_write``, one projection write per batch: its pending rows
    folded, or (``from_log``: after discarded work or a recovery) the log read instead."""
    projection = Projection.new("t", T0)
    log: list[LogRow] = []

    def read_log(after_seq: int, limit: int) -> list[LogRow]:
        return [row for row in log if row[0] > after_seq][:limit]

    for batch, read in zip(batches, from_log, strict=True):
        rows = rows_of(batch)
        log.extend(rows)
        write = ProjectionWrite(
            thread_id="t",
            pending=Pending.empty() if read else Pending.of(rows, batch),
            extra=Patch.empty(),
            target=batch[-1].seq,
            lane="now",
        )
        folded = fold_for_write(projection, write, read_log)
        assert folded is not None
        projection = folded
    return projection


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
    assert reference(items) == one_batch


@settings(max_examples=300)
@given(st.data())
def test_any_batching_of_a_log_with_history_edits_gives_the_reference(
    data: st.DataObject,
) -> None:
    """Rewinds and compactions: every split into batches, folded the way the engines fold
    (``refold_in_batches``, and the engines' ``fold_for_write`` itself), gives the pure
    reference fold of the whole log."""
    items = data.draw(item_runs(max_size=30, edits=True))
    expected = reference(items)
    batches = data.draw(splits(items))
    assert refold_in_batches(batches) == expected
    assert refold_in_batches([items]) == expected
    assert refold_in_batches([[item] for item in items]) == expected
    if items:
        from_log = data.draw(st.lists(st.booleans(), min_size=len(batches), max_size=len(batches)))
        assert write_in_batches(batches, from_log) == expected
    # The patches of a split still merge into the patch of the whole run.
    assert Patch.from_items(items) == _merge_all([Patch.from_items(b) for b in batches])


@settings(max_examples=200)
@given(st.one_of(item_runs(), item_runs(edits=True).filter(lambda log: not _rewinds(log))))
def test_without_rewinds_the_reference_is_the_plain_fold(items: list[StoredItem]) -> None:
    """The reference is no tautology: on a log without rewinds (compactions and a fork item
    allowed) it agrees with the single-batch fold of ``Patch``, which knows no context."""
    one_batch = apply_all([Patch.from_items(items)])
    assert not Patch.from_items(items).rewound
    assert reference(items) == one_batch


def _rewinds(log: Sequence[StoredItem]) -> bool:
    return any(i.kind == "rewind" for i in log)


@settings(max_examples=200)
@given(patch_sequences())
def test_applying_a_merge_equals_applying_in_turn(patches: list[Patch]) -> None:
    # What a coalescing actor does (merge, then apply once) matches applying each patch.
    assert apply_all([_merge_all(patches)]) == apply_all(patches)


@given(item_runs(max_size=30) | item_runs(max_size=30, edits=True))
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
    items = data.draw(item_runs(max_size=30, edits=data.draw(st.booleans())).filter(bool))
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
    # A gap (another process appended between, in a shared store): only the range is
    # kept, so the write folds the log; nothing merges into a gapped Pending but the range.
    gapped = one.merge(three)
    assert (gapped.first_seq, gapped.last_seq, gapped.log_rows()) == (-1, 3, [])
    assert gapped.urgent == three.urgent
    assert gapped.merge(Pending.of([(4, *three.log_rows()[0][1:])], [])).first_seq == -1
    with pytest.raises(ValueError, match="overlap"):
        first.merge(one)
