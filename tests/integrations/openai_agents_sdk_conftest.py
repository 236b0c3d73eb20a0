"""The SDK suite's root conftest (``openai_agents_sdk_suite.py`` copies it beside the tests).

Swaps ``SQLiteSession`` for :class:`ThreadstoreSession` everywhere the SDK and its tests
name it, before any test module is imported, and deselects the tests that cannot apply,
printing each with its reason.
"""

from __future__ import annotations

import agents
import agents.memory
import agents.memory.sqlite_session
import pytest
from agents.extensions.memory import encrypt_session

from threadstore.integrations.openai_agents import ThreadstoreSession

for _module in (agents, agents.memory, agents.memory.sqlite_session, encrypt_session):
    _module.SQLiteSession = ThreadstoreSession  # type: ignore[attr-defined]

_S = "tests/memory/test_session.py::test_sqlite_session_"
_E = "tests/extensions/memory/test_encrypt_session.py::test_encrypted_pop_"
_CONNECTIONS = "inspects SQLiteSession's per-thread sqlite3 connections (session._connections)"
_CORRUPT = (
    "writes a corrupt JSON row through SQLiteSession's private sqlite3 connection "
    "(session._locked_connection); threadstore refuses non-JSON on append"
)
_TABLES = "opens SQLiteSession's own tables (agent_sessions/agent_messages) with sqlite3"
_INJECT = (
    "injects a sqlite3.Connection subclass through SQLiteSession's private "
    "_connections_lock/_get_connection"
)

#: test (file::name; every parametrization) -> why it cannot apply to ThreadstoreSession
DESELECTED: dict[str, str] = {
    _S + "close_closes_worker_thread_connections": _CONNECTIONS,
    _S + "reaps_connections_from_exited_worker_threads": _CONNECTIONS,
    _S + "closes_retired_connections_before_the_next_allocation": _CONNECTIONS,
    _S + "keeps_connections_of_live_worker_threads": _CONNECTIONS,
    _S + "closed_rejects_empty_add_items": (
        "matches the error text 'SQLiteSession is closed' (ThreadstoreSession raises the "
        "same RuntimeError, saying 'ThreadstoreSession is closed')"
    ),
    _S + "pop_item_skips_corrupt_most_recent": _CORRUPT,
    _S + "pop_item_returns_none_after_dropping_only_corrupt_rows": _CORRUPT,
    _S + "get_items_limit_skips_corrupt_newest_rows": _CORRUPT,
    _S + "get_items_session_settings_limit_skips_corrupt_rows": _CORRUPT,
    _S + "file_lock_is_shared_across_instances": (
        "inspects SQLiteSession's process-local file locks (_lock, _file_lock_counts)"
    ),
    _S + "failed_add_items_releases_write_lock": _TABLES,
    _S + "failed_clear_session_rolls_back": _TABLES,
    _S + "failed_pop_item_releases_write_lock": _TABLES,
    _S + "rollback_failure_evicts_connection": _INJECT,
    _S + "close_retries_quarantined_connection": _INJECT,
    _S + "post_commit_cancellation_propagates_after_known_outcome": _INJECT,
    _E + "authentication_is_atomic_with_concurrent_mutations": _TABLES,
    _E + "wrong_key_preserves_row_identity": _TABLES,
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        (dropped if item.nodeid.split("[")[0] in DESELECTED else keep).append(item)
    matched = {item.nodeid.split("[")[0] for item in dropped}
    if not config.option.keyword and set(DESELECTED) - matched:  # the list stays exact
        raise pytest.UsageError(f"deselections match no test: {set(DESELECTED) - matched}")
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
    config.stash[_DROPPED] = [item.nodeid for item in dropped]


_DROPPED = pytest.StashKey[list[str]]()


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    dropped = config.stash.get(_DROPPED, [])
    terminalreporter.section(f"deselected: {len(dropped)} (SQLiteSession-only)")
    for nodeid in dropped:
        terminalreporter.write_line(f"{nodeid}: {DESELECTED[nodeid.split('[')[0]]}")
