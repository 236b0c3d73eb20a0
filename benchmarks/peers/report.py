"""The markdown table of a peers run (one row per store x settings)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

STORE_NAMES = {
    "openai": "OpenAI Agents `SQLiteSession`",
    "langgraph": "LangGraph `AsyncSqliteSaver` + `AsyncSqliteStore`",
    "langgraph_pg": "LangGraph `AsyncPostgresSaver`",
    "adk_pg": "Google ADK `DatabaseSessionService`",
    "threadstore": "threadstore",
}

#: The peers that run on the throwaway PostgreSQL server (threadstore there: ``pg-*``).
POSTGRES_PEERS = frozenset({"langgraph_pg", "adk_pg"})
#: Issue #19: threadstore on PostgreSQL against the faster peer there, in the burst.
POSTGRES_MIN_RATIO = 10.0

_POSTGRES_SETTINGS = {
    ("langgraph_pg", "shipped"): "as shipped: `from_conn_string` (one connection)",
    ("langgraph_pg", "pool"): "`AsyncConnectionPool` (up to 10 connections)",
    ("adk_pg", "shipped"): "as shipped: asyncpg, SQLAlchemy's default pool",
    ("threadstore", "pg-full"): 'durability="full" (synchronous_commit=on)',
    ("threadstore", "pg-normal"): 'durability="normal" (synchronous_commit=off)',
}


def on_postgres(store: str, settings: str) -> bool:
    """Whether the row runs on the PostgreSQL server rather than on a SQLite file."""
    return store in POSTGRES_PEERS or settings.startswith("pg-")


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if math.isnan(value):
        return None
    return float(value)


def fmt_ms(value: Any) -> str:
    """Milliseconds with about three significant digits."""
    x = _num(value)
    if x is None:
        return "n/a"
    if x < 10:
        return f"{x:.2f}"
    if x < 100:
        return f"{x:.1f}"
    return f"{x:,.0f}"


def fmt_int(value: Any) -> str:
    x = _num(value)
    return "n/a" if x is None else f"{x:,.0f}"


def _get(result: Mapping[str, Any] | None, *keys: str) -> Any:
    node: Any = result
    for key in keys:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def settings_label(store: str, settings: str, in_effect: Mapping[str, Any] | None) -> str:
    """E.g. ``as shipped (wal, FULL, busy 5000 ms)`` from the settings read back."""
    name = {
        "shipped": "as shipped",
        "matched": "matched",
        "full": 'durability="full"',
        "normal": 'durability="normal"',
    }.get(settings, settings)
    if not in_effect:
        return name
    parts = [
        str(in_effect.get("journal_mode", "?")).upper(),
        str(in_effect.get("synchronous", "?")),
        f"busy {in_effect.get('busy_timeout_ms', '?')} ms",
    ]
    other = in_effect.get("store_connection")
    if isinstance(other, Mapping) and any(
        other.get(k) != in_effect.get(k) for k in ("journal_mode", "synchronous", "busy_timeout_ms")
    ):
        parts.append(
            f"store conn: {other.get('synchronous')}, busy {other.get('busy_timeout_ms')} ms"
        )
    return f"{name} ({', '.join(parts)})"


def in_effect(row: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The settings read back in the row's first workload that reported them."""
    for result in row.get("workloads", {}).values():
        settings = _get(result, "sqlite_settings")
        if isinstance(settings, Mapping) and settings:
            return settings
    return None


def markdown_table(rows: Sequence[Mapping[str, Any]], list_threads: int) -> str:
    header = [
        "store",
        "settings",
        "burst items/s",
        "caller p50 / p99 ms",
        "commits/item",
        "db MB",
        "sequential p50 ms",
        "goal-first p50 / p99 ms",
        "missing from top 50",
        f"list top-50 @{list_threads:,} p50 / p99 ms",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        if on_postgres(row["store"], row["settings"]):
            continue  # (their own table)
        w = row.get("workloads", {})
        burst = w.get("burst")
        seq = w.get("sequential")
        goal = w.get("goal_first")
        lst = w.get("list")
        commits = _num(_get(burst, "commits_per_item"))
        db = _num(_get(burst, "db_bytes"))
        missing = _get(goal, "missing")

        def pair(result: Any, key: str = "latency_ms") -> str:
            return f"{fmt_ms(_get(result, key, 'p50'))} / {fmt_ms(_get(result, key, 'p99'))}"

        cells = [
            STORE_NAMES.get(row["store"], row["store"]),
            settings_label(row["store"], row["settings"], in_effect(row)),
            fmt_int(_get(burst, "items_per_s")),
            pair(burst),
            "n/a" if commits is None else f"{commits:.2f}",
            "n/a" if db is None else f"{db / 1e6:,.1f}",
            fmt_ms(_get(seq, "latency_ms", "p50")),
            pair(goal),
            "n/a" if missing is None else f"{missing} of {_get(goal, 'threads')}",
            pair(lst),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pair(result: Any) -> str:
    return (
        f"{fmt_ms(_get(result, 'latency_ms', 'p50'))} / {fmt_ms(_get(result, 'latency_ms', 'p99'))}"
    )


def postgres_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows that ran on PostgreSQL ("" if none): the burst and sequential appends."""
    header = [
        "store",
        "settings",
        "burst items/s",
        "caller p50 / p99 ms",
        "server transactions / item",
        "db MB",
        "sequential p50 ms",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    found = False
    for row in rows:
        store, settings = row["store"], row["settings"]
        if not on_postgres(store, settings):
            continue
        found = True
        w = row.get("workloads", {})
        burst = w.get("burst")
        tx = _num(_get(burst, "server_transactions_per_item"))
        db = _num(_get(burst, "db_bytes"))
        cells = [
            STORE_NAMES.get(store, store),
            _POSTGRES_SETTINGS.get((store, settings), settings),
            fmt_int(_get(burst, "items_per_s")),
            _pair(burst),
            "n/a" if tx is None else f"{tx:.2f}",
            "n/a" if db is None else f"{db / 1e6:,.1f}",
            fmt_ms(_get(w.get("sequential"), "latency_ms", "p50")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) if found else ""


def postgres_verdict(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """threadstore on PostgreSQL (``durability="full"``, as the peers commit) against the
    faster PostgreSQL peer in the burst: the issue's target (>= 10x items/s, lower p99)."""

    def burst(row: Mapping[str, Any]) -> Any:
        return row.get("workloads", {}).get("burst")

    ours = [r for r in rows if r["store"] == "threadstore" and r["settings"] == "pg-full"]
    peers = [
        r
        for r in rows
        if r["store"] in POSTGRES_PEERS and _num(_get(burst(r), "items_per_s")) is not None
    ]
    if not ours or not peers or _num(_get(burst(ours[0]), "items_per_s")) is None:
        return []
    best = max(peers, key=lambda r: float(_get(burst(r), "items_per_s")))
    rate = float(_get(burst(ours[0]), "items_per_s"))
    peer_rate = float(_get(burst(best), "items_per_s"))
    ratio = rate / peer_rate
    p99 = _num(_get(burst(ours[0]), "latency_ms", "p99"))
    peer_p99 = _num(_get(burst(best), "latency_ms", "p99"))
    lower = p99 is not None and peer_p99 is not None and p99 < peer_p99
    name = STORE_NAMES.get(best["store"], best["store"])
    how = _POSTGRES_SETTINGS.get((best["store"], best["settings"]), best["settings"])
    return [
        f'threadstore on PostgreSQL (durability="full") against the faster peer, {name} '
        f"({how}): {ratio:,.1f}x its burst items/s (target >= {POSTGRES_MIN_RATIO:g}x: "
        f"{'met' if ratio >= POSTGRES_MIN_RATIO else 'missed'}); caller p99 {fmt_ms(p99)} ms "
        f"against {fmt_ms(peer_p99)} ms (target lower: {'met' if lower else 'missed'})."
    ]


def problems(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per workload that failed or had errors."""
    notes = []
    for row in rows:
        for workload, result in row.get("workloads", {}).items():
            where = f"{row['store']} {row['settings']} {workload}"
            if not isinstance(result, Mapping):
                continue
            if "failed" in result:
                notes.append(f"{where}: FAILED: {result['failed']}")
            elif result.get("errors"):
                notes.append(f"{where}: {result['errors']} errors, first: {result['first_error']}")
    return notes
