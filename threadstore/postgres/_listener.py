"""The listener: one connection on a thread of its own, LISTENing for other processes.

Notifications are only wake-ups; what changed is always read from the tables:

- ``threadstore_changes`` (sent by every transaction that changed listed state, at its
  commit, see :mod:`._transaction`): change-feed subscribers and barriers waiting on a
  thread another process projects look again;
- ``threadstore_project`` (payload: a thread id): a process asks the owner of that thread
  to project it (see :mod:`._ownership`);
- ``threadstore_wake``: ends the listener's wait (its engine is closing).

A lost connection is opened again (backing off up to a second); since notifications sent
meanwhile are lost, ``on_reconnect`` then has everyone look again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Final

import psycopg
import trio

import workers

__all__ = ["CHANNELS", "Listener"]

Connection = psycopg.Connection[Any]
log = workers.get_logger(__name__)

CHANNELS: Final = ("threadstore_changes", "threadstore_project", "threadstore_wake")
#: How long one wait for notifications lasts before the thread checks whether to stop.
_WAIT: Final = 5.0


class Listener:
    """Hands each notification to ``on_notify(channel, payload)`` on the trio thread."""

    def __init__(
        self,
        connect: Callable[[], Connection],
        on_notify: Callable[[str, str], None],
        on_reconnect: Callable[[], None],
    ) -> None:
        self._connect = connect
        self._on_notify = on_notify
        self._on_reconnect = on_reconnect
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        #: The listening session's backend pid (the payload that wakes it to stop).
        self.pid = 0

    async def start(self) -> None:
        """Connect and LISTEN on the thread; return once listening (raises what
        connecting raised)."""
        self._token = trio.lowlevel.current_trio_token()
        conn = await trio.to_thread.run_sync(self._listen)
        self.pid = conn.info.backend_pid
        self._thread = threading.Thread(
            target=self._main, args=(conn,), name="threadstore-pg-listener", daemon=True
        )
        self._thread.start()

    def _listen(self) -> Connection:
        conn = self._connect()
        try:
            for channel in CHANNELS:
                conn.execute(f"LISTEN {channel}")  # (constant names)
        except BaseException:
            conn.close()
            raise
        return conn

    async def aclose(self, wake: Callable[[str], Any]) -> None:
        """Stop the thread (``wake(payload)`` sends the notification that ends its wait)
        and close its connection. Shielded."""
        with trio.CancelScope(shield=True):
            thread = self._thread
            if thread is None:
                await trio.lowlevel.checkpoint()
                return
            self._thread = None
            self._stopping.set()
            try:
                await wake(str(self.pid))
            except Exception as exc:  # the thread stops at its next timeout instead
                log.warning("postgres.listener_wake_failed", error=repr(exc))
            await trio.to_thread.run_sync(thread.join)

    def _main(self, conn: Connection | None) -> None:
        assert self._token is not None
        token = self._token
        delay = 0.05
        try:
            while not self._stopping.is_set():
                if conn is None:
                    try:
                        conn = self._listen()
                    except Exception as exc:
                        log.warning("postgres.listener_reconnect_failed", error=repr(exc))
                        self._stopping.wait(delay)
                        delay = min(delay * 2, 1.0)
                        continue
                    delay = 0.05
                    self.pid = conn.info.backend_pid
                    token.run_sync_soon(self._on_reconnect)
                try:
                    for note in conn.notifies(timeout=_WAIT):
                        if note.channel == "threadstore_wake":
                            if self._stopping.is_set():
                                return
                            continue
                        token.run_sync_soon(self._on_notify, note.channel, note.payload)
                except psycopg.Error as exc:
                    if self._stopping.is_set():
                        return
                    log.warning("postgres.listener_lost", error=repr(exc))
                    conn.close()
                    conn = None
        except trio.RunFinishedError:  # pragma: no cover - the trio run ended first
            return
        finally:
            if conn is not None:
                conn.close()
