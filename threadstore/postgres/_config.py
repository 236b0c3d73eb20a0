"""The PostgreSQL engine's knobs: one frozen value with every default in one place."""

from __future__ import annotations

from typing import Final, Literal

import attrs

from .._config import is_int

__all__ = ["DEFAULTS", "Durability", "PostgresConfig", "SYNCHRONOUS_COMMIT"]

Durability = Literal["normal", "full"]

#: ``synchronous_commit`` per durability level (see ``docs/postgres.md``). ``normal``: the
#: server acknowledges a commit before its WAL reaches disk: an acknowledged append survives
#: a crash of the application's process (the server has it), but a crash of the server
#: itself may lose the last few hundred milliseconds of commits (never part of one).
#: ``full``: the WAL is flushed (and, with ``synchronous_standby_names``, replicated) before
#: the commit is acknowledged: it survives a server crash and power loss.
SYNCHRONOUS_COMMIT: Final[dict[str, str]] = {"normal": "off", "full": "on"}


@attrs.frozen(kw_only=True)
class PostgresConfig:
    """How the PostgreSQL engine runs a store database."""

    #: ``synchronous_commit`` for the writer's connection: see :data:`SYNCHRONOUS_COMMIT`.
    durability: Durability = "normal"
    #: Reader threads, each with one connection (reads beyond wait their turn).
    reader_connections: int = 2
    #: Seconds to wait for a connection to the server (libpq ``connect_timeout``).
    connect_timeout: int = 10
    #: Listed rows the readers keep decoded.
    listed_cache_size: int = 1024
    #: Change-feed subscribers are woken by NOTIFY; they also look for changes this often
    #: (seconds), in case a notification was lost.
    feed_poll_interval: float = 0.05
    #: Seconds a process waits for the owner of a thread to project it (asked by NOTIFY)
    #: before it tries to take the thread over (the owner may have died).
    owner_patience: float = 0.5
    #: How often (seconds) a process looks for lagging threads nobody owns (their owner
    #: died) and takes them over, at most ``takeover_batch`` at a time.
    takeover_interval: float = 1.0
    takeover_batch: int = 100
    #: A process lets go of a thread it has not projected for ``ownership_idle`` seconds,
    #: and of the least recently projected beyond ``ownership_bound`` threads (each owned
    #: thread holds one of the server's lock table entries: max_locks_per_transaction).
    ownership_idle: float = 10.0
    ownership_bound: int = 1000
    #: Seconds closing waits for the writer's last transaction before it cancels the
    #: statement it is blocked in (e.g. on a row another process's transaction holds).
    close_patience: float = 5.0

    def __attrs_post_init__(self) -> None:
        if self.durability not in SYNCHRONOUS_COMMIT:
            raise ValueError(f"durability must be 'normal' or 'full', not {self.durability!r}")
        if not is_int(self.reader_connections) or self.reader_connections < 1:
            raise ValueError(
                f"reader_connections must be an int >= 1, not {self.reader_connections!r}"
            )


#: The defaults (what ``open_store`` uses unless told otherwise).
DEFAULTS = PostgresConfig()
