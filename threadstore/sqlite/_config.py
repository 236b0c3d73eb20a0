"""The SQLite engine's knobs: one frozen value with every default in one place."""

from __future__ import annotations

from typing import Literal

import attrs

from .._config import is_int

__all__ = ["DEFAULTS", "Durability", "SqliteConfig"]

Durability = Literal["normal", "full"]


@attrs.frozen(kw_only=True)
class SqliteConfig:
    """How the SQLite engine runs a store file."""

    #: ``synchronous=NORMAL`` (an acknowledged append survives a process crash) or
    #: ``FULL`` (it also survives power loss).
    durability: Durability = "normal"
    #: Reader threads, each with one read-only connection (reads beyond wait their turn).
    reader_connections: int = 2
    #: SQLite's ``busy_timeout``: how long a statement waits for another connection's lock.
    busy_timeout_ms: int = 5000
    #: The WAL checkpointer runs at most this often while commits happen (seconds) ...
    checkpoint_interval: float = 0.2
    #: ... or at once once this much item data was committed since its last checkpoint.
    checkpoint_eager_bytes: int = 4 << 20
    #: With the checkpointer, a commit still checkpoints (SQLite's automatic checkpoint)
    #: once the WAL holds this many pages. Under a never-ending stream of commits a
    #: checkpoint on another connection never catches up with the last frame, and the WAL
    #: only starts over from its beginning after one that did; this one runs between two
    #: commits, so it does, and it finds most pages copied already.
    backstop_pages: int = 4000
    #: Metadata rows the writer keeps decoded, and listed rows the readers keep decoded.
    row_cache_size: int = 1024
    listed_cache_size: int = 1024
    #: A read-only store's subscribers look for the writer's commits this often (seconds):
    #: one indexed ``max(change)`` read per poll, without the writer's lock.
    feed_poll_interval: float = 0.05

    def __attrs_post_init__(self) -> None:
        if self.durability not in ("normal", "full"):
            raise ValueError(f"durability must be 'normal' or 'full', not {self.durability!r}")
        if not is_int(self.reader_connections) or self.reader_connections < 1:
            raise ValueError(
                f"reader_connections must be an int >= 1, not {self.reader_connections!r}"
            )
        if not isinstance(self.feed_poll_interval, int | float) or not (
            0 < self.feed_poll_interval <= 60
        ):
            raise ValueError(
                f"feed_poll_interval must be a number in (0, 60], not {self.feed_poll_interval!r}"
            )


#: The defaults (what ``open_store`` uses unless told otherwise).
DEFAULTS = SqliteConfig()
