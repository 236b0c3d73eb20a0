"""How the PostgreSQL engine and its tests behave where PostgreSQL is missing: psycopg is
imported only for ``postgresql://`` URLs, a missing driver is a clear error, and missing
server binaries skip the PostgreSQL tests with an install hint unless
``THREADSTORE_REQUIRE_POSTGRES=1`` makes that a failure. Each case runs in a child process
(its own imports and environment)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import _pg
import pytest
import trio

REPO = Path(__file__).resolve().parent.parent.parent


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False
    )


async def test_importing_threadstore_does_not_import_psycopg() -> None:
    done = await trio.to_thread.run_sync(
        _python,
        "import sys, threadstore, threadstore.aio, threadstore.blocking\n"
        "assert 'psycopg' not in sys.modules, 'psycopg imported'\n"
        "assert 'threadstore.postgres' not in sys.modules\n",
    )
    assert done.returncode == 0, done.stderr


async def test_a_postgres_url_without_psycopg_says_what_to_install() -> None:
    done = await trio.to_thread.run_sync(
        _python,
        "import sys, trio, threadstore\n"
        "sys.modules['psycopg'] = None  # as if it were not installed\n"
        "async def main():\n"
        "    async with threadstore.open_store('postgresql://u@h/db'):\n"
        "        pass\n"
        "try:\n"
        "    trio.run(main)\n"
        "except ModuleNotFoundError as exc:\n"
        "    print(exc)\n",
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'threadstore[postgres]'" in done.stdout


def _pytest(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rs",
            "tests/postgres/test_postgres_engine.py",
            "-k",
            "test_open_creates_a_versioned_schema_and_reopens_it",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **env},
        check=False,
    )


@pytest.mark.parametrize("required", [False, True], ids=["optional", "required"])
async def test_missing_server_binaries_skip_or_fail_the_postgres_tests(
    tmp_path: Path, required: bool
) -> None:
    env = {_pg.BINDIR_ENV: str(tmp_path), _pg.REQUIRE_ENV: "1" if required else ""}
    done = await trio.to_thread.run_sync(_pytest, env)
    assert "apt-get install postgresql" in done.stdout
    if required:
        assert done.returncode != 0
        assert "1 error" in done.stdout
        assert f"required: {_pg.REQUIRE_ENV} is set" in done.stdout
    else:
        assert done.returncode == 0, done.stdout
        assert "1 skipped" in done.stdout
