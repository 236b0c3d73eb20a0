"""A test seam: inject SQLite failures into the writer's transactions, by seed and probability.

Pass ``faults=Faults(...)`` to :func:`threadstore.open_store`. The writer thread consults it
before each job's statements (``busy``, ``ioerr`` and ``full`` fail that job alone, as a
failing statement would) and before each COMMIT (``commit`` fails the whole transaction
after its statements succeeded). Jobs that append log items are the ``"log"`` target;
metadata projection writes are the ``"projection"`` target.

:meth:`Faults.fill_disk` caps the database file at its current size (``PRAGMA
max_page_count``), so writes fail with SQLite's own ``SQLITE_FULL`` until
:meth:`Faults.free_disk` returns the space. Everything here is thread-safe: the test changes
settings on the trio thread while the writer thread reads them.
"""

from __future__ import annotations

import random
import sqlite3
import threading
from collections import Counter
from collections.abc import Collection, Iterable
from typing import Final, Literal

__all__ = ["FAULT_KINDS", "FaultKind", "Faults", "Target"]

FaultKind = Literal["busy", "ioerr", "full", "commit"]
Target = Literal["log", "projection"]
FAULT_KINDS: Final[tuple[FaultKind, ...]] = ("busy", "ioerr", "full", "commit")

# (message, extended result code, name): what sqlite3 raises for the real condition.
_ERRORS: Final[dict[FaultKind, tuple[str, int, str]]] = {
    "busy": ("database is locked", 5, "SQLITE_BUSY"),
    "ioerr": ("disk I/O error", 10, "SQLITE_IOERR"),
    "full": ("database or disk is full", 13, "SQLITE_FULL"),
    "commit": ("disk I/O error", 10 | (14 << 8), "SQLITE_IOERR_FSYNC"),
}


class Faults:
    """Seeded fault injection for the writer; counts what it injected in :attr:`injected`.

    ``probability`` applies per job (statement faults) and per transaction (``commit``
    faults), for the given ``kinds`` and ``targets``. Set :attr:`enabled` to False (or
    call :meth:`stop`) to let the store recover.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        probability: float = 0.0,
        kinds: Iterable[FaultKind] = FAULT_KINDS,
        targets: Collection[Target] = ("log", "projection"),
    ) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], not {probability!r}")
        kinds = tuple(kinds)
        unknown = [k for k in kinds if k not in FAULT_KINDS]
        if unknown or not kinds:
            raise ValueError(f"kinds must be a non-empty subset of {FAULT_KINDS}, not {kinds}")
        self.seed = seed
        self.probability = probability
        self.kinds = kinds
        self.targets = frozenset(targets)
        self.enabled = True
        #: Faults injected so far, by kind.
        self.injected: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._cap: bool | None = None  # requested page cap: True fill, False free, None same

    # -- the test's side -------------------------------------------------------------------

    def stop(self) -> None:
        """Inject nothing more (a disk filled with :meth:`fill_disk` stays full)."""
        self.enabled = False

    def fill_disk(self) -> None:
        """Cap the database at its current size from the next transaction on."""
        with self._lock:
            self._cap = True

    def free_disk(self) -> None:
        """Lift the cap set by :meth:`fill_disk` from the next transaction on."""
        with self._lock:
            self._cap = False

    # -- the writer thread's side ------------------------------------------------------------

    def before_transaction(self, conn: sqlite3.Connection) -> None:
        """Apply a pending disk cap change (outside any transaction)."""
        with self._lock:
            cap, self._cap = self._cap, None
        if cap is True:
            (pages,) = conn.execute("PRAGMA page_count").fetchone()
            conn.execute(f"PRAGMA max_page_count = {int(pages)}")
        elif cap is False:
            conn.execute("PRAGMA max_page_count = 4294967294")

    def before_job(self, target: Target) -> None:
        """Maybe raise a statement fault for one job of ``target``."""
        kind = self._draw(target, statement=True)
        if kind is not None:
            raise _error(kind)

    def before_commit(self, targets: Collection[Target]) -> None:
        """Maybe fail the COMMIT of a transaction holding jobs of ``targets``."""
        if "commit" not in self.kinds or not any(t in self.targets for t in targets):
            return
        if self._draw(None, statement=False) is not None:
            raise _error("commit")

    def _draw(self, target: Target | None, *, statement: bool) -> FaultKind | None:
        if not self.enabled or self.probability == 0.0:
            return None
        if target is not None and target not in self.targets:
            return None
        kinds = [k for k in self.kinds if (k != "commit") == statement]
        if not kinds:
            return None
        with self._lock:
            if self._rng.random() >= self.probability:
                return None
            kind = self._rng.choice(kinds)
            self.injected[kind] += 1
        return kind


def _error(kind: FaultKind) -> sqlite3.OperationalError:
    message, code, name = _ERRORS[kind]
    error = sqlite3.OperationalError(f"{message} (injected)")
    error.sqlite_errorcode = code
    error.sqlite_errorname = name
    return error
