"""The command's frame: arguments, which store, opening it, and turning errors into one
line on stderr and an exit code (:data:`EXIT_CODES`)."""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Final, TextIO

import attrs
import trio

import threadstore
from threadstore import (
    ImportFormatError,
    InvalidCursorError,
    InvalidItemError,
    ReadOnlyStoreError,
    Store,
    StoreFormatError,
    StoreLockedError,
    ThreadExistsError,
    ThreadNotFoundError,
    ThreadStoreError,
)

from ._format import Terminal

__all__ = [
    "EXIT_CODES",
    "CommandError",
    "Context",
    "main",
    "open_read",
    "open_write",
]

EXIT_OK: Final = 0
EXIT_PROBLEMS: Final = 1
EXIT_USAGE: Final = 2
EXIT_STORE: Final = 3
EXIT_NOT_FOUND: Final = 4
EXIT_LOCKED: Final = 5
EXIT_INPUT: Final = 6
EXIT_INTERRUPTED: Final = 130

#: Every exit code and what it means (docs/cli.md lists the same).
EXIT_CODES: Final[Mapping[int, str]] = {
    EXIT_OK: "success",
    EXIT_PROBLEMS: "doctor found something wrong, or the store failed (the line says what)",
    EXIT_USAGE: "bad arguments, or no store given",
    EXIT_STORE: "the store cannot be used: no such file, not a store, damaged, bad URL",
    EXIT_NOT_FOUND: "no thread with that id",
    EXIT_LOCKED: "another process owns the store for writing",
    EXIT_INPUT: "bad input: a malformed import line, an existing thread or file",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C) before the command finished",
}

#: Where the store is when ``--db`` is not given.
DB_VARIABLE: Final = "THREADSTORE_DB"


class CommandError(Exception):
    """A user mistake the command found itself: ``message`` goes to stderr, ``code`` is
    the exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@attrs.frozen(kw_only=True)
class Context:
    """What a command runs with: the store's target, the streams, how to print."""

    target: str
    out: TextIO
    err: TextIO
    terminal: Terminal
    #: Whether stderr is a terminal (progress bars go there).
    interactive: bool
    now: datetime

    def print(self, line: str = "") -> None:
        self.out.write(line + "\n")

    def note(self, line: str) -> None:
        """A line for people, on stderr (stdout may be data)."""
        self.err.write(line + "\n")
        self.err.flush()


def _url_scheme(target: str) -> str | None:
    head, sep, _ = target.partition("://")
    return head.lower() if sep and head.isidentifier() else None


def _has_postgres() -> bool:
    """Whether this threadstore can use its PostgreSQL engine (psycopg is an extra)."""
    return importlib.util.find_spec("psycopg") is not None


def check_target(target: str) -> str:
    """``target`` if the command can use it, else :class:`CommandError`."""
    scheme = _url_scheme(target)
    if scheme is not None:
        if scheme not in ("postgresql", "postgres"):
            raise CommandError(
                EXIT_STORE, f"unsupported store URL {target!r}: use a file path or postgresql://"
            )
        if not _has_postgres():
            raise CommandError(
                EXIT_STORE,
                f"cannot open {target!r}: PostgreSQL stores need psycopg 3: "
                "pip install 'threadstore[postgres]'",
            )
        return target
    if target == ":memory:":
        raise CommandError(EXIT_STORE, "':memory:' is not a store file: it keeps nothing")
    return target


def _is_file_target(target: str) -> bool:
    return _url_scheme(target) is None


def require_file(target: str) -> None:
    """Refuse a store file that does not exist (for commands that must not create one)."""
    if not _is_file_target(target):
        return
    if not os.path.exists(target):
        raise CommandError(EXIT_STORE, f"no store at {target!r}: no such file")
    if os.path.isdir(target):
        raise CommandError(EXIT_STORE, f"{target!r} is a directory, not a store file")


@asynccontextmanager
async def open_read(ctx: Context) -> AsyncIterator[Store]:
    """The store, read-only (works beside a process that owns it)."""
    require_file(ctx.target)
    async with threadstore.open_store(ctx.target, read_only=True) as store:
        yield store


@asynccontextmanager
async def open_write(ctx: Context, *, create: bool = False) -> AsyncIterator[Store]:
    """The store, for writing (takes the writer lock; :class:`StoreLockedError` names the
    owner). With ``create``, a missing file becomes a new store."""
    if not create:
        require_file(ctx.target)
    async with threadstore.open_store(ctx.target) as store:
        yield store


def _one_line(text: str) -> str:
    return " ".join(text.split())


def error_exit(exc: BaseException, target: str) -> tuple[int, str]:
    """The exit code and the line for an error a command raised."""
    if isinstance(exc, CommandError):
        return exc.code, str(exc)
    if isinstance(exc, StoreLockedError):
        return EXIT_LOCKED, str(exc)
    if isinstance(exc, ThreadNotFoundError):
        return EXIT_NOT_FOUND, str(exc)
    if isinstance(exc, StoreFormatError):
        return EXIT_STORE, str(exc)
    if isinstance(exc, ImportFormatError):
        return EXIT_INPUT, str(exc)
    if isinstance(exc, InvalidItemError | InvalidCursorError | ThreadExistsError):
        return EXIT_INPUT, str(exc)
    if isinstance(exc, FileExistsError):
        return EXIT_INPUT, f"{exc.filename or target!r} exists already: nothing was written"
    if isinstance(exc, FileNotFoundError):
        return EXIT_STORE, f"no such file: {exc.filename or target!r}"
    if isinstance(exc, IsADirectoryError):
        return EXIT_STORE, f"{exc.filename or target!r} is a directory, not a store file"
    if isinstance(exc, OSError):
        where = f" ({exc.filename!r})" if exc.filename else ""
        return EXIT_STORE, f"{exc.strerror or exc}{where}"
    if isinstance(exc, ReadOnlyStoreError | ThreadStoreError):
        return EXIT_PROBLEMS, str(exc)
    if isinstance(exc, Exception):  # not a user mistake we know: still one line
        return EXIT_PROBLEMS, f"{type(exc).__name__}: {exc}"
    raise exc


def _is_interrupt(exc: BaseException) -> bool:
    """Ctrl-C, also when it landed inside trio's scheduler (which then ends the run with
    ``TrioInternalError`` from the ``KeyboardInterrupt``: the store's data is as safe as
    after a kill, and a read-only command has nothing to lose)."""
    if isinstance(exc, trio.TrioInternalError):
        return _holds_interrupt(exc.__cause__, depth=8)
    return isinstance(exc, KeyboardInterrupt)


def _holds_interrupt(exc: BaseException | None, depth: int) -> bool:
    """Whether a ``KeyboardInterrupt`` is ``exc``, in its group or behind its cause."""
    if exc is None or depth == 0:
        return False
    if isinstance(exc, KeyboardInterrupt):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_holds_interrupt(inner, depth - 1) for inner in exc.exceptions)
    return _holds_interrupt(exc.__cause__ or exc.__context__, depth - 1)


def _interrupted(args: argparse.Namespace) -> int:
    """The exit code of a command ended by Ctrl-C: ``tail``'s way to end (0), else 130."""
    code = int(getattr(args, "on_interrupt", EXIT_INTERRUPTED))
    if code != EXIT_OK:
        sys.stderr.write("threadstore: interrupted\n")
    return code


def _single(exc: BaseException) -> BaseException:
    """The one error inside (nested) exception groups, if there is exactly one."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


Command = Callable[[argparse.Namespace, Context], Any]


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (plus the usage) and exit code 2."""

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"threadstore: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from . import _read, _write  # (they import this module)

    db = argparse.ArgumentParser(add_help=False)
    db.add_argument(
        "--db",
        metavar="PATH_OR_URL",
        default=argparse.SUPPRESS,
        help=f"the store: a file path or a postgresql:// URL (default: ${DB_VARIABLE})",
    )
    parser = _Parser(
        prog="threadstore",
        description="Inspect and maintain a threadstore: list and read threads, follow "
        "them live, check and repair metadata, export, import and back up.",
        epilog="Exit codes: "
        + "; ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES.items())
        + ". See docs/cli.md.",
        parents=[db],
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for module in (_read, _write):
        module.register(commands, [db], _Parser)
    return parser


def _context(target: str) -> Context:
    return Context(
        target=target,
        out=sys.stdout,
        err=sys.stderr,
        terminal=Terminal.of(sys.stdout),
        interactive=sys.stderr.isatty(),
        now=datetime.now(UTC),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``threadstore`` command; return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Command = args.run
    target = getattr(args, "db", None) or ""
    try:
        if not getattr(args, "needs_store", True):  # (the demo: only an explicit --db)
            return int(run(args, _context(check_target(target) if target else "")) or 0)
        target = target or os.environ.get(DB_VARIABLE, "")
        if not target:
            raise CommandError(EXIT_USAGE, f"no store given: pass --db PATH or set ${DB_VARIABLE}")
        ctx = _context(check_target(target))
        if inspect.iscoroutinefunction(run):
            # Ctrl-C at checkpoints only: landing inside trio's own machinery (a reader
            # pool closing, say) it would end the run with TrioInternalError. ``tail``
            # writes from a worker thread, so a blocked write is no checkpoint-free trap.
            code = trio.run(run, args, ctx, restrict_keyboard_interrupt_to_checkpoints=True)
        else:
            code = run(args, ctx)
        sys.stdout.flush()
        return int(code or 0)
    except KeyboardInterrupt:
        return _interrupted(args)
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, as other tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except BaseException as exc:
        if _is_interrupt(_single(exc)):
            return _interrupted(args)
        code, message = error_exit(_single(exc), target)
        sys.stderr.write(f"threadstore: error: {_one_line(message)}\n")
        return code
