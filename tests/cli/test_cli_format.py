"""The command's pure formatting: widths, cutting, times, sizes, tables, terminals."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from threadstore import StoredItem
from threadstore.cli._format import (
    Terminal,
    display_width,
    fit,
    human_size,
    item_summary,
    one_line,
    relative,
    table,
)

NOW = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_widths_count_wide_characters_twice_and_marks_not_at_all() -> None:
    assert display_width("abc") == 3
    assert display_width("日本") == 4
    assert display_width("e\u0301") == 1
    assert fit("abcdef", 4) == "abc…"
    assert fit("日本語です", 5) == "日本…"
    assert fit("short", 10) == "short"


def test_one_line_turns_control_characters_into_spaces() -> None:
    assert one_line("a\nb\tc\x1b[31m") == "a b c [31m"
    assert one_line(None) == ""


def test_relative_times() -> None:
    assert relative(NOW - timedelta(seconds=3), NOW) == "just now"
    assert relative(NOW - timedelta(seconds=42), NOW) == "42s ago"
    assert relative(NOW - timedelta(minutes=5, seconds=10), NOW) == "5m ago"
    assert relative(NOW - timedelta(hours=3), NOW) == "3h ago"
    assert relative(NOW - timedelta(days=2), NOW) == "2d ago"
    assert relative(NOW - timedelta(days=90), NOW) == "2026-09-04"
    assert relative(NOW + timedelta(minutes=1), NOW) == "2026-12-03T09:31:00.000000+00:00"


def test_sizes() -> None:
    assert human_size(512) == "512 B"
    assert human_size(4096) == "4.0 KiB"
    assert human_size(3 * 1024 * 1024 + 1) == "3.0 MiB"
    assert human_size(5 * 1024**4) == "5120.0 GiB"


def test_item_summaries() -> None:
    def item(kind: str, **data: object) -> StoredItem:
        return StoredItem(kind=kind, data=data, seq=1, created_at=NOW)

    assert item_summary(item("user_message", text="hi\nthere")) == "hi there"
    assert item_summary(item("tool_call", name="f", arguments={"x": 1}, call_id="c")) == (
        'f({"x": 1})'
    )
    assert item_summary(item("token_usage", input=1, output=2)) == '{"input":1,"output":2}'


def test_tables_align_and_give_way_in_the_flexible_column() -> None:
    rows = [["a long title here", "idle", "12", "x-1"], ["short", "running", "3", "x-2"]]
    lines = table(["T", "STATUS", "N", "ID"], rows, width=None, right=frozenset({2}))
    assert lines == [
        "T                  STATUS    N  ID",
        "a long title here  idle     12  x-1",
        "short              running   3  x-2",
    ]
    narrow = table(["T", "STATUS", "N", "ID"], rows, width=28, right=frozenset({2}))
    assert narrow[1] == "a long ti…  idle     12  x-1"
    assert all(display_width(line) <= 28 for line in narrow)
    tiny = table(["T", "STATUS", "N", "ID"], rows, width=12)
    assert all(display_width(line) <= 12 for line in tiny)


def test_colour_and_width_only_on_a_terminal() -> None:
    assert Terminal.of(io.StringIO(), {}) == Terminal(width=None, colour=False)
    assert Terminal.of(io.StringIO(), {"COLUMNS": "70"}) == Terminal(width=70, colour=False)
    tty = Terminal.of(FakeTTY(), {"TERM": "xterm"})
    assert tty.colour
    assert tty.status("error") == "\033[31merror\033[0m"
    assert tty.status("idle") == "idle"
    assert not Terminal.of(FakeTTY(), {"NO_COLOR": "1"}).colour
    assert not Terminal.of(FakeTTY(), {"TERM": "dumb"}).colour
    lines = table(["A"], [["x"]], width=None, styles=[["red"]], terminal=tty)
    assert lines == ["\033[1mA\033[0m", "\033[31mx\033[0m"]
