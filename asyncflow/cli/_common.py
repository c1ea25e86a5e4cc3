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


# -- argument types: a clear error (exit status 2, naming the option) instead of a traceback or a
# silently empty result (U7) --------------------------------------------------------------------------
MAX_COUNT = 2**63 - 1  # SQLite's largest integer


def count(text: str) -> int:
    """An integer from 0 to MAX_COUNT (`--limit`)."""
    import argparse

    try:
        value = int(text.strip())
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to {MAX_COUNT}, got {text!r}")
    return value


def nonempty(text: str) -> str:
    """A value that is not empty or blank (`--flow-name ''` would match nothing)."""
    import argparse

    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a non-empty value, got {text!r}")
    return text


def duration(text: str) -> float:
    """`30d`, `12h`, `90m`, `45s` or a number of seconds (`--older-than`)."""
    import argparse

    from .._settings import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, got {text!r}") from None
