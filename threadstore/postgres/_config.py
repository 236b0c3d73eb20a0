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
    #: Metadata rows the writer keeps decoded, and listed rows the readers keep decoded.
    row_cache_size: int = 1024
    listed_cache_size: int = 1024
    #: A read-only store's subscribers look for the writer's commits this often (seconds).
    feed_poll_interval: float = 0.05

    def __attrs_post_init__(self) -> None:
        if self.durability not in SYNCHRONOUS_COMMIT:
            raise ValueError(f"durability must be 'normal' or 'full', not {self.durability!r}")
        if not is_int(self.reader_connections) or self.reader_connections < 1:
            raise ValueError(
                f"reader_connections must be an int >= 1, not {self.reader_connections!r}"
            )


#: The defaults (what ``open_store`` uses unless told otherwise).
DEFAULTS = PostgresConfig()
