"""The SQLite engine: one WAL database file, one writer thread, a few reader threads.

Everything that knows SQLite lives in this package: connections, schema and migrations and
every SQL statement (:mod:`._sql`), the group-committing writer thread (:mod:`._writer`),
the reader threads (:mod:`._readers`), the WAL checkpointer thread
(:mod:`._wal_checkpointer`), the single-writer file lock (:mod:`._lock`), the
fault-injection seam (:mod:`._faults`), and the engine that maps the store's operations
onto them (:mod:`._engine`). The rest of threadstore reaches it through
:class:`threadstore._engine.Engine` only.
"""

from ._config import DEFAULTS, Durability, SqliteConfig
from ._engine import SqliteEngine, open_sqlite_engine
from ._faults import FAULT_KINDS, FaultKind, Faults, Target

__all__ = [
    "DEFAULTS",
    "FAULT_KINDS",
    "Durability",
    "FaultKind",
    "Faults",
    "SqliteConfig",
    "SqliteEngine",
    "Target",
    "open_sqlite_engine",
]
