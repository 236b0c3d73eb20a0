"""Maintenance operations, over every engine (the contract suite): ``check`` compares each
thread with the fold of its log, ``reproject`` rebuilds from the log, ``export_thread`` /
``import_thread`` move a thread exactly, ``backup`` copies a live store, ``summary``
counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from _helpers import FAST_RETRY

from threadstore import (
    ImportFormatError,
    InvalidItemError,
    Item,
    ReadOnlyStoreError,
    Store,
    StoredItem,
    ThreadExistsError,
    ThreadMeta,
    ThreadNotFoundError,
    ThreadRecord,
    ThreadStoreError,
    blocking,
    open_store,
    read_records,
    record_lines,
)
from threadstore._maintenance import check_dump
from threadstore.postgres._sql import SCHEMA_VERSION as POSTGRES_SCHEMA_VERSION
from threadstore.sqlite._sql import SCHEMA_VERSION


class Counter:
    """A projector: how many items it has seen."""

    name = "counter"

    def project(self, meta: ThreadMeta, items: Sequence[StoredItem]) -> Mapping[str, Any]:
        return {"seen": meta.extra.get(self.name, {}).get("seen", 0) + len(items)}


async def fill(store: Store) -> list[str]:
    """One thread of each shape: turns and tools, a rewind and a compaction, a fork, an
    archived one with extra, an empty one, one in a namespace."""
    a = await store.create_thread(goal="Plan a trip", namespace="acme/alice")
    await store.append(
        a.id,
        Item.turn_started("t1"),
        Item.user_message("Find flights"),
        Item.tool_call("search", {"q": "LIS"}, "c1"),
        Item.tool_result("c1", "3 flights"),
        Item.assistant_message("Three flights."),
        Item.token_usage(10, 3),
        Item.turn_completed("t1"),
    )
    await store.rewind(a.id, 4)
    await store.append(a.id, Item.compaction("so far"), Item.user_message("hotels"))
    b = await store.fork(a.id, title="plan B")
    c = await store.create_thread(title="report", extra={"owner": "bob"})
    await store.append(c.id, Item.user_message("draft"), Item.error("boom"))
    await store.update_thread(c.id, extra={"k": [1, 2]})
    await store.archive_thread(c.id)
    d = await store.create_thread()
    await store.flush_all()
    return [a.id, b.id, c.id, d.id]


async def snapshot(store: Store, ids: Sequence[str]) -> list[Any]:
    """Every thread's metadata, log and context, as a user of the store sees them."""
    out = []
    for tid in ids:
        meta = await store.get_thread(tid)
        out.append((meta, await store.read_items(tid), await store.read_context(tid)))
    return out  # noqa: ASYNC910 - ids is never empty here


async def test_a_sound_store_checks_clean_and_sums_up(store: Store, engine: str) -> None:
    ids = await fill(store)
    check = await store.check()
    assert check.ok
    assert (check.threads, check.items) == (4, 11 + 8 + 5 + 0)
    assert (check.mismatched, check.lagging, check.integrity) == ((), (), ())
    summary = await store.summary()
    assert (summary.engine, summary.threads, summary.items) == (engine, 4, 24)
    assert summary.lagging_threads == 0
    versions = {"sqlite": SCHEMA_VERSION, "postgres": POSTGRES_SCHEMA_VERSION, "memory": None}
    assert summary.schema_version == versions[engine]
    seen: list[tuple[int, int]] = []
    await store.check(progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert len(ids) == 4


async def test_export_then_import_reproduces_every_thread(
    store: Store, another_store_target: str
) -> None:
    ids = await fill(store)
    records = [await store.export_thread(tid) for tid in ids]
    lines = [line for record in records for line in record_lines(record)]
    assert list(read_records(lines)) == records  # the JSON Lines are exact
    async with open_store(another_store_target) as copy:
        for record in read_records(lines):
            meta = await copy.import_thread(record)
            assert meta == await store.get_thread(record.id)
        assert await snapshot(copy, ids) == await snapshot(store, ids)
        assert (await copy.check()).ok
        # an imported thread is live: appends continue its log and its metadata
        await copy.append_and_flush(ids[0], Item.user_message("more"))
        assert (await copy.get_thread(ids[0])).seq == 12
        with pytest.raises(ThreadExistsError):
            await copy.import_thread(records[1])
        assert await copy.import_thread(records[1], skip_existing=True) is None


def _record(**changes: Any) -> ThreadRecord:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    items = (
        StoredItem(kind="goal", data={"text": "g"}, seq=1, created_at=at),
        StoredItem(kind="user_message", data={"text": "u"}, seq=2, created_at=at),
    )
    fields: dict[str, Any] = {
        "id": "t-1",
        "namespace": "",
        "created_at": at,
        "archived_at": None,
        "items": items,
    }
    fields.update(changes)
    return ThreadRecord(**fields)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"id": " bad id "}, "thread id"),
        ({"created_at": datetime(2026, 1, 1)}, "aware"),
        (
            {
                "items": (
                    StoredItem(
                        kind="goal", data={"text": "g"}, seq=2, created_at=datetime.now(UTC)
                    ),
                )
            },
            "seqs run",
        ),
        (
            {"items": (StoredItem(kind="BAD", data={}, seq=1, created_at=datetime.now(UTC)),)},
            "kind",
        ),
        (
            {
                "items": (
                    StoredItem(
                        kind="rewind", data={"to_seq": 1}, seq=1, created_at=datetime.now(UTC)
                    ),
                )
            },
            "rewind",
        ),
        (
            {
                "items": (
                    StoredItem(
                        kind="goal", data={"text": "g"}, seq=1, created_at=datetime.now(UTC)
                    ),
                    StoredItem(
                        kind="fork",
                        data={"from": "x", "at_seq": 0},
                        seq=2,
                        created_at=datetime.now(UTC),
                    ),
                )
            },
            "fork",
        ),
        ({"extra": {"p": 1}}, "extra"),
    ],
)
async def test_an_invalid_record_is_refused_and_nothing_is_written(
    store: Store, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidItemError, match=message):
        await store.import_thread(_record(**changes))
    assert (await store.summary()).threads == 0
    with pytest.raises(InvalidItemError):
        await store.import_thread("not a record")  # type: ignore[arg-type]
    assert await store.import_thread(_record()) is not None


def test_malformed_export_lines_name_their_line() -> None:
    lines = list(record_lines(_record()))
    with pytest.raises(ImportFormatError) as caught:
        list(read_records([lines[0], "{", lines[2]]))
    assert caught.value.line == 2
    with pytest.raises(ImportFormatError, match="announces 2 items but has 1"):
        list(read_records(lines[:2]))
    assert list(read_records(["", *lines, "  "])) == [_record()]


async def test_check_names_each_field_that_differs_from_the_fold(store: Store) -> None:
    ids = await fill(store)
    dump = await store._engine.dump_thread(ids[0])
    assert dump is not None
    assert check_dump(dump) is None
    meta = attrs.evolve(dump.projection.meta, title="tampered", item_count=99)
    tampered = attrs.evolve(dump, projection=attrs.evolve(dump.projection, meta=meta))
    mismatch = check_dump(tampered)
    assert mismatch is not None
    assert mismatch.fields == ("title", "item_count")
    unmarked = attrs.evolve(dump, hidden=frozenset())
    mismatch = check_dump(unmarked)
    assert mismatch is not None
    assert mismatch.fields == ("context",)
    short = attrs.evolve(dump, rows=dump.rows[:-2])
    mismatch = check_dump(short)
    assert mismatch is not None
    assert mismatch.fields == ("log",)


async def test_reproject_rebuilds_from_the_log_and_keeps_explicit_state(store: Store) -> None:
    ids = await fill(store)
    before = await snapshot(store, ids)
    progress: list[tuple[int, int]] = []
    assert await store.reproject(progress=lambda *step: progress.append(step)) == 4
    assert progress[-1] == (4, 4)
    assert await snapshot(store, ids) == before  # archived, namespace, fork, extra kept
    assert await store.reproject(ids[2]) == 1
    with pytest.raises(ThreadNotFoundError):
        await store.reproject("no-such-thread")


async def test_reproject_beside_appends_loses_nothing(store: Store) -> None:
    meta = await store.create_thread(goal="busy")

    async def append_many() -> None:
        for n in range(50):
            await store.append(meta.id, Item.user_message(f"u{n}"), Item.assistant_message("a"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(append_many)
        for _ in range(5):
            await store.reproject(meta.id)
    await store.flush_all()
    assert (await store.get_thread(meta.id)).item_count == 101
    assert (await store.check()).ok


async def test_projector_output_is_recomputed_with_the_projector_and_kept_without(
    store_target: str,
) -> None:
    async with open_store(store_target, projectors=[Counter()], retry=FAST_RETRY) as store:
        ids = await fill(store)
        # (a projector never sees the items a thread is created with: here its goal)
        assert (await store.get_thread(ids[0])).extra["counter"] == {"seen": 10}
        assert (await store.check()).ok
        assert await store.reproject() == 4
        assert (await store.get_thread(ids[0])).extra["counter"] == {"seen": 10}
        record = await store.export_thread(ids[0])
        assert record.extra == {"counter": {"seen": 10}}
        before = await store.get_thread(ids[0])
    async with open_store(":memory:") as plain:
        imported = await plain.import_thread(record)
        assert imported == before  # carried as it was, without the projector
        assert (await plain.check()).ok
        await plain.reproject()
        assert await plain.get_thread(ids[0]) == before


@pytest.mark.engines("sqlite")
async def test_maintenance_beside_a_writer_read_only(store: Store, store_target: str) -> None:
    ids = await fill(store)
    async with open_store(store_target, read_only=True) as reader:
        assert (await reader.check()).ok
        assert (await reader.export_thread(ids[1])) == await store.export_thread(ids[1])
        with pytest.raises(ReadOnlyStoreError):
            await reader.reproject()
        with pytest.raises(ReadOnlyStoreError):
            await reader.import_thread(_record())


@pytest.mark.engines("sqlite")
async def test_backup_copies_a_store_that_opens(store: Store, tmp_path: Path) -> None:
    ids = await fill(store)
    dest = tmp_path / "backup.db"
    await store.backup(dest)
    with pytest.raises(FileExistsError):
        await store.backup(dest)
    with pytest.raises(InvalidItemError):
        await store.backup(42)  # type: ignore[arg-type]
    async with open_store(dest, read_only=True) as copy:
        assert await snapshot(copy, ids) == await snapshot(store, ids)
    assert not (tmp_path / "missing-dir" / "x.db").exists()
    with pytest.raises(FileNotFoundError):
        await store.backup(tmp_path / "missing-dir" / "x.db")


@pytest.mark.engines("memory")
async def test_the_memory_engine_has_no_file_to_back_up(store: Store, tmp_path: Path) -> None:
    with pytest.raises(ThreadStoreError, match="export its threads instead"):
        await store.backup(tmp_path / "x.db")


def test_the_blocking_layer_mirrors_maintenance(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with blocking.open_store(path) as store:
        meta = store.create_thread(goal="hi")
        record = store.export_thread(meta.id)
        assert store.check().ok
        assert store.reproject(meta.id) == 1
        assert store.summary().threads == 1
        store.backup(tmp_path / "copy.db")
    with blocking.open_store(tmp_path / "other.db") as other:
        assert other.import_thread(record) == meta
        assert other.import_thread(record, skip_existing=True) is None


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"type":"thread","format":2}', "export format 2 is not 1"),
        ('{"type":"thread","format":1,"id":"a","namespace":" x"}', "namespace"),
        ('{"type":"thread","format":1,"id":"a","namespace":"","items":-1}', "must be >= 0"),
        ('{"type":"thread","format":true}', "'format' must be an int"),
        ('{"type":"note"}', '"type" must be "thread" or "item"'),
        (
            '{"type":"thread","format":1,"id":"a","namespace":"","items":0,'
            '"created_at":"2026-01-01T00:00:00+00:00","extra":{"p":1}}',
            "'extra' must map projector names to objects",
        ),
        (
            '{"type":"thread","format":1,"id":"a","namespace":"","items":0,'
            '"created_at":"yesterday"}',
            "not an ISO 8601 time",
        ),
    ],
)
def test_each_malformed_header_is_named(line: str, reason: str) -> None:
    with pytest.raises(ImportFormatError, match=reason) as caught:
        list(read_records([line]))
    assert caught.value.line == 1


def test_an_item_of_another_thread_is_refused() -> None:
    lines = list(record_lines(_record()))
    with pytest.raises(ImportFormatError, match="inside thread 't-1'"):
        list(read_records([lines[0], lines[1].replace('"t-1"', '"t-2"'), lines[2]]))
