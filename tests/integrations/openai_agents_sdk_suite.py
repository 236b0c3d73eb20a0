"""``make test-integrations``: the OpenAI Agents SDK's own session tests, on ThreadstoreSession.

Downloads the pinned SDK sdist with pip into a temporary directory, extracts its tests,
installs the pytest plugin they need (pinned) beside them, swaps ``SQLiteSession`` for
:class:`~threadstore.integrations.openai_agents.ThreadstoreSession` through
``openai_agents_sdk_conftest.py`` and runs them. Nothing fetched is kept. Exits with
pytest's status.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDK_VERSION = "0.24.0"
PLUGINS = ["pytest-asyncio==1.4.0"]  # the SDK's uv.lock pin; its tests are asyncio tests
TEST_FILES = [
    "tests/memory/test_session.py",
    "tests/memory/test_session_limit.py",
    "tests/extensions/memory/test_encrypt_session.py",
]
HERE = Path(__file__).resolve().parent


def _run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> int:
    print("+", " ".join(args), flush=True)
    return subprocess.run(args, cwd=cwd, env=env, check=False).returncode


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="threadstore-sdk-suite-") as temp:
        root = Path(temp)
        pip = (sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet")
        spec = f"openai-agents=={SDK_VERSION}"
        if _run(*pip, "download", "--no-deps", "--no-binary", ":all:", spec, "-d", temp):
            return 2
        (sdist,) = root.glob("openai_agents-*.tar.gz")
        suite = root / "suite"
        prefix = f"openai_agents-{SDK_VERSION}/"
        with tarfile.open(sdist) as tar:
            members = [
                m
                for m in tar.getmembers()
                if m.name.startswith(prefix + "tests/") or m.name == prefix + "pyproject.toml"
            ]
            for member in members:
                member.name = member.name.removeprefix(prefix)
            tar.extractall(suite, members=members, filter="data")
        site = root / "site"
        if _run(*pip, "install", "--no-deps", "--target", str(site), *PLUGINS):
            return 2
        shutil.copy(HERE / "openai_agents_sdk_conftest.py", suite / "conftest.py")
        env = {**os.environ, "PYTHONPATH": str(site)}
        return _run(
            sys.executable,
            "-m",
            "pytest",
            "-c",
            "pyproject.toml",
            "--rootdir",
            ".",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:trio",
            "-q",
            "-rfE",
            *sys.argv[1:],
            *TEST_FILES,
            cwd=suite,
            env=env,
        )


if __name__ == "__main__":
    sys.exit(main())
