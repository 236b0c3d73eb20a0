"""The PostgreSQL engine: one database, one writer thread, a few reader threads.

Everything that knows PostgreSQL (and the only modules that import psycopg) lives in this
package: connections, schema, migrations and every SQL statement (:mod:`._sql`), the
group-committing writer thread (:mod:`._writer`), the reader threads (:mod:`._readers`),
the fault-injection seam (:mod:`._faults`), and the engine that maps the store's
operations onto them (:mod:`._engine`). The rest of threadstore reaches it through
:class:`threadstore._engine.Engine` only, and imports this package only when
``open_store`` is given a ``postgresql://`` URL (psycopg is the optional
``threadstore[postgres]`` extra). See ``docs/postgres.md``.
"""

from ._config import DEFAULTS, SYNCHRONOUS_COMMIT, Durability, PostgresConfig
from ._engine import PostgresEngine, open_postgres_engine
from ._faults import FAULT_KINDS, FaultKind, PostgresFaults
from ._url import is_postgres_url, redact

__all__ = [
    "DEFAULTS",
    "FAULT_KINDS",
    "SYNCHRONOUS_COMMIT",
    "Durability",
    "FaultKind",
    "PostgresConfig",
    "PostgresEngine",
    "PostgresFaults",
    "is_postgres_url",
    "open_postgres_engine",
    "redact",
]
