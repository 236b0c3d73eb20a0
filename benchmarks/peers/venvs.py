"""The peers' own virtual environments: ``.venv/<peer>`` from ``requirements-<peer>.txt``.

Created on first use with ``python -m venv`` and ``pip install -r`` of the pinned file (every
distribution pinned with ``==``, transitive ones included). A stamp holding the file's hash
makes later runs reuse the environment, and a changed file reinstall it.

They live in ``benchmarks/peers/.venv/`` because every tool already skips a folder named
``.venv`` (``.gitignore``'s ``.venv/``, flake8's ``exclude``, ruff's and mypy's defaults):
lint and type checks of ``benchmarks`` must never walk thousands of installed files.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PEERS_DIR = Path(__file__).resolve().parent

#: Peer name -> the distribution whose version names the peer in the report.
PEERS = {
    "openai": "openai-agents",
    "langgraph": "langgraph-checkpoint-sqlite",
    "langgraph_pg": "langgraph-checkpoint-postgres",
    "adk_pg": "google-adk",
}


@dataclass(frozen=True)
class Venv:
    name: str
    path: Path
    python: Path
    requirements: Path
    pins: tuple[str, ...]
    created_seconds: float | None  # None: reused


def requirements_file(name: str) -> Path:
    return PEERS_DIR / f"requirements-{name}.txt"


def read_pins(path: Path) -> tuple[str, ...]:
    """The ``name==version`` lines of a requirements file."""
    pins = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            pins.append(line)
    return tuple(pins)


def _python_in(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure(name: str, *, log: bool = True) -> Venv:
    """Return the peer's environment, creating or updating it first if needed."""
    venv = PEERS_DIR / ".venv" / name
    requirements = requirements_file(name)
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    stamp = venv / ".installed"
    python = _python_in(venv)
    pins = read_pins(requirements)
    if python.exists() and stamp.exists() and stamp.read_text(encoding="utf-8") == digest:
        return Venv(name, venv, python, requirements, pins, None)
    started = time.perf_counter()
    if log:
        print(f"creating {venv.relative_to(PEERS_DIR.parent.parent)} ...", file=sys.stderr)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            "-r",
            str(requirements),
        ],
        check=True,
    )
    stamp.write_text(digest, encoding="utf-8")
    seconds = time.perf_counter() - started
    if log:
        print(f"  ... done in {seconds:.1f} s", file=sys.stderr)
    return Venv(name, venv, python, requirements, pins, round(seconds, 1))
