"""What the store keeps in memory per conversation thread (not an OS thread)."""

from __future__ import annotations

from typing import Any

from ._engine import Completion
from ._meta import ThreadMeta

__all__ = ["ThreadState"]


class ThreadState:
    """One conversation thread's seq watermarks and flags, nothing else. Trio thread only.

    ``assigned``: last seq handed out; ``durable``: last seq committed to the log;
    ``projected``: last seq the metadata reflects. ``epoch`` changes when a failed log
    commit rewinds ``assigned``, so late failures of older appends do not rewind it again.
    """

    __slots__ = (
        "archives",
        "assigned",
        "deleted",
        "durable",
        "epoch",
        "has_user",
        "hurry",
        "id",
        "last_job",
        "meta",
        "namespace",
        "projected",
    )

    def __init__(
        self, thread_id: str, seq: int, projected: int, has_user: bool, namespace: str = ""
    ) -> None:
        self.id = thread_id
        self.namespace = namespace
        self.assigned = seq
        self.durable = seq
        self.projected = projected
        self.has_user = has_user
        self.epoch = 0
        self.deleted = False
        self.hurry = False  # the next projection write must not be deferred
        #: The newest queued log write (an append or the creation), until it is done.
        self.last_job: Completion[Any] | None = None
        #: With custom projectors only: the metadata as last written (the next projector
        #: call's ``meta``, so it needs no read), and a count of archive/unarchive calls
        #: (a projection write racing one of them must not cache what it saw).
        self.meta: ThreadMeta | None = None
        self.archives = 0
