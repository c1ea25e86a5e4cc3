"""Helpers for testing code that uses asyncflow: an isolated store or home, a fake clock, state histories.

    from asyncflow.testing import isolated_store, state_names

    def test_my_flow():
        with isolated_store() as store:
            state = my_flow(return_state=True)
            assert state_names(store, state.state_details.flow_run_id) == ["Pending", "Running", "Completed"]

`isolated_home()` goes further: a temporary ASYNCFLOW_HOME with its own SQLite store, for tests that
need what users get (the database file, the CLI, other processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import time
from collections.abc import Iterator
from typing import Any, cast

import anyio
import anyio.lowlevel

from . import _settings
from ._clock import Clock, set_clock
from ._store import MemoryStore, RunStore, set_store


@contextlib.contextmanager
def isolated_store(store: RunStore | None = None) -> Iterator[Any]:
    """Record runs in a fresh in-memory store (or in `store`) for the duration of the block."""
    store = store if store is not None else MemoryStore()
    previous = set_store(store)
    try:
        yield store
    finally:
        set_store(previous)


@contextlib.contextmanager
def isolated_home(path: str | os.PathLike[str] | None = None) -> Iterator[Any]:
    """Run the block with ASYNCFLOW_HOME set to `path` (default: a new temporary directory, removed
    afterwards) and a SQLite store at `ASYNCFLOW_HOME/asyncflow.db`; yields the store. Subprocesses
    started in the block inherit the home, so they share the store."""
    import tempfile

    from ._store.sqlite import DB_FILE_NAME, SQLiteStore

    temporary = tempfile.TemporaryDirectory(prefix="asyncflow-home-") if path is None else None
    home = temporary.name if temporary is not None else os.fspath(cast("str | os.PathLike[str]", path))
    saved = os.environ.get("ASYNCFLOW_HOME")
    os.environ["ASYNCFLOW_HOME"] = home
    _settings.reload()
    try:
        store = SQLiteStore(os.path.join(home, DB_FILE_NAME))
        previous = set_store(store)
        try:
            yield store
        finally:
            set_store(previous)
            store.close()
    finally:
        if saved is None:
            os.environ.pop("ASYNCFLOW_HOME", None)
        else:
            os.environ["ASYNCFLOW_HOME"] = saved
        _settings.reload()
        if temporary is not None:
            temporary.cleanup()


def state_names(store: Any, run_id: Any) -> list[str]:
    """The names of the states a run went through, in order."""
    return [state.name for state in store.read_states(run_id)]


class FakeClock(Clock):
    """Virtual time: `sleep` returns at once and advances the clock; `slept` records every sleep."""

    def __init__(self, start: float | None = None) -> None:
        self.now = start if start is not None else time.time()
        self.slept: list[float] = []

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await anyio.lowlevel.checkpoint()

    def sleep_blocking(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class _VirtualSelector(selectors.DefaultSelector):
    """Polls for I/O without blocking; when nothing is ready, jumps the loop's clock to its next timer."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None

    def select(self, timeout: float | None = None) -> list[Any]:
        events = super().select(0)
        if events or timeout is None or timeout <= 0 or self.loop is None:
            if not events and timeout is None:
                return super().select(None)  # waiting for I/O or a thread: real time passes
            return events
        self.loop.advance(timeout)
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on virtual time (like trio's `MockClock(autojump_threshold=0)`): whenever every
    task is waiting on a timer, time jumps to the next timer. Timeouts, sleeps and deadlines in tests
    take no real time and happen at exact virtual times.

        anyio.run(main, backend="asyncio", backend_options={"loop_factory": VirtualTimeLoop})
    """

    def __init__(self) -> None:
        selector = _VirtualSelector()
        super().__init__(selector=selector)
        selector.loop = self
        self._virtual_now = 0.0

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        self._virtual_now += seconds


@contextlib.contextmanager
def fake_clock(start: float | None = None) -> Iterator[FakeClock]:
    """Install a `FakeClock` for the duration of the block."""
    clock = FakeClock(start)
    previous = set_clock(clock)
    try:
        yield clock
    finally:
        set_clock(previous)


@contextlib.contextmanager
def temporary_settings(**values: Any) -> Iterator[None]:
    """Set `ASYNCFLOW_*` environment variables for the block: `temporary_settings(ASYNCFLOW_LOGGING_LEVEL="DEBUG")`."""
    from ._logging import reset_logging

    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = str(value)
        _settings.reload()
        reset_logging()
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _settings.reload()
        reset_logging()


__all__ = ["FakeClock", "VirtualTimeLoop", "fake_clock", "isolated_home", "isolated_store", "state_names",
           "temporary_settings"]
