"""Progress of a long command: a bar on a terminal, plain lines otherwise."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ._app import Context

__all__ = ["Progress"]

_BAR: Final = 30


class Progress:
    """``progress(done, total)`` for a store operation's ``progress=`` argument.

    On a terminal (stderr) it redraws one bar; otherwise, with ``plain``, it writes a line
    to stdout at every tenth of the way (and the last), else nothing. Called on the trio
    thread, between the operation's steps.
    """

    def __init__(self, ctx: Context, verb: str, *, plain: bool = False) -> None:
        self._ctx = ctx
        self._verb = verb
        self._plain = plain
        self._drawn = False
        self._step = -1

    def __call__(self, done: int, total: int) -> None:
        ctx = self._ctx
        if ctx.interactive:
            filled = _BAR * done // max(total, 1)
            bar = "#" * filled + "-" * (_BAR - filled)
            ctx.err.write(f"\r{self._verb} [{bar}] {done}/{total}")
            ctx.err.flush()
            self._drawn = True
        elif self._plain:
            step = 10 * done // max(total, 1)
            if step != self._step or done == total:
                self._step = step
                ctx.out.write(f"{self._verb} {done}/{total} threads\n")
                ctx.out.flush()

    def finish(self) -> None:
        if self._drawn:
            self._ctx.err.write("\n")
            self._ctx.err.flush()
            self._drawn = False
