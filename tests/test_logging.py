"""Quiet unless asked: where the store's log events go with and without structlog configured.

The child-process tests run an application that configured nothing (tests/_children/
quiet_child.py); the in-process ones reset structlog to its unconfigured defaults for the
test (the ``unconfigured`` fixture) or configure it with ``capture_logs``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from _process import Child, spawn_child

import workers
from threadstore import Item, open_store

OWN_LINES = ["created 3", "listed 3", "closed"]


async def run_quiet_child(path: Path, *options: str) -> tuple[list[str], str, int]:
    """Run quiet_child.py to its end: its stdout lines, its stderr and its exit code."""
    async with spawn_child("quiet_child.py", str(path), *options, kind=Child) as child:
        await child.close_stdin()
        lines = []
        while (line := await child.line()) is not None:
            lines.append(line)
        code = await child.proc.wait()
        return lines, await child.stderr(), code


async def test_an_unconfigured_app_gets_nothing_on_stdout_or_stderr(tmp_path: Path) -> None:
    lines, stderr, code = await run_quiet_child(tmp_path / "store.db")
    assert code == 0, stderr
    assert lines == OWN_LINES
    assert stderr == ""


async def test_an_unconfigured_app_sees_warnings_on_stderr_only(tmp_path: Path) -> None:
    lines, stderr, code = await run_quiet_child(tmp_path / "store.db", "--fail-once")
    assert code == 0, stderr
    assert lines == OWN_LINES
    # Python's last-resort handler: the message alone, with the appender's contextvars.
    (retry,) = stderr.splitlines()
    assert retry.startswith("worker.retry ")
    assert "trace_parent='req-1'" in retry
    assert "error=\"RuntimeError('first call fails')\"" in retry


async def test_stdlib_logging_at_debug_shows_projection_events(tmp_path: Path) -> None:
    lines, stderr, code = await run_quiet_child(tmp_path / "store.db", "--debug")
    assert code == 0, stderr
    assert lines == OWN_LINES  # stdout is still the app's own
    applied = re.findall(r"^DEBUG:(threadstore[.\w]*):projection\.applied (.*)$", stderr, re.M)
    assert len(applied) == 3, stderr
    assert {name for name, _ in applied} == {"threadstore._projection_driver"}
    assert all("trace_parent='req-1'" in fields and "seq=3" in fields for _, fields in applied)
    assert re.search(r"^INFO:threadstore\._open:store\.opened ", stderr, re.M)
    assert re.search(r"^INFO:threadstore\._store:store\.closed ", stderr, re.M)


async def test_capture_logs_sees_the_store_events_with_the_appenders_trace(
    tmp_path: Path,
) -> None:
    with structlog.testing.capture_logs() as logs:
        async with open_store(tmp_path / "store.db") as store:
            tid = (await store.create_thread()).id
            with structlog.contextvars.bound_contextvars(trace_parent="req-7"):
                await store.append(tid, Item.user_message("hi"))
            await store.flush(tid)

    events = [entry["event"] for entry in logs]
    assert events.index("store.opened") < events.index("projection.applied")
    assert events[-1] == "store.closed"
    (applied,) = [e for e in logs if e["event"] == "projection.applied" and e["seq"] == 1]
    assert applied["log_level"] == "debug"
    assert applied["thread_id"] == tid
    assert applied["trace_parent"] == "req-7"
    assert applied["queue_age_ms"] >= 0


# -- in process, structlog unconfigured ---------------------------------------------------


@pytest.fixture
def unconfigured() -> Iterator[None]:
    """structlog's builtin defaults (``is_configured()`` False) for the test, then the
    configuration the test run had (``capture_logs`` leaves structlog configured)."""
    was_configured = structlog.is_configured()
    config = structlog.get_config()
    structlog.reset_defaults()
    try:
        yield
    finally:
        structlog.reset_defaults()
        if was_configured:
            structlog.configure(**config)


@pytest.mark.usefixtures("unconfigured")
@pytest.mark.parametrize(
    ("method", "level"),
    [
        ("debug", logging.DEBUG),
        ("info", logging.INFO),
        ("warning", logging.WARNING),
        ("error", logging.ERROR),
    ],
)
def test_unconfigured_events_go_to_the_modules_stdlib_logger(
    method: str, level: int, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    log = workers.get_logger("threadstore.example")
    with structlog.contextvars.bound_contextvars(trace_parent="req-1"):
        getattr(log, method)("thing.happened", seq=2, name="a b")
        getattr(log, method)("thing.override", trace_parent="req-9")
    getattr(log, method)("thing.bare")

    first, override, bare = caplog.records
    assert (first.name, first.levelno) == ("threadstore.example", level)
    assert first.getMessage() == "thing.happened seq=2 name='a b' trace_parent='req-1'"
    assert first.funcName == "test_unconfigured_events_go_to_the_modules_stdlib_logger"
    # an explicit field wins over a bound one of the same name
    assert override.getMessage() == "thing.override trace_parent='req-9'"
    assert bare.getMessage() == "thing.bare"
    assert capsys.readouterr().out == ""


@pytest.mark.usefixtures("unconfigured")
def test_filtered_out_events_are_dropped_and_reported_as_disabled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="threadstore.example")
    log = workers.get_logger("threadstore.example")
    log.debug("thing.debug")
    log.info("thing.info")
    assert [r.getMessage() for r in caplog.records] == ["thing.info"]
    assert not log.is_enabled_for(logging.DEBUG)
    assert log.is_enabled_for(logging.INFO)


@pytest.mark.usefixtures("unconfigured")
def test_configuring_structlog_after_import_takes_over(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    log = workers.get_logger("threadstore.example")  # made while unconfigured
    assert not log.is_enabled_for(logging.DEBUG)
    with structlog.testing.capture_logs() as logs:
        assert log.is_enabled_for(logging.DEBUG)  # structlog's processors decide
        log.debug("thing.debug", n=1)
        log.error("thing.error", n=2)
    assert logs == [
        {"event": "thing.debug", "n": 1, "log_level": "debug"},
        {"event": "thing.error", "n": 2, "log_level": "error"},
    ]
    assert caplog.records == []


@pytest.mark.usefixtures("unconfigured")
async def test_unconfigured_store_logs_projection_events_at_debug_only_when_enabled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    async with open_store(tmp_path / "store.db") as store:
        tid = (await store.create_thread()).id
        with structlog.contextvars.bound_contextvars(trace_parent="req-2"):
            await store.append(tid, Item.user_message("quiet"))
        await store.flush(tid)
        caplog.set_level(logging.DEBUG, logger="threadstore")
        with structlog.contextvars.bound_contextvars(trace_parent="req-3"):
            await store.append(tid, Item.user_message("loud"))
        await store.flush(tid)

    applied = [r for r in caplog.records if r.getMessage().startswith("projection.applied ")]
    assert [r.name for r in applied] == ["threadstore._projection_driver"]
    assert "trace_parent='req-3'" in applied[0].getMessage()
    assert f"thread_id='{tid}' seq=2" in applied[0].getMessage()
    assert capsys.readouterr().out == ""
