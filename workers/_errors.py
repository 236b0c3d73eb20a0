"""Errors raised by the actor pool."""

from __future__ import annotations

__all__ = ["PoolClosedError", "WorkDiscardedError", "WorkFailedError", "WorkersError"]


class WorkersError(Exception):
    """Base class of the errors the pool raises."""


class PoolClosedError(WorkersError):
    """The pool is shutting down or shut down: it takes no new work, and a barrier whose
    generation was not applied before shutdown can no longer be satisfied."""


class WorkFailedError(WorkersError):
    """The attempt that covered a barrier's generation failed for good.

    The work is kept by the pool: the next ``submit`` or ``wait`` for the key (or the pool's
    periodic retry) tries again. The error of the last attempt is ``__cause__``.
    """

    def __init__(self, key: object, generation: int, attempts: int) -> None:
        super().__init__(
            f"work for key {key!r} through generation {generation} failed "
            f"after {attempts} attempt(s)"
        )
        self.key = key
        self.generation = generation
        self.attempts = attempts


class WorkDiscardedError(WorkersError):
    """The work a barrier waited for was dropped by ``discard``."""

    def __init__(self, key: object, generation: int) -> None:
        super().__init__(f"work for key {key!r} through generation {generation} was discarded")
        self.key = key
        self.generation = generation
