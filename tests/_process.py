"""Child processes for the process tests: spawn a script from ``tests/_children``, read its
stdout protocol line by line, keep its stderr, and always kill and reap it on the way out."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import trio

REPO_ROOT = Path(__file__).resolve().parent.parent
CHILDREN = REPO_ROOT / "tests" / "_children"


C = TypeVar("C", bound="Child")


class Child:
    """A running child: its stdout read line by line, stdin for orders, stderr collected."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.pid = proc.pid
        self._buffer = b""
        self._stderr = bytearray()
        self._stderr_done = trio.Event()

    async def drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        try:
            while chunk := await self.proc.stderr.receive_some():
                self._stderr += chunk
        finally:
            self._stderr_done.set()

    async def stderr(self) -> str:
        """Everything the child wrote to stderr (waits for it to close stderr)."""
        await self._stderr_done.wait()
        return self._stderr.decode(errors="replace")

    async def line(self) -> str | None:
        """The next complete stdout line, or None at EOF (a partial last line is dropped)."""
        assert self.proc.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self.proc.stdout.receive_some()
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()  # noqa: ASYNC910 - a checkpoint-free path only when the line is buffered

    async def expect_line(self) -> str:
        """The next line; fails the test (with the child's stderr) if the child exited."""
        line = await self.line()
        if line is None:
            code = await self.proc.wait()
            raise AssertionError(f"child exited ({code}) early; stderr:\n{await self.stderr()}")
        return line

    async def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        await self.proc.stdin.send_all(line.encode() + b"\n")

    async def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        await self.proc.stdin.aclose()


def child_env() -> dict[str, str]:
    """The environment of a child: ours, with the repository root on ``PYTHONPATH``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


@asynccontextmanager
async def spawn_child(script: str, *args: str, kind: type[C]) -> AsyncIterator[C]:
    """Run ``tests/_children/<script>`` with ``args`` as a ``kind`` (:class:`Child` or a
    subclass); on the way out, kill it if it still runs, reap it and close its pipes
    (shielded, so a cancelled test leaves no orphan)."""
    proc = await trio.lowlevel.open_process(
        [sys.executable, str(CHILDREN / script), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
    )
    child = kind(proc)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child.drain_stderr)
            try:
                yield child
            finally:
                if proc.returncode is None:
                    proc.kill()
                with trio.CancelScope(shield=True):
                    await proc.wait()
    finally:
        with trio.CancelScope(shield=True):
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    await stream.aclose()
