"""A thread-pool runner's slots: a worker thread holds one while it runs user code, and lends it back
while that code blocks on another run (so a bounded runner never deadlocks on nested submissions)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

from .._engine.threads import set_thread_slot

R = TypeVar("R")
# anyio's RunVar, made by the first submission to a thread (anyio.lowlevel is not on the import path)
_thread_limiter_var: Any = None


def thread_limiter() -> anyio.CapacityLimiter:
    """Threads themselves are not the scarce resource (runner slots are): allow plenty per event loop."""
    global _thread_limiter_var
    if _thread_limiter_var is None:
        from anyio.lowlevel import RunVar

        _thread_limiter_var = RunVar("asyncflow_threads")
    try:
        return _thread_limiter_var.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(10_000)
        _thread_limiter_var.set(limiter)
        return limiter


class ThreadSlot:
    """A runner slot held by one worker thread, released while the thread waits on another run.

    `close()` (on the loop, when the run is over or abandoned) gives the slot back if it is held and
    stops a thread that outlived its run from ever taking it again."""

    __slots__ = ("__weakref__", "_lock", "closed", "held", "limiter")

    def __init__(self, limiter: anyio.CapacityLimiter) -> None:
        self.limiter = limiter
        self.held = True
        self.closed = False
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self.closed = True
            held, self.held = self.held, False
        if held:
            self.limiter.release_on_behalf_of(self)

    def run(self, fn: Callable[[], R]) -> R:
        previous = set_thread_slot(self)
        try:
            return fn()
        finally:
            set_thread_slot(previous)

    def release_while_blocked(self) -> None:
        with self._lock:
            if not self.held or self.closed:
                return
            self.held = False
        from anyio import from_thread

        from_thread.run_sync(self.limiter.release_on_behalf_of, self)

    def reacquire(self) -> None:
        if self.held or self.closed:
            return
        from anyio import from_thread

        from_thread.run(self._acquire_unless_closed)

    async def _acquire_unless_closed(self) -> None:
        """On the loop (where `close` runs too): take the slot back only if the run is still on."""
        await self.limiter.acquire_on_behalf_of(self)
        if self.closed:
            self.limiter.release_on_behalf_of(self)
            return
        self.held = True
