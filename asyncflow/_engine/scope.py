"""Scopes: where submitted runs execute. A scope is an anyio task group on some event loop,
reachable from any thread (a sync task running in a worker thread can submit into its flow's scope).

A sync flow called from a sync script has no loop until it submits something: `LazyLoopScope`
starts an event loop in a helper thread on the first submit, and stops it when the run ends.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.from_thread
from anyio.abc import TaskGroup, TaskStatus

from .loop import threadsafe_caller


class Scope:
    """A task group plus the means to start tasks in it from any thread."""

    def __init__(self, task_group: TaskGroup) -> None:
        self.task_group = task_group
        self._thread = threading.get_ident()
        self._call_soon = threadsafe_caller()

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        if threading.get_ident() == self._thread:
            self.task_group.start_soon(fn, *args)
        else:
            self._call_soon(self.task_group.start_soon, fn, *args)

    def cancel(self) -> None:
        if threading.get_ident() == self._thread:
            self.task_group.cancel_scope.cancel()
        else:
            self._call_soon(self.task_group.cancel_scope.cancel)

    def close(self, cancel: bool = False) -> None:
        """Nothing to release: the task group closes with the `async with` that opened it."""


class LazyLoopScope:
    """A scope whose event loop (in a helper thread) starts at the first submit."""

    def __init__(self) -> None:
        self._scope: Scope | None = None
        self._portal_cm: Any = None
        self._portal: Any = None
        self._stop: anyio.Event | None = None
        self._lock = threading.Lock()

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        if self._scope is None:
            self._start()
        assert self._scope is not None
        self._scope.spawn(fn, *args)

    def _start(self) -> None:
        with self._lock:
            if self._scope is not None:
                return
            self._portal_cm = anyio.from_thread.start_blocking_portal()
            self._portal = self._portal_cm.__enter__()
            _, (self._scope, self._stop) = self._portal.start_task(self._serve)

    async def _serve(self, *, task_status: TaskStatus[Any]) -> None:
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            task_status.started((Scope(tg), stop))
            await stop.wait()
            tg.cancel_scope.cancel()  # only reached after every child finished, or on cancel

    def cancel(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    def close(self, cancel: bool = False) -> None:
        """Stop the helper loop (the engine has already waited for every child run)."""
        if self._portal is None:
            return
        try:
            if cancel:
                self._portal.call(self._scope.task_group.cancel_scope.cancel)  # type: ignore[union-attr]
            self._portal.call(self._stop.set)  # type: ignore[union-attr]
        finally:
            self._portal_cm.__exit__(None, None, None)
            self._portal = self._portal_cm = self._scope = None
