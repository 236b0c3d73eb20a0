"""The tests' throwaway PostgreSQL server (``tests/_pg.py``), for ``make bench`` and the peers.

``tests/_pg.py`` is the one copy of the server code: initdb and ``pg_ctl`` (as the
``postgres`` user when run as root), a Unix socket of its own, ``fsync=off``, and a watchdog
that stops the server when this process dies. It is loaded here from its path (``tests/``
is no package), once per process.

Standard library only, so the peers' runner can use it without importing trio. Sync: call
it from a worker thread inside trio.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Final, Protocol, cast

__all__ = ["Server", "start", "unavailable"]

#: The server code shared with the tests.
SERVER_MODULE: Final = Path(__file__).resolve().parent.parent / "tests" / "_pg.py"
_NAME: Final = "_threadstore_bench_pg"


class Server(Protocol):
    """What the benchmarks use of ``tests/_pg.py``'s ``PostgresServer``."""

    @property
    def socket_dir(self) -> Path: ...

    def url(self, dbname: str) -> str: ...

    def create_database(self) -> str: ...

    def drop_database(self, name: str) -> None: ...

    def stop(self) -> None: ...


def _module() -> ModuleType:
    loaded = sys.modules.get(_NAME)
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location(_NAME, SERVER_MODULE)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {SERVER_MODULE}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_NAME]
        raise
    return module


def unavailable() -> str | None:
    """Why no server can be started here (missing binaries, driver or server code), or None."""
    if not SERVER_MODULE.is_file():
        return f"{SERVER_MODULE} is missing"
    if importlib.util.find_spec("psycopg") is None:
        return "psycopg is not installed (pip install -e '.[postgres]')"
    if _module().find_bindir() is None:
        return str(_module().INSTALL_HINT)
    return None


def start() -> Server:
    """Start a throwaway server (about half a second); ``stop()`` it when done.

    Raises ``RuntimeError`` when :func:`unavailable` has a reason, and
    ``subprocess.CalledProcessError`` when initdb or the server fails.
    """
    reason = unavailable()
    if reason is not None:
        raise RuntimeError(reason)
    module = _module()
    return cast(Server, module.start_server(module.find_bindir()))
