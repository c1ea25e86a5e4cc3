"""Where are we? Is an event loop running in this thread, and how to reach a loop from another thread."""

from __future__ import annotations

import contextvars
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import sniffio

_thread_local = sniffio.thread_local


def _until_asyncio_is_imported() -> Any:
    """asyncio's running loop, without importing asyncio (it costs more than anyio itself, and a sync
    flow or a trio program never needs it): no asyncio loop can run before asyncio is imported. Once
    it is, this function replaces itself with asyncio's own (a C function)."""
    global _get_running_loop
    asyncio = sys.modules.get("asyncio")
    if asyncio is None or not hasattr(asyncio, "_get_running_loop"):  # not imported, or half-way
        return None
    _get_running_loop = asyncio._get_running_loop
    return _get_running_loop()


_get_running_loop: Callable[[], Any] = _until_asyncio_is_imported


_inline = threading.local()  # .depth: engines driven inline, blocking, on this (loop) thread


def in_async_context() -> bool:
    """True when an event loop (asyncio or trio) runs in the current thread and the code here may
    suspend on it. False while sync code runs inline on the loop thread (a sync flow called from a
    notebook cell without `await`, or from a sync helper of async code): that code blocks the loop, so
    it waits like code in any other thread, and nothing it waits for may need this loop."""
    if _thread_local.name is None and _get_running_loop() is None:
        return False
    return not getattr(_inline, "depth", 0)


def loop_runs_here() -> bool:
    """True when an event loop runs in this thread, blocked or not (no new loop can start here)."""
    return _thread_local.name is not None or _get_running_loop() is not None


def drive_here(coro: Coroutine[Any, Any, Any]) -> Any:
    """`drive_sync(coro)` for a call from sync code. On an event loop's thread the engine runs inline,
    blocking the loop as any sync call there does; meanwhile `in_async_context()` is False."""
    if _thread_local.name is None and _get_running_loop() is None:
        return drive_sync(coro)
    _inline.depth = getattr(_inline, "depth", 0) + 1
    try:
        return drive_sync(coro)
    finally:
        _inline.depth -= 1


def drive_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run an engine coroutine to completion in this thread, with no event loop's help.

    With the blocking bridge the engine never awaits anything that suspends, so one `send(None)`
    finishes it. This costs well under a microsecond, against ~100 µs for a hop to a loop thread and
    back.
    """
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("asyncflow internal error: the engine tried to suspend during a sync call.")


def run_on_own_loop(async_fn: Callable[[], Any], backend: str = "asyncio") -> Any:
    """`anyio.run(async_fn)` from sync code: here, or in a new thread when a loop runs here already
    (sync code inline on a loop thread cannot start another loop in it)."""
    import anyio

    if not loop_runs_here():
        return anyio.run(async_fn, backend=backend)
    outcome: list[Any] = []

    def in_thread() -> None:
        try:
            outcome.append((True, anyio.run(async_fn, backend=backend)))
        except BaseException as exc:  # handed to the caller
            outcome.append((False, exc))

    context = context_for_another_thread()
    thread = threading.Thread(target=context.run, args=(in_thread,), name="asyncflow-own-loop")
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if ok:
        return value
    raise value


_library = sniffio.current_async_library_cvar


def context_for_another_thread() -> contextvars.Context:
    """A copy of the current context for code that runs in another thread (or on another loop):
    everything but sniffio's note of which event loop runs here, which is not true over there."""
    context = contextvars.copy_context()
    if _library.get() is not None:
        context.run(_library.set, None)
    return context


def threadsafe_caller() -> Callable[..., Any]:
    """A function that schedules `fn(*args)` on the current loop from any thread, without waiting.

    The callback runs outside any task, so it declares the backend to sniffio (anyio needs it). One
    small object (no closures): every flow's scope and every awaited future makes one.
    """
    if sniffio.current_async_library() == "trio":
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon
    import asyncio

    return _AsyncioCaller(asyncio.get_running_loop())


class _AsyncioCaller:
    __slots__ = ("loop",)

    def __init__(self, loop: Any) -> None:
        self.loop = loop

    def __call__(self, fn: Callable[..., Any], *args: Any) -> None:
        self.loop.call_soon_threadsafe(in_asyncio, fn, *args)


def in_asyncio(fn: Callable[..., Any], *args: Any) -> None:
    """Run `fn(*args)` as an asyncio loop callback, declaring the backend to sniffio (anyio needs it)."""
    token = sniffio.current_async_library_cvar.set("asyncio")
    try:
        fn(*args)
    finally:
        sniffio.current_async_library_cvar.reset(token)
