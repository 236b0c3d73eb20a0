"""Test seams for applications and for threadstore's own reliability harnesses.

``open_store(path, faults=Faults(seed=..., probability=...))`` injects SQLite failures
(busy/locked, disk I/O error, disk full, a COMMIT that fails after its statements
succeeded) into log commits and projection writes; ``fill_disk``/``free_disk`` cap the
database file at its current size for real ``SQLITE_FULL`` errors.
"""

from .sqlite._faults import FAULT_KINDS, FaultKind, Faults, Target

__all__ = ["FAULT_KINDS", "FaultKind", "Faults", "Target"]
