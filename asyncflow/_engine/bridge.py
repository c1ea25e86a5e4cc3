"""Bridges: how the engine waits, sleeps, calls user code and does I/O, chosen once at the edge.

The task-run and flow-run engines are single coroutines shared by every caller. What differs between
a caller in sync code and a caller on an event loop is only *how* each wait happens, so the engine
never asks "am I sync?": it awaits a method of the bridge its edge picked.

- `BLOCKING` (a sync caller, a pool thread; the coroutine is driven with `drive_sync`): every method
  blocks this thread and never suspends, so one `send(None)` runs the whole engine. Sync user code
  runs right here (this thread is not an event loop's).
- `AWAITING` (the coroutine runs on an event loop): every method awaits; sync user code, hooks and
  file I/O go to worker threads, so nothing blocking ever runs on the loop thread.

Which one is decided by the caller's frame (`Task.__call__`, `Flow.__call__`, a submitted run's
start), never inside the engine: hooks, transactions and generator tasks then cannot pick the wrong
mode, as they could when a `sync` flag was threaded through every call.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import anyio

from .._callables import callable_name
from .._logging import ERROR, log
from .._states import State
from .deadline import call_sync_with_deadline
from .interrupt import UserCode
from .loop import drive_sync as drive_sync  # (its home was here)
from .loop import run_on_own_loop

if TYPE_CHECKING:
    from .._protocols import EngineRunner


class Bridge:
    """The waits of one engine run. Subclasses: `Blocking`, `Awaiting` (one instance each)."""

    blocking: bool

    def is_cancellation(self, exc: BaseException) -> bool:
        """Is `exc` the event loop cancelling this run (as opposed to an interrupt or a crash)?"""
        raise NotImplementedError

    async def sleep(self, clock: Any, seconds: float) -> None:
        raise NotImplementedError

    async def wait_futures(self, futures: list[Any]) -> None:
        """Until every future is final (on a loop: holding no thread; in a thread: blocking it)."""
        raise NotImplementedError

    async def wait_children(self, tracker: Any) -> None:
        """Until every run in `tracker` has ended, done callbacks included."""
        raise NotImplementedError

    async def call_with_deadline(self, fn: Callable[[], Any], limit: float, kind: str) -> Any:
        """Sync user code in a thread of its own, stopped at the deadline (`TaskRunTimeoutError`)."""
        return await call_sync_with_deadline(fn, limit, self.blocking, kind)

    async def settle_cancelled(self, tracker: Any) -> None:
        """After a scope was cancelled: until its runs on the event loop have recorded their end (an
        awaiting flow's task group waits for them itself as it exits)."""
        raise NotImplementedError

    async def call_user(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A user callback (hook, retry condition): never on the loop thread; an awaitable it returns
        is awaited."""
        raise NotImplementedError

    async def call_sync(self, fn: Callable[[], Any], guard: UserCode | None = None,
                        runner: EngineRunner | None = None) -> Any:
        """Sync user code, stoppable through `guard`; on a loop, in a worker thread (`runner=OWN_THREAD`:
        one not counted against any limit). Task runs with a runner go through the runner instead."""
        raise NotImplementedError

    async def io(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Blocking I/O of the engine's own (result files, locks, the store's flush)."""
        raise NotImplementedError

    async def lock(self, lock: Any) -> None:
        """Take a key lock (`_results.KeyLock`): on a loop, without holding a thread while waiting."""
        raise NotImplementedError

    async def shielded(self, coro: Coroutine[Any, Any, Any], seconds: float, label: str, ids: dict[str, Any]
                       ) -> None:
        """Run `coro` even inside a cancelled scope, for `seconds` at most (hooks of a cancelled run)."""
        raise NotImplementedError

    def now(self) -> float:
        raise NotImplementedError


class Blocking(Bridge):
    blocking = True

    def is_cancellation(self, exc: BaseException) -> bool:
        return False

    async def sleep(self, clock: Any, seconds: float) -> None:
        clock.sleep_blocking(seconds)

    async def wait_futures(self, futures: list[Any]) -> None:
        for future in futures:
            future._block(None, "wait")

    async def wait_children(self, tracker: Any) -> None:
        tracker.wait_all_blocking()

    async def settle_cancelled(self, tracker: Any) -> None:
        if tracker is not None:
            tracker.wait_all_blocking()

    async def call_user(self, fn: Callable[..., Any], *args: Any) -> Any:
        value = fn(*args)
        if inspect.isawaitable(value):  # a coroutine returned to sync code: a short-lived loop of its own
            async def _await() -> Any:
                return await value

            return run_on_own_loop(_await)
        return value

    async def call_sync(self, fn: Callable[[], Any], guard: UserCode | None = None,
                        runner: EngineRunner | None = None) -> Any:
        return guard.run(fn) if guard is not None else fn()  # this thread is no event loop's: right here

    async def io(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)

    async def lock(self, lock: Any) -> None:
        lock.acquire()

    async def shielded(self, coro: Coroutine[Any, Any, Any], seconds: float, label: str, ids: dict[str, Any]
                       ) -> None:
        await coro

    def now(self) -> float:
        import time

        return time.monotonic()


class Awaiting(Bridge):
    blocking = False

    def is_cancellation(self, exc: BaseException) -> bool:
        return isinstance(exc, anyio.get_cancelled_exc_class())

    async def sleep(self, clock: Any, seconds: float) -> None:
        await clock.sleep(seconds)

    async def wait_futures(self, futures: list[Any]) -> None:
        for future in futures:
            await future.wait_async()

    async def wait_children(self, tracker: Any) -> None:
        await tracker.wait_all()

    async def settle_cancelled(self, tracker: Any) -> None:
        """The flow's task group waits for its cancelled tasks as it exits."""

    async def call_user(self, fn: Callable[..., Any], *args: Any) -> Any:
        if inspect.iscoroutinefunction(fn):
            return await fn(*args)
        from anyio import to_thread  # (not on the import path: a sync flow never needs it)

        value = await to_thread.run_sync(lambda: fn(*args))
        return await value if inspect.isawaitable(value) else value

    async def call_sync(self, fn: Callable[[], Any], guard: UserCode | None = None,
                        runner: EngineRunner | None = None) -> Any:
        from anyio import to_thread

        user = guard if guard is not None else UserCode()
        try:
            if runner is OWN_THREAD:  # not limited by anyio's default thread count (a flow body)
                return await to_thread.run_sync(user.run, fn, limiter=anyio.CapacityLimiter(1),
                                                      abandon_on_cancel=True)
            return await to_thread.run_sync(user.run, fn, abandon_on_cancel=True)
        except anyio.get_cancelled_exc_class():
            user.abort()  # cancelled: the thread stops at its next bytecode
            raise

    async def io(self, fn: Callable[..., Any], *args: Any) -> Any:
        from anyio import to_thread

        return await to_thread.run_sync(fn, *args)

    async def lock(self, lock: Any) -> None:
        await lock.acquire_async()

    async def shielded(self, coro: Coroutine[Any, Any, Any], seconds: float, label: str, ids: dict[str, Any]
                       ) -> None:
        with anyio.move_on_after(seconds, shield=True) as scope:
            await coro
        if scope.cancelled_caught:
            log(ERROR, label, f"Did not finish within {seconds:g} s after the run was cancelled; stopped.", ids)

    def now(self) -> float:
        return anyio.current_time()  # the loop's clock (virtual time in tests)


OWN_THREAD: Any = object()  # `call_sync(..., runner=OWN_THREAD)`: a thread not counted against any limit
BLOCKING = Blocking()
AWAITING = Awaiting()


async def run_hooks(bridge: Bridge, hooks: list[Any], owner: Any, run: Any, state: State[Any], label: str,
                    ids: dict[str, Any]) -> None:
    """Call each hook as `hook(owner, run, state)`; a failing hook is logged and changes nothing."""
    for hook in hooks:
        try:
            await bridge.call_user(hook, owner, run, state)
        except Exception:
            log(ERROR, label, f"An error was encountered while running hook {callable_name(hook)!r}", ids,
                exc_info=True)
