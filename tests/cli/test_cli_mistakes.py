"""User mistakes get one clear line on stderr and a documented exit code, never a
traceback; nothing is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _cli import Ids, cli, fill_store

from threadstore.cli import EXIT_CODES


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Path, Ids]:
    path = tmp_path / "store.db"
    return path, fill_store(path)


def fails(code: int, *args: str | Path, stdin: str | None = None) -> str:
    """The one line the command wrote on stderr; fails the test unless it exited with
    ``code``, printed nothing else and no traceback."""
    done = cli(*args, stdin=stdin)
    assert code in EXIT_CODES
    assert done.returncode == code, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("threadstore: error: ")
    assert done.stdout == ""
    return lines[0].removeprefix("threadstore: error: ")


def test_a_missing_file(tmp_path: Path) -> None:
    for command in (["list"], ["show", "x"], ["stats"], ["doctor"], ["reproject"], ["export"]):
        missing = tmp_path / "missing.db"
        assert fails(3, *command, "--db", missing) == f"no store at {str(missing)!r}: no such file"
        assert not missing.exists()  # nothing created
    assert fails(3, "backup", tmp_path / "b.db", "--db", tmp_path / "missing.db")
    assert not (tmp_path / "b.db").exists()


def test_a_file_that_is_not_a_store(tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("hello, not a database\n" * 100)
    for command in (["list"], ["doctor"], ["reproject"], ["import", "-"]):
        message = fails(3, *command, "--db", junk, stdin="")
        assert message == f"{str(junk)!r} is not a threadstore database: file is not a database"
    assert junk.read_text() == "hello, not a database\n" * 100
    assert (
        fails(3, "list", "--db", tmp_path) == f"{str(tmp_path)!r} is a directory, not a store file"
    )


def test_an_unknown_thread_id(filled: tuple[Path, Ids]) -> None:
    path, _ = filled
    for command in ("show", "tail"):
        assert fails(4, command, "no-such-thread", "--db", path) == (
            "no thread with id 'no-such-thread'"
        )
    assert fails(4, "export", "--thread", "nope", "--db", path) == "no thread with id 'nope'"
    assert fails(4, "reproject", "--thread", "nope", "--db", path) == "no thread with id 'nope'"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "postgresql://db.example/threads",
            "cannot connect to PostgreSQL at host 'db.example' database 'threads'",
        ),
        ("https://example.com/store", "unsupported store URL"),
        (":memory:", "':memory:' is not a store file"),
    ],
)
def test_a_bad_url(url: str, message: str) -> None:
    assert message in fails(3, "list", "--db", url)


def test_no_store_given() -> None:
    assert fails(2, "list") == "no store given: pass --db PATH or set $THREADSTORE_DB"


def test_bad_arguments_are_usage_errors(filled: tuple[Path, Ids]) -> None:
    path, _ = filled
    for args in (["list", "--limit", "0"], ["list", "--order", "sideways"], ["frobnicate"]):
        done = cli(*args, "--db", str(path))
        assert done.returncode == 2
        assert "Traceback" not in done.stderr
        assert done.stderr.splitlines()[-1].startswith("threadstore: error: ")


def _export(path: Path) -> list[str]:
    return cli("export", "--db", path).stdout.splitlines()


def _spoil(lines: list[str], index: int, **changes: object) -> str:
    obj = json.loads(lines[index])
    obj.update(changes)
    spoiled = list(lines)
    spoiled[index] = json.dumps(obj)
    return "\n".join(spoiled) + "\n"


def test_a_malformed_import_line_is_named_and_nothing_is_imported(
    filled: tuple[Path, Ids], tmp_path: Path
) -> None:
    path, _ = filled
    lines = _export(path)
    cases = {
        "not json": ("\n".join([*lines[:3], "{oops", *lines[3:]]), 4, "not JSON"),
        "not an object": ("\n".join([*lines[:1], "[1, 2]", *lines[1:]]), 2, "not a JSON object"),
        "seq gap": (_spoil(lines, 2, seq=5), 3, "seq 5 where seq 2 was expected"),
        "bad kind": (_spoil(lines, 1, kind="Not A Kind"), 2, "item kind 'Not A Kind' is invalid"),
        "naive time": (_spoil(lines, 1, created_at="2026-01-01T00:00:00"), 2, "no time zone"),
        "missing field": (_spoil(lines, 0, id=None), 1, "field 'id' must be a str"),
        "item first": ("\n".join(lines[1:]), 1, "an item before any thread header"),
        "bad rewind": (_spoil(lines, 9, data={"to_seq": 99}), 10, "a rewind needs 'to_seq'"),
        "short thread": ("\n".join(lines[:5]), 6, "announces 11 items but has 4"),
    }
    assert json.loads(lines[9])["kind"] == "rewind"
    target = tmp_path / "target.db"
    for name, (text, line, reason) in cases.items():
        message = fails(6, "import", "-", "--db", target, stdin=text)
        assert message.startswith(f"<stdin>:{line}: "), (name, message)
        assert reason in message, (name, message)
        assert not target.exists(), name  # checked before the store was even opened
    export = tmp_path / "e.jsonl"
    export.write_text(cases["seq gap"][0])
    assert fails(6, "import", export, "--db", target).startswith(f"{export}:3: ")
    assert fails(3, "import", tmp_path / "nope.jsonl", "--db", target) == (
        f"no such file: {str(tmp_path / 'nope.jsonl')!r}"
    )
    export.write_text("\n".join(lines + lines[:12]) + "\n")  # lisbon twice
    message = fails(6, "import", export, "--db", target)
    assert message.endswith("appears twice")


def test_backup_never_overwrites(filled: tuple[Path, Ids], tmp_path: Path) -> None:
    path, _ = filled
    dest = tmp_path / "taken.db"
    dest.write_text("precious")
    assert (
        fails(6, "backup", dest, "--db", path)
        == f"{str(dest)!r} exists already: nothing was written"
    )
    assert dest.read_text() == "precious"
