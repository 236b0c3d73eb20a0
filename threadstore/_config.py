"""The store's engine-neutral configuration: frozen values with every default in one place.

:func:`threadstore.open_store` builds a :class:`StoreConfig` from its keyword arguments
(which are validated here, before anything is opened); an engine's own knobs live with the
engine (:class:`threadstore.sqlite.SqliteConfig`). The tuning constants of the store, the
change feed and the write lanes are the defaults below, each defined once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

import workers

from ._values import Projector

__all__ = ["Lanes", "Limits", "StoreConfig", "Timeouts", "is_int"]


def is_int(value: object) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def _at_least_one(name: str) -> Any:
    def check(_: object, attribute: attrs.Attribute[int], value: int) -> None:
        if not is_int(value) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, not {value!r}")

    return check


@attrs.frozen(kw_only=True)
class Limits:
    """Bounds on input and memory."""

    #: An item's encoded data, in bytes (``InvalidItemError`` beyond).
    max_item_bytes: int = 1 << 20
    #: Item bytes waiting for commit: ``append_nowait`` raises ``StoreOverloadedError``
    #: beyond, ``append`` waits for room.
    max_pending_bytes: int = 64 << 20
    #: The largest ``limit`` of ``list_threads`` and of ``read_items``.
    max_list_limit: int = 1000
    max_read_limit: int = 100_000
    #: Events a change-feed subscriber's buffer holds unless ``subscribe(buffer=...)``.
    feed_buffer: int = 256

    def __attrs_post_init__(self) -> None:
        if self.max_item_bytes < 1 or self.max_pending_bytes < 1:
            raise ValueError("max_item_bytes and max_pending_bytes must be >= 1")


@attrs.frozen(kw_only=True)
class Timeouts:
    """How long the store waits (seconds)."""

    #: Leaving ``open_store`` drains projection this long; the rest is recovered at the
    #: next open.
    shutdown: float = 5.0
    #: Projection work whose retries ran out is tried again this often (None: only on the
    #: thread's next append or flush).
    retry_interval: float | None = 30.0
    #: A deleted thread's tombstone is kept this long, so a change-feed subscriber can
    #: replay its deletion (``subscribe(since=...)``); an older cursor gets a ``reset``.
    tombstone_retention: float = 7 * 24 * 3600.0


@attrs.frozen(kw_only=True)
class Lanes:
    """The write lanes' policy (:mod:`threadstore._lanes`): which queued writes go in
    which transaction. Engine-neutral: any engine's group-committing writer uses it."""

    #: Jobs one transaction takes at most; the rest wait for the next (bounds commit
    #: latency).
    max_batch: int = attrs.field(default=4096, validator=_at_least_one("max_batch"))
    #: Jobs per wake-up group: each group has its own ``trio.Event``, and the groups of one
    #: transaction are woken one scheduler round after another, so a big group commit does
    #: not hand the event loop hundreds of woken tasks in one round.
    wake_group: int = attrs.field(default=16, validator=_at_least_one("wake_group"))
    #: Deferred (projection) writes per group: when the interval is up, each transaction
    #: takes one group (the oldest), so a burst's worth of metadata writes does not land in
    #: the transaction of a single batch of appends and hold those appends up.
    deferred_group: int = attrs.field(default=32, validator=_at_least_one("deferred_group"))
    #: "Soon" writes (urgent metadata) per group: each transaction takes the oldest group,
    #: or the oldest 1/``soon_share`` of the lane's groups if that is more, so fifty
    #: projectors finishing together do not put fifty metadata writes (and the appends
    #: queued behind them) into one long transaction, yet a steady stream never backs up.
    soon_group: int = attrs.field(default=8, validator=_at_least_one("soon_group"))
    soon_share: int = attrs.field(default=8, validator=_at_least_one("soon_share"))
    #: Deferred writes wait at most this long while log appends keep the writer busy ...
    projection_interval: float = 0.25
    #: ... and, once appends stop, until the log has been quiet this long (seconds).
    quiet: float = 0.01


@attrs.frozen(kw_only=True)
class StoreConfig:
    """Everything about a store that is not its engine's business."""

    #: Ordinary metadata updates wait up to this long to coalesce (urgent ones do not).
    projection_delay: float = 0.0
    projectors: tuple[Projector, ...] = ()
    #: Retries of failed projection attempts (None: five, classified by the engine).
    retry: workers.RetryPolicy | None = None
    limits: Limits = Limits()
    timeouts: Timeouts = Timeouts()
    lanes: Lanes = Lanes()

    def __attrs_post_init__(self) -> None:
        if self.projection_delay < 0 or self.timeouts.shutdown < 0:
            raise ValueError("projection_delay and shutdown_timeout must be >= 0")
        retention = self.timeouts.tombstone_retention
        if not isinstance(retention, int | float) or not retention >= 0:
            raise ValueError(f"tombstone_retention must be a number >= 0, not {retention!r}")
        for projector in self.projectors:
            if not isinstance(projector, Projector):
                raise TypeError(f"projector {projector!r} has no name/project()")

    @classmethod
    def from_options(
        cls,
        *,
        projectors: Sequence[Projector],
        projection_delay: float,
        shutdown_timeout: float,
        max_item_bytes: int,
        max_pending_bytes: int,
        retry: workers.RetryPolicy | None,
        retry_interval: float | None,
        tombstone_retention: float = Timeouts().tombstone_retention,
    ) -> StoreConfig:
        """The configuration ``open_store``'s keyword arguments describe (validated)."""
        return cls(
            projection_delay=projection_delay,
            projectors=tuple(projectors),
            retry=retry,
            limits=Limits(max_item_bytes=max_item_bytes, max_pending_bytes=max_pending_bytes),
            timeouts=Timeouts(
                shutdown=shutdown_timeout,
                retry_interval=retry_interval,
                tombstone_retention=tombstone_retention,
            ),
        )
