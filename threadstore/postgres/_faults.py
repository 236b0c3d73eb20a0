"""A test seam: real PostgreSQL failures in the writer's transactions, by seed and probability.

Pass ``faults=PostgresFaults(...)`` to :func:`threadstore.open_store` with a
``postgresql://`` URL. The writer consults it before each job's statements and around each
COMMIT, and the failures it injects are the server's own, not imitations:

- ``serialization``: the job's first statement is a ``DO`` block raising SQLSTATE 40001
  (``serialization_failure``) on the server: the transaction is aborted as by a real
  conflict; the writer's redo with savepoints fails that job alone.
- ``connection``: the server ends the writer's session (``pg_terminate_backend`` of its
  own backend) before a job: the whole transaction is lost; the writer connects again.
- ``commit``: the connection is lost around the COMMIT: half the time just before it
  (the server rolls back), half the time just after it (the server committed but the answer
  never arrived: the writer must find out it did).

Jobs that append log items are the ``"log"`` target; metadata projection writes are the
``"projection"`` target. Thread-safe: the test changes settings on the trio thread while the
writer thread reads them.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Collection, Iterable
from typing import Any, Final, Literal

import psycopg

__all__ = ["FAULT_KINDS", "FaultKind", "PostgresFaults", "Target"]

FaultKind = Literal["serialization", "connection", "commit"]
Target = Literal["log", "projection"]
FAULT_KINDS: Final[tuple[FaultKind, ...]] = ("serialization", "connection", "commit")

_SERIALIZATION: Final = (
    "DO $$ BEGIN RAISE EXCEPTION 'serialization failure (injected)' "
    "USING ERRCODE = 'serialization_failure'; END $$"
)


class PostgresFaults:
    """Seeded fault injection for the PostgreSQL writer; counts what it injected in
    :attr:`injected`. ``probability`` applies per job (``serialization``, ``connection``)
    and per transaction (``commit``), for the given ``kinds`` and ``targets``. Set
    :attr:`enabled` to False (or call :meth:`stop`) to let the store recover.
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
        #: Faults injected so far, by kind (``commit`` as ``commit-before``/``commit-after``).
        self.injected: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def stop(self) -> None:
        """Inject nothing more."""
        self.enabled = False

    # -- the writer thread's side ------------------------------------------------------------

    def before_job(self, target: Target | None, conn: psycopg.Connection[Any]) -> FaultKind | None:
        """Maybe make the server fail the job about to run; the kind injected, if any (the
        writer injects the same again when it redoes the batch)."""
        kind = self._draw(target, ("serialization", "connection"))
        if kind is not None:
            inject(kind, conn)
        return kind

    def around_commit(self, targets: Collection[Target]) -> str | None:
        """Maybe lose the connection around this COMMIT: ``"before"``, ``"after"`` or None."""
        if self._draw_any(targets, ("commit",)) is None:
            return None
        with self._lock:
            point = self._rng.choice(("before", "after"))
            self.injected[f"commit-{point}"] += 1
        return point

    def _draw_any(
        self, targets: Collection[Target], kinds: tuple[FaultKind, ...]
    ) -> FaultKind | None:
        if not any(t in self.targets for t in targets):
            return None
        return self._draw(None, kinds)

    def _draw(self, target: Target | None, among: tuple[FaultKind, ...]) -> FaultKind | None:
        if not self.enabled or self.probability == 0.0:
            return None
        if target is not None and target not in self.targets:
            return None
        kinds = [k for k in self.kinds if k in among]
        if not kinds:
            return None
        with self._lock:
            if self._rng.random() >= self.probability:
                return None
            kind = self._rng.choice(kinds)
            if kind != "commit":
                self.injected[kind] += 1
        return kind


def inject(kind: FaultKind, conn: psycopg.Connection[Any]) -> None:
    """Have the server fail ``conn``'s transaction the ``kind`` way (see the module)."""
    if kind == "serialization":
        conn.execute(_SERIALIZATION)
    else:
        lose_connection(conn)


def lose_connection(conn: psycopg.Connection[Any]) -> None:
    """End ``conn``'s session on the server (its backend terminates itself)."""
    conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
