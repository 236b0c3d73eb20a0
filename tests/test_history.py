"""History editing, append-only: rewind, fork, compaction and ``read_context``.

Contract tests (every engine through the ``store`` fixture), plus the pure ``context``
function against a simple model.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from threadstore import (
    InvalidItemError,
    Item,
    Store,
    StoredItem,
    ThreadNotFoundError,
)
from threadstore._history import context, context_start


def _texts(items: Sequence[StoredItem]) -> list[str]:
    return [str(i.data.get("text", i.data.get("summary", i.kind))) for i in items]


async def _chat(store: Store, tid: str, *texts: str) -> None:
    for n, text in enumerate(texts):
        maker = Item.user_message if n % 2 == 0 else Item.assistant_message
        await store.append(tid, maker(text))
    await trio.lowlevel.checkpoint()


# -- rewind ----------------------------------------------------------------------------------


async def test_rewind_hides_later_items_from_context_and_metadata(store: Store) -> None:
    meta = await store.create_thread(title="t")
    await store.append(meta.id, Item.turn_started("1"), Item.user_message("q1"))
    await store.append(meta.id, Item.assistant_message("a1"), Item.turn_completed("1"))
    await store.append(meta.id, Item.turn_started("2"), Item.user_message("q2"))
    await store.append(meta.id, Item.token_usage(10, 5), Item.assistant_message("a2"))
    before = await store.append_and_flush(meta.id, Item.error("boom"))
    assert (await store.get_thread(meta.id)).status == "error"

    rewound = await store.rewind(meta.id, 5)  # back to the end of turn 1
    assert rewound.item_count == 5  # title, turn_started, q1, a1, turn_completed
    assert rewound.last_message == "a1"
    assert rewound.status == "idle"
    assert rewound.turn_count == 1
    assert (rewound.input_tokens, rewound.output_tokens) == (0, 0)
    assert rewound.title == "t"  # explicit attributes are not undone
    assert rewound.seq == before.seq + 1  # the rewind is an item of the log
    assert _texts(await store.read_context(meta.id)) == [
        "t",
        "turn_started",
        "q1",
        "a1",
        "turn_completed",
    ]
    raw = await store.read_items(meta.id)
    assert [i.kind for i in raw][-1] == "rewind"  # the log keeps everything
    assert len(raw) == before.seq + 1
    assert await store.get_thread(meta.id) == rewound


async def test_appends_after_a_rewind_continue_the_context(store: Store) -> None:
    meta = await store.create_thread()
    await _chat(store, meta.id, "q1", "a1", "q2", "a2")
    await store.rewind(meta.id, 2)
    receipt = await store.append_and_flush(meta.id, Item.user_message("q2 again"))
    assert _texts(await store.read_context(meta.id)) == ["q1", "a1", "q2 again"]
    meta = await store.get_thread(meta.id)
    assert (meta.item_count, meta.preview, meta.seq) == (3, "q1", receipt.seq)


async def test_rewind_to_zero_empties_the_context_and_a_hidden_seq_resurrects_nothing(
    store: Store,
) -> None:
    meta = await store.create_thread()
    await _chat(store, meta.id, "q1", "a1", "q2")
    await store.rewind(meta.id, 1)
    await store.rewind(meta.id, 3)  # 2 and 3 are hidden already: nothing comes back
    assert _texts(await store.read_context(meta.id)) == ["q1"]
    emptied = await store.rewind(meta.id, 0)
    assert await store.read_context(meta.id) == []
    assert (emptied.item_count, emptied.preview, emptied.last_message) == (0, None, None)


@pytest.mark.parametrize("to_seq", [-1, 4, True, "1", None])
async def test_rewind_out_of_range_is_refused_and_writes_nothing(
    store: Store, to_seq: object
) -> None:
    meta = await store.create_thread()
    await _chat(store, meta.id, "q1", "a1", "q2")
    with pytest.raises(InvalidItemError, match="to_seq"):
        await store.rewind(meta.id, to_seq)  # type: ignore[arg-type]
    assert len(await store.read_items(meta.id)) == 3


async def test_history_edits_of_missing_or_deleted_threads_raise_not_found(store: Store) -> None:
    meta = await store.create_thread()
    await store.delete_thread(meta.id)
    for tid in ("missing", meta.id):
        with pytest.raises(ThreadNotFoundError):
            await store.rewind(tid, 0)
        with pytest.raises(ThreadNotFoundError):
            await store.fork(tid)
        with pytest.raises(ThreadNotFoundError):
            await store.read_context(tid)


async def test_store_kinds_cannot_be_appended(store: Store) -> None:
    meta = await store.create_thread()
    for kind, data in (("rewind", {"to_seq": 0}), ("fork", {"from": "x", "at_seq": 0})):
        with pytest.raises(InvalidItemError, match=kind):
            await store.append(meta.id, Item(kind=kind, data=data))
    assert await store.read_items(meta.id) == []


# -- compaction ------------------------------------------------------------------------------


async def test_read_context_starts_at_the_latest_compaction(store: Store) -> None:
    meta = await store.create_thread()
    await _chat(store, meta.id, "q1", "a1")
    await store.append(meta.id, Item.compaction("we talked about q1"))
    await _chat(store, meta.id, "q2", "a2")
    assert _texts(await store.read_context(meta.id)) == ["we talked about q1", "q2", "a2"]
    assert _texts(await store.read_context(meta.id, limit=2)) == ["q2", "a2"]
    await store.flush(meta.id)
    # Metadata still folds every visible item: the compaction changes only the context.
    got = await store.get_thread(meta.id)
    assert (got.preview, got.last_message, got.item_count) == ("q1", "a2", 5)
    # A rewind past the compaction brings the items before it back into the context.
    await store.rewind(meta.id, 2)
    assert _texts(await store.read_context(meta.id)) == ["q1", "a1"]


async def test_compaction_needs_a_summary(store: Store) -> None:
    meta = await store.create_thread()
    with pytest.raises(InvalidItemError):
        await store.append(meta.id, Item(kind="compaction", data={"text": "no summary"}))


# -- fork ------------------------------------------------------------------------------------


async def test_fork_copies_the_context_and_the_two_never_mix(store: Store) -> None:
    source = await store.create_thread(goal="plan")
    await _chat(store, source.id, "q1", "a1", "q2", "a2")
    await store.rewind(source.id, 3)  # context: goal, q1, a1
    fork = await store.fork(source.id, title="what if")
    assert (fork.forked_from, fork.forked_at) == (source.id, 6)
    assert fork.title == "what if"
    assert (fork.preview, fork.last_message, fork.item_count) == ("q1", "a1", 4)
    assert _texts(await store.read_context(fork.id)) == ["plan", "q1", "a1", "what if"]
    await store.append_and_flush(fork.id, Item.user_message("only in the fork"))
    await store.append_and_flush(source.id, Item.user_message("only in the source"))
    assert _texts(await store.read_context(fork.id))[-1] == "only in the fork"
    assert "only in the fork" not in _texts(await store.read_context(source.id))
    listed = {t.id: t for t in (await store.list_threads()).threads}
    assert listed[fork.id].preview == "q1"  # listed at once, with its own metadata


async def test_a_forks_title_wins_over_the_copied_one(store: Store) -> None:
    source = await store.create_thread(title="Trip to Rome", goal="plan")
    await _chat(store, source.id, "q1")
    fork = await store.fork(source.id, title="What if Paris")
    assert fork.title == "What if Paris"
    assert (await store.get_thread(source.id)).title == "Trip to Rome"
    plain = await store.fork(source.id)
    assert plain.title == "Trip to Rome"  # without a title, the source's carries over


async def test_fork_at_a_seq_and_with_a_given_id(store: Store) -> None:
    source = await store.create_thread()
    await _chat(store, source.id, "q1", "a1", "q2", "a2")
    fork = await store.fork(source.id, at_seq=2, thread_id="branch")
    assert fork.id == "branch"
    assert (fork.forked_from, fork.forked_at) == (source.id, 2)
    assert _texts(await store.read_context("branch")) == ["q1", "a1"]
    assert (await store.read_items("branch"))[0].kind == "fork"


async def test_deleting_the_source_leaves_the_fork_whole(store: Store) -> None:
    source = await store.create_thread()
    await _chat(store, source.id, "q1", "a1")
    fork = await store.fork(source.id)
    await store.delete_thread(source.id)
    assert _texts(await store.read_context(fork.id)) == ["q1", "a1"]
    assert (await store.get_thread(fork.id)).forked_from == source.id


@pytest.mark.parametrize("at_seq", [-1, 3, 1.0, "2"])
async def test_fork_out_of_range_is_refused_and_creates_nothing(
    store: Store, at_seq: object
) -> None:
    source = await store.create_thread()
    await _chat(store, source.id, "q1", "a1")
    with pytest.raises(InvalidItemError, match="at_seq"):
        await store.fork(source.id, at_seq=at_seq)  # type: ignore[arg-type]
    page = await store.list_threads(include_empty=True)
    assert [t.id for t in page.threads] == [source.id]


async def test_fork_to_an_existing_id_is_refused(store: Store) -> None:
    from threadstore import ThreadExistsError

    source = await store.create_thread(thread_id="a")
    await store.create_thread(thread_id="b")
    with pytest.raises(ThreadExistsError):
        await store.fork(source.id, thread_id="b")


# -- the pure fold of edits ------------------------------------------------------------------


@attrs.frozen
class _E:
    seq: int
    kind: str
    data: dict[str, int]


def _model(log: Sequence[_E]) -> list[int]:
    """A second, literal reading of the rules: recompute from scratch at each rewind."""
    shown: list[int] = []
    for entry in log:
        if entry.kind == "rewind":
            shown = [s for s in shown if s <= entry.data["to_seq"]]
        elif entry.kind != "fork":
            shown.append(entry.seq)
    return shown


@st.composite
def _logs(draw: st.DrawFn) -> list[_E]:
    log: list[_E] = []
    for seq in range(1, draw(st.integers(0, 40)) + 1):
        kind = draw(st.sampled_from(["user_message", "compaction", "rewind", "rewind"]))
        data = {"to_seq": draw(st.integers(0, seq - 1))} if kind == "rewind" else {}
        log.append(_E(seq, kind, data))
    return log


@given(_logs())
def test_context_matches_the_model(log: list[_E]) -> None:
    visible = context(log)
    assert [e.seq for e in visible] == _model(log)
    starts = [e.seq for e in visible if e.kind == "compaction"]
    assert context_start(visible) == (starts[-1] if starts else 0)
