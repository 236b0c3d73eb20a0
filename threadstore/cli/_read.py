"""The read commands: ``list``, ``show``, ``tail``, ``stats``, ``doctor``.

Each opens the store read-only, so it works beside a process that owns the store.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Final

import trio

from threadstore import Store, StoreCheck, StoredItem, ThreadMeta

from ._app import EXIT_OK, EXIT_PROBLEMS, Context, open_read
from ._format import (
    dumps,
    human_size,
    iso,
    item_json,
    item_summary,
    meta_json,
    one_line,
    relative,
    table,
)
from ._progress import Progress

__all__ = ["register"]

ORDERS: Final = {"updated": "updated_at", "created": "created_at", "recent": "recency_at"}
#: ``list_threads`` pages at most this many threads.
_PAGE: Final = 1000
#: How often ``tail ID`` reads the thread's new items.
_POLL_SECONDS: Final = 0.2


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, not {value}")
    return value


def register(commands: Any, parents: list[argparse.ArgumentParser], parser: type) -> None:
    p = commands.add_parser(
        "list",
        parents=parents,
        help="list threads (newest first)",
        description="List threads as an aligned table (title or preview, status, items, "
        "time, id), or one JSON object per line with --json.",
    )
    p.add_argument("--limit", type=_positive, default=20, help="how many (default 20)")
    p.add_argument("--search", help="only threads whose title, preview or goal contains this")
    p.add_argument("--archived", action="store_true", help="list archived threads instead")
    p.add_argument(
        "--order",
        choices=sorted(ORDERS),
        default="updated",
        help="sort by last item (updated, default), creation, or last user turn (recent)",
    )
    p.add_argument("--namespace", help="only this namespace (tenant); default: all")
    p.add_argument("--all", action="store_true", help="also threads with no preview or title")
    p.add_argument("--json", action="store_true", help="one JSON object per thread and line")
    p.set_defaults(run=list_threads)

    p = commands.add_parser(
        "show",
        parents=parents,
        help="a thread's metadata and its last items",
        description="Show a thread's metadata, then its last N items (or, with --context, "
        "the last N items of what a model sees next: read_context).",
    )
    p.add_argument("thread_id", metavar="ID")
    p.add_argument("-n", "--items", type=_count, default=10, help="how many items (default 10)")
    p.add_argument("--context", action="store_true", help="the context, not the raw log")
    p.add_argument("--json", action="store_true", help="one JSON object: thread and items")
    p.set_defaults(run=show)

    p = commands.add_parser(
        "tail",
        parents=parents,
        help="follow a thread's new items, or the store's changes, until Ctrl-C",
        description="With an ID: print the thread's last N items, then each new one as "
        "another process appends it. Without: print each change to any thread (the store's "
        "change feed). Ends on Ctrl-C (exit code 0).",
    )
    p.add_argument("thread_id", metavar="ID", nargs="?")
    p.add_argument("-n", "--items", type=_count, default=10, help="items shown first (10)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(run=tail, on_interrupt=EXIT_OK)

    p = commands.add_parser(
        "stats",
        parents=parents,
        help="threads, items, file sizes, lag, schema version",
        description="Counts over the whole store, its files and schema version.",
    )
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(run=stats)

    p = commands.add_parser(
        "doctor",
        parents=parents,
        help="check the store; exit code 1 if something is wrong",
        description="Run the engine's integrity check, compare every thread's metadata "
        "with the fold of its log, and report lagging threads. Exit code 1 (and what is "
        "wrong) when a check fails; lag alone is not a failure.",
    )
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(run=doctor)


# -- list -----------------------------------------------------------------------------------


async def _threads(store: Store, args: argparse.Namespace) -> list[ThreadMeta]:
    threads: list[ThreadMeta] = []
    cursor = None
    while True:
        page = await store.list_threads(
            limit=min(_PAGE, args.limit - len(threads)),
            cursor=cursor,
            order_by=ORDERS[args.order],  # type: ignore[arg-type]
            archived=args.archived,
            search=args.search,
            include_empty=args.all,
            namespace=args.namespace,
        )
        threads.extend(page.threads)
        cursor = page.next_cursor
        if cursor is None or len(threads) >= args.limit:
            return threads


def _label(meta: ThreadMeta) -> str:
    return one_line(meta.title or meta.preview or meta.goal) or "(empty)"


async def list_threads(args: argparse.Namespace, ctx: Context) -> int:
    async with open_read(ctx) as store:
        threads = await _threads(store, args)
    if args.json:
        for meta in threads:
            ctx.print(dumps(meta_json(meta)))
        return EXIT_OK
    if not threads:
        ctx.note("no threads")
        return EXIT_OK
    column = ORDERS[args.order]
    spaces = args.namespace is None and any(meta.namespace for meta in threads)
    headers = ["THREAD", "STATUS", "ITEMS", args.order.upper(), "ID"]
    if spaces:
        headers.insert(4, "NAMESPACE")
    rows, styles = [], []
    for meta in threads:
        row = [
            _label(meta),
            meta.status,
            str(meta.item_count),
            relative(getattr(meta, column), ctx.now),
            meta.id,
        ]
        style: list[str | None] = [None, {"running": "yellow", "error": "red"}.get(meta.status)]
        style += [None, "dim", None]
        if spaces:
            row.insert(4, one_line(meta.namespace))
            style.insert(4, None)
        rows.append(row)
        styles.append(style)
    for line in table(
        headers,
        rows,
        width=ctx.terminal.width,
        right=frozenset({2}),
        styles=styles,
        terminal=ctx.terminal,
    ):
        ctx.print(line)
    return EXIT_OK


# -- show -----------------------------------------------------------------------------------


async def _last_items(store: Store, meta: ThreadMeta, count: int) -> list[StoredItem]:
    if count == 0:
        await trio.lowlevel.checkpoint()
        return []
    items = await store.read_items(meta.id, after_seq=max(0, meta.seq - count))
    return items[-count:]


def _meta_lines(meta: ThreadMeta, ctx: Context) -> list[str]:
    def when(value: Any) -> str:
        return "-" if value is None else f"{iso(value)} ({relative(value, ctx.now)})"

    fields: list[tuple[str, str]] = [
        ("id", meta.id),
        ("namespace", meta.namespace or '""'),
        ("title", one_line(meta.title) or "-"),
        ("goal", one_line(meta.goal) or "-"),
        ("preview", one_line(meta.preview) or "-"),
        ("last message", one_line(meta.last_message) or "-"),
        ("status", ctx.terminal.status(meta.status)),
        ("items", f"{meta.item_count} ({meta.turn_count} turns), metadata through seq {meta.seq}"),
        ("tokens", f"{meta.input_tokens} in, {meta.output_tokens} out"),
        ("created", when(meta.created_at)),
        ("updated", when(meta.updated_at)),
        ("recent", when(meta.recency_at)),
        ("archived", when(meta.archived_at)),
    ]
    if meta.forked_from is not None:
        fields.append(("forked from", f"{meta.forked_from} at seq {meta.forked_at}"))
    if meta.extra:
        fields.append(("extra", dumps(meta_json(meta)["extra"])))
    return [ctx.terminal.cut(f"{name:<13}{value}") for name, value in fields]


def _item_line(item: StoredItem, ctx: Context) -> str:
    when = item.created_at.strftime("%Y-%m-%d %H:%M:%S")
    return ctx.terminal.cut(f"{item.seq:>6}  {when}  {item.kind:<16} {item_summary(item)}")


async def show(args: argparse.Namespace, ctx: Context) -> int:
    async with open_read(ctx) as store:
        meta = await store.get_thread(args.thread_id)
        if args.context:
            items = await store.read_context(meta.id, limit=args.items) if args.items else []
        else:
            items = await _last_items(store, meta, args.items)
    if args.json:
        ctx.print(dumps({"thread": meta_json(meta), "items": [item_json(i) for i in items]}))
        return EXIT_OK
    for line in _meta_lines(meta, ctx):
        ctx.print(line)
    if args.items:
        what = "context" if args.context else "items"
        ctx.print()
        ctx.print(ctx.terminal.paint(f"last {len(items)} {what}", "bold"))
        for item in items:
            ctx.print(_item_line(item, ctx))
    return EXIT_OK


# -- tail -----------------------------------------------------------------------------------


async def tail(args: argparse.Namespace, ctx: Context) -> int:
    try:
        if args.thread_id is None:
            await _tail_store(args, ctx)
        else:
            await _tail_thread(args, ctx)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how following ends
    return EXIT_OK  # noqa: ASYNC910 - reached only through an await (or Ctrl-C inside one)


async def _emit(ctx: Context, line: str) -> None:
    """Write one line and flush it (a follower's reader wants each line now), on a worker
    thread: a write blocked on a full pipe (a reader that stopped reading) must not keep
    Ctrl-C, delivered at checkpoints only, from ending the command."""
    await trio.to_thread.run_sync(_write_line, ctx, line, abandon_on_cancel=True)


def _write_line(ctx: Context, line: str) -> None:
    ctx.out.write(line + "\n")
    ctx.out.flush()


async def _tail_thread(args: argparse.Namespace, ctx: Context) -> None:
    async with open_read(ctx) as store:
        meta = await store.get_thread(args.thread_id)
        # Everything from N items before the metadata's seq to the log's end (the metadata
        # may lag it): the last N of them are shown, the rest are not "new".
        backlog = await store.read_items(meta.id, after_seq=max(0, meta.seq - args.items))
        last = backlog[-1].seq if backlog else meta.seq
        items = backlog[-args.items :] if args.items else []
        while True:
            for item in items:
                await _emit(ctx, dumps(item_json(item)) if args.json else _item_line(item, ctx))
                last = item.seq
            await trio.sleep(_POLL_SECONDS)
            items = await store.read_items(meta.id, after_seq=last)


async def _tail_store(args: argparse.Namespace, ctx: Context) -> None:
    async with open_read(ctx) as store, store.subscribe() as events:
        async for event in events:
            meta = event.thread
            if args.json:
                thread = None if meta is None else meta_json(meta)
                line = dumps({"type": event.type, "change": event.change, "thread": thread})
            elif meta is None:  # a reset (only after a replay): the threads follow again
                line = f"{event.type:<10} (the list starts over)"
            else:
                line = ctx.terminal.cut(
                    f"{event.type:<10} {meta.id}  {meta.status:<7} {meta.item_count:>5}  "
                    f"{_label(meta)}"
                )
            await _emit(ctx, line)


# -- stats ----------------------------------------------------------------------------------


def _files(target: str) -> dict[str, int]:
    sizes = {}
    for suffix in ("", "-wal", "-shm"):
        try:
            sizes[target + suffix] = os.stat(target + suffix).st_size
        except FileNotFoundError:
            continue
    return sizes


async def stats(args: argparse.Namespace, ctx: Context) -> int:
    async with open_read(ctx) as store:
        summary = await store.summary()
    files = _files(ctx.target) if summary.engine == "sqlite" else {}
    if args.json:
        ctx.print(
            dumps(
                {
                    "target": ctx.target,
                    "engine": summary.engine,
                    "schema_version": summary.schema_version,
                    "threads": summary.threads,
                    "items": summary.items,
                    "lagging_threads": summary.lagging_threads,
                    "files": files,
                }
            )
        )
        return EXIT_OK
    lines = [
        ("store", ctx.target),
        ("engine", f"{summary.engine}, schema version {summary.schema_version}"),
        ("threads", str(summary.threads)),
        ("items", str(summary.items)),
        ("lagging", f"{summary.lagging_threads} threads (metadata behind the log)"),
    ]
    for name, size in files.items():
        lines.append(("file", f"{human_size(size):>10}  {name}"))
    for name, value in lines:
        ctx.print(ctx.terminal.cut(f"{name:<10}{value}"))
    return EXIT_OK


# -- doctor ---------------------------------------------------------------------------------


def check_json(check: StoreCheck) -> dict[str, Any]:
    return {
        "ok": check.ok,
        "threads": check.threads,
        "items": check.items,
        "integrity": list(check.integrity),
        "mismatched": [{"thread": m.thread_id, "fields": list(m.fields)} for m in check.mismatched],
        "lagging": [
            {"thread": lag.thread_id, "seq": lag.seq, "last_seq": lag.last_seq}
            for lag in check.lagging
        ],
    }


def doctor_lines(check: StoreCheck, ctx: Context) -> list[str]:
    def good(text: str) -> str:
        return ctx.terminal.paint(text, "green")

    def bad(text: str) -> str:
        return ctx.terminal.paint(text, "red")

    lines = [f"checked   {check.threads} threads, {check.items} items"]
    if check.integrity:
        lines.append(f"integrity {bad('FAILED')}: {len(check.integrity)} problem(s)")
        lines += [f"  {one_line(problem)}" for problem in check.integrity]
    else:
        lines.append(f"integrity {good('ok')}")
    if check.mismatched:
        lines.append(
            f"metadata  {bad('WRONG')}: {len(check.mismatched)} thread(s) differ from the "
            "fold of their log"
        )
        lines += [f"  {m.thread_id}: {', '.join(m.fields)}" for m in check.mismatched]
    else:
        lines.append(f"metadata  {good('ok')}: every thread matches the fold of its log")
    if check.lagging:
        lines.append(
            f"lag       {len(check.lagging)} thread(s) behind their log (normal while a "
            "writer runs; caught up when it next opens)"
        )
        lines += [f"  {lag.thread_id}: seq {lag.seq} of {lag.last_seq}" for lag in check.lagging]
    else:
        lines.append("lag       none")
    if check.ok:
        lines.append(good("no problems found"))
    else:
        fix = " (run `threadstore reproject` to rebuild it)" if check.mismatched else ""
        lines.append(bad(f"problems found{fix}"))
    return [ctx.terminal.cut(line) for line in lines]


async def doctor(args: argparse.Namespace, ctx: Context) -> int:
    progress = Progress(ctx, "checking")
    async with open_read(ctx) as store:
        check = await store.check(progress=progress)
    progress.finish()
    if args.json:
        ctx.print(dumps(check_json(check)))
    else:
        for line in doctor_lines(check, ctx):
            ctx.print(line)
    return EXIT_OK if check.ok else EXIT_PROBLEMS
