"""The store's files under concurrency and damage, with real processes and real files.

- Two processes racing to open one store as writer: exactly one wins, the other gets
  :class:`StoreLockedError` naming the winner.
- A read-only process listing threads pass after pass while a writer process streams
  items: the reader never errors, always sees consistent pages, and the WAL stays bounded.
- Damaged files (random bytes in the header or in a middle page, a truncated file) give a
  :class:`StoreFormatError` — never another exception, a hang, or different data.

That the store's files (database, ``-wal``, ``-shm``, ``.lock``) are readable by their owner
only is tested in tests/sqlite/test_store_process.py and tests/sqlite/test_sql.py.

Children: ``tests/_children/files_child.py`` (protocol in its docstring). ``make soak`` runs
the long versions (100,000 items; many races and damaged files), printing their figures.
"""

from __future__ import annotations

import os
import random
import sqlite3
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, Final

import attrs
import pytest
import trio
from _process import Child, spawn_child

from threadstore import Item, StoreFormatError, open_store

TIMEOUT: Final = 120
#: The bound the WAL file must stay under while a reader and a writer share the store.
WAL_BOUND: Final = 64 << 20


# -- child processes ----------------------------------------------------------------------


@asynccontextmanager
async def spawn(mode: str, path: Path, *options: str) -> AsyncIterator[Child]:
    """Run the files child; on the way out, kill it if it still runs and reap it."""
    async with spawn_child("files_child.py", mode, str(path), *options, kind=Child) as child:
        yield child


def say(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(text, file=sys.stderr, flush=True)


# -- 1. two writers racing to open the same store ------------------------------------------


@attrs.define
class Race:
    winner: int
    holder: str


async def race(path: Path) -> Race:
    """Start two writers at once (released by one "go" each); return who won, what lost saw."""
    async with spawn("race", path) as first, spawn("race", path) as second:
        children = (first, second)
        for child in children:
            assert await child.expect_line() == "waiting"
        for child in children:
            await child.send("go")
        results = [await child.expect_line() for child in children]
        assert sorted(r.split()[0] for r in results) == ["locked", "won"], results
        winner, loser = children if results[0] == "won" else children[::-1]
        holder = results[1 - results.index("won")].removeprefix("locked ")
        assert await loser.proc.wait() == 0, await loser.stderr()

        assert await winner.expect_line() == "created"
        await winner.close_stdin()
        assert await winner.expect_line() == "closed"
        assert await winner.proc.wait() == 0, await winner.stderr()
    return Race(winner=winner.proc.pid, holder=holder)


async def assert_written_by(path: Path, pid: int, *, existing: bool) -> None:
    """The winner's thread is there (beside the older one); the loser wrote nothing."""
    async with open_store(path) as store:  # the winner released the lock
        page = await store.list_threads()
        previews = sorted(str(meta.preview) for meta in page.threads)
        assert previews == sorted([f"by {pid}", *(["already here"] if existing else [])])


async def make_store(path: Path) -> None:
    async with open_store(path) as store:
        thread = await store.create_thread()
        await store.append(thread.id, Item.user_message("already here"))


@pytest.mark.parametrize("existing", [False, True], ids=["new-file", "existing-store"])
async def test_two_processes_racing_to_write_exactly_one_wins(
    tmp_path: Path, existing: bool
) -> None:
    path = tmp_path / "store.db"
    if existing:
        await make_store(path)
    with trio.fail_after(TIMEOUT):
        result = await race(path)
    await assert_written_by(path, result.winner, existing=existing)
    assert result.holder.startswith(f"pid {result.winner} on "), result


@pytest.mark.soak
async def test_writer_race_soak(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    unnamed = []
    for i in range(60):
        path = tmp_path / f"race-{i}" / "store.db"
        await trio.Path(path.parent).mkdir()
        if i % 2:
            await make_store(path)
        with trio.fail_after(TIMEOUT):
            result = await race(path)
        if not result.holder.startswith(f"pid {result.winner} on "):
            unnamed.append(f"{result.holder!r} (winner: pid {result.winner})")
    say(capsys, f"\nwriter race soak: races=60, holder not named={len(unnamed)} {unnamed[:3]}")
    assert unnamed == []


# -- 2. a reader listing while a writer streams ---------------------------------------------


@attrs.define
class Sharing:
    items: int = 0
    passes: int = 0
    passes_while_writing: int = 0
    wal_max: int = 0
    samples: int = 0
    seconds: float = 0.0
    errors: list[str] = attrs.Factory(list)


def wal_size(path: Path) -> int:
    try:
        return os.path.getsize(str(path) + "-wal")
    except FileNotFoundError:
        return 0


async def share(path: Path, items: int) -> Sharing:
    """Writer child streams ``items`` items while a reader child checks pass after pass."""
    result = Sharing()
    start = trio.current_time()
    async with spawn("writer", path, "--items", str(items)) as writer:
        assert await writer.expect_line() == "ready"
        async with spawn("reader", path) as reader:
            assert (await reader.expect_line()).startswith("pass "), "the reader never passed"
            writing = True

            async def watch_reader() -> None:
                while (line := await reader.line()) is not None:
                    result.wal_max = max(result.wal_max, wal_size(path))
                    result.samples += 1
                    if line.startswith("pass "):
                        result.passes += 1
                        result.passes_while_writing += writing
                    elif line.startswith("summary "):
                        return
                    else:
                        result.errors.append(line)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_reader)
                await writer.send("go")
                while (line := await writer.expect_line()).startswith("progress "):
                    result.wal_max = max(result.wal_max, wal_size(path))
                    result.samples += 1
                assert line == f"done {items}", line
                writing = False
                result.items = items
                assert await writer.expect_line() == "closed"
                assert await writer.proc.wait() == 0, await writer.stderr()
                await reader.close_stdin()
            code = await reader.proc.wait()
            if code != 0:
                result.errors.append(f"reader exited {code}: {await reader.stderr()}")
    result.seconds = trio.current_time() - start
    return result


async def assert_all_items_there(path: Path, items: int) -> None:
    async with open_store(path, read_only=True) as store:
        total = 0
        cursor = None
        while True:
            page = await store.list_threads(limit=100, cursor=cursor, include_empty=True)
            for meta in page.threads:
                assert meta.seq == meta.item_count == len(await store.read_items(meta.id))
                total += meta.item_count
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    threads = 20 + items // 1000  # each thread's goal is one item too
    assert total == items + threads


async def check_sharing(tmp_path: Path, capsys: pytest.CaptureFixture[str], items: int) -> Sharing:
    path = tmp_path / "store.db"
    with trio.fail_after(TIMEOUT * (1 + items // 20_000)):
        result = await share(path, items)
    say(
        capsys,
        f"\nreader while writing {result.items} items: passes={result.passes} "
        f"({result.passes_while_writing} while writing), WAL max {result.wal_max / 2**20:.2f} MiB "
        f"over {result.samples} samples (bound {WAL_BOUND >> 20} MiB), {result.seconds:.1f} s",
    )
    assert result.errors == []
    assert result.passes_while_writing >= 2
    assert result.wal_max < WAL_BOUND
    await assert_all_items_there(path, items)
    return result


async def test_reader_lists_consistently_while_a_writer_streams(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await check_sharing(tmp_path, capsys, 10_000)


@pytest.mark.soak
async def test_reader_while_writer_streams_100k_items_soak(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await check_sharing(tmp_path, capsys, 100_000)


# -- 3. damaged files -----------------------------------------------------------------------

PAGE: Final = 4096


async def make_reference_store(path: Path) -> dict[str, list[tuple[int, str, Any]]]:
    """A closed store spanning many pages; return everything it holds."""
    async with open_store(path) as store:
        for t in range(20):
            thread = await store.create_thread(goal=f"goal {t}")
            for n in range(40):
                await store.append(thread.id, Item.user_message(f"u{t}-{n} " + "x" * 150))
    return await read_everything(path, read_only=True)


async def read_everything(path: Path, *, read_only: bool) -> dict[str, list[tuple[int, str, Any]]]:
    """Every thread's items (seq, kind, data) and metadata, through the public API."""
    out: dict[str, list[tuple[int, str, Any]]] = {}
    async with open_store(path, read_only=read_only) as store:
        cursor = None
        while True:
            page = await store.list_threads(limit=100, cursor=cursor, include_empty=True)
            for meta in page.threads:
                items = await store.read_items(meta.id)
                out[meta.id] = [(i.seq, i.kind, dict(i.data)) for i in items]
                out[meta.id].append((meta.seq, "meta", (meta.preview, meta.item_count)))
            if page.next_cursor is None:
                return out
            cursor = page.next_cursor


def damage_header(data: bytearray, rng: random.Random) -> str:
    spots = sorted(rng.sample(range(100), rng.randint(1, 8)))
    for spot in spots:
        data[spot] = rng.randrange(256)
    return f"header bytes {spots}"


def damage_middle_page(data: bytearray, rng: random.Random) -> str:
    pages = len(data) // PAGE
    page = rng.randrange(pages // 4, pages - pages // 4)
    size = rng.randint(8, 64)
    offset = page * PAGE + rng.randrange(PAGE - size)
    data[offset : offset + size] = rng.randbytes(size)
    return f"{size} bytes at {offset} (page {page + 1})"


def damage_truncate(data: bytearray, rng: random.Random) -> str:
    keep = rng.randrange(PAGE, len(data) - PAGE)
    del data[keep:]
    return f"truncated to {keep} of {len(data)} bytes"


DAMAGE: Final[dict[str, Callable[[bytearray, random.Random], str]]] = {
    "header": damage_header,
    "middle-page": damage_middle_page,
    "truncated": damage_truncate,
}


#: What a user can see opening and reading a damaged store; the first three are acceptable.
REFUSED, HARMLESS, REFUSED_AT_READ = "refused at open", "harmless", "refused at first read"


async def open_damaged(
    path: Path, reference: dict[str, list[tuple[int, str, Any]]], *, read_only: bool
) -> tuple[str, str]:
    """``(outcome, detail)`` of opening a damaged store, then reading everything in it.

    Acceptable outcomes: :data:`REFUSED` (``StoreFormatError`` at open, file untouched),
    :data:`HARMLESS` (opened; everything reads back identical) and, for damage open cannot
    see, :data:`REFUSED_AT_READ` (``StoreFormatError`` from the first read that touches it).
    """
    before = await trio.Path(path).read_bytes()
    try:
        with trio.fail_after(TIMEOUT):
            async with open_store(path, read_only=read_only):
                pass
    except StoreFormatError as exc:
        if await trio.Path(path).read_bytes() != before:
            return "refused, but the damaged file was changed", str(exc)
        return REFUSED, str(exc)
    except Exception as exc:
        return f"open raised {type(exc).__name__}", str(exc)
    try:
        with trio.fail_after(TIMEOUT):
            got = await read_everything(path, read_only=read_only)
    except StoreFormatError as exc:
        return REFUSED_AT_READ, str(exc)
    except Exception as exc:
        return f"opened; a read raised {type(exc).__name__}", str(exc)
    if got != reference:
        changed = sorted(t for t in reference.keys() | got.keys() if got.get(t) != reference.get(t))
        return "opened; read DIFFERENT data, silently", f"threads {changed[:3]}"
    return HARMLESS, ""


async def check_damage(tmp_path: Path, kind: str, seeds: range) -> tuple[list[str], Counter[str]]:
    """Damage copies of one reference store; return what went wrong, and all outcomes."""
    reference_path = tmp_path / "reference.db"
    reference = await make_reference_store(reference_path)
    pristine = await trio.Path(reference_path).read_bytes()
    assert len(pristine) > 20 * PAGE
    acceptable = {REFUSED, HARMLESS} | ({REFUSED_AT_READ} if kind == "middle-page" else set())
    failures = []
    outcomes: Counter[str] = Counter()
    for seed in seeds:
        data = bytearray(pristine)
        what = DAMAGE[kind](data, random.Random(seed))
        for read_only in (True, False):
            path = tmp_path / f"{kind}-{seed}-{'ro' if read_only else 'rw'}.db"
            await trio.Path(path).write_bytes(bytes(data))
            outcome, detail = await open_damaged(path, reference, read_only=read_only)
            outcomes[outcome] += 1
            if outcome not in acceptable:
                mode = "read-only" if read_only else "writer"
                failures.append(f"seed {seed} ({what}), {mode} open: {outcome}: {detail}"[:240])
            else:
                for suffix in ("", "-wal", "-shm"):
                    await trio.to_thread.run_sync(_remove, str(path) + suffix)
    return failures, outcomes


def _remove(name: str) -> None:
    with suppress(FileNotFoundError):
        os.remove(name)


#: Seeds per kind in ``make test`` (a middle page costs a full read per seed and mode).
FAST_SEEDS: Final = {"header": 64, "middle-page": 8, "truncated": 16}


@pytest.mark.parametrize("kind", DAMAGE.keys())
async def test_a_damaged_file_gives_a_clear_error_never_wrong_data(
    tmp_path: Path, kind: str
) -> None:
    failures, _ = await check_damage(tmp_path, kind, range(FAST_SEEDS[kind]))
    assert failures == [], "\n".join(failures)


@pytest.mark.soak
@pytest.mark.parametrize("kind", DAMAGE.keys())
async def test_damaged_files_soak(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    failures, outcomes = await check_damage(tmp_path, kind, range(100, 300))
    say(
        capsys,
        f"\ndamaged files ({kind}): seeds 100..299 x 2 modes, {len(failures)} failure(s); "
        f"outcomes {dict(outcomes.most_common())}",
    )
    for failure in failures[:5]:
        say(capsys, f"  {failure}")
    assert failures == [], "\n".join(failures)


async def test_metadata_ahead_of_its_log_is_refused_at_open(tmp_path: Path) -> None:
    """A damaged file whose metadata claims more items than its log holds is refused
    (before, the next append to that thread wedged the store)."""
    path = tmp_path / "store.db"
    async with open_store(path) as store:
        await store.create_thread(goal="g", thread_id="t1")
    await trio.to_thread.run_sync(_drop_the_log_of, path, "t1")
    with pytest.raises(StoreFormatError, match="'t1' has metadata through seq 1"):
        async with open_store(path):
            pass


def _drop_the_log_of(path: Path, thread_id: str) -> None:
    """Damage the file: the thread's items and its log's length go, its metadata stays."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute("DELETE FROM items WHERE thread_id = ?", (thread_id,))
            conn.execute("UPDATE threads SET last_seq = 0 WHERE id = ?", (thread_id,))
    finally:
        conn.close()
