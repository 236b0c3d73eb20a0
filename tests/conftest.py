"""Shared fixtures: a real store in ``tmp_path``."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import workers
from threadstore import Store, open_store
from threadstore.sqlite import _sql as _sqlite

#: A retry policy that gives up after three quick attempts, so failure tests stay fast.
FAST_RETRY = workers.RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.01)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """Where the ``store`` fixture's database lives."""
    return tmp_path / "store.db"


@pytest.fixture
async def store(store_path: Path) -> AsyncIterator[Store]:
    """A writable store on a fresh file (fast retries), closed and drained after the test."""
    async with open_store(store_path, retry=FAST_RETRY) as opened:
        yield opened


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
