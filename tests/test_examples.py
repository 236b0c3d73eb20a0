"""The examples in ``examples/`` run as a user would run them, and print what they promise.

Each runs in a child process on a store file in ``tmp_path``; stderr must stay empty (the
library is quiet unless asked).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

EXPECTED = {
    "trio_agent.py": [
        "Flaky CI: 'why is CI flaky?'",
        "status=idle items=23 turns=2",
        "tokens in/out=240/90",
    ],
    "asyncio_agent.py": [
        "sidebar saw: billing, search",
        "billing: 'why did the cron job fail?' status=idle items=12",
        "search: 'why is search slow?' status=idle items=12",
    ],
    "threads_agent.py": [
        "alpha: 'what broke?' items=12 status=idle",
        "beta: 'who owns it?' items=12 status=idle",
        "gamma: 'when?' items=12 status=idle",
    ],
    "goal_first.py": [
        "listed at once: True preview='Migrate the billing cron jobs'",
        "after the first message: preview='Start with the nightly one' "
        "goal='Migrate the billing cron jobs'",
    ],
}


def test_every_example_is_checked() -> None:
    scripts = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(EXPECTED)


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_prints_what_it_promises(script: str, tmp_path: Path) -> None:
    store = tmp_path / "threads.db"
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), str(store)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == EXPECTED[script]
    assert store.exists()  # it used the store it was given
