"""The PostgreSQL storage layer: connections, schema and every SQL statement the engine runs.

Plain synchronous functions taking a ``psycopg.Connection`` first, called from the writer's
OS thread or a reader thread only, never on the trio thread. No function here begins or
commits a transaction except :func:`ensure_schema` (which owns its own): the writer groups
statements into its group-commit transaction, readers run single statements in autocommit
mode (each sees one snapshot).

Results are read with ``fetchone`` (never ``rowcount``, which pipeline mode fills in only
once the pipeline syncs): the writer runs jobs in pipeline mode.

Values cross this interface as in the SQLite engine: timestamps are integer microseconds,
``extra`` and item ``data`` are JSON text (kept verbatim in ``text`` columns, not ``jsonb``,
so a fork copies the very JSON the log holds and ``\\u0000`` escapes survive), metadata rows
are dicts keyed by :data:`THREAD_COLUMNS`.

PostgreSQL ``text`` cannot hold NUL characters, which JSON text never contains but a
thread's title, goal, preview or last message may (they are decoded item text). Those four
columns are stored through :func:`escape_text` (a reversible escape that leaves text
without NUL or U+FFFF unchanged), and searched with the needle escaped the same way.

Every table carries the ``threadstore_`` prefix, so a store can share a database (or a
schema, chosen with the URL's ``options=-csearch_path=...``) with an application's tables.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeAlias

import psycopg
from psycopg import sql as pgsql

import workers

from .._errors import (
    StoreFormatError,
    StoreUnavailableError,
    ThreadNotFoundError,
)
from ..sqlite._rows import ORDER_COLUMNS, PROJECTED_COLUMNS, THREAD_COLUMNS
from ._config import SYNCHRONOUS_COMMIT, Durability
from ._url import describe, redact

__all__ = [
    "ORDER_COLUMNS",
    "PROJECTED_COLUMNS",
    "SCHEMA_VERSION",
    "THREAD_COLUMNS",
    "ItemRow",
    "SeqGapError",
    "append_items",
    "allocate",
    "ask_owner",
    "disown",
    "is_missing",
    "lock_threads",
    "row_of",
    "stamp",
    "take_orphans",
    "thread_head",
    "try_own",
    "changed_columns",
    "changes_since",
    "check_schema",
    "connect",
    "cursor_secret",
    "delete_thread",
    "escape_text",
    "ensure_schema",
    "feed_floor",
    "hidden_seqs",
    "insert_tombstone",
    "integrity_check",
    "replace_projection",
    "set_hidden",
    "store_summary",
    "thread_ids",
    "last_change",
    "prune_tombstones",
    "hide_items",
    "insert_hidden",
    "insert_thread",
    "is_transient",
    "list_query",
    "list_threads",
    "read_context",
    "read_items",
    "read_items_checked",
    "read_projection_row",
    "set_archived",
    "transaction_status",
    "thread_last_seq",
    "unescape_row",
    "update_projection",
]

_log = workers.get_logger(__name__)

ItemRow: TypeAlias = tuple[int, int, str, str]
"""One log item as stored: ``(seq, created_at_us, kind, data_json)``."""

SCHEMA_VERSION: Final = 2
"""The schema version this code writes (``threadstore_info.schema_version``)."""

#: The sessions' ``application_name``: which process on which host (``pg_stat_activity``
#: shows it).
APPLICATION_NAME: Final = f"threadstore {socket.gethostname()}:{os.getpid()}"[:63]

#: What ``threadstore_info.format`` holds in a threadstore database.
FORMAT: Final = "threadstore"

#: Held (transaction-scoped) while the schema is checked or created: of several processes
#: opening a new database at once, one creates the schema and the others find it done.
_SCHEMA_LOCK: Final = 0x5453_5452_0000_0001


_INSERT_COLUMNS: Final = THREAD_COLUMNS[:-1]  # every column but last_seq
#: The escaped text columns (see the module docstring), by position in THREAD_COLUMNS.
_TEXT_COLUMNS: Final = ("title", "goal", "preview", "last_message")
_TEXT_POSITIONS: Final = tuple(THREAD_COLUMNS.index(c) for c in _TEXT_COLUMNS)


_SELECT_THREAD: Final = f"SELECT {', '.join(THREAD_COLUMNS)} FROM threadstore_threads"

_ORDER_INDEXES: Final = tuple(
    stmt
    for col in ("updated_at", "created_at", "recency_at")
    for stmt in (
        f"CREATE INDEX threadstore_threads_listed_{col} "
        f"ON threadstore_threads (archived, listed, {col}, id)",
        f"CREATE INDEX threadstore_threads_all_{col} ON threadstore_threads (archived, {col}, id)",
        f"CREATE INDEX threadstore_threads_ns_listed_{col} "
        f"ON threadstore_threads (namespace, archived, listed, {col}, id)",
        f"CREATE INDEX threadstore_threads_ns_all_{col} "
        f"ON threadstore_threads (namespace, archived, {col}, id)",
    )
)

#: ``MIGRATIONS[v]`` takes a database from version ``v - 1`` to ``v``, inside one
#: transaction with the version bump (PostgreSQL's DDL is transactional).
MIGRATIONS: Final[Mapping[int, Sequence[str]]] = {
    1: (
        """
        CREATE TABLE threadstore_threads (
            id text COLLATE "C" PRIMARY KEY,
            created_at bigint NOT NULL,
            updated_at bigint NOT NULL,
            recency_at bigint NOT NULL,
            title text,
            goal text,
            preview text,
            last_message text,
            item_count bigint,
            turn_count bigint,
            status text,
            input_tokens bigint,
            output_tokens bigint,
            archived_at bigint,
            extra text NOT NULL DEFAULT '{}',
            seq bigint NOT NULL DEFAULT 0,
            namespace text COLLATE "C" NOT NULL DEFAULT '',
            forked_from text,
            forked_at bigint,
            change bigint NOT NULL DEFAULT 0,
            has_user_message smallint NOT NULL DEFAULT 0,
            last_seq bigint NOT NULL DEFAULT 0,
            archived boolean GENERATED ALWAYS AS (archived_at IS NOT NULL) STORED,
            listed boolean GENERATED ALWAYS AS (preview IS NOT NULL OR title IS NOT NULL) STORED
        ) WITH (fillfactor = 70)
        """,
        *_ORDER_INDEXES,
        # The change feed: each thread's latest listed change (store-wide, commit order),
        # deleted threads' tombstones, and the newest change pruned from them.
        "CREATE INDEX threadstore_threads_change ON threadstore_threads (change)",
        "CREATE INDEX threadstore_threads_ns_change ON threadstore_threads (namespace, change)",
        """
        CREATE TABLE threadstore_tombstones (
            id text COLLATE "C" PRIMARY KEY,
            namespace text COLLATE "C" NOT NULL,
            change bigint NOT NULL,
            deleted_at bigint NOT NULL
        )
        """,
        "CREATE INDEX threadstore_tombstones_change ON threadstore_tombstones (change)",
        "CREATE INDEX threadstore_tombstones_deleted_at ON threadstore_tombstones (deleted_at)",
        "INSERT INTO threadstore_info (key, value) VALUES ('feed_floor', '0')",
        """
        CREATE TABLE threadstore_items (
            thread_id text COLLATE "C" NOT NULL,
            seq bigint NOT NULL,
            created_at bigint NOT NULL,
            kind text NOT NULL,
            data text NOT NULL,
            hidden boolean NOT NULL DEFAULT false,
            PRIMARY KEY (thread_id, seq)
        )
        """,
        "CREATE INDEX threadstore_items_compactions ON threadstore_items (thread_id, seq) "
        "WHERE kind = 'compaction'",
        # A group commit's log appends in one statement: advance every thread's last_seq
        # (each must end where its append starts: seqs stay dense) and insert the items.
        """
        CREATE FUNCTION threadstore_append(
            ids text[], expected bigint[], lasts bigint[],
            item_threads text[], seqs bigint[], ats bigint[], kinds text[], datas text[]
        ) RETURNS void LANGUAGE plpgsql AS $$
        DECLARE
            n integer;
        BEGIN
            UPDATE threadstore_threads AS t SET last_seq = v.last
            FROM unnest(ids, expected, lasts) AS v(id, expected, last)
            WHERE t.id = v.id AND t.last_seq = v.expected;
            GET DIAGNOSTICS n = ROW_COUNT;
            IF n <> cardinality(ids) THEN
                RAISE EXCEPTION 'an append does not follow its thread''s log'
                    USING ERRCODE = 'TSGAP';
            END IF;
            INSERT INTO threadstore_items (thread_id, seq, created_at, kind, data)
            SELECT * FROM unnest(item_threads, seqs, ats, kinds, datas);
        END
        $$
        """,
    ),
    # Several writing processes (docs/postgres.md): seqs allocated in the database inside
    # the group commit, change numbers from a clock row updated last in each transaction.
    2: (
        "DROP FUNCTION threadstore_append(text[], bigint[], bigint[], text[], bigint[], "
        "bigint[], text[], text[])",
        """
        CREATE TABLE threadstore_clock (
            one boolean PRIMARY KEY DEFAULT true CHECK (one),
            change bigint NOT NULL
        )
        """,
        """
        INSERT INTO threadstore_clock (change) SELECT greatest(
            coalesce((SELECT max(change) FROM threadstore_threads), 0),
            coalesce((SELECT max(change) FROM threadstore_tombstones), 0),
            coalesce((SELECT value::bigint FROM threadstore_info WHERE key = 'feed_floor'), 0))
        """,
        # A group commit's log appends in one statement: each thread's last_seq advances by
        # its count (the row lock serializes appenders of a thread across processes) and
        # its items get the seqs after the old end, in order. Returns (id, new last_seq).
        """
        CREATE FUNCTION threadstore_allocate(
            ids text[], counts bigint[],
            item_threads text[], ats bigint[], kinds text[], datas text[]
        ) RETURNS TABLE (id text, last bigint) LANGUAGE plpgsql AS $$
        DECLARE
            n integer;
        BEGIN
            RETURN QUERY
            WITH moved AS (
                UPDATE threadstore_threads AS t SET last_seq = t.last_seq + v.n
                FROM unnest(ids, counts) AS v(id, n)
                WHERE t.id = v.id
                RETURNING t.id, t.last_seq AS last, v.n
            ), inserted AS (
                INSERT INTO threadstore_items (thread_id, seq, created_at, kind, data)
                SELECT v.tid,
                    m.last - m.n + row_number() OVER (PARTITION BY v.tid ORDER BY v.o),
                    v.at, v.kind, v.data
                FROM unnest(item_threads, ats, kinds, datas)
                    WITH ORDINALITY AS v(tid, at, kind, data, o)
                JOIN moved m ON m.id = v.tid
            )
            SELECT m.id::text, m.last FROM moved m;
            GET DIAGNOSTICS n = ROW_COUNT;
            IF n <> cardinality(ids) THEN
                RAISE EXCEPTION 'a thread of this append does not exist'
                    USING ERRCODE = 'TSNOT';
            END IF;
        END
        $$
        """,
        # The end of every transaction that changed listed state: the clock advances by
        # the changes the transaction made (each marked ``change = -k`` meanwhile, k from
        # 1), which become clock + k. The clock row's lock is held from here to the commit:
        # change numbers are in commit order. NOTIFY wakes other processes' subscribers.
        """
        CREATE FUNCTION threadstore_stamp(n bigint, ids text[], tombs text[])
        RETURNS bigint LANGUAGE plpgsql AS $$
        DECLARE
            base bigint;
        BEGIN
            UPDATE threadstore_clock SET change = change + n RETURNING change - n INTO base;
            UPDATE threadstore_threads SET change = base - change
                WHERE id = ANY(ids) AND change < 0;
            UPDATE threadstore_tombstones SET change = base - change
                WHERE id = ANY(tombs) AND change < 0;
            PERFORM pg_notify('threadstore_changes', (base + n)::text);
            RETURN base;
        END
        $$
        """,
    ),
}

#: The SQLSTATE ``threadstore_allocate`` raises for a thread that does not exist.
_MISSING_STATE: Final = "TSNOT"

# SQLSTATE classes and codes worth retrying: connection trouble, serialization failures
# and deadlocks, an operator's cancel or shutdown, resources running out.
_TRANSIENT_CLASSES: Final = ("08", "40", "53", "57")
_TRANSIENT_CODES: Final = frozenset({"55P03"})  # lock_not_available


# --------------------------------------------------------------------------- connections


def connect(
    url: str, *, durability: Durability, read_only: bool = False, connect_timeout: int = 10
) -> psycopg.Connection[Any]:
    """Open a connection. Sync; writer/reader thread only.

    The writer's (``read_only=False``) runs transactions the writer commits itself, with
    ``synchronous_commit`` set for ``durability``; a reader's is in autocommit mode and
    read-only. Raises :class:`StoreUnavailableError` naming host and database (never the
    password) when the server cannot be reached, :class:`ValueError` for a malformed URL.
    """
    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise ValueError(f"not a valid PostgreSQL URL: {redact(url)!r} ({exc})") from None
    try:
        conn = psycopg.connect(
            url,
            autocommit=read_only,
            application_name=APPLICATION_NAME,
            # (the URL's own connect_timeout, if it has one, wins)
            connect_timeout=params.get("connect_timeout", connect_timeout),
        )
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        password = str(params.get("password") or "")
        if password:
            reason = reason.replace(password, "***")
        raise StoreUnavailableError(
            f"cannot connect to PostgreSQL at {describe(params)}: {reason}"
        ) from None
    try:
        if read_only:
            conn.execute("SET default_transaction_read_only = on")
        else:
            conn.execute(
                pgsql.SQL("SET synchronous_commit = {}").format(
                    pgsql.Literal(SYNCHRONOUS_COMMIT[durability])
                )
            )
            conn.commit()
    except BaseException:
        conn.close()
        raise
    return conn


def where(conn: psycopg.Connection[Any]) -> str:
    """``database 'x' on host 'y'`` for messages about this connection's database."""
    info = conn.info
    return f"database {info.dbname!r} on host {info.host!r}"


# --------------------------------------------------------------------------- ownership

#: The seed of the 64-bit hash that keys a thread's ownership lock (a session advisory lock:
#: the process whose session holds it projects the thread; the server releases it when the
#: session ends, so a dead process's threads are free to take over).
_OWNER_SEED: Final = 0x54535452


def try_own(conn: psycopg.Connection[Any], thread_ids: Sequence[str]) -> list[str]:
    """Take the ownership locks of ``thread_ids`` that no other session holds; the ids
    taken. The caller must not ask again for an id its session holds (the locks count)."""
    cur = conn.execute(
        "SELECT id FROM unnest(%s::text[]) AS v(id) "
        "WHERE pg_try_advisory_lock(hashtextextended(id, %s))",
        (list(thread_ids), _OWNER_SEED),
    )
    return [str(row[0]) for row in cur]


def disown(conn: psycopg.Connection[Any], thread_ids: Sequence[str]) -> None:
    """Release this session's ownership locks of ``thread_ids``."""
    conn.execute(
        "SELECT pg_advisory_unlock(hashtextextended(id, %s)) FROM unnest(%s::text[]) AS v(id)",
        (_OWNER_SEED, list(thread_ids)),
    ).fetchall()


def take_orphans(
    conn: psycopg.Connection[Any], owned: Sequence[str], limit: int
) -> list[tuple[str, int, int, int, str]]:
    """Threads whose metadata lags their log and that this session owns (``owned``) or no
    session owns (taken now): their ``(id, last_seq, seq, has_user_message, namespace)``,
    at most ``limit``. A scan of the thread rows (``last_seq`` is in no index: appends
    stay HOT). An owned thread is never locked again (the locks count)."""
    cur = conn.execute(
        "SELECT id, last_seq, seq, has_user_message, namespace FROM ("
        "  SELECT id, last_seq, seq, has_user_message, namespace FROM threadstore_threads"
        "  WHERE seq < last_seq ORDER BY id OFFSET 0) AS lagging "
        "WHERE CASE WHEN id = ANY(%s::text[]) THEN true "
        "ELSE pg_try_advisory_lock(hashtextextended(id, %s)) END LIMIT %s",
        (list(owned), _OWNER_SEED, limit),
    )
    return [(str(i), int(ls), int(s), int(h), str(n)) for i, ls, s, h, n in cur]


def ask_owner(conn: psycopg.Connection[Any], thread_id: str) -> None:
    """Ask the process that owns the thread to project it (a NOTIFY: its listener hears)."""
    conn.execute("SELECT pg_notify('threadstore_project', %s)", (thread_id,)).fetchall()


def thread_head(
    conn: psycopg.Connection[Any], thread_id: str
) -> tuple[str, int, int, int, str] | None:
    """``(id, last_seq, seq, has_user_message, namespace)`` of the thread, or None."""
    row = conn.execute(
        "SELECT id, last_seq, seq, has_user_message, namespace FROM threadstore_threads "
        "WHERE id = %s",
        (thread_id,),
    ).fetchone()
    if row is None:
        return None
    return str(row[0]), int(row[1]), int(row[2]), int(row[3]), str(row[4])


def transaction_status(
    conn: psycopg.Connection[Any], xid: str, patience: float = 5.0
) -> str | None:
    """What became of transaction ``xid``: ``committed``, ``aborted``, or None (unknown);
    while its session is still ending on the server (``in progress``) asks again for up to
    ``patience`` seconds. Autocommit connection."""
    deadline = time.monotonic() + patience
    delay = 0.005
    while True:
        row = conn.execute("SELECT pg_xact_status(%s::xid8)", (xid,)).fetchone()
        status = None if row is None or row[0] is None else str(row[0])
        if status != "in progress" or time.monotonic() >= deadline:
            return status
        time.sleep(delay)  # (the writer thread waits for the server to end the old session)
        delay = min(delay * 2, 0.1)


# --------------------------------------------------------------------------- schema


def _relation_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])


def _read_info(conn: psycopg.Connection[Any]) -> dict[str, str] | None:
    """``threadstore_info`` as a dict, None if there is no such table."""
    if not _relation_exists(conn, "threadstore_info"):
        return None
    return {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM threadstore_info")}


def _check_info(place: str, info: dict[str, str] | None, conn: psycopg.Connection[Any]) -> int:
    """The schema version found (0: none yet). Raises StoreFormatError for a foreign,
    damaged or newer schema."""
    if info is None:
        for table in ("threadstore_threads", "threadstore_items"):
            if _relation_exists(conn, table):
                raise StoreFormatError(
                    f"{place} is not a threadstore database: it has a table {table!r} "
                    "but no threadstore_info"
                )
        return 0
    if info.get("format") != FORMAT:
        raise StoreFormatError(
            f"{place} is not a threadstore database (threadstore_info.format is "
            f"{info.get('format')!r}, expected {FORMAT!r})"
        )
    version_text = info.get("schema_version", "")
    if not version_text.isdigit() or int(version_text) < 1:
        raise StoreFormatError(
            f"{place} is damaged: its schema version is {version_text!r} "
            f"(expected 1..{SCHEMA_VERSION})"
        )
    version = int(version_text)
    if version > SCHEMA_VERSION:
        raise StoreFormatError(
            f"{place} was created by a newer threadstore (schema {version} > "
            f"{SCHEMA_VERSION}); upgrade threadstore to open it"
        )
    return version


def ensure_schema(conn: psycopg.Connection[Any]) -> None:
    """Create or migrate the schema to :data:`SCHEMA_VERSION` in one transaction, under a
    transaction-scoped advisory lock (race-safe across processes). Sync; writer thread only.

    Raises :class:`StoreFormatError` for a database whose threadstore tables are foreign,
    damaged or newer.
    """
    place = where(conn)
    try:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        start = _check_info(place, _read_info(conn), conn)
        if start == 0:
            conn.execute(
                "CREATE TABLE threadstore_info (key text PRIMARY KEY, value text NOT NULL)"
            )
            conn.execute(
                "INSERT INTO threadstore_info (key, value) VALUES "
                "('format', %s), ('schema_version', '0'), ('cursor_secret', %s)",
                (FORMAT, secrets.token_hex(32)),
            )
        for version in range(start + 1, SCHEMA_VERSION + 1):
            for step in MIGRATIONS[version]:
                conn.execute(step)  # (constant SQL)
        if start < SCHEMA_VERSION:
            conn.execute(
                "UPDATE threadstore_info SET value = %s WHERE key = 'schema_version'",
                (str(SCHEMA_VERSION),),
            )
        conn.commit()
    except BaseException:
        if not conn.closed:
            conn.rollback()
        raise
    if start < SCHEMA_VERSION:
        _log.info("postgres.schema_migrated", from_version=start, to_version=SCHEMA_VERSION)


def check_schema(conn: psycopg.Connection[Any]) -> None:
    """Check, without writing, that the database holds the current schema (read-only
    opens). Raises :class:`StoreFormatError` as :func:`ensure_schema` does, and for a
    database with no schema yet or an older one."""
    place = where(conn)
    version = _check_info(place, _read_info(conn), conn)
    if version == 0:
        raise StoreFormatError(f"{place} has no threadstore schema yet")
    if version < SCHEMA_VERSION:
        raise StoreFormatError(
            f"{place} has schema {version} < {SCHEMA_VERSION}; open it for writing once "
            "to migrate it"
        )


def cursor_secret(conn: psycopg.Connection[Any]) -> bytes:
    """The store's random secret for signing listing cursors."""
    row = conn.execute("SELECT value FROM threadstore_info WHERE key = 'cursor_secret'").fetchone()
    try:
        return bytes.fromhex(str(row[0])) if row is not None else b""
    except ValueError:
        pass
    raise StoreFormatError(f"{where(conn)} has no valid cursor secret: it is damaged")


# --------------------------------------------------------------------------- text escape

_MARK: Final = "\uffff"
_ESCAPES: Final = re.compile("\uffff([01])")


def escape_text(text: str | None) -> str | None:
    """``text`` as stored in a metadata text column: NUL becomes U+FFFF ``0`` and U+FFFF
    itself U+FFFF ``1``; anything else (almost all text) is unchanged."""
    if text is None or ("\x00" not in text and _MARK not in text):
        return text
    return text.replace(_MARK, _MARK + "1").replace("\x00", _MARK + "0")


def _unescape(text: str) -> str:
    if _MARK not in text:
        return text
    return _ESCAPES.sub(lambda m: "\x00" if m.group(1) == "0" else _MARK, text)


def unescape_row(row: Sequence[Any]) -> tuple[Any, ...]:
    """A row in :data:`THREAD_COLUMNS` order with its escaped text columns decoded."""
    values = tuple(row)
    if not any(isinstance(values[i], str) and _MARK in values[i] for i in _TEXT_POSITIONS):
        return values
    out = list(values)
    for i in _TEXT_POSITIONS:
        if isinstance(out[i], str):
            out[i] = _unescape(out[i])
    return tuple(out)


def _escape_row(row: Mapping[str, object]) -> dict[str, object]:
    out = dict(row)
    for column in _TEXT_COLUMNS:
        value = out.get(column)
        if isinstance(value, str):
            out[column] = escape_text(value)
    return out


# --------------------------------------------------------------------------- threads


def _row_dict(row: Sequence[object]) -> dict[str, object]:
    return dict(zip(THREAD_COLUMNS, unescape_row(row), strict=True))


_INSERT_THREAD: Final = (
    f"INSERT INTO threadstore_threads ({', '.join(_INSERT_COLUMNS)}) "
    f"VALUES ({', '.join('%(' + c + ')s' for c in _INSERT_COLUMNS)}) "
    "ON CONFLICT (id) DO NOTHING RETURNING 1"
)


def insert_thread(conn: psycopg.Connection[Any], row: Mapping[str, object]) -> bool:
    """Insert a new metadata row (every column but ``last_seq``); False if the id is taken.
    Sync; writer thread only."""
    return conn.execute(_INSERT_THREAD, _escape_row(row)).fetchone() is not None


def thread_last_seq(conn: psycopg.Connection[Any], thread_id: str) -> int | None:
    """The seq of the thread's last log item (0: none), None if there is no such thread."""
    row = conn.execute(
        "SELECT last_seq FROM threadstore_threads WHERE id = %s", (thread_id,)
    ).fetchone()
    return None if row is None else int(row[0])


def read_projection_row(conn: psycopg.Connection[Any], thread_id: str) -> dict[str, object] | None:
    """The thread's row as a dict keyed by :data:`THREAD_COLUMNS`, or None."""
    row = conn.execute(_SELECT_THREAD + " WHERE id = %s", (thread_id,)).fetchone()
    return None if row is None else _row_dict(row)


def changed_columns(old: Mapping[str, object], new: Mapping[str, object]) -> list[str]:
    """The projected columns whose values differ between two rows of one thread."""
    return [c for c in PROJECTED_COLUMNS if new[c] != old[c]]


def update_projection(
    conn: psycopg.Connection[Any],
    old: Mapping[str, object],
    new: Mapping[str, object],
    *,
    exists: bool = False,
) -> bool:
    """Write the projected columns of ``new`` that differ from ``old`` (the thread's current
    row); whether the thread exists. Sync; writer thread only.

    With ``exists`` (the caller knows the row is there) the result is not read: in pipeline
    mode the statement then costs no round trip of its own.
    """
    changed = changed_columns(old, new)
    if new.get("change", 0) != old.get("change", 0):
        changed.append("change")
    if not changed:
        return exists or thread_last_seq(conn, str(new["id"])) is not None
    params = _escape_row({c: new[c] for c in changed})
    params["id"] = new["id"]
    sets = ", ".join(f"{c} = %({c})s" for c in changed)
    query = f"UPDATE threadstore_threads SET {sets} WHERE id = %(id)s"
    if exists:
        conn.execute(query, params)
        return True
    return conn.execute(query + " RETURNING 1", params).fetchone() is not None


def set_archived(
    conn: psycopg.Connection[Any], thread_id: str, archived_at_us: int | None, change: int = 0
) -> dict[str, object] | None:
    """Set (or with None clear) ``archived_at``, stamped with ``change``; the updated row,
    or None if no thread."""
    row = conn.execute(
        f"UPDATE threadstore_threads SET archived_at = %s, change = %s WHERE id = %s "
        f"RETURNING {', '.join(THREAD_COLUMNS)}",
        (archived_at_us, change, thread_id),
    ).fetchone()
    return None if row is None else _row_dict(row)


def delete_thread(conn: psycopg.Connection[Any], thread_id: str) -> dict[str, object] | None:
    """Delete the thread's items and row; the row as it was (None if it was gone)."""
    row = conn.execute(
        f"DELETE FROM threadstore_threads WHERE id = %s RETURNING {', '.join(THREAD_COLUMNS)}",
        (thread_id,),
    ).fetchone()
    conn.execute("DELETE FROM threadstore_items WHERE thread_id = %s", (thread_id,))
    return None if row is None else _row_dict(row)


# --------------------------------------------------------------------------- change index


def insert_tombstone(
    conn: psycopg.Connection[Any], thread_id: str, namespace: str, change: int, deleted_us: int
) -> None:
    """Record the deletion of a thread (replacing an older tombstone of the same id)."""
    conn.execute(
        "INSERT INTO threadstore_tombstones (id, namespace, change, deleted_at) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET namespace = "
        "excluded.namespace, change = excluded.change, deleted_at = excluded.deleted_at",
        (thread_id, namespace, change, deleted_us),
    )


def prune_tombstones(conn: psycopg.Connection[Any], before_us: int) -> None:
    """Delete the tombstones of deletions before ``before_us`` and raise the feed floor to
    the newest change among them, in one statement. Sync; writer thread only."""
    conn.execute(
        "WITH pruned AS (DELETE FROM threadstore_tombstones WHERE deleted_at < %s "
        "RETURNING change) UPDATE threadstore_info SET value = greatest(value::bigint, "
        "(SELECT max(change) FROM pruned))::text "
        "WHERE key = 'feed_floor' AND EXISTS (SELECT 1 FROM pruned)",
        (before_us,),
    )


def feed_floor(conn: psycopg.Connection[Any]) -> int:
    """The newest change whose tombstone was pruned (0: none)."""
    row = conn.execute("SELECT value FROM threadstore_info WHERE key = 'feed_floor'").fetchone()
    return 0 if row is None else int(row[0])


def last_change(conn: psycopg.Connection[Any]) -> int:
    """The newest change number the store has given (its clock)."""
    row = conn.execute("SELECT change FROM threadstore_clock").fetchone()
    return 0 if row is None else int(row[0])


def changes_since(
    conn: psycopg.Connection[Any], after: int, limit: int, namespace: str | None
) -> tuple[list[tuple[Any, ...]], list[tuple[str, str, int, int]]]:
    """Up to ``limit`` threads (rows in :data:`THREAD_COLUMNS` order, unescaped) and up to
    ``limit`` tombstones ``(id, namespace, change, deleted_at)`` with a change after
    ``after``, each in change order (the caller merges them). Index walks."""
    where = "change > %s"
    params: tuple[object, ...] = (after,)
    if namespace is not None:
        where, params = "namespace = %s AND change > %s", (namespace, after)
    threads = conn.execute(
        f"{_SELECT_THREAD} WHERE {where} ORDER BY change LIMIT %s", (*params, limit)
    ).fetchall()
    tombstones = conn.execute(
        f"SELECT id, namespace, change, deleted_at FROM threadstore_tombstones WHERE {where} "
        "ORDER BY change LIMIT %s",
        (*params, limit),
    ).fetchall()
    return (
        [unescape_row(row) for row in threads],
        [(str(i), str(n), int(c), int(d)) for i, n, c, d in tombstones],
    )


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


_UPPER: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER: Final = "abcdefghijklmnopqrstuvwxyz"
_ASCII_LOWER: Final = str.maketrans(_UPPER, _LOWER)


def list_query(
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
    """The SQL and parameters :func:`list_threads` runs (separate so tests can EXPLAIN it).

    Each order, with and without a namespace and ``include_empty``, walks one of the
    listing indexes (equality on their leading columns, the keyset as a row comparison on
    the next two) and stops after ``limit`` rows: no sort."""
    if order_by not in ORDER_COLUMNS:
        raise ValueError(f"order_by must be one of {sorted(ORDER_COLUMNS)}, not {order_by!r}")
    direction = "DESC" if descending else "ASC"
    where = ["archived = %s"]
    params: list[object] = [archived]
    if namespace is not None:
        where.insert(0, "namespace = %s")
        params.insert(0, namespace)
    if not include_empty:
        where.append("listed")
    if after is not None:
        where.append(f"({order_by}, id) {'<' if descending else '>'} (%s, %s)")
        params.extend(after)
    if search:
        needle = escape_text(search)
        assert needle is not None
        pattern = f"%{_escape_like(needle.translate(_ASCII_LOWER))}%"
        folded = [f"translate({c}, '{_UPPER}', '{_LOWER}') LIKE %s" for c in _SEARCHED]
        where.append(f"({' OR '.join(folded)})")
        params.extend([pattern] * len(_SEARCHED))
    params.append(limit)
    query = (
        f"{_SELECT_THREAD} WHERE {' AND '.join(where)} "
        f"ORDER BY {order_by} {direction}, id {direction} LIMIT %s"
    )
    return query, params


def list_threads(
    conn: psycopg.Connection[Any],
    *,
    order_by: str,
    descending: bool,
    archived: bool,
    search: str | None,
    include_empty: bool,
    after: tuple[int, str] | None,
    limit: int,
    namespace: str | None = None,
) -> list[tuple[Any, ...]]:
    """One page of threads in ``(order_by, id)`` order (keyset pagination after
    ``after``), as value tuples in :data:`THREAD_COLUMNS` order. Sync; reader thread only.

    ``search`` keeps rows whose title, preview or goal contains it, case-insensitively for
    ASCII letters only (as the SQLite engine's ``LIKE``); ``%``, ``_`` and ``\\`` are literal.
    A search filters while walking the index, so it may read more than ``limit`` rows.
    """
    query, params = list_query(
        order_by=order_by,
        descending=descending,
        archived=archived,
        search=search,
        include_empty=include_empty,
        after=after,
        limit=limit,
        namespace=namespace,
    )
    return [unescape_row(row) for row in conn.execute(query, params)]


_SEARCHED: Final = ("title", "preview", "goal")


# --------------------------------------------------------------------------- items


class SeqGapError(Exception):
    """An append would leave a gap: an earlier append to the thread was not stored."""

    def __init__(self, thread_id: str, last: int, first: int) -> None:
        super().__init__(
            f"an earlier append to thread {thread_id!r} was not stored "
            f"(log ends at seq {last}, this append starts at {first})"
        )


def append_items(
    conn: psycopg.Connection[Any],
    thread_id: str,
    rows: Sequence[ItemRow],
    *,
    expected_last: int,
) -> None:
    """Insert log items and advance ``last_seq``; the log must end at ``expected_last``
    (else :class:`SeqGapError`). Raises :class:`ThreadNotFoundError` if there is no such
    thread. Sync; writer thread only."""
    if not rows:
        return
    cur = conn.execute(
        "UPDATE threadstore_threads SET last_seq = %s WHERE id = %s AND last_seq = %s RETURNING 1",
        (rows[-1][0], thread_id, expected_last),
    )
    if cur.fetchone() is None:
        last = thread_last_seq(conn, thread_id)
        if last is None:
            raise ThreadNotFoundError(thread_id)
        raise SeqGapError(thread_id, last, rows[0][0])
    _insert_items(conn, [thread_id] * len(rows), rows)


def _insert_items(
    conn: psycopg.Connection[Any], threads: list[str], rows: Sequence[ItemRow]
) -> None:
    conn.execute(
        "INSERT INTO threadstore_items (thread_id, seq, created_at, kind, data) "
        "SELECT * FROM unnest(%b::text[], %b::bigint[], %b::bigint[], %b::text[], %b::text[])",
        (
            threads,
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2] for r in rows],
            [r[3] for r in rows],
        ),
    )


def allocate(
    conn: psycopg.Connection[Any], runs: Sequence[tuple[str, Sequence[ItemRow]]]
) -> psycopg.Cursor[Any]:
    """Several appends in one statement, their seqs allocated in the database: each
    thread's items follow its log's end in the order of ``runs`` (the rows' own seqs are
    ignored). The cursor yields ``(thread_id, new last_seq)`` per thread; read it after the
    commit, in pipeline mode. A thread that does not exist fails the statement
    (:func:`is_missing`). The arrays go in binary (``%b``): item JSON is sent as is.
    """
    counts: dict[str, int] = {}
    threads: list[str] = []
    rows: list[ItemRow] = []
    for thread_id, run in runs:
        counts[thread_id] = counts.get(thread_id, 0) + len(run)
        threads.extend([thread_id] * len(run))
        rows.extend(run)
    return conn.execute(
        "SELECT * FROM threadstore_allocate(%b::text[], %b::bigint[], %b::text[], "
        "%b::bigint[], %b::text[], %b::text[])",
        (
            list(counts),
            list(counts.values()),
            threads,
            [r[1] for r in rows],
            [r[2] for r in rows],
            [r[3] for r in rows],
        ),
    )


def is_missing(exc: BaseException) -> bool:
    """Whether ``exc`` is ``threadstore_allocate``'s refusal: a thread does not exist."""
    return isinstance(exc, psycopg.Error) and exc.sqlstate == _MISSING_STATE


def lock_threads(conn: psycopg.Connection[Any], thread_ids: Sequence[str]) -> psycopg.Cursor[Any]:
    """Lock the rows of ``thread_ids`` for this transaction, in id order (so that two
    processes' transactions never wait for each other in a cycle), and read them: the
    cursor yields rows in :data:`THREAD_COLUMNS` order (raw: see :func:`row_of`)."""
    return conn.execute(
        f"{_SELECT_THREAD} WHERE id = ANY(%s::text[]) ORDER BY id FOR UPDATE",
        (list(thread_ids),),
    )


def row_of(raw: Sequence[object]) -> dict[str, object]:
    """A row read by :func:`lock_threads` as a dict keyed by :data:`THREAD_COLUMNS`."""
    return _row_dict(raw)


def stamp(
    conn: psycopg.Connection[Any], count: int, thread_ids: Sequence[str], tombs: Sequence[str]
) -> psycopg.Cursor[Any]:
    """The transaction's last statement before COMMIT: advance the clock by ``count`` and
    turn the provisional ``change = -k`` of ``thread_ids`` and ``tombs`` into clock + k.
    The cursor yields the clock before (read it after the commit)."""
    return conn.execute(
        "SELECT threadstore_stamp(%s, %s::text[], %s::text[])",
        (count, list(thread_ids), list(tombs)),
    )


def read_items(
    conn: psycopg.Connection[Any], thread_id: str, after_seq: int, limit: int | None
) -> list[ItemRow]:
    """Items with ``seq > after_seq`` in seq order, at most ``limit`` (None: all)."""
    cur = conn.execute(
        "SELECT seq, created_at, kind, data FROM threadstore_items "
        "WHERE thread_id = %s AND seq > %s ORDER BY seq LIMIT %s",
        (thread_id, after_seq, limit),
    )
    return [(int(s), int(c), str(k), str(d)) for s, c, k, d in cur]


def read_items_checked(
    conn: psycopg.Connection[Any], thread_id: str, after_seq: int, limit: int | None
) -> tuple[int | None, list[ItemRow]]:
    """``(last_seq, items)`` in one statement (one snapshot): None if no such thread."""
    cur = conn.execute(
        "SELECT t.last_seq, i.seq, i.created_at, i.kind, i.data FROM threadstore_threads t "
        "LEFT JOIN LATERAL (SELECT seq, created_at, kind, data FROM threadstore_items "
        "  WHERE thread_id = t.id AND seq > %s ORDER BY seq LIMIT %s) i ON true "
        "WHERE t.id = %s ORDER BY i.seq",
        (after_seq, limit, thread_id),
    )
    fetched = cur.fetchall()
    if not fetched:
        return None, []
    last = int(fetched[0][0])
    return last, [(int(s), int(c), str(k), str(d)) for _, s, c, k, d in fetched if s is not None]


def hide_items(conn: psycopg.Connection[Any], thread_id: str, to_seq: int, rewind_seq: int) -> None:
    """Take every item after ``to_seq`` up to the rewind at ``rewind_seq`` (itself
    included) out of the context."""
    conn.execute(
        "UPDATE threadstore_items SET hidden = true "
        "WHERE thread_id = %s AND seq > %s AND seq <= %s AND NOT hidden",
        (thread_id, to_seq, rewind_seq),
    )


def insert_hidden(conn: psycopg.Connection[Any], thread_id: str, rows: Sequence[ItemRow]) -> None:
    """Mark ``rows`` (just appended: a fork's ``fork`` item) as out of the context."""
    conn.execute(
        "UPDATE threadstore_items SET hidden = true WHERE thread_id = %s AND seq = ANY(%s)",
        (thread_id, [row[0] for row in rows]),
    )


def read_context(
    conn: psycopg.Connection[Any], thread_id: str, limit: int | None
) -> list[ItemRow] | None:
    """The thread's context from its latest compaction in it on, in seq order (the newest
    ``limit``); None if no such thread. One statement (one snapshot)."""
    cur = conn.execute(
        "WITH t AS (SELECT id FROM threadstore_threads WHERE id = %(id)s), "
        "start AS (SELECT coalesce(max(seq), 0) AS seq FROM threadstore_items "
        "  WHERE thread_id = %(id)s AND kind = 'compaction' AND NOT hidden), "
        "ctx AS (SELECT seq, created_at, kind, data FROM threadstore_items "
        "  WHERE thread_id = %(id)s AND seq >= (SELECT seq FROM start) AND NOT hidden "
        "  ORDER BY seq DESC LIMIT %(limit)s) "
        "SELECT 1, NULL::bigint, NULL::bigint, NULL, NULL FROM t "
        "UNION ALL SELECT 2, * FROM ctx WHERE EXISTS (SELECT 1 FROM t) ORDER BY 1, 2",
        {"id": thread_id, "limit": limit},
    )
    fetched = cur.fetchall()
    if not fetched:
        return None
    return [(int(s), int(c), str(k), str(d)) for _, s, c, k, d in fetched[1:]]


# --------------------------------------------------------------------------- errors


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a PostgreSQL error worth retrying: connection trouble,
    serialization failure or deadlock, an operator's cancel or shutdown, no resources."""
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return True
    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate or ""
    return state[:2] in _TRANSIENT_CLASSES or state in _TRANSIENT_CODES


# --------------------------------------------------------------------------- maintenance


def store_summary(conn: psycopg.Connection[Any]) -> tuple[int, int, int]:
    """``(threads, log items, lagging threads)`` in one snapshot (a scan of the rows)."""
    row = conn.execute(
        "SELECT count(*), coalesce(sum(last_seq), 0), count(*) FILTER (WHERE seq < last_seq) "
        "FROM threadstore_threads"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def integrity_check(conn: psycopg.Connection[Any], limit: int = 100) -> list[str]:
    """What the tables say that cannot be (the server checks its own pages): a thread whose
    log is not dense from seq 1 to its ``last_seq``, items of no thread. At most ``limit``
    problems; empty when sound. Reads the whole log."""
    cur = conn.execute(
        "SELECT t.id, t.last_seq, coalesce(i.n, 0), coalesce(i.top, 0) "
        "FROM threadstore_threads t LEFT JOIN (SELECT thread_id, count(*) AS n, "
        "max(seq) AS top, min(seq) AS low FROM threadstore_items GROUP BY thread_id) i "
        "ON i.thread_id = t.id WHERE coalesce(i.n, 0) <> t.last_seq "
        "OR coalesce(i.top, 0) <> t.last_seq OR coalesce(i.low, 1) <> 1 ORDER BY t.id LIMIT %s",
        (limit,),
    )
    problems = [
        f"thread {tid!r}: its log should hold seqs 1..{last}, it holds {n} items up to {top}"
        for tid, last, n, top in cur
    ]
    orphans = conn.execute(
        "SELECT DISTINCT thread_id FROM threadstore_items i WHERE NOT EXISTS "
        "(SELECT 1 FROM threadstore_threads t WHERE t.id = i.thread_id) ORDER BY 1 LIMIT %s",
        (limit,),
    )
    problems += [f"items of thread {tid!r}, which has no metadata row" for (tid,) in orphans]
    return problems[:limit]


def thread_ids(conn: psycopg.Connection[Any]) -> list[str]:
    """Every thread's id in id order (a scan)."""
    return [str(row[0]) for row in conn.execute("SELECT id FROM threadstore_threads ORDER BY id")]


def hidden_seqs(conn: psycopg.Connection[Any], thread_id: str) -> frozenset[int]:
    """The seqs of the thread's items marked out of the context."""
    cur = conn.execute(
        "SELECT seq FROM threadstore_items WHERE thread_id = %s AND hidden", (thread_id,)
    )
    return frozenset(int(row[0]) for row in cur)


def set_hidden(conn: psycopg.Connection[Any], thread_id: str, hidden: frozenset[int]) -> None:
    """Mark exactly ``hidden`` (seqs) of the thread's items as out of the context, in one
    statement. Sync; writer thread only."""
    seqs = sorted(hidden)
    conn.execute(
        "UPDATE threadstore_items SET hidden = (seq = ANY(%s)) "
        "WHERE thread_id = %s AND hidden <> (seq = ANY(%s))",
        (seqs, thread_id, seqs),
    )


def replace_projection(conn: psycopg.Connection[Any], row: Mapping[str, object]) -> bool:
    """Overwrite every projected column of the thread's row (and ``archived_at`` and
    ``change``) with ``row``'s; whether the thread exists. Sync; writer thread only."""
    columns = (*PROJECTED_COLUMNS, "archived_at", "change")
    params = _escape_row({c: row[c] for c in columns})
    params["id"] = row["id"]
    sets = ", ".join(f"{c} = %({c})s" for c in columns)
    found = conn.execute(
        f"UPDATE threadstore_threads SET {sets} WHERE id = %(id)s RETURNING 1", params
    ).fetchone()
    return found is not None
