"""The commands that write: ``reproject``, ``export``, ``import``, ``backup``, ``demo``.

``reproject`` and ``import`` take the store's writer lock (they fail with the owner's name
while another process has it); ``export`` and ``backup`` only read, beside any writer.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import trio

import threadstore
from threadstore import ImportFormatError, Store, ThreadRecord

from ._app import EXIT_INPUT, EXIT_OK, CommandError, Context, open_read, open_write
from ._format import human_size
from ._progress import Progress

__all__ = ["register"]

_PAGE = 1000


def register(commands: Any, parents: list[argparse.ArgumentParser], parser: type) -> None:
    p = commands.add_parser(
        "reproject",
        parents=parents,
        help="rebuild metadata from the log (takes the writer lock)",
        description="Rebuild every thread's metadata (or one thread's) from its log, as "
        "doctor compares it. Needs the writer lock: fails, naming the owner, while another "
        "process has the store open for writing.",
    )
    p.add_argument("--thread", metavar="ID", help="only this thread")
    p.set_defaults(run=reproject)

    p = commands.add_parser(
        "export",
        parents=parents,
        help="write threads as JSON Lines (ids, seqs, times, kinds, data)",
        description="Write every thread (or the --thread ones) as JSON Lines: a header "
        "line per thread, then one line per log item, history edits included. Reads only: "
        "works beside a writer. See docs/cli.md for the format.",
    )
    p.add_argument("--thread", metavar="ID", action="append", help="this thread (repeatable)")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default: stdout)")
    p.set_defaults(run=export)

    p = commands.add_parser(
        "import",
        parents=parents,
        help="recreate exported threads exactly (takes the writer lock)",
        description="Read an export (JSON Lines; - for stdin) and recreate its threads with "
        "their ids, namespaces, seqs, times, kinds and data. Everything is checked before "
        "anything is written; a thread id that exists is an error unless --skip-existing. "
        "Creates the store if the file does not exist.",
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument("--skip-existing", action="store_true", help="skip threads that exist")
    p.set_defaults(run=import_)

    p = commands.add_parser(
        "backup",
        parents=parents,
        help="copy the store consistently, even while a writer runs",
        description="Copy the store to the new file DEST in one consistent snapshot "
        "(SQLite's online backup), beside a running writer. The copy opens as a store.",
    )
    p.add_argument("dest", metavar="DEST")
    p.set_defaults(run=backup)

    p = commands.add_parser(
        "demo",
        parents=parents,
        help="run the demo (what `make demo` runs)",
        description="Run the demo: a simulated agent runtime streams into a fresh store, "
        "then prints the list a user sees. The store is --db (not $THREADSTORE_DB: the "
        "demo deletes it first), default ./demo.db.",
    )
    p.add_argument("--sessions", type=int, help="concurrent agent sessions (20)")
    p.add_argument("--turns", type=int, help="turns per session (4)")
    p.add_argument("--pace", type=float, help="seconds per tool call, max (0.25)")
    p.add_argument("--seed", type=int, help="random seed (7)")
    p.add_argument("--verbose", action="store_true", help="the store's log events on stderr")
    p.set_defaults(run=demo, needs_store=False)


# -- reproject ------------------------------------------------------------------------------


async def reproject(args: argparse.Namespace, ctx: Context) -> int:
    progress = Progress(ctx, "reprojected", plain=True)
    async with open_write(ctx) as store:
        count = await store.reproject(args.thread, progress=progress)
    progress.finish()
    ctx.print(f"rebuilt the metadata of {count} thread(s) from their logs")
    return EXIT_OK


# -- export ---------------------------------------------------------------------------------


async def _all_ids(store: Store) -> list[str]:
    """Every thread (archived ones after the others), oldest first."""
    ids: list[str] = []
    for archived in (False, True):
        cursor = None
        while True:
            page = await store.list_threads(
                limit=_PAGE,
                cursor=cursor,
                order_by="created_at",
                descending=False,
                archived=archived,
                include_empty=True,
            )
            ids += [meta.id for meta in page.threads]
            cursor = page.next_cursor
            if cursor is None:
                break
    return ids


@contextmanager
def _output(path: str | None) -> Iterator[TextIO]:
    """stdout, or a new ``path`` written in full or not at all (a temporary file renamed)."""
    if path is None:
        yield sys.stdout
        return
    folder = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".threadstore-export-", dir=folder)
    try:
        with open(fd, "w", encoding="utf-8") as out:
            yield out
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


async def export(args: argparse.Namespace, ctx: Context) -> int:
    threads = items = 0
    async with open_read(ctx) as store:
        ids = args.thread or await _all_ids(store)
        with _output(args.output) as out:
            for thread_id in ids:
                record = await store.export_thread(thread_id)
                for line in threadstore.record_lines(record):
                    out.write(line + "\n")
                threads += 1
                items += len(record.items)
    if args.output is not None:
        ctx.note(f"exported {threads} thread(s), {items} item(s) to {args.output}")
    return EXIT_OK


# -- import ---------------------------------------------------------------------------------


def _read_export(path: str) -> list[ThreadRecord]:
    """Every record of the export at ``path`` (``-``: stdin), all checked first."""
    name = "<stdin>" if path == "-" else path
    try:
        with (
            open(sys.stdin.fileno(), encoding="utf-8", closefd=False)
            if path == "-"
            else open(path, encoding="utf-8")
        ) as lines:
            records = list(threadstore.read_records(lines))
    except ImportFormatError as exc:
        raise CommandError(EXIT_INPUT, f"{name}:{exc.line}: {exc.reason}") from None
    except UnicodeDecodeError as exc:
        raise CommandError(EXIT_INPUT, f"{name}: not UTF-8 text ({exc.reason})") from None
    seen: set[str] = set()
    for record in records:
        if record.id in seen:
            raise CommandError(EXIT_INPUT, f"{name}: thread {record.id!r} appears twice")
        seen.add(record.id)
    return records


async def import_(args: argparse.Namespace, ctx: Context) -> int:
    records = _read_export(args.file)
    async with open_write(ctx, create=True) as store:
        existing = set()
        for record in records:
            try:
                await store.get_thread(record.id)
            except threadstore.ThreadNotFoundError:
                continue
            existing.add(record.id)
        if existing and not args.skip_existing:
            first = sorted(existing)[0]
            raise CommandError(
                EXIT_INPUT,
                f"thread {first!r} exists in {ctx.target!r} ({len(existing)} of the "
                "file's threads do): nothing was imported; pass --skip-existing to skip them",
            )
        imported = items = 0
        for record in records:
            if record.id in existing:
                continue
            await store.import_thread(record)
            imported += 1
            items += len(record.items)
    skipped = f", skipped {len(existing)} existing" if existing else ""
    ctx.print(f"imported {imported} thread(s), {items} item(s){skipped}")
    return EXIT_OK


# -- backup ---------------------------------------------------------------------------------


async def backup(args: argparse.Namespace, ctx: Context) -> int:
    async with open_read(ctx) as store:
        await store.backup(args.dest)
    async with threadstore.open_store(args.dest, read_only=True) as copy:
        summary = await copy.summary()
    size = human_size((await trio.Path(args.dest).stat()).st_size)
    ctx.print(
        f"backed up {summary.threads} thread(s), {summary.items} item(s) to {args.dest} ({size})"
    )
    return EXIT_OK


# -- demo -----------------------------------------------------------------------------------


def demo(args: argparse.Namespace, ctx: Context) -> int:
    from threadstore import demo as demo_module

    argv = ["--path", ctx.target] if ctx.target else []
    for name in ("sessions", "turns", "pace", "seed"):
        if getattr(args, name) is not None:
            argv += [f"--{name}", str(getattr(args, name))]
    if args.verbose:
        argv.append("--verbose")
    demo_module.main(argv)
    return EXIT_OK
