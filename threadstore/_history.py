"""History edits, append-only: which items of a log a model sees next.

A thread's log never changes; history edits are items of the store's own kinds:

- ``rewind`` (``{"to_seq": k}``): every item then in the context with a seq above ``k``
  leaves it. Items appended later join the context as usual. A rewind cannot bring back
  items an earlier rewind hid.
- ``fork`` (``{"from": thread_id, "at_seq": k}``): the first item of a thread made by
  ``Store.fork``; the items after it are copies of the source's context through ``k``.
- ``compaction`` (``{"summary": text}``, appended by callers): a summary standing for
  everything before it. It changes only what :func:`context_start` returns, never which
  items are in the context.

``rewind`` and ``fork`` items are never part of the context themselves. These functions are
pure: the store and every engine use them, and the property tests check the engines'
indexed reads against them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, NamedTuple, Protocol, TypeVar

__all__ = [
    "COMPACTION_KIND",
    "CONTROL_KINDS",
    "FORK_KIND",
    "REWIND_KIND",
    "LogEntry",
    "context",
    "context_rows",
    "context_start",
]

REWIND_KIND: Final = "rewind"
FORK_KIND: Final = "fork"
COMPACTION_KIND: Final = "compaction"
#: Kinds the store records itself: ``append`` refuses them, and they are never in a context.
CONTROL_KINDS: Final = frozenset({REWIND_KIND, FORK_KIND})


class _Entry(Protocol):
    @property
    def seq(self) -> int: ...

    @property
    def kind(self) -> str: ...

    @property
    def data(self) -> Mapping[str, Any]: ...


E = TypeVar("E", bound=_Entry)


class LogEntry(NamedTuple):
    """A log row ``(seq, created_at_us, kind, data_json)`` as :func:`context` reads it: only
    a rewind's data is decoded (engines fold and copy rows without decoding the rest)."""

    seq: int
    at: int
    kind: str
    text: str

    @property
    def data(self) -> Mapping[str, Any]:
        decoded: Mapping[str, Any] = json.loads(self.text)
        return decoded


def context_rows(rows: Iterable[tuple[int, int, str, str]]) -> list[LogEntry]:
    """:func:`context` of raw log rows."""
    return context(LogEntry(*row) for row in rows)


def context(log: Iterable[E]) -> list[E]:
    """The entries of ``log`` (in seq order) still in the thread's context after its edits."""
    visible: list[E] = []
    for entry in log:
        kind = entry.kind
        if kind == REWIND_KIND:
            to_seq = entry.data["to_seq"]
            while visible and visible[-1].seq > to_seq:
                visible.pop()
        elif kind != FORK_KIND:
            visible.append(entry)
    return visible


def context_start(visible: Sequence[_Entry]) -> int:
    """The seq ``read_context`` starts from: the latest compaction in the context, else 0."""
    for entry in reversed(visible):
        if entry.kind == COMPACTION_KIND:
            return entry.seq
    return 0
