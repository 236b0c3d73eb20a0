"""Shared fixtures, and the contract suite's engine parametrization.

Like anyio's pytest plugin runs one test over several backends, every test that asks for
the ``engine`` fixture (directly, or through ``store_target`` or ``store``) runs once per
engine in :data:`ENGINES`: that is the contract suite. A test that holds for some engines
only says so with ``@pytest.mark.engines("sqlite")``. Tests of one engine's internals (files,
locks, WAL) live beside it (``tests/sqlite/``) and use ``store_path``/``path`` directly.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from _helpers import FAST_RETRY

from threadstore import Store, open_store
from threadstore.sqlite import _sql as _sqlite

#: The engines the contract suite runs over (``open_store`` targets in :func:`store_target`).
ENGINES = ("sqlite", "memory")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "engines(*names): run this contract test over these engines only"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("engines")
        names = marker.args if marker is not None else ENGINES
        unknown = set(names) - set(ENGINES)
        if unknown:
            raise ValueError(f"unknown engines {sorted(unknown)}; known: {ENGINES}")
        metafunc.parametrize("engine", names, indirect=True)


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> str:
    """The engine this run of a contract test uses (``"sqlite"`` or ``"memory"``)."""
    return str(request.param)


@pytest.fixture
def store_target(engine: str, tmp_path: Path) -> str:
    """What ``open_store`` is given for a fresh store on ``engine``."""
    return ":memory:" if engine == "memory" else str(tmp_path / "store.db")


@pytest.fixture
async def store(store_target: str) -> AsyncIterator[Store]:
    """A writable, fresh store on each engine (fast retries), closed and drained after."""
    async with open_store(store_target, retry=FAST_RETRY) as opened:
        yield opened


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """A store file in ``tmp_path`` (SQLite: for tests that reopen or inspect the file)."""
    return tmp_path / "store.db"


@pytest.fixture
def path(tmp_path: Path) -> str:
    """A store file path in ``tmp_path`` (for tests below the store API)."""
    return str(tmp_path / "store.db")


@pytest.fixture
def db(path: str) -> Iterator[sqlite3.Connection]:
    """A write connection to a fresh store file with the schema in place."""
    conn = _sqlite.connect(path, durability="normal")
    _sqlite.ensure_schema(conn)
    yield conn
    conn.close()
