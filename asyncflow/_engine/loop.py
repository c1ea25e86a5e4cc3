"""Where are we? Is an event loop running in this thread, and how to reach a loop from another thread."""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Callable
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


def in_async_context() -> bool:
    """True when an event loop (asyncio or trio) runs in the current thread."""
    return _thread_local.name is not None or _get_running_loop() is not None


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

    The callback runs outside any task, so it declares the backend to sniffio (anyio needs it).
    """
    if sniffio.current_async_library() == "trio":
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon
    import asyncio

    call_soon = asyncio.get_running_loop().call_soon_threadsafe

    def in_asyncio(fn: Callable[..., Any], *args: Any) -> None:
        token = sniffio.current_async_library_cvar.set("asyncio")
        try:
            fn(*args)
        finally:
            sniffio.current_async_library_cvar.reset(token)

    return lambda fn, *args: call_soon(in_asyncio, fn, *args)
