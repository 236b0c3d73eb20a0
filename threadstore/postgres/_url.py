"""Store URLs: recognising a ``postgresql://`` target, and describing it without secrets.

Pure string work (no driver): :mod:`threadstore._open` uses :func:`is_postgres_url` to pick
the engine before anything imports psycopg, and every message, log event and
``Store.path`` shows :func:`redact`'s form, never the password.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Final

__all__ = ["SCHEMES", "describe", "is_postgres_url", "redact"]

#: The URL schemes that select the PostgreSQL engine (libpq's own two).
SCHEMES: Final = ("postgresql://", "postgres://")


def is_postgres_url(target: str) -> bool:
    """Whether ``open_store(target)`` means a PostgreSQL database."""
    return target.startswith(SCHEMES)


def redact(url: str) -> str:
    """``url`` with any password (in the authority or a ``password=`` parameter) replaced
    by ``***``."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{hostport}"
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        if any(key == "password" for key, _ in pairs):
            query = "&".join(
                f"{key}=***" if key == "password" else urllib.parse.urlencode({key: value})
                for key, value in pairs
            )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def describe(params: Mapping[str, object]) -> str:
    """``host H port P database D user U`` from libpq connection parameters (as psycopg's
    ``conninfo_to_dict`` gives them), for messages; never the password."""
    host = str(params.get("host") or params.get("hostaddr") or "localhost (default socket)")
    out = [f"host {host!r}"]
    if params.get("port"):
        out.append(f"port {params['port']}")
    out.append(f"database {str(params.get('dbname') or params.get('user') or '(default)')!r}")
    if params.get("user"):
        out.append(f"user {str(params['user'])!r}")
    return " ".join(out)
