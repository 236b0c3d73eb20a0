"""``make demo`` at a tiny scale: what it prints matches what it stored."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from threadstore import open_store
from threadstore.demo import main


def test_demo_streams_sessions_and_prints_the_list_and_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "demo.db")
    Path(path).write_bytes(b"")  # a leftover file is replaced, not reused
    # --verbose keeps the demo from configuring structlog for the rest of the test run (its
    # logging.basicConfig does nothing here: pytest's log handlers are on the root logger).
    args = ["--path", path, "--sessions", "3", "--turns", "2", "--pace", "0.002"]
    main([*args, "--verbose", "--redraw", "0.001"])
    out = capsys.readouterr().out

    assert "summary" in out
    assert "3 x 2 turns" in out
    assert "(3/3 listed at once)" in out
    assert "(generated)" in out  # the slow titler's output reached the list
    assert "equals list_threads: yes" in out  # the sidebar built from events alone
    assert "-- live sidebar:" in out  # redrawn while the sessions streamed

    async def check() -> None:
        async with open_store(path, read_only=True) as store:
            page = await store.list_threads(limit=50)
            assert len(page.threads) == 6  # 3 sessions + 3 goal-first threads
            total = 0
            for meta in page.threads:
                items = await store.read_items(meta.id)
                assert meta.seq == items[-1].seq == len(items)  # drained before closing
                assert meta.title or meta.goal or "titler" in meta.extra
                total += len(items)
            assert f"items appended               {total - 3}" in out  # goals: create_thread

    trio.run(check)
