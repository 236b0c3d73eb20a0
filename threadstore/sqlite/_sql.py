"""The SQLite storage layer: connections, schema and every SQL statement the store runs.

Everything here is plain synchronous code taking a :class:`sqlite3.Connection` first. It is
only ever called from the writer's OS thread or from a reader thread, never on the
trio thread. No function here begins or commits a transaction except :func:`ensure_schema`
(which owns its own ``BEGIN IMMEDIATE``): the caller groups statements into transactions.

Values cross this interface as plain Python values: timestamps are integer microseconds since
the epoch, ``extra`` and item ``data`` are JSON text that the caller encodes and decodes, and
metadata rows are ``dict``\\ s keyed by column name (:data:`THREAD_COLUMNS`).

Requires SQLite >= 3.31 (indexed generated columns); row-value comparisons (3.15) drive the
keyset pagination.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Final, Literal, TypeAlias

import workers

from .._errors import StoreFormatError, ThreadNotFoundError
from ._config import DEFAULTS
from ._rows import ORDER_COLUMNS, PROJECTED_COLUMNS, THREAD_COLUMNS

__all__ = [
    "SeqGapError",
    "APPLICATION_ID",
    "MIGRATIONS",
    "ORDER_COLUMNS",
    "PROJECTED_COLUMNS",
    "thread_last_seq",
    "damage_error",
    "update_projection",
    "SCHEMA_VERSION",
    "THREAD_COLUMNS",
    "ItemRow",
    "append_runs",
    "Migration",
    "append_items",
    "check_schema",
    "checkpoint",
    "connect",
    "cursor_secret",
    "delete_thread",
    "changed_columns",
    "changes_since",
    "feed_floor",
    "insert_tombstone",
    "last_change",
    "prune_tombstones",
    "ensure_schema",
    "insert_thread",
    "is_transient",
    "lagging_threads",
    "list_threads",
    "read_items",
    "read_projection_row",
    "set_archived",
    "thread_exists",
    "thread_index",
    "hide_items",
    "insert_hidden",
    "read_context",
    "backup_to",
    "hidden_seqs",
    "integrity_check",
    "replace_projection",
    "set_hidden",
    "store_summary",
    "thread_ids",
]

_log = workers.get_logger(__name__)

MINIMUM_SQLITE: Final = (3, 31, 0)

APPLICATION_ID: Final = 0x54535452  # "TSTR"
"""Written to the database header (``PRAGMA application_id``) to mark a threadstore file."""

SCHEMA_VERSION: Final = 3
"""The schema version this code writes (``PRAGMA user_version``)."""

ItemRow: TypeAlias = tuple[int, int, str, str]
"""One log item as stored: ``(seq, created_at_us, kind, data_json)``."""

Migration: TypeAlias = str | Callable[[sqlite3.Connection], None]
"""One migration step: an SQL statement, or a function run inside the migration transaction."""


def _create_cursor_secret(conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO store_info (key, value) VALUES ('cursor_secret', ?)",
        (secrets.token_bytes(32),),
    )


_LIST_INDEXES: Final = tuple(
    stmt
    for col in ("updated_at", "created_at", "recency_at")
    for stmt in (
        f"CREATE INDEX threads_listed_{col} ON threads (archived, listed, {col}, id)",
        f"CREATE INDEX threads_all_{col} ON threads (archived, {col}, id)",
    )
)

_NAMESPACE_INDEXES: Final = tuple(
    stmt
    for col in ("updated_at", "created_at", "recency_at")
    for stmt in (
        f"CREATE INDEX threads_ns_listed_{col} ON threads (namespace, archived, listed, {col}, id)",
        f"CREATE INDEX threads_ns_all_{col} ON threads (namespace, archived, {col}, id)",
    )
)

MIGRATIONS: Final[Mapping[int, Sequence[Migration]]] = {
    1: (
        """
        CREATE TABLE threads (
            id TEXT PRIMARY KEY NOT NULL,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            recency_at INTEGER NOT NULL,
            title TEXT,
            goal TEXT,
            preview TEXT,
            last_message TEXT,
            item_count INTEGER,
            turn_count INTEGER,
            status TEXT,
            input_tokens INTEGER,
            output_tokens INTEGER,
            archived_at INTEGER,
            extra TEXT NOT NULL DEFAULT '{}',
            seq INTEGER NOT NULL DEFAULT 0,
            has_user_message INTEGER NOT NULL DEFAULT 0,
            last_seq INTEGER NOT NULL DEFAULT 0,
            archived INTEGER AS (archived_at IS NOT NULL) VIRTUAL,
            listed INTEGER AS (preview IS NOT NULL OR title IS NOT NULL) VIRTUAL
        )
        """,
        *_LIST_INDEXES,
        """
        CREATE TABLE items (
            thread_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            created_at INTEGER NOT NULL,
            kind TEXT NOT NULL,
            data TEXT NOT NULL
        )
        """,
        "CREATE UNIQUE INDEX items_thread_seq ON items (thread_id, seq)",
        "CREATE TABLE store_info (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL)",
        _create_cursor_secret,
    ),
    # Namespaces and history edits. ``hidden`` marks items out of the context (derived
    # from the log's ``rewind`` items, like the metadata): ``read_context`` skips them.
    2: (
        "ALTER TABLE threads ADD COLUMN namespace TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE threads ADD COLUMN forked_from TEXT",
        "ALTER TABLE threads ADD COLUMN forked_at INTEGER",
        "ALTER TABLE items ADD COLUMN hidden INTEGER NOT NULL DEFAULT 0",
        *_NAMESPACE_INDEXES,
        "CREATE INDEX items_compactions ON items (thread_id, seq) WHERE kind = 'compaction'",
    ),
    # The change feed: each thread's latest listed change, store-wide and in commit order
    # (existing threads are numbered in table order), and deleted threads' tombstones.
    3: (
        "ALTER TABLE threads ADD COLUMN change INTEGER NOT NULL DEFAULT 0",
        "UPDATE threads SET change = rowid",
        "CREATE INDEX threads_change ON threads (change)",
        "CREATE INDEX threads_ns_change ON threads (namespace, change)",
        """
        CREATE TABLE tombstones (
            id TEXT PRIMARY KEY NOT NULL,
            namespace TEXT NOT NULL,
            change INTEGER NOT NULL,
            deleted_at INTEGER NOT NULL
        )
        """,
        "CREATE INDEX tombstones_change ON tombstones (change)",
        "CREATE INDEX tombstones_deleted_at ON tombstones (deleted_at)",
    ),
}
"""Schema migrations: ``MIGRATIONS[v]`` takes a database from version ``v - 1`` to ``v``.

Steps run in order inside one ``BEGIN IMMEDIATE`` transaction together with the
``user_version`` bump, so a migration applies whole or not at all. To add version 2, add
``2: (...)`` here and raise :data:`SCHEMA_VERSION`.
"""


_INSERT_COLUMNS: Final = THREAD_COLUMNS[:-1]  # every column but last_seq


_SELECT_THREAD: Final = f"SELECT {', '.join(THREAD_COLUMNS)} FROM threads"
_INSERT_THREAD: Final = (
    f"INSERT INTO threads ({', '.join(_INSERT_COLUMNS)}) "
    f"VALUES ({', '.join(':' + c for c in _INSERT_COLUMNS)})"
)

# Primary result codes (the low byte of an extended code).
_SQLITE_BUSY: Final = 5
_SQLITE_LOCKED: Final = 6
_SQLITE_IOERR: Final = 10
_SQLITE_CORRUPT: Final = 11
_SQLITE_FULL: Final = 13
_SQLITE_NOTADB: Final = 26
_TRANSIENT_CODES: Final = frozenset({_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_IOERR, _SQLITE_FULL})
_TRANSIENT_MESSAGES: Final = ("database is locked", "database table is locked", "disk i/o error")


# --------------------------------------------------------------------------- connections


def connect(
    path: str,
    *,
    durability: Literal["normal", "full"],
    read_only: bool = False,
    busy_timeout_ms: int = DEFAULTS.busy_timeout_ms,
) -> sqlite3.Connection:
    """Open a connection to the store file at ``path``. Sync; writer/reader thread only.

    A writer connection (``read_only=False``) creates a missing file with mode ``0o600`` (the
    ``-wal`` and ``-shm`` files SQLite derives inherit it) and switches the file to WAL.
    A reader (``read_only=True``) opens ``file:...?mode=ro`` with ``PRAGMA query_only=1``: it
    never creates or writes the file, and reads a live WAL database correctly (also one the
    writer created moments ago). ``durability`` sets ``synchronous`` (``NORMAL`` or ``FULL``).

    The connection has ``isolation_level=None`` (callers issue ``BEGIN``/``COMMIT``) and
    ``check_same_thread=False`` (tests and tools may hand it between threads, one at a time).

    Raises :class:`StoreFormatError` when the file is not an SQLite database or is damaged,
    and :class:`FileNotFoundError` for a reader on a missing file.
    """
    if sqlite3.sqlite_version_info < MINIMUM_SQLITE:  # pragma: no cover - environment check
        raise RuntimeError(
            f"threadstore needs SQLite >= {'.'.join(map(str, MINIMUM_SQLITE))}, "
            f"this Python has {sqlite3.sqlite_version}"
        )
    if durability not in ("normal", "full"):
        raise ValueError(f"durability must be 'normal' or 'full', not {durability!r}")
    if read_only:
        if not os.path.exists(path):
            raise FileNotFoundError(2, "no store file", path)
        uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
        conn = sqlite3.connect(
            uri,
            uri=True,
            timeout=busy_timeout_ms / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
    else:
        if not os.path.exists(path):
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
        conn = sqlite3.connect(
            path, timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
        )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if read_only:
            conn.execute("PRAGMA query_only = 1")
            # Touch the file so a non-database fails here, not at the first query.
            conn.execute("PRAGMA schema_version").fetchone()
        else:
            # Refuse a foreign or newer file before switching it to WAL: that would
            # rewrite its header, and a file we refuse must be left exactly as it was.
            _check_header(repr(path), *_read_header(conn))
            mode = _enable_wal(conn, busy_timeout_ms)
            if mode != "wal":
                raise StoreFormatError(
                    f"cannot use WAL journal mode for {path!r} (SQLite chose {mode!r}); "
                    "is it on a network filesystem?"
                )
        conn.execute(f"PRAGMA synchronous = {durability.upper()}")
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute("PRAGMA cache_size = -16384")  # KiB: 16 MiB per connection
        conn.execute("PRAGMA temp_store = MEMORY")
    except sqlite3.DatabaseError as exc:
        conn.close()
        _raise_format_error(path, exc)
        raise
    except BaseException:
        conn.close()
        raise
    return conn


def _enable_wal(conn: sqlite3.Connection, busy_timeout_ms: int) -> str:
    """Switch to WAL; return the journal mode SQLite reports.

    Changing the journal mode of a new file while other connections open it can fail with
    SQLITE_BUSY at once, without the busy handler being consulted, so retry for as long as
    ``busy_timeout`` would have waited.
    """
    deadline = time.monotonic() + busy_timeout_ms / 1000
    delay = 0.001
    while True:
        try:
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            return str(mode).lower()
        except sqlite3.OperationalError as exc:
            if not is_transient(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _raise_format_error(path: str, exc: sqlite3.DatabaseError) -> None:
    """Re-raise ``exc`` as :class:`StoreFormatError` if it says the file is not a database."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    message = str(exc).lower()
    if code == _SQLITE_NOTADB or "file is not a database" in message:
        raise StoreFormatError(f"{path!r} is not a threadstore database: {exc}") from exc
    if (
        code == _SQLITE_CORRUPT
        or "malformed" in message
        or "unsupported file format" in message
        or "could not decode" in message
    ):
        raise StoreFormatError(f"{path!r} is damaged: {exc}") from exc


def damage_error(path: str, exc: BaseException) -> StoreFormatError | None:
    """The :class:`StoreFormatError` for ``exc`` if it shows a damaged file, else None.

    For errors raised while reading stored rows: SQLite's corrupt/not-a-database errors, and
    values that no longer decode (text that is not UTF-8, timestamps out of range, JSON).
    """
    if isinstance(exc, sqlite3.DatabaseError):
        try:
            _raise_format_error(path, exc)
        except StoreFormatError as format_error:
            return format_error
        return None
    if isinstance(exc, OverflowError | UnicodeDecodeError | json.JSONDecodeError):
        error = StoreFormatError(f"{path!r} is damaged: a stored value does not decode ({exc})")
        error.__cause__ = exc
        return error
    return None


def _describe(conn: sqlite3.Connection) -> str:
    row = conn.execute("PRAGMA database_list").fetchone()
    return repr(row[2]) if row and row[2] else "the database"


# --------------------------------------------------------------------------- schema


def _read_header(conn: sqlite3.Connection) -> tuple[int, int, bool]:
    """``(application_id, user_version, has objects)``, read in one statement: one snapshot,
    so a schema another connection commits meanwhile is seen whole or not at all."""
    app_id, version, has_objects = conn.execute(
        "SELECT (SELECT application_id FROM pragma_application_id),"
        " (SELECT user_version FROM pragma_user_version),"
        " EXISTS (SELECT 1 FROM sqlite_master)"
    ).fetchone()
    return int(app_id), int(version), bool(has_objects)


def _check_header(where: str, app_id: int, version: int, has_objects: bool) -> bool:
    """Validate the header; return whether the file is still empty (no schema yet)."""
    if app_id != APPLICATION_ID:
        if app_id != 0 or has_objects or version != 0:
            raise StoreFormatError(
                f"{where} is not a threadstore database (application_id {app_id:#x}, "
                f"expected {APPLICATION_ID:#x})"
            )
        return True
    if version < 1:
        raise StoreFormatError(
            f"{where} is damaged: its header says schema version {version} (expected 1.."
            f"{SCHEMA_VERSION})"
        )
    if version > SCHEMA_VERSION:
        raise StoreFormatError(
            f"{where} was created by a newer threadstore "
            f"(schema {version} > {SCHEMA_VERSION}); upgrade threadstore to open it"
        )
    return False


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create or migrate the schema to :data:`SCHEMA_VERSION`. Sync; writer thread only.

    Idempotent and race-safe: the check and the migration run in one ``BEGIN IMMEDIATE``
    transaction, so of several connections (threads or processes) opening a new file at once,
    one creates the schema and the others find it done. Raises :class:`StoreFormatError` for a
    file that is not a threadstore database or was written by a newer schema.
    """
    where = _describe(conn)
    try:
        start = _migrate(conn, where)
    except sqlite3.DatabaseError as exc:
        _raise_format_error(where, exc)
        raise
    if start < SCHEMA_VERSION:
        _log.info("sqlite.schema_migrated", from_version=start, to_version=SCHEMA_VERSION)


def _migrate(conn: sqlite3.Connection, where: str) -> int:
    """Check and migrate in one write transaction; return the version found."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        app_id, version, has_objects = _read_header(conn)
        start = 0 if _check_header(where, app_id, version, has_objects) else version
        for target in range(start + 1, SCHEMA_VERSION + 1):
            for step in MIGRATIONS[target]:
                if isinstance(step, str):
                    conn.execute(step)
                else:
                    step(conn)
        if start < SCHEMA_VERSION:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return start


def check_schema(conn: sqlite3.Connection) -> None:
    """Check, without writing, that the file holds a current schema. Sync; reader thread only.

    For read-only opens. Raises :class:`StoreFormatError` like :func:`ensure_schema`, and also
    when the file has no schema yet or an older one (a read-only open cannot migrate it).
    """
    where = _describe(conn)
    try:
        app_id, version, has_objects = _read_header(conn)
    except sqlite3.DatabaseError as exc:
        _raise_format_error(where, exc)
        raise
    if _check_header(where, app_id, version, has_objects):
        raise StoreFormatError(f"{where} is empty: no threadstore schema has been created yet")
    if version < SCHEMA_VERSION:
        raise StoreFormatError(
            f"{where} has schema {version} < {SCHEMA_VERSION}; "
            "open it for writing once to migrate it"
        )


# --------------------------------------------------------------------------- threads


def _row_dict(row: Sequence[object]) -> dict[str, object]:
    return dict(zip(THREAD_COLUMNS, row, strict=True))


def insert_thread(conn: sqlite3.Connection, row: Mapping[str, object]) -> None:
    """Insert a new metadata row. Sync; writer thread only.

    ``row`` holds every column of :data:`THREAD_COLUMNS` except ``last_seq`` (which starts at
    0 and follows :func:`append_items`). Raises :class:`sqlite3.IntegrityError` if the id is
    taken.
    """
    conn.execute(_INSERT_THREAD, row)


def thread_last_seq(conn: sqlite3.Connection, thread_id: str) -> int | None:
    """The seq of the thread's last log item (0: none), or None if there is no such thread.

    Sync; writer/reader thread only.
    """
    row = conn.execute("SELECT last_seq FROM threads WHERE id = ?", (thread_id,)).fetchone()
    return None if row is None else int(row[0])


def thread_exists(conn: sqlite3.Connection, thread_id: str) -> bool:
    """Whether a thread row with this id exists. Sync; writer/reader thread only."""
    cur = conn.execute("SELECT 1 FROM threads WHERE id = ?", (thread_id,))
    return cur.fetchone() is not None


def read_projection_row(conn: sqlite3.Connection, thread_id: str) -> dict[str, object] | None:
    """The thread's row as a dict keyed by :data:`THREAD_COLUMNS`, or ``None``.

    Sync; writer/reader thread only.
    """
    row = conn.execute(_SELECT_THREAD + " WHERE id = ?", (thread_id,)).fetchone()
    return None if row is None else _row_dict(row)


def changed_columns(old: Mapping[str, object], new: Mapping[str, object]) -> list[str]:
    """The projected columns whose values differ between two rows of one thread."""
    return [c for c in PROJECTED_COLUMNS if new[c] != old[c]]


def update_projection(
    conn: sqlite3.Connection, old: Mapping[str, object], new: Mapping[str, object]
) -> bool:
    """Write the projected columns of ``new`` that differ from ``old`` (the thread's current
    row), and its ``change`` if that differs. Sync; writer thread only. Returns whether the
    thread exists.

    Only changed columns are SET, so list indexes over unchanged columns are left alone.
    """
    changed = changed_columns(old, new)
    if new.get("change", 0) != old.get("change", 0):
        changed.append("change")
    if not changed:
        return thread_exists(conn, str(new["id"]))
    params = {c: new[c] for c in changed}
    params["id"] = new["id"]
    sets = ", ".join(f"{c} = :{c}" for c in changed)
    return conn.execute(f"UPDATE threads SET {sets} WHERE id = :id", params).rowcount > 0


def set_archived(
    conn: sqlite3.Connection, thread_id: str, archived_at_us: int | None, change: int = 0
) -> dict[str, object] | None:
    """Set (or with ``None`` clear) ``archived_at``, stamped with ``change``; return the
    updated row or ``None``. Sync; writer thread only.
    """
    cur = conn.execute(
        "UPDATE threads SET archived_at = ?, change = ? WHERE id = ?",
        (archived_at_us, change, thread_id),
    )
    if cur.rowcount == 0:
        return None
    return read_projection_row(conn, thread_id)


def delete_thread(conn: sqlite3.Connection, thread_id: str) -> bool:
    """Delete the thread's items and row; return whether the row existed.

    Sync; writer thread only. Cost is proportional to the thread's item count.
    """
    conn.execute("DELETE FROM items WHERE thread_id = ?", (thread_id,))
    return conn.execute("DELETE FROM threads WHERE id = ?", (thread_id,)).rowcount > 0


# --------------------------------------------------------------------------- change index


def insert_tombstone(
    conn: sqlite3.Connection, thread_id: str, namespace: str, change: int, deleted_us: int
) -> None:
    """Record the deletion of a thread (replacing an older tombstone of the same id).

    Sync; writer thread only."""
    conn.execute(
        "INSERT OR REPLACE INTO tombstones (id, namespace, change, deleted_at) VALUES (?, ?, ?, ?)",
        (thread_id, namespace, change, deleted_us),
    )


def prune_tombstones(conn: sqlite3.Connection, before_us: int) -> int:
    """Delete the tombstones of deletions before ``before_us`` and raise the feed floor to
    the newest change among them; return how many went. Sync; writer thread only. An index
    range: nothing to prune costs one lookup."""
    (newest,) = conn.execute(
        "SELECT max(change) FROM tombstones WHERE deleted_at < ?", (before_us,)
    ).fetchone()
    if newest is None:
        return 0
    pruned = conn.execute("DELETE FROM tombstones WHERE deleted_at < ?", (before_us,)).rowcount
    conn.execute(
        "INSERT INTO store_info (key, value) VALUES ('feed_floor', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
        (int(newest),),
    )
    return int(pruned)


def feed_floor(conn: sqlite3.Connection) -> int:
    """The newest change whose tombstone was pruned (0: none). Sync; any thread."""
    row = conn.execute("SELECT value FROM store_info WHERE key = 'feed_floor'").fetchone()
    return 0 if row is None else int(row[0])


def last_change(conn: sqlite3.Connection) -> int:
    """The newest change number the store has given (its index maxima and the floor).

    Sync; any thread. Three index lookups: cheap enough to poll."""
    (last,) = conn.execute(
        "SELECT max(coalesce((SELECT max(change) FROM threads), 0),"
        " coalesce((SELECT max(change) FROM tombstones), 0),"
        " coalesce((SELECT value FROM store_info WHERE key = 'feed_floor'), 0))"
    ).fetchone()
    return int(last)


def changes_since(
    conn: sqlite3.Connection, after: int, limit: int, namespace: str | None
) -> tuple[list[tuple[object, ...]], list[tuple[str, str, int, int]]]:
    """Up to ``limit`` threads (rows in :data:`THREAD_COLUMNS` order) and up to ``limit``
    tombstones ``(id, namespace, change, deleted_at)`` with a change after ``after``, each in
    change order (the caller merges them). Sync; reader thread only. Index walks."""
    where = "change > ?"
    params: tuple[object, ...] = (after,)
    if namespace is not None:
        where, params = "namespace = ? AND change > ?", (namespace, after)
    threads = conn.execute(
        f"{_SELECT_THREAD} WHERE {where} ORDER BY change LIMIT ?", (*params, limit)
    ).fetchall()
    tombstones = conn.execute(
        f"SELECT id, namespace, change, deleted_at FROM tombstones WHERE {where} "
        "ORDER BY change LIMIT ?",
        (*params, limit),
    ).fetchall()
    return threads, tombstones


def thread_index(conn: sqlite3.Connection) -> list[tuple[str, int, int, int, str]]:
    """``(id, last_seq, seq, has_user_message, namespace)`` of every thread, for the
    in-memory index. Sync; writer/reader thread only. Loaded once when the store opens (a
    full scan).
    """
    cur = conn.execute("SELECT id, last_seq, seq, has_user_message, namespace FROM threads")
    return [(str(i), int(ls), int(s), int(h), str(n)) for i, ls, s, h, n in cur]


def lagging_threads(conn: sqlite3.Connection) -> list[tuple[str, int, int]]:
    """``(id, seq, last_seq)`` of threads whose metadata lags their log (``seq < last_seq``).

    Sync; writer/reader thread only. A full scan, meant for crash recovery at open.
    """
    cur = conn.execute("SELECT id, seq, last_seq FROM threads WHERE seq < last_seq ORDER BY id")
    return [(str(i), int(s), int(ls)) for i, s, ls in cur]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _list_query(
    *,
    order_by: str,
    descending: bool,
    archived: bool,
    search: str | None,
    include_empty: bool,
    after: tuple[int, str] | None,
    limit: int,
    namespace: str | None = None,
) -> tuple[str, list[object]]:
    """The SQL and parameters :func:`list_threads` runs (separate so tests can EXPLAIN it)."""
    if order_by not in ORDER_COLUMNS:
        raise ValueError(f"order_by must be one of {sorted(ORDER_COLUMNS)}, not {order_by!r}")
    if limit < 0:
        raise ValueError(f"limit must be >= 0, not {limit!r}")
    direction = "DESC" if descending else "ASC"
    index = f"threads_all_{order_by}" if include_empty else f"threads_listed_{order_by}"
    where = ["archived = ?"]
    params: list[object] = [int(archived)]
    if namespace is not None:  # the namespace-first indexes: O(limit) within one tenant
        index = index.replace("threads_", "threads_ns_", 1)
        where.insert(0, "namespace = ?")
        params.insert(0, namespace)
    if not include_empty:
        where.append("listed = 1")
    if after is not None:
        where.append(f"({order_by}, id) {'<' if descending else '>'} (?, ?)")
        params.extend(after)
    if search:
        pattern = f"%{_escape_like(search)}%"
        where.append(
            "(title LIKE ? ESCAPE '\\' OR preview LIKE ? ESCAPE '\\' OR goal LIKE ? ESCAPE '\\')"
        )
        params.extend((pattern, pattern, pattern))
    params.append(limit)
    sql = (
        f"{_SELECT_THREAD} INDEXED BY {index} WHERE {' AND '.join(where)} "
        f"ORDER BY {order_by} {direction}, id {direction} LIMIT ?"
    )
    return sql, params


def list_threads(
    conn: sqlite3.Connection,
    *,
    order_by: str,
    descending: bool,
    archived: bool,
    search: str | None,
    include_empty: bool,
    after: tuple[int, str] | None,
    limit: int,
    namespace: str | None = None,
) -> list[tuple[object, ...]]:
    """One page of threads in ``(order_by, id)`` order, as value tuples in
    :data:`THREAD_COLUMNS` order (decoded by the caller). Sync; reader thread only.

    Keyset pagination: only rows strictly after ``after = (sort_value, id)`` in the requested
    order are returned, so a page boundary stays put while other rows change. The query walks
    an index matching the order (``threads_listed_<col>`` or, with ``include_empty``,
    ``threads_all_<col>``) and stops after ``limit`` rows; it never sorts.

    ``search`` (empty means none) keeps rows whose title, preview or goal contains it,
    case-insensitively for ASCII letters (SQLite ``LIKE``); ``%``, ``_`` and ``\\`` are
    literal. A search filters while walking the index, so it may read more than ``limit`` rows.
    """
    sql, params = _list_query(
        order_by=order_by,
        descending=descending,
        archived=archived,
        search=search,
        include_empty=include_empty,
        after=after,
        limit=limit,
        namespace=namespace,
    )
    return conn.execute(sql, params).fetchall()


# --------------------------------------------------------------------------- items


def append_items(
    conn: sqlite3.Connection,
    thread_id: str,
    rows: Sequence[ItemRow],
    *,
    expected_last: int | None = None,
) -> None:
    """Insert log items and advance ``threads.last_seq``. Sync; writer thread only.

    ``rows`` are ``(seq, created_at_us, kind, data_json)`` in seq order. With
    ``expected_last``, the log must end at exactly that seq (so seqs stay dense even when an
    earlier append to the thread failed): otherwise :class:`SeqGapError`. Raises
    :class:`ThreadNotFoundError` (having written nothing) if the thread row does not exist,
    and :class:`sqlite3.IntegrityError` if a seq is already taken.
    """
    if not rows:
        return
    if expected_last is None:
        cur = conn.execute("UPDATE threads SET last_seq = ? WHERE id = ?", (rows[-1][0], thread_id))
    else:
        cur = conn.execute(
            "UPDATE threads SET last_seq = ? WHERE id = ? AND last_seq = ?",
            (rows[-1][0], thread_id, expected_last),
        )
    if cur.rowcount == 0:
        found = conn.execute("SELECT last_seq FROM threads WHERE id = ?", (thread_id,)).fetchone()
        if found is None:
            raise ThreadNotFoundError(thread_id)
        raise SeqGapError(thread_id, int(found[0]), rows[0][0])
    conn.executemany(
        "INSERT INTO items (thread_id, seq, created_at, kind, data) VALUES (?, ?, ?, ?, ?)",
        [(thread_id, seq, created_at, kind, data) for seq, created_at, kind, data in rows],
    )


def append_runs(conn: sqlite3.Connection, runs: Sequence[tuple[str, Sequence[ItemRow]]]) -> None:
    """``append_items`` with ``expected_last`` for several appends, in two statements.

    Each run's rows must follow its thread's last seq (runs of one thread in seq order).
    Raises :class:`SeqGapError` without naming the run when a check fails (some rows may be
    written: the caller rolls back and finds the culprit with ``append_items``).
    """
    cur = conn.executemany(
        "UPDATE threads SET last_seq = ? WHERE id = ? AND last_seq = ?",
        [(rows[-1][0], thread_id, rows[0][0] - 1) for thread_id, rows in runs],
    )
    if cur.rowcount != len(runs):
        raise SeqGapError("(one of several)", -1, -1)
    conn.executemany(
        "INSERT INTO items (thread_id, seq, created_at, kind, data) VALUES (?, ?, ?, ?, ?)",
        [(thread_id, *row) for thread_id, rows in runs for row in rows],
    )


class SeqGapError(Exception):
    """An append would leave a gap: an earlier append to the thread was not stored."""

    def __init__(self, thread_id: str, last: int, first: int) -> None:
        super().__init__(
            f"an earlier append to thread {thread_id!r} was not stored "
            f"(log ends at seq {last}, this append starts at {first})"
        )


def read_items(
    conn: sqlite3.Connection, thread_id: str, after_seq: int, limit: int | None
) -> list[ItemRow]:
    """Items with ``seq > after_seq`` in seq order, at most ``limit`` (``None``: all).

    Sync; writer/reader thread only.
    """
    cur = conn.execute(
        "SELECT seq, created_at, kind, data FROM items "
        "WHERE thread_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        (thread_id, after_seq, -1 if limit is None else limit),
    )
    return [(int(s), int(c), str(k), str(d)) for s, c, k, d in cur]


def hide_items(conn: sqlite3.Connection, thread_id: str, to_seq: int, rewind_seq: int) -> None:
    """Take every item after ``to_seq`` up to the rewind at ``rewind_seq`` (itself
    included: a rewind is never in the context) out of the context. Sync; writer only."""
    conn.execute(
        "UPDATE items SET hidden = 1 WHERE thread_id = ? AND seq > ? AND seq <= ? AND hidden = 0",
        (thread_id, to_seq, rewind_seq),
    )


def insert_hidden(conn: sqlite3.Connection, thread_id: str, rows: Sequence[ItemRow]) -> None:
    """Mark ``rows`` (just appended: a fork's ``fork`` item) as out of the context."""
    conn.executemany(
        "UPDATE items SET hidden = 1 WHERE thread_id = ? AND seq = ?",
        [(thread_id, row[0]) for row in rows],
    )


def read_context(conn: sqlite3.Connection, thread_id: str, limit: int | None) -> list[ItemRow]:
    """The items in the thread's context from its latest compaction in it on, in seq order
    (with ``limit``, the newest ``limit``). Sync; writer/reader thread only.

    Two index walks: the compactions' partial index for where the context starts, then
    ``(thread_id, seq)`` from there, skipping hidden items.
    """
    (start,) = conn.execute(
        "SELECT coalesce(max(seq), 0) FROM items INDEXED BY items_compactions "
        "WHERE thread_id = ? AND kind = 'compaction' AND hidden = 0",
        (thread_id,),
    ).fetchone()
    if limit is None:
        cur = conn.execute(
            "SELECT seq, created_at, kind, data FROM items "
            "WHERE thread_id = ? AND seq >= ? AND hidden = 0 ORDER BY seq",
            (thread_id, start),
        )
        return [(int(s), int(c), str(k), str(d)) for s, c, k, d in cur]
    cur = conn.execute(
        "SELECT seq, created_at, kind, data FROM items "
        "WHERE thread_id = ? AND seq >= ? AND hidden = 0 ORDER BY seq DESC LIMIT ?",
        (thread_id, start, limit),
    )
    return [(int(s), int(c), str(k), str(d)) for s, c, k, d in reversed(cur.fetchall())]


# --------------------------------------------------------------------------- misc


def cursor_secret(conn: sqlite3.Connection) -> bytes:
    """The store's random 32-byte secret for signing listing cursors.

    Sync; writer/reader thread only.
    """
    row = conn.execute("SELECT value FROM store_info WHERE key = 'cursor_secret'").fetchone()
    if row is None or not isinstance(row[0], bytes):
        raise StoreFormatError(f"{_describe(conn)} has no cursor secret: the file is damaged")
    return row[0]


def checkpoint(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """Run a passive WAL checkpoint (never waits for the writer or readers).

    Returns ``(busy, wal_frames, checkpointed_frames)`` as SQLite reports them. Sync; the
    checkpointer's connection (or any write-capable one).
    """
    row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(row[0]), int(row[1]), int(row[2])


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is an SQLite error worth retrying: busy/locked, I/O error, disk full."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and (code & 0xFF) in _TRANSIENT_CODES:
        return True
    message = str(exc).lower()
    return any(m in message for m in _TRANSIENT_MESSAGES)


# --------------------------------------------------------------------------- maintenance


def store_summary(conn: sqlite3.Connection) -> tuple[int, int, int, int]:
    """``(threads, log items, lagging threads, schema version)`` in one snapshot (a scan of
    the thread rows). Sync; writer/reader thread only."""
    threads, items, lagging = conn.execute(
        "SELECT count(*), coalesce(sum(last_seq), 0), coalesce(sum(seq < last_seq), 0) FROM threads"
    ).fetchone()
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    return int(threads), int(items), int(lagging), int(version)


def integrity_check(conn: sqlite3.Connection, limit: int = 100) -> list[str]:
    """SQLite's ``PRAGMA integrity_check`` (at most ``limit`` problems); an empty list when
    the file is sound. Sync; writer/reader thread only; reads the whole file."""
    rows = [str(row[0]) for row in conn.execute(f"PRAGMA integrity_check({int(limit)})")]
    return [] if rows == ["ok"] else rows


def thread_ids(conn: sqlite3.Connection) -> list[str]:
    """Every thread's id in id order. Sync; writer/reader thread only (a scan)."""
    return [str(row[0]) for row in conn.execute("SELECT id FROM threads ORDER BY id")]


def hidden_seqs(conn: sqlite3.Connection, thread_id: str) -> frozenset[int]:
    """The seqs of the thread's items marked out of the context. Sync; writer/reader."""
    cur = conn.execute("SELECT seq FROM items WHERE thread_id = ? AND hidden = 1", (thread_id,))
    return frozenset(int(row[0]) for row in cur)


def set_hidden(conn: sqlite3.Connection, thread_id: str, hidden: frozenset[int]) -> None:
    """Mark exactly ``hidden`` (seqs) of the thread's items as out of the context. Sync;
    writer thread only."""
    conn.execute("UPDATE items SET hidden = 0 WHERE thread_id = ? AND hidden = 1", (thread_id,))
    conn.executemany(
        "UPDATE items SET hidden = 1 WHERE thread_id = ? AND seq = ?",
        [(thread_id, seq) for seq in sorted(hidden)],
    )


def replace_projection(conn: sqlite3.Connection, row: Mapping[str, object]) -> bool:
    """Overwrite every projected column of the thread's row (and ``archived_at`` and
    ``change``) with ``row``'s; return whether the thread exists. Sync; writer thread only."""
    columns = (*PROJECTED_COLUMNS, "archived_at", "change")
    sets = ", ".join(f"{c} = :{c}" for c in columns)
    params = {c: row[c] for c in columns}
    params["id"] = row["id"]
    return conn.execute(f"UPDATE threads SET {sets} WHERE id = :id", params).rowcount > 0


def backup_to(conn: sqlite3.Connection, dest: str) -> None:
    """Copy the database ``conn`` reads into the new file ``dest`` in one step (SQLite's
    online backup: one consistent snapshot, taken while the writer goes on), as a
    self-contained rollback-journal file that opens as a store. Sync; a reader thread.

    Raises :class:`FileExistsError` if ``dest`` exists (nothing is overwritten); a failed
    copy leaves no file behind.
    """
    fd = os.open(dest, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    os.close(fd)
    try:
        target = sqlite3.connect(dest, isolation_level=None)
        try:
            conn.backup(target)
            target.execute("PRAGMA journal_mode = DELETE")
        finally:
            target.close()
    except BaseException:
        for leftover in (dest, dest + "-journal", dest + "-wal", dest + "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
        raise
