"""Shared fixtures: a real store in ``tmp_path``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import workers
from threadstore import Store, open_store

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
