"""Each ``threadstore`` command, run as a real subprocess on a real store file."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import sqlite3
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

import pytest
import trio
from _cli import Ids, child_environment, cli, fill_store

from threadstore import StoredItem, ThreadMeta, open_store
from threadstore.cli import EXIT_CODES
from threadstore.cli._format import display_width
from threadstore.sqlite._sql import SCHEMA_VERSION

COMMANDS = (
    "list",
    "show",
    "tail",
    "stats",
    "doctor",
    "reproject",
    "export",
    "import",
    "backup",
    "demo",
)


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Path, Ids]:
    path = tmp_path / "store.db"
    return path, fill_store(path)


def ok(*args: str | Path, **kwargs: Any) -> str:
    """The command's stdout; fails the test unless it exits 0 with nothing on stderr."""
    done = cli(*args, **kwargs)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    return done.stdout


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


# -- help -------------------------------------------------------------------------------------


def test_help_on_the_command_and_on_every_subcommand() -> None:
    top = ok("--help")
    for command in COMMANDS:
        assert command in top
    for code in EXIT_CODES:
        assert f"{code} " in top  # the exit codes are in the help
    for command in COMMANDS:
        assert f"usage: threadstore {command}" in ok(command, "--help")


# -- list -------------------------------------------------------------------------------------


def test_list_prints_an_aligned_table_newest_first(filled: tuple[Path, Ids]) -> None:
    path, ids = filled
    lines = ok("list", "--db", path).splitlines()
    assert lines[0].split() == ["THREAD", "STATUS", "ITEMS", "UPDATED", "NAMESPACE", "ID"]
    rows = lines[1:]
    # newest first; the archived and the empty thread are not listed
    order = [ids.report, ids.fork, ids.lisbon]
    assert [row.rsplit(None, 1)[1] for row in rows] == order
    # every column starts at the same place on every line (the report's title has an emoji)
    id_column = {
        display_width(line[: line.index(tid)]) for line, tid in zip(rows, order, strict=False)
    }
    assert len(id_column) == 1
    assert "Quarterly report 📈" in rows[0]
    assert "error" in rows[0]
    assert rows[1].startswith("Lisbon, plan B")
    assert "\033[" not in "".join(lines)  # no colour when not a terminal


def test_list_options(filled: tuple[Path, Ids]) -> None:
    path, ids = filled

    def listed(*options: str) -> list[str]:
        return [obj["id"] for obj in json_lines(ok("list", "--db", path, "--json", *options))]

    assert listed() == [ids.report, ids.fork, ids.lisbon]
    assert listed("--limit", "2") == [ids.report, ids.fork]
    assert listed("--order", "created") == [ids.report, ids.fork, ids.lisbon]
    assert listed("--order", "recent")[-1] == ids.report or len(listed("--order", "recent")) == 3
    assert listed("--search", "LISBON") == [ids.fork, ids.lisbon]
    assert listed("--archived") == [ids.archived]
    assert listed("--namespace", "acme/alice") == [ids.fork, ids.lisbon]
    assert set(listed("--all")) == {ids.report, ids.fork, ids.lisbon, ids.empty}
    first = json_lines(ok("list", "--db", path, "--json", "--limit", "1"))[0]
    assert first["title"] == "Quarterly report 📈"
    assert first["status"] == "error"
    assert first["extra"] == {"owner": "bob", "reviewed": True}


def test_list_fits_the_width_it_is_given(filled: tuple[Path, Ids]) -> None:
    path, _ = filled
    lines = ok("list", "--db", path, env={"COLUMNS": "80"}).splitlines()
    assert all(display_width(line) <= 80 for line in lines)
    assert any("…" in line for line in lines)  # the titles gave way, the ids did not
    assert lines[1].rsplit(None, 1)[1].count("-") == 4


def test_list_on_an_empty_store_says_so(tmp_path: Path) -> None:
    trio.run(_empty_store, tmp_path / "empty.db")
    done = cli("list", "--db", tmp_path / "empty.db")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "no threads\n")


async def _empty_store(path: Path) -> None:
    async with open_store(path):
        pass


def test_the_store_may_come_from_the_environment(filled: tuple[Path, Ids]) -> None:
    path, ids = filled
    out = ok("list", "--json", env={"THREADSTORE_DB": str(path)})
    assert len(json_lines(out)) == 3
    assert ids.report in ok("--db", str(path), "list")  # --db before the command too


# -- show -------------------------------------------------------------------------------------


def test_show_prints_metadata_then_the_last_items(filled: tuple[Path, Ids]) -> None:
    path, ids = filled
    out = ok("show", ids.lisbon, "--db", path, "-n", "3")
    head, _, tail = out.partition("\n\n")
    fields = dict(line.split(None, 1) for line in head.splitlines() if " " in line)
    assert fields["id"] == ids.lisbon
    assert fields["namespace"] == "acme/alice"
    assert fields["goal"] == "Plan a trip to Lisbon"
    items = tail.splitlines()
    assert items[0] == "last 3 items"
    assert [line.split()[0] for line in items[1:]] == ["9", "10", "11"]
    assert "Now hotels" in items[-1]
    # a newline or tab in stored text never breaks a line
    report = ok("show", ids.report, "--db", path)
    assert "Draft it with tabs" in report


def test_show_json_and_context(filled: tuple[Path, Ids]) -> None:
    path, ids = filled
    shown = json.loads(ok("show", ids.lisbon, "--db", path, "--json", "-n", "100"))
    assert shown["thread"]["id"] == ids.lisbon
    assert [item["seq"] for item in shown["items"]] == list(range(1, 12))
    context = json.loads(ok("show", ids.lisbon, "--db", path, "--json", "--context"))
    # from the compaction on: the rewind and what it hid are not in the context
    assert [item["kind"] for item in context["items"]] == ["compaction", "user_message"]
    fork = json.loads(ok("show", ids.fork, "--db", path, "--json"))
    assert fork["thread"]["forked_from"] == ids.lisbon


# -- stats ------------------------------------------------------------------------------------


def test_stats(filled: tuple[Path, Ids]) -> None:
    path, _ = filled
    stats = json.loads(ok("stats", "--db", path, "--json"))
    assert stats["engine"] == "sqlite"
    assert stats["schema_version"] == SCHEMA_VERSION
    assert stats["threads"] == 5
    assert stats["items"] == 11 + 9 + 5 + 1 + 0
    assert stats["lagging_threads"] == 0
    assert stats["files"][str(path)] == path.stat().st_size
    text = ok("stats", "--db", path)
    assert "threads   5" in text
    assert f"schema version {SCHEMA_VERSION}" in text


# -- doctor and reproject -----------------------------------------------------------------------


def test_doctor_on_a_sound_store(filled: tuple[Path, Ids]) -> None:
    path, _ = filled
    out = ok("doctor", "--db", path)
    assert "checked   5 threads, 26 items" in out
    assert "no problems found" in out
    report = json.loads(ok("doctor", "--db", path, "--json"))
    assert report == {
        "ok": True,
        "threads": 5,
        "items": 26,
        "integrity": [],
        "mismatched": [],
        "lagging": [],
    }


def _tamper(path: Path, ids: Ids) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE threads SET title = 'tampered', item_count = 99 WHERE id = ?", (ids.report,)
        )
        # the rewind's marks: the items it hid are back in the context
        conn.execute("UPDATE items SET hidden = 0 WHERE thread_id = ?", (ids.lisbon,))
    conn.close()


def test_doctor_names_tampered_threads_and_reproject_repairs_them(
    filled: tuple[Path, Ids],
) -> None:
    path, ids = filled
    before = {tid: ok("show", tid, "--db", path, "--json") for tid in (ids.report, ids.lisbon)}
    _tamper(path, ids)
    done = cli("doctor", "--db", path)
    assert done.returncode == 1
    assert f"{ids.report}: title, item_count" in done.stdout
    assert f"{ids.lisbon}: context" in done.stdout
    assert "problems found (run `threadstore reproject` to rebuild it)" in done.stdout
    report = json.loads(cli("doctor", "--db", path, "--json").stdout)
    assert report["ok"] is False
    assert {m["thread"]: m["fields"] for m in report["mismatched"]} == {
        ids.report: ["title", "item_count"],
        ids.lisbon: ["context"],
    }
    out = ok("reproject", "--db", path, "--thread", ids.report)
    assert out.splitlines() == [
        "reprojected 1/1 threads",
        "rebuilt the metadata of 1 thread(s) from their logs",
    ]
    assert cli("doctor", "--db", path).returncode == 1  # lisbon is still wrong
    out = ok("reproject", "--db", path)
    assert out.splitlines()[-1] == "rebuilt the metadata of 5 thread(s) from their logs"
    assert "no problems found" in ok("doctor", "--db", path)
    for tid, shown in before.items():
        assert ok("show", tid, "--db", path, "--json") == shown


# -- export, import, backup ----------------------------------------------------------------------


async def _everything(path: Path) -> list[tuple[ThreadMeta, list[StoredItem], list[StoredItem]]]:
    """Every thread's metadata, raw log and context, read through the library."""
    out = []
    async with open_store(path, read_only=True) as store:
        for archived in (False, True):
            page = await store.list_threads(limit=100, archived=archived, include_empty=True)
            for meta in sorted(page.threads, key=lambda m: m.id):
                out.append(
                    (meta, await store.read_items(meta.id), await store.read_context(meta.id))
                )
    return out


def test_export_then_import_into_an_empty_store_reproduces_it(
    filled: tuple[Path, Ids], tmp_path: Path
) -> None:
    path, ids = filled
    export = tmp_path / "threads.jsonl"
    done = cli("export", "--db", path, "-o", export)
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"exported 5 thread(s), 26 item(s) to {export}\n"
    copy = tmp_path / "copy.db"
    assert ok("import", export, "--db", copy) == "imported 5 thread(s), 26 item(s)\n"
    assert trio.run(_everything, copy) == trio.run(_everything, path)
    for tid in (ids.lisbon, ids.fork, ids.report, ids.archived, ids.empty):
        original = ok("show", tid, "--db", path, "--json", "-n", "100")
        assert ok("show", tid, "--db", copy, "--json", "-n", "100") == original
    for options in ((), ("--all",), ("--archived",), ("--order", "recent")):
        assert ok("list", "--db", copy, "--json", *options) == ok(
            "list", "--db", path, "--json", *options
        )
    assert "no problems found" in ok("doctor", "--db", copy)
    # and exporting the copy gives the very same file
    assert ok("export", "--db", copy) == export.read_text()


def test_export_of_one_thread_to_stdout_and_import_from_stdin(
    filled: tuple[Path, Ids], tmp_path: Path
) -> None:
    path, ids = filled
    out = ok("export", "--db", path, "--thread", ids.fork)
    lines = json_lines(out)
    assert lines[0]["type"] == "thread"
    assert lines[0]["id"] == ids.fork
    assert lines[0]["items"] == len(lines) - 1
    assert lines[1]["kind"] == "fork"  # history edits travel too
    copy = tmp_path / "one.db"
    assert ok("import", "-", "--db", copy, stdin=out) == "imported 1 thread(s), 9 item(s)\n"
    assert ok("show", ids.fork, "--db", copy, "--json") == ok(
        "show", ids.fork, "--db", path, "--json"
    )


def test_importing_an_existing_thread_is_an_error_unless_skipped(
    filled: tuple[Path, Ids], tmp_path: Path
) -> None:
    path, ids = filled
    out = ok("export", "--db", path, "--thread", ids.report, "--thread", ids.lisbon)
    partial = tmp_path / "partial.db"
    ok("import", "-", "--db", partial, stdin="\n".join(out.splitlines()[:6]) + "\n")
    before = ok("export", "--db", partial)
    done = cli("import", "-", "--db", partial, stdin=out)
    assert done.returncode == 6
    assert done.stderr == (
        f"threadstore: error: thread {ids.report!r} exists in {str(partial)!r} (1 of the "
        "file's threads do): nothing was imported; pass --skip-existing to skip them\n"
    )
    assert ok("export", "--db", partial) == before  # nothing written
    out2 = ok("import", "-", "--db", partial, "--skip-existing", stdin=out)
    assert out2 == "imported 1 thread(s), 11 item(s), skipped 1 existing\n"
    assert ok("show", ids.lisbon, "--db", partial, "--json", "-n", "20") == ok(
        "show", ids.lisbon, "--db", path, "--json", "-n", "20"
    )


def test_backup_makes_a_copy_that_opens_as_a_store(
    filled: tuple[Path, Ids], tmp_path: Path
) -> None:
    path, _ = filled
    dest = tmp_path / "backup.db"
    out = ok("backup", dest, "--db", path)
    assert out.startswith(f"backed up 5 thread(s), 26 item(s) to {dest} (")
    assert trio.run(_everything, dest) == trio.run(_everything, path)
    assert "no problems found" in ok("doctor", "--db", dest)


# -- demo -------------------------------------------------------------------------------------


def test_demo_runs_and_its_store_is_sound(tmp_path: Path) -> None:
    path = tmp_path / "demo.db"
    out = ok("demo", "--db", path, "--sessions", "3", "--turns", "1", "--pace", "0.01")
    assert f"threadstore demo — {path}" in out
    assert "summary" in out
    # the demo's custom projector output (extra.titler) is not mistaken for damage
    assert "no problems found" in ok("doctor", "--db", path)
    stats = json.loads(ok("stats", "--db", path, "--json"))
    assert stats["threads"] == 3 + 3


# -- on a terminal ------------------------------------------------------------------------------


def _on_terminal(args: list[str], *, columns: int, stream: str) -> tuple[int, str, str]:
    """Run the command with ``stream`` ("stdout" or "stderr") on a pseudo-terminal
    ``columns`` wide; its exit code, what the terminal showed and the other stream."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = child_environment(None)
    env["TERM"] = "xterm"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "threadstore", *args],
            stdin=subprocess.DEVNULL,
            stdout=slave if stream == "stdout" else subprocess.PIPE,
            stderr=slave if stream == "stderr" else subprocess.PIPE,
            env=env,
            timeout=120,
            check=False,
        )
        os.close(slave)
        shown = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
    other = proc.stderr if stream == "stdout" else proc.stdout
    return proc.returncode, shown.decode(), other.decode()


def test_on_a_terminal_tables_fit_its_width_and_status_has_colour(
    filled: tuple[Path, Ids],
) -> None:
    path, ids = filled
    code, shown, _ = _on_terminal(["list", "--db", str(path)], columns=90, stream="stdout")
    assert code == 0
    lines = shown.replace("\r\n", "\n").splitlines()
    assert "\033[31m" in lines[1]  # the report's status, "error", in red
    plain = [re.sub(r"\033\[[0-9;]*m", "", line) for line in lines]
    assert all(display_width(line) <= 90 for line in plain)
    assert plain[1].startswith("Quarterly rep…")  # the title gave way, the id did not
    assert plain[1].endswith(ids.report)


def test_on_a_terminal_reproject_draws_a_progress_bar(filled: tuple[Path, Ids]) -> None:
    path, _ = filled
    code, shown, out = _on_terminal(["reproject", "--db", str(path)], columns=80, stream="stderr")
    assert code == 0
    assert "\rreprojected [" + "#" * 30 + "] 5/5" in shown
    assert out == "rebuilt the metadata of 5 thread(s) from their logs\n"  # no plain lines
