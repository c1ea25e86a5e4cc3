"""Scopes: where submitted runs execute. A scope is an anyio task group on some event loop,
reachable from any thread (a sync task running in a worker thread can submit into its flow's scope).

Spawning an anyio task costs ~30 µs, more than a whole trivial task run, so a scope does not spawn
one task per run. Submitted runs wait in a FIFO; worker tasks drive them one after the other, and a
worker whose run suspends (waits on I/O, a sleep, another run) first makes sure another worker is
free to go on with the queue. So runs that never block cost no spawn at all, and runs that block
never hold up the ones behind them: concurrency stays unbounded. Each run executes in a copy of the
context it was submitted from, exactly like an asyncio task.

A sync flow called from a sync script has no loop until it submits something: `LazyLoopScope`
starts an event loop in a helper thread on the first submit, and stops it when the run ends.
"""

from __future__ import annotations

import contextvars
import threading
import time
import types
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.abc import TaskGroup, TaskStatus

from .loop import threadsafe_caller

_YIELD_EVERY = 64  # a worker lets other tasks run at least this often


class Scope:
    """A task group plus a queue of runs, fed from any thread."""

    def __init__(self, task_group: TaskGroup) -> None:
        self.task_group = task_group
        self._thread = threading.get_ident()
        self._call_soon = threadsafe_caller()
        self._queue: deque[tuple[Callable[..., Coroutine[Any, Any, Any]], tuple[Any, ...],
                                 contextvars.Context]] = deque()
        self._free = 0  # workers that will take the next queued run without waiting for one to finish
        self._inbox: list[Any] = []  # runs submitted from other threads, not yet queued
        self.closed = False  # set by the engine when the scope's task group has exited (any reason)
        self.guards: set[Any] = set()  # sync user code of this scope's runs, running in threads
        self.wall_deadline: float | None = None  # the flow's deadline on time.monotonic(), for threads
        self._inbox_lock = threading.Lock()
        self._inbox_scheduled = False

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        item = (fn, args, contextvars.copy_context())
        if threading.get_ident() == self._thread:
            self._enqueue(item)
            return
        # from another thread: one wake-up of the loop per burst of submissions, not one per run
        with self._inbox_lock:
            self._inbox.append(item)
            if self._inbox_scheduled:
                return
            self._inbox_scheduled = True
        self._call_soon(self._take_inbox)

    def _take_inbox(self) -> None:
        with self._inbox_lock:
            items, self._inbox = self._inbox, []
            self._inbox_scheduled = False
        for item in items:
            self._enqueue(item)

    def _enqueue(self, item: Any) -> None:
        self._queue.append(item)
        if self._free == 0:
            self._free += 1
            self.task_group.start_soon(self._worker)

    async def _worker(self) -> None:
        cancelled: BaseException | None = None
        done = 0
        while self._queue:
            fn, args, context = self._queue.popleft()
            try:
                await self._drive(context, fn(*args))
            except anyio.get_cancelled_exc_class() as exc:
                cancelled = exc  # keep draining: every queued run must still reach a final state
            done += 1
            if done % _YIELD_EVERY == 0 and cancelled is None:
                await anyio.lowlevel.checkpoint()
        self._free -= 1
        if cancelled is not None:
            raise cancelled

    @types.coroutine
    def _drive(self, context: contextvars.Context, coro: Coroutine[Any, Any, Any]) -> Generator[Any, Any, None]:
        """Run `coro` inside this worker task, in its own context; note when it first suspends."""
        try:
            value = context.run(coro.send, None)
        except StopIteration:
            return
        self._free -= 1  # blocked: the queue needs another worker
        if self._queue and self._free == 0:
            self._free += 1
            self.task_group.start_soon(self._worker)
        try:
            while True:
                try:
                    sent = yield value
                except BaseException as exc:  # delivered by the event loop (cancellation, ...)
                    value = context.run(coro.throw, exc)
                else:
                    value = context.run(coro.send, sent)
        except StopIteration:
            return
        finally:
            self._free += 1
            coro.close()

    def may_start(self) -> bool:
        """From any thread: False once the scope has closed or its deadline passed. (Cancel scopes
        themselves cannot be read off the loop thread on trio.)"""
        if self.closed:
            return False
        return self.wall_deadline is None or time.monotonic() < self.wall_deadline

    def cancel(self) -> None:
        """Cancel every run in the scope: tasks on the loop, and sync code running in threads."""
        for guard in list(self.guards):
            guard.abort()
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
        self.closed = False
        self.guards: set[Any] = set()
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

    def may_start(self) -> bool:
        return not self.closed and (self._scope is None or self._scope.may_start())

    def cancel(self) -> None:
        self.closed = True
        for guard in list(self.guards):
            guard.abort()
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
