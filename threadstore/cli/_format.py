"""What the command prints, as pure functions: tables, times, sizes, JSON values, colour.

Nothing here does I/O; the commands pass in the terminal width, the time and whether to
colour (see :class:`Terminal`).
"""

from __future__ import annotations

import json
import os
import shutil
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final, TextIO

import attrs

from threadstore import StoredItem, ThreadMeta

__all__ = [
    "Terminal",
    "display_width",
    "fit",
    "human_size",
    "item_json",
    "item_summary",
    "iso",
    "meta_json",
    "one_line",
    "relative",
    "table",
]

_COLOURS: Final = {"red": "31", "green": "32", "yellow": "33", "dim": "2", "bold": "1"}
_STATUS_COLOURS: Final = {"running": "yellow", "error": "red"}


@attrs.frozen(kw_only=True)
class Terminal:
    """How output should look: the width to fit lines to (None: do not cut) and whether
    to use colour (only on a terminal, and never with ``NO_COLOR`` set)."""

    width: int | None
    colour: bool

    @classmethod
    def of(cls, stream: TextIO, environ: Mapping[str, str] = os.environ) -> Terminal:
        """The conventions for ``stream``: a terminal gets its width and colour; a pipe or
        a file gets neither, unless ``COLUMNS`` names a width."""
        tty = stream.isatty()
        columns = environ.get("COLUMNS", "")
        if tty:
            width: int | None = shutil.get_terminal_size().columns
        elif columns.isdigit() and int(columns) > 0:
            width = int(columns)
        else:
            width = None
        colour = tty and "NO_COLOR" not in environ and environ.get("TERM") != "dumb"
        return cls(width=width, colour=colour)

    def paint(self, text: str, colour: str | None) -> str:
        if not self.colour or colour is None:
            return text
        return f"\033[{_COLOURS[colour]}m{text}\033[0m"

    def status(self, status: str) -> str:
        return self.paint(status, _STATUS_COLOURS.get(status))

    def cut(self, line: str) -> str:
        return line if self.width is None else fit(line, self.width)


def display_width(text: str) -> int:
    """Columns ``text`` takes on a terminal (wide East Asian characters take two,
    combining marks none)."""
    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def fit(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` columns, ending in "…" when it was cut."""
    if display_width(text) <= width:
        return text
    out = []
    used = 0
    for char in text:
        w = 0 if unicodedata.combining(char) else display_width(char)
        if used + w > width - 1:
            break
        out.append(char)
        used += w
    return "".join(out) + "…"


def one_line(text: str | None) -> str:
    """``text`` on one line: control characters (newlines, tabs, escapes) become spaces."""
    if not text:
        return ""
    return "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in text)


def _pad(text: str, width: int, right: bool) -> str:
    space = " " * max(0, width - display_width(text))
    return space + text if right else text + space


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    width: int | None,
    flex: int = 0,
    right: frozenset[int] = frozenset(),
    styles: Sequence[Sequence[str | None]] | None = None,
    terminal: Terminal | None = None,
) -> list[str]:
    """Aligned columns two spaces apart. Column ``flex`` gives way when the lines would
    be wider than ``width`` (its cells are cut with "…"); columns in ``right`` are
    right-aligned. ``styles`` colours cells (aligned first, painted after)."""
    widths = [
        max([display_width(h)] + [display_width(row[i]) for row in rows])
        for i, h in enumerate(headers)
    ]
    if width is not None:
        others = sum(w for i, w in enumerate(widths) if i != flex) + 2 * (len(headers) - 1)
        widths[flex] = max(8, min(widths[flex], width - others))
    lines = []
    for r, row in enumerate([list(headers), *rows]):
        plain, painted = [], []
        for i, cell in enumerate(row):
            text = _pad(fit(cell, widths[i]), widths[i], i in right)
            plain.append(text)
            if terminal is not None:
                colour = "bold" if r == 0 else styles[r - 1][i] if styles is not None else None
                text = terminal.paint(text, colour)
            painted.append(text)
        line = "  ".join(plain).rstrip()
        if width is not None and display_width(line) > width:
            lines.append(fit(line, width))  # narrower than the other columns: cut it all
        else:
            lines.append("  ".join(painted).rstrip())
    return lines


def iso(value: datetime | None) -> str | None:
    """A time as ISO 8601 in UTC with microseconds (exact, sortable), or None."""
    return None if value is None else value.isoformat(timespec="microseconds")


def relative(value: datetime, now: datetime) -> str:
    """A time as people read a list: "just now", "5m ago", "3h ago", "2d ago", then the
    date."""
    seconds = (now - value).total_seconds()
    if seconds < 0:
        return iso(value) or ""  # (a clock step: say exactly when)
    if seconds < 10:
        return "just now"
    for limit, unit, size in ((60, "s", 1), (3600, "m", 60), (86400, "h", 3600)):
        if seconds < limit:
            return f"{int(seconds // size)}{unit} ago"
    if seconds < 30 * 86400:
        return f"{int(seconds // 86400)}d ago"
    return value.strftime("%Y-%m-%d")


def human_size(size: int) -> str:
    """Bytes as "512 B", "4.0 KiB", "1.2 MiB"."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _plain(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(inner) for inner in value]
    return value


def meta_json(meta: ThreadMeta) -> dict[str, Any]:
    """Every field of ``meta``'s value (those its equality compares) as JSON values, times
    ISO 8601: two threads print the same exactly when their metadata are equal."""
    out: dict[str, Any] = {}
    for field in attrs.fields(ThreadMeta):
        if not field.eq:
            continue
        value = getattr(meta, field.name)
        out[field.name] = iso(value) if isinstance(value, datetime) else _plain(value)
    return out


def item_json(item: StoredItem) -> dict[str, Any]:
    """An item as JSON values: seq, time, kind and data."""
    return {
        "seq": item.seq,
        "created_at": iso(item.created_at),
        "kind": item.kind,
        "data": _plain(item.data),
    }


_TEXT_FIELDS: Final = ("text", "summary", "message", "output")


def item_summary(item: StoredItem) -> str:
    """What a line about ``item`` says: its text if it has one, else its data as JSON."""
    data = item.data
    if item.kind == "tool_call":
        arguments = json.dumps(_plain(data.get("arguments")), ensure_ascii=False)
        return f"{data.get('name')}({arguments})"
    for name in _TEXT_FIELDS:
        value = data.get(name)
        if isinstance(value, str):
            return one_line(value)
    return one_line(json.dumps(_plain(data), ensure_ascii=False, separators=(",", ":")))


def dumps(value: Any) -> str:
    """One JSON line."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
