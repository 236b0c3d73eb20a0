"""The in-memory engine: ``open_store(":memory:")``. No threads, no files; see
:mod:`._engine`."""

from ._engine import MEMORY_TARGET, MemoryEngine, open_memory_engine

__all__ = ["MEMORY_TARGET", "MemoryEngine", "open_memory_engine"]
