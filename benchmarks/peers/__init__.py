"""``make bench-peers``: threadstore against the stores users pick today.

Each peer (OpenAI Agents SDK ``SQLiteSession``; LangGraph ``AsyncSqliteSaver`` +
``AsyncSqliteStore``; on a throwaway PostgreSQL server, LangGraph ``AsyncPostgresSaver`` and
Google ADK ``DatabaseSessionService``) runs in its own virtual environment with pinned versions
(``requirements-<peer>.txt``, created on first run as ``.venv/<peer>`` beside this file), in
its own process on its native asyncio loop; threadstore runs the same workloads on trio with
the project's Python. See :mod:`benchmarks.peers.runner`.

This package must stay importable with the standard library alone: the peer processes
import it (and :mod:`benchmarks.peers.common`) without threadstore, trio or
``benchmarks/__init__.py``.
"""
