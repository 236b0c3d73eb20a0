"""The writer lock: one open file description owns a store, in this process or another."""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from threadstore._errors import StoreLockedError
from threadstore.sqlite import _lock
from threadstore.sqlite._lock import StoreLock

REPO_ROOT = str(Path(_lock.__file__).resolve().parents[2])

CHILD = """
import sys
from threadstore.sqlite._lock import StoreLock
lock = StoreLock.acquire(sys.argv[1])
print("locked", flush=True)
sys.stdin.read()
lock.release()
"""


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "store.db")


def test_second_acquire_in_the_same_process_fails(path: str) -> None:
    lock = StoreLock.acquire(path)
    try:
        assert lock.held
        with pytest.raises(StoreLockedError, match=f"pid {os.getpid()} on ") as info:
            StoreLock.acquire(path)
        assert info.value.path == path
        assert info.value.holder.startswith(f"pid {os.getpid()} on ")
        assert " since " in info.value.holder
    finally:
        lock.release()
    assert not lock.held
    lock.release()  # idempotent
    with StoreLock.acquire(path) as again:
        assert again.held
    assert not again.held


def test_lock_file_is_private_and_kept(path: str) -> None:
    old = os.umask(0o022)
    try:
        StoreLock.acquire(path).release()
    finally:
        os.umask(old)
    lock_file = _lock.lock_path(path)
    assert lock_file == path + ".lock"
    assert stat.S_IMODE(os.stat(lock_file).st_mode) == 0o600
    assert not os.path.exists(path)  # the lock never creates the store itself


def test_lock_held_by_another_process(path: str) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")])),
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "locked\n"
        with pytest.raises(StoreLockedError, match=f"pid {child.pid} on "):
            StoreLock.acquire(path)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        assert child.wait(timeout=30) == 0
        if child.stdout is not None:
            child.stdout.close()
    with StoreLock.acquire(path) as lock:
        assert lock.held
        assert Path(_lock.lock_path(path)).read_text().startswith(f"pid {os.getpid()} on ")


def test_lock_released_by_a_crashed_holder(path: str) -> None:
    child = subprocess.run(
        [sys.executable, "-c", CHILD.replace("sys.stdin.read()", "import os; os._exit(3)"), path],
        env={**os.environ, "PYTHONPATH": REPO_ROOT},
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert child.returncode == 3
    StoreLock.acquire(path).release()


def test_holder_not_yet_recorded(path: str) -> None:
    fd = os.open(_lock.lock_path(path), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(StoreLockedError, match="holder not yet recorded"):
            StoreLock.acquire(path)
    finally:
        os.close(fd)


def test_a_released_holder_is_never_named_while_the_next_one_takes_over(path: str) -> None:
    """The race the writer-race soak found: a loser reading the lock file between the
    winner's flock and its description must not name the previous holder (this process,
    still alive, which released the lock)."""
    StoreLock.acquire(path).release()
    fd = os.open(_lock.lock_path(path), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the next holder, not written yet
        with pytest.raises(StoreLockedError) as caught:
            StoreLock.acquire(path)
        assert "holder not yet recorded" in str(caught.value)
        assert f"pid {os.getpid()} " not in str(caught.value)
    finally:
        os.close(fd)
