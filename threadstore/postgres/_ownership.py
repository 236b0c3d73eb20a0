"""Which threads this process projects, when several processes write one database.

A thread is projected by the process that owns it: the one whose ownership session holds
the thread's session advisory lock (keyed by a 64-bit hash of its id, see
:func:`._sql.try_own`). :class:`Ownership` keeps that session (one connection on a thread
of its own, a one-connection :class:`~._readers.ReaderPool`) and the set of threads it
holds:

- :meth:`Ownership.claim` takes a thread's lock if no other process holds it: the
  projection actor of a thread asks before each metadata write;
- :meth:`Ownership.take_orphans` takes the threads whose metadata lags their log and that
  nobody owns (their process died, or let go): the periodic takeover scan;
- :meth:`Ownership.release_idle` lets go of threads not projected for a while (the server's
  lock table is finite), and of the least recently used beyond a bound;
- :meth:`Ownership.ask` asks the owner of a thread to project it (a NOTIFY its listener
  hears, see :mod:`._listener`).

If the session is lost (the server restarted, an operator ended it) its locks went with it:
the next call finds a new session (its backend pid changed) and forgets every thread it
held; other processes may take them over meanwhile, which is safe (projection writes are
monotonic and fold from the row under its lock), only not exclusive for that moment.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import psycopg
import trio

import workers

from . import _sql as sql
from ._readers import ReaderPool

__all__ = ["Ownership"]

T = TypeVar("T")
Connection = psycopg.Connection[Any]
log = workers.get_logger(__name__)
IndexEntry = tuple[str, int, int, int, str]


class Ownership:
    """The threads this process owns. Trio thread only; calls are serialized (the locks
    are counted per session: a thread's lock is never taken twice)."""

    def __init__(self, session: ReaderPool, *, idle: float, bound: int) -> None:
        self._session = session
        self._idle = idle
        self._bound = bound
        #: Owned thread -> when it was last claimed (trio clock).
        self._owned: dict[str, float] = {}
        self._pid: int | None = None
        self._lock = trio.Lock()

    @property
    def owned(self) -> frozenset[str]:
        """The threads this process owns (as far as it knows)."""
        return frozenset(self._owned)

    def owns(self, thread_id: str) -> bool:
        return thread_id in self._owned

    async def _run(self, fn: Callable[[Connection], T]) -> T:
        """``fn`` on the ownership session; forget every thread if the session changed."""
        pid, result = await self._session.run(partial(_with_pid, fn))
        if pid != self._pid:
            self._owned.clear()  # (a new session holds none of the old one's locks)
            self._pid = pid
        return result

    async def claim(self, thread_id: str) -> bool:
        """Own the thread if no other process does; whether this process owns it now.
        Costs a round trip only for a thread not owned yet."""
        now = trio.current_time()
        if thread_id in self._owned:
            self._owned[thread_id] = now
            await trio.lowlevel.checkpoint()
            return True
        async with self._lock:
            if thread_id not in self._owned:
                taken = await self._run(partial(sql.try_own, thread_ids=[thread_id]))
                for tid in taken:
                    self._owned[tid] = now
        return thread_id in self._owned

    async def take_orphans(self, limit: int) -> list[IndexEntry]:
        """Up to ``limit`` threads whose metadata lags their log that this process owns or
        now takes (no process owned them: their owner died); their index entries (a scan
        of the thread rows). An owned thread lags for good if the process that appended to
        it died before asking this one to project it."""
        async with self._lock:
            owned = sorted(self._owned)
            orphans = await self._run(partial(sql.take_orphans, owned=owned, limit=limit))
            now = trio.current_time()
            taken = [entry[0] for entry in orphans if entry[0] not in self._owned]
            for tid in taken:
                self._owned[tid] = now
        if taken:
            log.info("postgres.took_over", threads=len(taken))
        return orphans

    async def release_idle(self) -> int:
        """Let go of threads not claimed for ``idle`` seconds, and of the least recently
        claimed beyond ``bound``; how many."""
        now = trio.current_time()
        by_use = sorted(self._owned.items(), key=lambda item: item[1])
        excess = max(0, len(by_use) - self._bound)
        done = [
            tid for i, (tid, used) in enumerate(by_use) if i < excess or now - used > self._idle
        ]
        if not done:
            await trio.lowlevel.checkpoint()
            return 0
        async with self._lock:
            done = [tid for tid in done if tid in self._owned]
            pid = self._pid
            await self._run(partial(sql.disown, thread_ids=done))
            if self._pid == pid:
                for tid in done:
                    self._owned.pop(tid, None)
        return len(done)

    async def ask(self, thread_id: str) -> None:
        """Ask the thread's owner, whichever process it is, to project it."""
        await self._session.run(partial(sql.ask_owner, thread_id=thread_id))


def _with_pid(fn: Callable[[Connection], T], conn: Connection) -> tuple[int, T]:
    return conn.info.backend_pid, fn(conn)
