"""The projection driver: the body of each thread's projection actor, and recovery.

The store feeds each thread's pending items to a :mod:`workers` actor pool (key: thread id,
work: :class:`~threadstore._meta.Pending`); the pool calls :meth:`ProjectionDriver.project`
with whatever coalesced while the thread's previous write was in flight. The driver runs the
custom projectors, chooses the write's lane (:func:`choose_lane`), has the engine write the
metadata (the engine publishes the change to the feed as it commits) and advances the
thread's ``projected`` watermark.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from typing import Final

import structlog
import trio

import workers

from ._engine import Engine, Lane, ProjectionWrite, stored_item
from ._meta import Patch, Pending
from ._thread_state import ThreadState
from ._values import Projector

__all__ = ["ProjectionDriver", "choose_lane"]

log = workers.get_logger(__name__)

_NO_EXTRA: Final = Patch.empty()  # a projection with no custom projector output


def choose_lane(*, urgent: bool, waited: bool) -> Lane:
    """Which lane a metadata write goes in.

    Deferred: while appends stream in, the write waits (bounded) and later patches merge
    into the next one. Urgent ones go in the soon lane (spread over the next few
    transactions); those a barrier or shutdown waits for go with the next transaction.
    """
    if waited:
        return "now"
    return "soon" if urgent else "deferred"


class ProjectionDriver:
    """Projects threads' metadata for one store. Trio thread only.

    ``barriers`` counts flushes waiting (their threads' writes are not deferred meanwhile);
    ``closing`` is set at shutdown (every write goes at once). ``pool`` is the actor pool
    that calls :meth:`project`, set once it is open.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        threads: dict[str, ThreadState],
        projectors: Sequence[Projector],
    ) -> None:
        self._engine = engine
        self._threads = threads
        self._projectors = tuple(projectors)
        self.pool: workers.ActorPool[str, Pending] | None = None
        self.barriers = 0
        self.closing = False
        self.projection_writes = 0

    async def project(self, thread_id: str, patch: Pending) -> None:
        """The actor body: fold ``patch`` into the thread's metadata (raises to retry)."""
        state = self._threads.get(thread_id)
        if state is None or state.deleted:
            await trio.lowlevel.checkpoint()
            return
        target = patch.last_seq or state.durable
        engine = self._engine
        if engine.shared:  # one process at a time projects a thread: its owner
            # Through every seq known here: a barrier's generation may be a seq another
            # process gave, beyond the rows pending (see Store._project_through).
            target = max(target, state.durable)
            while not await engine.claim(thread_id):
                done, meta = await engine.wait_projected(thread_id, target)
                if done:  # projected by the owner (or deleted)
                    if meta is not None:
                        state.projected = max(state.projected, meta.seq)
                        state.meta = None  # (the next projector call here reads the row)
                    return
        extra = _NO_EXTRA
        archives = state.archives
        if self._projectors:
            meta = state.meta
            if meta is not None and patch.first_seq == meta.seq + 1 and patch.last_seq >= target:
                # The usual case: the items follow the metadata as last written, and both are
                # in memory (decoded from the very JSON the log holds): no read.
                items = [stored_item(row) for row in patch.log_rows()]
            else:  # after a discard, a failure, recovery or a reopen: read them
                meta, items = await self._engine.projector_input(thread_id, target)
                if meta is None:
                    return
            for projector in self._projectors:
                out = projector.project(meta, items)
                if inspect.isawaitable(out):
                    out = await out
                if out is not None:
                    extra = extra.merge(Patch.extra_update(projector.name, out))
        urgent = state.hurry or patch.urgent  # caused by urgent items: published at once
        waited = self.barriers > 0 or self.closing  # a barrier or shutdown waits: at once
        state.hurry = False
        meta = await self._engine.project(
            ProjectionWrite(
                thread_id=thread_id,
                pending=patch,
                extra=extra,
                target=target,
                lane=choose_lane(urgent=urgent, waited=waited),
            )
        )
        if meta is None:
            return
        self.projection_writes += 1
        state.projected = max(state.projected, meta.seq)
        if self._projectors:
            state.meta = meta if state.archives == archives else None
        if log.is_enabled_for(logging.DEBUG):  # (one metadata write each: skip the fields)
            context = structlog.contextvars.get_contextvars()
            log.debug(
                "projection.applied",
                thread_id=thread_id,
                seq=meta.seq,
                trace_parent=context.get("trace_parent"),
                queue_age_ms=context.get("queue_age_ms"),
            )

    async def recover(self) -> int:
        """Re-project every thread whose metadata lags its log; return how many.

        A thread whose re-projection fails for good (e.g. a custom projector that keeps
        raising) does not keep the store from opening: its work stays queued for the
        periodic retry and ``projection.recovery_failed`` is logged.
        """
        pool = self.pool
        assert pool is not None
        lagging = await self._engine.lagging_threads()
        for tid, _seq, last_seq in lagging:
            pool.submit(tid, Pending.empty(), urgent=True, generation=last_seq)
        for tid, _seq, last_seq in lagging:
            try:
                await pool.wait(tid, last_seq)
            except workers.WorkFailedError as exc:
                log.warning(
                    "projection.recovery_failed",
                    thread_id=tid,
                    seq=last_seq,
                    attempts=exc.attempts,
                    error=repr(exc.__cause__),
                )
        return len(lagging)
