"""Shared fixtures, and the contract suite's engine parametrization.

Like anyio's pytest plugin runs one test over several backends, every test that asks for
the ``engine`` fixture (directly, or through ``store_target`` or ``store``) runs once per
engine in :data:`ENGINES`: that is the contract suite. A test that holds for some engines
only says so with ``@pytest.mark.engines("sqlite")``. Tests of one engine's internals (files,
locks, WAL) live beside it (``tests/sqlite/``) and use ``store_path``/``path`` directly.

The ``postgres`` engine runs on a throwaway server (:mod:`_pg`) started once per session
when the first test needs it, with a fresh database per test. Without the PostgreSQL binaries
(or psycopg) those tests skip, saying how to install them; with
``THREADSTORE_REQUIRE_POSTGRES=1`` (``.ci/run``) they fail instead.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import _pg
import pytest
from _helpers import FAST_RETRY

from threadstore import Store, open_store
from threadstore.sqlite import _sql as _sqlite

#: The engines the contract suite runs over (``open_store`` targets in :func:`store_target`).
ENGINES = ("sqlite", "memory", "postgres")


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
    """The engine this run of a contract test uses (one of :data:`ENGINES`)."""
    return str(request.param)


@pytest.fixture
def store_target(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """What ``open_store`` is given for a fresh store on ``engine``."""
    if engine == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return ":memory:" if engine == "memory" else str(tmp_path / "store.db")


@pytest.fixture
def another_store_target(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A second fresh store on ``engine``, beside :func:`store_target`'s."""
    if engine == "postgres":
        return str(request.getfixturevalue("postgres_databases")())
    return ":memory:" if engine == "memory" else str(tmp_path / "another.db")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[_pg.PostgresServer]:
    """The session's throwaway PostgreSQL server (started on first use, stopped at exit)."""
    bindir = _pg.find_bindir()
    problem = None
    if bindir is None:
        problem = _pg.INSTALL_HINT
    else:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            problem = _pg.INSTALL_HINT
    if problem is not None:
        if _pg.required():
            pytest.fail(f"{problem} (required: {_pg.REQUIRE_ENV} is set)")
        pytest.skip(problem)
    assert bindir is not None
    server = _pg.start_server(bindir)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_databases(postgres_server: _pg.PostgresServer) -> Iterator[Callable[[], str]]:
    """Makes fresh databases on the session's server (URLs), dropped after the test."""
    made: list[str] = []

    def new() -> str:
        name = postgres_server.create_database()
        made.append(name)
        return postgres_server.url(name)

    yield new
    for name in made:
        postgres_server.drop_database(name)


@pytest.fixture
def postgres_url(postgres_databases: Callable[[], str]) -> str:
    """The URL of a fresh, empty database on the session's PostgreSQL server."""
    return postgres_databases()


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
