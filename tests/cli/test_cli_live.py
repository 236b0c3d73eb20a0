"""The command beside a process that owns the store (``tests/_children/store_child.py``):
reads work read-only, writes that need the lock fail naming the owner, ``tail`` follows
appends as they commit, ``backup`` copies a store a writer is streaming into.

The owner reports each thread it made and each acknowledged append on stdout; the tests
wait on those lines and on the command's own output lines, never on the clock.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from _cli import cli_async, spawn_cli
from _process import Child, spawn_child

from threadstore import open_store


class Owner(Child):
    """A ``store_child.py`` owning the store: its threads, then its acknowledgements, which
    :meth:`pump` reads as they come (a full pipe would stall the owner's appends)."""

    def __init__(self, proc: trio.Process) -> None:
        super().__init__(proc)
        #: The highest acknowledged seq per thread, and how many acks were read.
        self.acked: dict[str, int] = {}
        self.count = 0
        self._more = trio.Event()

    async def threads(self) -> list[str]:
        ids = []
        while (line := await self.expect_line()) != "ready":
            word, thread_id = line.split()
            assert word == "thread", line
            ids.append(thread_id)
        return ids

    async def pump(self) -> None:
        while (line := await self.line()) is not None:
            word, thread_id, seq = line.split()
            assert word == "ack", line
            self.acked[thread_id] = max(self.acked.get(thread_id, 0), int(seq))
            self.count += 1
            self._more.set()
            self._more = trio.Event()

    async def wait_acks(self, count: int) -> dict[str, int]:
        """Wait for ``count`` more acknowledgements; the acknowledged seqs by then."""
        target = self.count + count
        while self.count < target:
            await self._more.wait()
        return dict(self.acked)  # noqa: ASYNC910 - waits whenever an ack is still due


@asynccontextmanager
async def owner(path: Path, mode: str, threads: int) -> AsyncIterator[tuple[Owner, list[str]]]:
    async with spawn_child(
        "store_child.py", str(path), mode, "--threads", str(threads), kind=Owner
    ) as child:
        ids = await child.threads()
        async with trio.open_nursery() as nursery:
            if mode == "stream":
                nursery.start_soon(child.pump)
            yield child, ids
            nursery.cancel_scope.cancel()


def _ok(done: subprocess.CompletedProcess[bytes]) -> str:
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


async def test_every_read_command_works_beside_the_owner_and_writes_name_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    async with owner(path, "hold", 2) as (child, ids):
        listed = [
            json.loads(line)["id"]
            for line in _ok(await cli_async("list", "--db", path, "--json")).splitlines()
        ]
        assert sorted(listed) == sorted(ids)
        shown = json.loads(_ok(await cli_async("show", ids[0], "--db", path, "--json")))
        assert shown["thread"]["goal"] == "goal 0"
        assert json.loads(_ok(await cli_async("stats", "--db", path, "--json")))["threads"] == 2
        assert "no problems found" in _ok(await cli_async("doctor", "--db", path))
        export = _ok(await cli_async("export", "--db", path))
        assert len(export.splitlines()) == 4  # two headers, two goals
        _ok(await cli_async("backup", tmp_path / "copy.db", "--db", path))
        (tmp_path / "e.jsonl").write_text(export)
        for args in (("reproject",), ("import", tmp_path / "e.jsonl")):
            done = await cli_async(*args, "--db", path)
            assert done.returncode == 5
            message = done.stderr.decode()
            assert message.startswith(
                f"threadstore: error: store {str(path)!r} is locked for writing by "
                f"pid {child.pid} on "
            )
            assert message.count("\n") == 1
            assert "Traceback" not in message
        await child.close_stdin()  # the owner closes its store
        assert await child.proc.wait() == 0


async def test_tail_follows_a_thread_as_another_process_appends_until_ctrl_c(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    async with owner(path, "stream", 1) as (child, (thread_id,)):
        await child.wait_acks(3)
        async with spawn_cli("tail", thread_id, "--db", path, "--json", "-n", "2") as tail:
            seqs: list[int] = []
            kinds = set()
            while len(seqs) < 40:  # the last two items, then the ones appended meanwhile
                item = json.loads(await tail.expect_line())
                seqs.append(item["seq"])
                kinds.add(item["kind"])
            # each item once, in order, none missed
            assert seqs == list(range(seqs[0], seqs[0] + 40))
            assert kinds == {"user_message", "assistant_message"}
            acked = await child.wait_acks(1)
            assert acked[thread_id] > seqs[1]  # the owner kept appending throughout
            tail.proc.send_signal(signal.SIGINT)
            assert await tail.proc.wait() == 0
            stderr = await tail.stderr()
            assert "Traceback" not in stderr
            assert "KeyboardInterrupt" not in stderr


async def test_backup_beside_a_streaming_writer_is_a_consistent_store(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    dest = tmp_path / "backup.db"
    async with owner(path, "stream", 3) as (child, ids):
        acked = await child.wait_acks(60)
        _ok(await cli_async("backup", dest, "--db", path))
        await child.wait_acks(30)  # still streaming after the copy
        done = await cli_async("doctor", "--db", dest, "--json")
        report = json.loads(_ok(done))
        # a sound store: integrity, metadata = fold of the log (lag allowed: a snapshot)
        assert report["ok"] is True, report
    async with open_store(dest, read_only=True) as copy:
        for thread_id in ids:
            items = await copy.read_items(thread_id)
            # every append acknowledged before the backup is in the copy, in order
            assert [item.seq for item in items] == list(range(1, len(items) + 1))
            assert len(items) >= acked.get(thread_id, 1)


async def test_tail_without_an_id_follows_the_whole_store(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with (
        owner(path, "stream", 2) as (child, ids),
        spawn_cli("tail", "--db", path, "--json") as tail,
    ):
        await child.wait_acks(1)
        event = json.loads(await tail.expect_line())
        assert event["thread"]["id"] in ids
        tail.proc.send_signal(signal.SIGINT)
        code = await tail.proc.wait()
        assert code == 0, await tail.stderr()
