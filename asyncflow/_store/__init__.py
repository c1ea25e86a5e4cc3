"""The run store: every run and every state it enters is recorded here.

The engine only talks to the `RunStore` interface. This issue ships the in-memory store; the
SQLite store (the default once it lands) implements the same methods.
"""

from __future__ import annotations

from .base import LogRecord, RunStore, StateRecord
from .memory import MemoryStore

_store: RunStore | None = None
DEFAULT_MAX_RUNS = 10_000  # the process-wide default store keeps the newest runs only


def get_store() -> RunStore:
    global _store
    if _store is None:
        _store = MemoryStore(max_runs=DEFAULT_MAX_RUNS)
    return _store


def set_store(store: RunStore | None) -> RunStore | None:
    """Install `store` as the process's store; returns the previous one."""
    global _store
    previous, _store = _store, store
    return previous


__all__ = ["LogRecord", "MemoryStore", "RunStore", "StateRecord", "get_store", "set_store"]
