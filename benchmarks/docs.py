"""``python -m benchmarks.docs``: regenerate the tables in ``docs/performance.md``.

Each generated block sits between two marker comments::

    <!-- BEGIN GENERATED bench: python -m benchmarks.docs (do not edit) -->
    ...
    <!-- END GENERATED bench -->

and is made from a results file: ``bench`` from ``benchmarks/results/latest.json`` (written
by ``make bench``), ``peers`` from ``benchmarks/results/peers-latest.json`` (``make
bench-peers``). Both commands call :func:`update` after saving their results; run this module
by hand after copying results in. ``--check`` changes nothing and exits 1 if the page is
stale (``tests/test_docs.py`` does the same check).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from ._report import load_results, markdown_table
from .peers import report as peers_report

__all__ = ["DOC", "RESULTS", "blocks", "render", "update"]

ROOT: Final = Path(__file__).resolve().parent.parent
RESULTS: Final = ROOT / "benchmarks" / "results"
DOC: Final = ROOT / "docs" / "performance.md"

#: Block name -> the results file it is made from, and the command that writes that file.
SOURCES: Final = {
    "bench": ("latest.json", "make bench"),
    "peers": ("peers-latest.json", "make bench-peers"),
}

_BLOCK = re.compile(
    r"(?P<begin><!-- BEGIN GENERATED (?P<name>[a-z]+):[^\n]*-->\n)"
    r".*?"
    r"(?P<end><!-- END GENERATED (?P=name) -->)",
    re.DOTALL,
)


def bench_block(report: Mapping[str, Any]) -> str:
    """The ``make bench`` table with a line saying which run it is."""
    machine = report.get("machine", {})
    commit = machine.get("threadstore_commit") or "unknown commit"
    if machine.get("threadstore_dirty"):
        commit += " with local changes"
    argv = " ".join(report.get("argv", ())) or "no options"
    targets = report.get("targets", {})
    met, missed = targets.get("met", 0), targets.get("missed", 0)
    results = load_results(report)
    lines = [
        f"`make bench` {report.get('profile', '?')} run ({argv}) of {commit}, "
        f"{report.get('timestamp', '?')}: {machine.get('cpu_count', '?')} CPUs, "
        f"Python {machine.get('python', '?')}, trio {machine.get('trio', '?')}, "
        f"SQLite {machine.get('sqlite', '?')}; targets met: {met} of {met + missed}. "
        f"Scenarios: {'; '.join(f'{r.id} ({r.title})' for r in results.values())}.",
        "",
        markdown_table(results),
    ]
    errors = report.get("errors") or {}
    if errors:
        lines += ["", f"Scenarios that crashed in this run: {', '.join(sorted(errors))}."]
    return "\n".join(lines)


def peers_block(document: Mapping[str, Any]) -> str:
    """The ``make bench-peers`` table with a line saying which run it is."""
    machine = document.get("machine", {})
    params = document.get("params", {})
    commit = str(document.get("git_commit") or "")[:7] or "unknown commit"
    lines = [
        f"`make bench-peers` {document.get('mode', '?')} run of {commit}, "
        f"{document.get('created_at', '?')}: {machine.get('cpus', '?')} CPUs, "
        f"Python {machine.get('python', '?')}, SQLite {machine.get('sqlite', '?')}.",
        "",
        peers_report.markdown_table(document.get("rows", ()), int(params.get("list_threads", 0))),
    ]
    postgres = peers_report.postgres_table(document.get("rows", ()))
    if postgres:
        server = document.get("postgres_server") or {}
        lines += [
            "",
            f"On PostgreSQL {server.get('server_version', '?')} (a throwaway server: "
            f"fsync={server.get('fsync', '?')}, Unix socket), burst and sequential appends:",
            "",
            postgres,
            "",
            *peers_report.postgres_verdict(document.get("rows", ())),
        ]
    problems = document.get("problems") or ()
    lines += [f"- {problem}" for problem in problems]
    return "\n".join(lines)


_MAKERS: Final = {"bench": bench_block, "peers": peers_block}


def blocks(results: Path = RESULTS) -> dict[str, str]:
    """Every block's content, made from the results files in ``results``."""
    out = {}
    for name, (filename, command) in SOURCES.items():
        path = results / filename
        if not path.exists():
            out[name] = f"No `{filename}` yet: run `{command}`."
            continue
        out[name] = _MAKERS[name](json.loads(path.read_text(encoding="utf-8")))
    return out


def render(text: str, contents: Mapping[str, str]) -> str:
    """``text`` with each generated block's content replaced by ``contents[name]``.

    Raises ``ValueError`` if a block in ``contents`` has no markers in ``text``.
    """
    found = {m.group("name") for m in _BLOCK.finditer(text)}
    missing = sorted(set(contents) - found)
    if missing:
        raise ValueError(f"no generated block named {missing} (markers missing)")

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in contents:
            return match.group(0)
        return f"{match.group('begin')}{contents[name].rstrip()}\n{match.group('end')}"

    return _BLOCK.sub(replace, text)


def update(doc: Path = DOC, results: Path = RESULTS) -> bool:
    """Rewrite ``doc``'s generated blocks from ``results``; whether the file changed."""
    text = doc.read_text(encoding="utf-8")
    new = render(text, blocks(results))
    if new == text:
        return False
    doc.write_text(new, encoding="utf-8")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.docs", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    args = parser.parse_args(argv)
    if args.check:
        text = DOC.read_text(encoding="utf-8")
        if render(text, blocks()) != text:
            print(f"{DOC} is stale: run python -m benchmarks.docs", file=sys.stderr)
            return 1
        return 0
    changed = update()
    print(f"{'updated' if changed else 'unchanged'}: {DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
