"""The OS file lock that makes one process the store's only writer.

The lock is an exclusive, non-blocking ``flock`` on ``<store path>.lock``. ``flock`` locks
belong to an open file description, so the lock is released by the kernel when the holder
exits or crashes (no stale locks), and a second :meth:`StoreLock.acquire` in the same process
fails just as one from another process does. The holder writes a description of itself
(``"pid 1234 on host since 2026-01-01T00:00:00+00:00"``) into the file so the loser's
:class:`~threadstore.StoreLockedError` can name it. The lock file is never deleted: deleting
a lock file races with another process that has it open.

Acquiring and releasing are quick non-blocking system calls; they may run on the trio thread.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import re
import socket
from contextlib import suppress
from types import TracebackType
from typing import final

import trio

from .._errors import StoreLockedError

__all__ = ["StoreLock", "lock_path"]

_HOLDER_MAX = 4096
_HOLDER_RETRIES = 20
_HOLDER_RETRY_DELAY = 0.005


def lock_path(path: str) -> str:
    """The lock file guarding the store file at ``path``."""
    return path + ".lock"


@final
class StoreLock:
    """An acquired writer lock on a store file; :meth:`release` (or ``with``) gives it up."""

    __slots__ = ("_fd", "path")

    def __init__(self, path: str, fd: int) -> None:
        """Wrap an already-locked descriptor; use :meth:`acquire` instead."""
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: str) -> StoreLock:
        """Take the writer lock for the store at ``path`` without waiting.

        Creates ``path + ".lock"`` (mode ``0o600``) if needed. Raises
        :class:`StoreLockedError` naming the holder if another open file description —
        in another process or this one — holds it.
        """
        fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StoreLockedError(path, _read_holder(fd)) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, _describe_self().encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd)

    @classmethod
    async def acquire_async(cls, path: str) -> StoreLock:
        """:meth:`acquire`, but a loser that read the holder text before the winner wrote
        it (empty, or left by a holder that is gone) retries for up to about 100 ms, so
        :class:`StoreLockedError` names the process that holds the lock."""
        for _ in range(_HOLDER_RETRIES):
            try:
                lock = cls.acquire(path)
            except StoreLockedError as exc:
                if _holder_is_current(exc.holder):
                    raise
                await trio.sleep(_HOLDER_RETRY_DELAY)
                continue
            await trio.lowlevel.checkpoint()
            return lock
        await trio.lowlevel.checkpoint()
        return cls.acquire(path)  # the last word, whatever the text says

    @property
    def held(self) -> bool:
        """Whether this object still holds the lock."""
        return self._fd is not None

    def release(self) -> None:
        """Give up the lock by closing the descriptor. Idempotent.

        The holder text is cleared first (while the lock is still held), so a loser racing
        the next holder never reads a released holder's description: a process that
        released the lock may still be alive, and would pass for the holder. Only a holder
        that died leaves its text behind, and its pid is dead.
        """
        fd, self._fd = self._fd, None
        if fd is not None:
            with suppress(OSError):  # (a full or read-only disk: the text stays; not fatal)
                os.ftruncate(fd, 0)
            os.close(fd)

    def __enter__(self) -> StoreLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "held" if self.held else "released"
        return f"<StoreLock {self.path!r} {state}>"


def _describe_self() -> str:
    since = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return f"pid {os.getpid()} on {socket.gethostname()} since {since}"


def _holder_is_current(holder: str) -> bool:
    """Whether a holder text names a live process (on another host: trusted as is)."""
    match = re.match(r"pid (\d+) on (\S+) ", holder)
    if match is None:
        return False  # not written yet
    if match.group(2) != socket.gethostname():
        return True
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return False  # stale: written by a holder that has exited
    except PermissionError:
        return True
    return True


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, _HOLDER_MAX, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    # The holder may not have written its description yet.
    return text or "another process (holder not yet recorded)"
