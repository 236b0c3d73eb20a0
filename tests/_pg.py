"""A throwaway PostgreSQL server for the tests, from the machine's PostgreSQL binaries.

:func:`start_server` runs ``initdb`` and ``pg_ctl start`` on a directory of its own under
the system temporary directory (as the ``postgres`` user when the tests run as root: the
server refuses to run as root), with ``fsync=off``, no TCP listener (``listen_addresses=''``)
and a Unix socket in that directory only. Tests get databases of their own from
:meth:`PostgresServer.create_database`.

The server is stopped by :meth:`PostgresServer.stop`, and also when the test run dies
without calling it (SIGKILL included): a watchdog process, started in a session of its own,
holds the read end of a pipe whose write end only the test process holds. When the test
process exits for any reason the pipe reaches end-of-file, and the watchdog stops the server
(``pg_ctl stop -m immediate``) and removes the directory. No polling.

Run as a script (``python tests/_pg.py watch FD BINDIR DIR RUNAS``) it is that watchdog.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final

#: Set to 1 (``.ci/run`` does) to fail, not skip, when PostgreSQL cannot be started.
REQUIRE_ENV: Final = "THREADSTORE_REQUIRE_POSTGRES"
#: A directory holding ``initdb`` and ``pg_ctl``, when they are not under the usual place.
BINDIR_ENV: Final = "THREADSTORE_PG_BINDIR"

INSTALL_HINT: Final = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin "
    f"or ${BINDIR_ENV}: install them (Debian/Ubuntu: apt-get install postgresql; "
    "Fedora: dnf install postgresql-server) and the driver (pip install -e '.[dev]') "
    "to run the PostgreSQL tests"
)


def find_bindir() -> Path | None:
    """The directory of the newest installed PostgreSQL server binaries (or the one
    ``$THREADSTORE_PG_BINDIR`` names), or None."""
    explicit = os.environ.get(BINDIR_ENV)
    if explicit:  # authoritative when set (also to test a machine without PostgreSQL)
        candidates = [explicit]
    else:
        candidates = sorted(
            glob.glob("/usr/lib/postgresql/*/bin"),
            key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
            reverse=True,
        )
    for candidate in candidates:
        path = Path(candidate)
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file():
            return path
    return None


def required() -> bool:
    """Whether a missing PostgreSQL must fail the tests rather than skip them."""
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


class PostgresServer:
    """A running throwaway server; :attr:`socket_dir` is its only way in (user ``postgres``,
    trust authentication)."""

    def __init__(
        self,
        bindir: Path,
        base: Path,
        runas: str | None,
        watchdog_fd: int,
        watchdog: subprocess.Popen[bytes],
    ) -> None:
        self.bindir = bindir
        self.base = base
        self.data = base / "data"
        self.socket_dir = base / "sock"
        self._runas = runas
        self._watchdog_fd: int | None = watchdog_fd
        self._watchdog = watchdog
        self._names = itertools.count(1)

    def url(self, dbname: str) -> str:
        """The ``open_store`` URL of database ``dbname`` on this server."""
        return f"postgresql://postgres@/{dbname}?host={self.socket_dir}"

    def admin_url(self) -> str:
        return self.url("postgres")

    def create_database(self) -> str:
        """A new, empty database (a copy of ``template0``); returns its name."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 STRATEGY FILE_COPY')
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, closing whatever connections to it are left."""
        import psycopg

        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def pg_ctl(self, *args: str) -> None:
        """Run ``pg_ctl`` on this server's data directory. (A command that starts the
        server must pass ``-l``: the server keeps its output streams open.)"""
        _run(self._runas, [str(self.bindir / "pg_ctl"), "-D", str(self.data), *args])

    def restart(self) -> None:
        """Restart the server (fast shutdown: sessions are ended, transactions in flight
        roll back); returns once it accepts connections again."""
        self.pg_ctl("restart", "-m", "fast", "-w", "-l", str(self.base / "server.log"))

    def stop(self) -> None:
        """Stop the server and remove its directory (the watchdog then exits)."""
        try:
            self.pg_ctl("stop", "-m", "fast", "-w")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
            if self._watchdog_fd is not None:
                os.close(self._watchdog_fd)  # the watchdog finds nothing left to do
                self._watchdog_fd = None
                self._watchdog.wait()


def _run(runas: str | None, argv: list[str]) -> None:
    if runas is not None:
        argv = ["runuser", "-u", runas, "--", *argv]
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, capture_output=True)


def start_server(bindir: Path) -> PostgresServer:
    """initdb, start the watchdog, then start the server; returns once it accepts
    connections. Raises ``subprocess.CalledProcessError`` (with the tool's output) on
    failure, having cleaned up."""
    runas = "postgres" if os.geteuid() == 0 else None
    base = Path(tempfile.mkdtemp(prefix="threadstore-pg-"))
    if runas is not None:
        user = pwd.getpwnam(runas)
        os.chown(base, user.pw_uid, user.pw_gid)
    read_fd, write_fd = os.pipe()
    try:
        watchdog = subprocess.Popen(
            [sys.executable, __file__, "watch", str(read_fd), str(bindir), str(base), runas or ""],
            pass_fds=(read_fd,),
            start_new_session=True,  # a Ctrl-C to the test run's process group spares it
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    finally:
        os.close(read_fd)
    server = PostgresServer(bindir, base, runas, write_fd, watchdog)
    try:
        _run(runas, ["mkdir", "-m", "0700", str(server.socket_dir)])
        _run(
            runas,
            [
                str(bindir / "initdb"),
                "-D",
                str(server.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )
        options = " ".join(
            [
                "-c fsync=off",
                "-c full_page_writes=off",
                "-c listen_addresses=''",
                f"-c unix_socket_directories={server.socket_dir}",
                "-c max_connections=200",
                "-c shared_buffers=32MB",
            ]
        )
        server.pg_ctl("start", "-w", "-l", str(base / "server.log"), "-o", options)
    except BaseException:
        server.stop()
        raise
    return server


def _watch(fd: int, bindir: str, base: str, runas: str) -> None:
    """The watchdog: wait for end-of-file on ``fd`` (the test process is gone), then stop
    the server if it still runs and remove its directory."""
    with contextlib.suppress(OSError):
        while os.read(fd, 1):
            pass
    data = os.path.join(base, "data")
    if os.path.exists(os.path.join(data, "postmaster.pid")):
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            _run(
                runas or None,
                [os.path.join(bindir, "pg_ctl"), "-D", data, "stop", "-m", "immediate"],
            )
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__" and sys.argv[1:2] == ["watch"]:
    _watch(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
