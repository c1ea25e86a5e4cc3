"""The run store: every run and every state it enters is recorded here.

The engine only talks to the `RunStore` interface. The process's store is chosen by the settings:
`ASYNCFLOW_STORE=sqlite` (the default) records into `ASYNCFLOW_HOME/asyncflow.db`, shared by every
process with that home; `ASYNCFLOW_STORE=memory` keeps runs in this process's memory;
`ASYNCFLOW_STORE=postgresql://…` records into a PostgreSQL database shared by every machine (postgres.py).
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Any

from .. import _fork
from .base import LogRecord, ObjectNotFound, RunStore, StateRecord, StoreError, StoreNotFoundError

if TYPE_CHECKING:
    from .memory import MemoryStore as MemoryStore

_store: RunStore | None = None
_lock = threading.Lock()
DEFAULT_MAX_RUNS = 10_000  # the process-wide memory store keeps the newest runs only


def _reset_in_child() -> None:
    """A thread of the parent may have held the lock (creating the store) at the fork."""
    global _lock
    _lock = threading.Lock()


_fork.register("store factory", reset_in_child=_reset_in_child)


def get_store() -> RunStore:
    store = _store
    if store is None:
        store = _create_default()
    return store


def _create_default() -> RunStore:
    """The process's store. One that cannot be opened (a full disk, a read-only or damaged home, a
    newer schema) never stops a flow: one warning says why and what to do, and the process records
    into memory."""
    global _store
    with _lock:
        if _store is not None:
            return _store
        try:
            _store = store = default_store()
        except StoreError as exc:
            from .writer import report

            report(f"{exc} Until this process ends, its runs are kept in memory only (readable in this "
                   f"process; the CLI and other processes will not see them).")
            from .memory import MemoryStore

            _store = store = MemoryStore(max_runs=DEFAULT_MAX_RUNS)
    if not _is_memory(store):  # ASYNCFLOW_STORE_RETENTION, in a background thread
        from .retention import start_automatic

        when_first_idle = getattr(store, "when_first_idle", None)
        if when_first_idle is not None:  # once the first records are written: off the first flow's path
            when_first_idle(lambda: start_automatic(store))
        else:
            start_automatic(store)
    return store


def _is_memory(store: RunStore) -> bool:
    memory = sys.modules.get(__name__ + ".memory")  # not imported: no MemoryStore exists
    return memory is not None and isinstance(store, memory.MemoryStore)


def default_store(create: bool = True) -> RunStore:
    """A new store as the settings say: SQLite at ASYNCFLOW_HOME/asyncflow.db, PostgreSQL, or in memory."""
    from .. import _settings

    kind = _settings.STORE.value()
    if kind == "memory":
        from .memory import MemoryStore

        return MemoryStore(max_runs=DEFAULT_MAX_RUNS)
    if kind != "sqlite":  # a PostgreSQL URL (the setting accepts nothing else)
        from .postgres import PostgresStore

        return PostgresStore(kind, create=create, queue_size=_settings.STORE_QUEUE_SIZE.value(), recover=True,
                             flush_timeout=_settings.STORE_FLUSH_TIMEOUT_SECONDS.value())
    from .sqlite import DB_FILE_NAME, SQLiteStore

    return SQLiteStore(_settings.HOME.value() / DB_FILE_NAME, create=create,
                       queue_size=_settings.STORE_QUEUE_SIZE.value(), recover=True,
                       flush_timeout=_settings.STORE_FLUSH_TIMEOUT_SECONDS.value())


def set_store(store: RunStore | None) -> RunStore | None:
    """Install `store` as the process's store; returns the previous one."""
    global _store
    with _lock:
        previous, _store = _store, store
    return previous


def pending() -> bool:
    """Is anything recorded and not yet written (in the process's store, if one exists)?"""
    store = _store
    return store is not None and bool(store.pending())


def flush() -> Any:
    """Write everything recorded so far (the process's store, if one exists)."""
    store = _store
    return store.flush() if store is not None else True


def __getattr__(name: str) -> Any:
    """`MemoryStore` is imported on first use: with the SQLite store (the default) it is never needed."""
    if name == "MemoryStore":
        from .memory import MemoryStore

        return MemoryStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["LogRecord", "MemoryStore", "ObjectNotFound", "RunStore", "StateRecord", "StoreError",
           "StoreNotFoundError", "default_store", "flush", "get_store", "pending", "set_store"]
