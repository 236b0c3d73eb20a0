"""Running the ``threadstore`` command as a real subprocess, and the stores it runs on."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from _process import Child, child_env

from threadstore import Item, open_store

__all__ = ["Ids", "child_environment", "cli", "cli_async", "fill_store", "spawn_cli"]

#: Not passed on to the command: no default store, no terminal width, no colour setting.
_UNSET = ("THREADSTORE_DB", "COLUMNS", "NO_COLOR")


def child_environment(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = child_env()
    for name in _UNSET:
        env.pop(name, None)
    env.update(extra or {})
    return env


def _argv(args: tuple[str | os.PathLike[str], ...]) -> list[str]:
    return [sys.executable, "-m", "threadstore", *(os.fspath(arg) for arg in args)]


def cli(
    *args: str | os.PathLike[str],
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``threadstore ARGS`` to the end; its exit code, stdout and stderr."""
    return subprocess.run(
        _argv(args),
        input=stdin,
        capture_output=True,
        text=True,
        env=child_environment(env),
        timeout=120,
        check=False,
    )


async def cli_async(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[bytes]:
    """:func:`cli` from a trio test (beside a child process that owns the store)."""
    return await trio.run_process(
        _argv(args),
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=child_environment(None),
    )


@asynccontextmanager
async def spawn_cli(*args: str | os.PathLike[str]) -> AsyncIterator[Child]:
    """``threadstore ARGS`` running (e.g. ``tail``), read line by line; killed and reaped
    on the way out if it still runs."""
    proc = await trio.lowlevel.open_process(
        _argv(args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_environment(None),
    )
    child = Child(proc)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child.drain_stderr)
            try:
                yield child
            finally:
                if proc.returncode is None:
                    proc.kill()
                with trio.CancelScope(shield=True):
                    await proc.wait()
    finally:
        with trio.CancelScope(shield=True):
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    await stream.aclose()


class Ids:
    """The threads :func:`fill_store` made."""

    lisbon: str  # goal-first, turns, tool calls, a rewind, a compaction; namespace acme/alice
    fork: str  # forked from lisbon, with a title
    report: str  # title, extra, an error, text with a newline and a tab, emoji
    archived: str
    empty: str  # no items: listed only with --all


async def _fill(path: Path) -> Ids:
    ids = Ids()
    async with open_store(path) as store:
        meta = await store.create_thread(goal="Plan a trip to Lisbon", namespace="acme/alice")
        ids.lisbon = meta.id
        await store.append(
            meta.id,
            Item.turn_started("t1"),
            Item.user_message("Find flights to Lisbon"),
            Item.tool_call("search", {"q": "LIS"}, "c1"),
            Item.tool_result("c1", "3 flights"),
            Item.assistant_message("I found three flights."),
            Item.token_usage(120, 30),
            Item.turn_completed("t1"),
        )
        await store.rewind(meta.id, 5)
        await store.append_and_flush(
            meta.id, Item.compaction("Flights found."), Item.user_message("Now hotels")
        )
        ids.fork = (await store.fork(meta.id, title="Lisbon, plan B")).id
        meta = await store.create_thread(title="Quarterly report 📈", extra={"owner": "bob"})
        ids.report = meta.id
        await store.append_and_flush(
            meta.id, Item.user_message("Draft it\nwith\ttabs"), Item.error("model timeout")
        )
        await store.update_thread(meta.id, extra={"reviewed": True})
        ids.archived = (await store.create_thread(goal="An old conversation")).id
        await store.archive_thread(ids.archived)
        ids.empty = (await store.create_thread()).id
        await store.flush_all()
    return ids


def fill_store(path: Path) -> Ids:
    """Make a store at ``path`` with one thread of each shape (see :class:`Ids`)."""
    return trio.run(_fill, path)
