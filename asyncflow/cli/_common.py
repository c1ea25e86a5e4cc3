"""What the commands share: the store they read, and the error that ends a command."""

from __future__ import annotations

from typing import Any


class CLIError(Exception):
    """A problem the user can fix: printed as `error: ...`, exit status 1."""


_opened: list[Any] = []


def open_store() -> Any:
    """The store the settings name (SQLite under ASYNCFLOW_HOME), opened for reading (never created);
    opening it marks the runs of dead processes Crashed. Closed by `main`."""
    from .._store import MemoryStore, default_store

    store = default_store(create=False)  # the one factory: the settings choose the backend
    if isinstance(store, MemoryStore):
        raise CLIError("ASYNCFLOW_STORE=memory: runs are kept in the memory of the process that ran them, so "
                       "there is nothing here to read. Unset it (or `asyncflow config unset ASYNCFLOW_STORE`) to "
                       "record runs in ASYNCFLOW_HOME/asyncflow.db.")
    _opened.append(store)
    return store


def close_stores() -> None:
    while _opened:
        _opened.pop().close()
