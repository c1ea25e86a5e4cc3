"""Task runners decide where a submitted run's user code executes and how many run at once.

The engine drives every run as a coroutine on the flow's event loop; a runner supplies three things:

- `run_sync(fn)`: execute a zero-argument sync callable (the user's function bound to its arguments);
- `run_async(fn)`: execute a zero-argument async callable;
- `execution_slot(ticket)`: an async context manager held while a run submitted by a flow executes
  (after its inputs are resolved, so a slot is never held by a run that waits for another run);
  `ticket()` is called at submit time, and `release(ticket)` once the run is over, whatever happened.

A runner for another engine (Dask, Ray, processes) implements the same three methods.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

from . import _settings
from ._engine.threads import ThreadDispatcher, set_thread_slot

R = TypeVar("R")


class TaskRunner:
    """Base class. Each flow run works on its own `duplicate()` of the flow's runner."""

    def __init__(self) -> None:
        self._limiter: anyio.CapacityLimiter | None = None
        self._dispatcher: ThreadDispatcher | None = None

    @property
    def name(self) -> str:
        return type(self).__name__.lower().replace("taskrunner", "")

    def duplicate(self) -> TaskRunner:
        return type(self)()

    def _thread_limit(self) -> int:
        return int(_settings.THREAD_LIMIT.value())

    def _get_limiter(self) -> anyio.CapacityLimiter:
        if self._limiter is None:  # created lazily: anyio primitives need a running loop
            self._limiter = anyio.CapacityLimiter(self._thread_limit())
        return self._limiter

    async def run_sync(self, fn: Callable[[], R]) -> R:
        """Run sync user code in a worker thread (never on the event-loop thread).

        The thread holds one of the runner's slots while it runs user code; if that code blocks on
        another run (`future.result()`), the slot is handed back until the wait is over, so a
        bounded runner can never deadlock on nested submissions.
        """
        limiter = self._get_limiter()
        slot = ThreadSlot(limiter)
        await limiter.acquire_on_behalf_of(slot)
        try:
            return await anyio.to_thread.run_sync(slot.run, fn, limiter=_thread_limiter(), abandon_on_cancel=True)
        finally:
            slot.close()  # (an abandoned thread that lent its slot must not take it again later: L4)

    async def run_async(self, fn: Callable[[], Awaitable[R]]) -> R:
        return await fn()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.overrides_run_async = cls.run_async is not TaskRunner.run_async
        cls.overrides_run_sync = cls.run_sync is not TaskRunner.run_sync
        cls.uses_slots = cls.execution_slot is not TaskRunner.execution_slot

    overrides_run_async = False  # the engine awaits coroutines directly unless a runner says otherwise
    overrides_run_sync = False
    uses_slots = False

    def dispatcher(self) -> ThreadDispatcher | None:
        """Where submitted sync runs execute whole (engine and user code) in one pool thread, without
        a round trip through the event loop; None for runners that place sync code themselves."""
        if self.overrides_run_sync or self.uses_slots:
            return None
        if self._dispatcher is None:
            self._dispatcher = ThreadDispatcher(self._thread_limit())
        return self._dispatcher

    def ticket(self) -> Any:
        """Called when a flow submits a run, in submission order; `None` means no slot is needed."""
        if not self.uses_slots:
            return None
        with _ticket_lock:
            self._tickets = getattr(self, "_tickets", 0) + 1
            return self._tickets - 1

    @contextlib.asynccontextmanager
    async def execution_slot(self, ticket: Any) -> AsyncIterator[None]:
        yield

    def release(self, ticket: Any) -> None:
        """Called when the run holding `ticket` is over (also if it never got to execute)."""

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


_ticket_lock = threading.Lock()
_thread_limiter_var: anyio.lowlevel.RunVar[anyio.CapacityLimiter] = anyio.lowlevel.RunVar("asyncflow_threads")


def _thread_limiter() -> anyio.CapacityLimiter:
    """Threads themselves are not the scarce resource (runner slots are): allow plenty per event loop."""
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
        anyio.from_thread.run_sync(self.limiter.release_on_behalf_of, self)

    def reacquire(self) -> None:
        if self.held or self.closed:
            return
        anyio.from_thread.run(self._acquire_unless_closed)

    async def _acquire_unless_closed(self) -> None:
        """On the loop (where `close` runs too): take the slot back only if the run is still on."""
        await self.limiter.acquire_on_behalf_of(self)
        if self.closed:
            self.limiter.release_on_behalf_of(self)
            return
        self.held = True


class ThreadPoolTaskRunner(TaskRunner):
    """Runs submitted tasks concurrently: coroutines on the loop, sync code in up to `max_workers` threads."""

    def __init__(self, max_workers: int | None = None) -> None:
        super().__init__()
        if max_workers is not None and (not isinstance(max_workers, int) or max_workers < 1):
            raise ValueError(f"max_workers must be a positive integer or None; got {max_workers!r}.")
        self.max_workers = max_workers

    def _thread_limit(self) -> int:
        return self.max_workers if self.max_workers is not None else super()._thread_limit()

    def duplicate(self) -> ThreadPoolTaskRunner:
        return type(self)(max_workers=self.max_workers)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.max_workers == self.max_workers  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self.max_workers))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_workers={self.max_workers})"


class ConcurrentTaskRunner(ThreadPoolTaskRunner):
    """The default runner: submitted runs execute concurrently (an alias of ThreadPoolTaskRunner)."""


class SequentialTaskRunner(TaskRunner):
    """Submitted runs execute one at a time, in submission order (tickets served in order)."""

    def __init__(self) -> None:
        super().__init__()
        self._issued = 0
        self._serving = 0
        self._finished: set[int] = set()
        self._waiters: dict[int, anyio.Event] = {}
        self._lock = threading.Lock()

    def ticket(self) -> int:
        with self._lock:
            self._issued += 1
            return self._issued - 1

    @contextlib.asynccontextmanager
    async def execution_slot(self, ticket: int) -> AsyncIterator[None]:
        if ticket != self._serving:
            event = self._waiters[ticket] = anyio.Event()
            if ticket != self._serving:
                await event.wait()
        yield

    def release(self, ticket: int) -> None:
        """Runs on the loop thread; advances past every finished ticket and wakes the next run."""
        self._finished.add(ticket)
        while self._serving in self._finished:
            self._finished.discard(self._serving)
            self._serving += 1
        waiter = self._waiters.pop(self._serving, None)
        if waiter is not None:
            waiter.set()


def default_task_runner() -> TaskRunner:
    return ConcurrentTaskRunner()


def coerce_task_runner(value: Any) -> TaskRunner:
    if value is None:
        return default_task_runner()
    if isinstance(value, type) and issubclass(value, TaskRunner):
        return value()
    if isinstance(value, TaskRunner):
        return value
    raise TypeError(
        f"task_runner must be a TaskRunner instance or class (for example ThreadPoolTaskRunner(max_workers=4)); "
        f"got {value!r}.")


__all__ = ["ConcurrentTaskRunner", "SequentialTaskRunner", "TaskRunner", "ThreadPoolTaskRunner"]
