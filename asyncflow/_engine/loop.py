"""Where are we? Is an event loop running in this thread, and how to reach a loop from another thread."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import Any

import sniffio

_get_running_loop = asyncio._get_running_loop
_thread_local = sniffio.thread_local


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
    call_soon = asyncio.get_running_loop().call_soon_threadsafe

    def in_asyncio(fn: Callable[..., Any], *args: Any) -> None:
        token = sniffio.current_async_library_cvar.set("asyncio")
        try:
            fn(*args)
        finally:
            sniffio.current_async_library_cvar.reset(token)

    return lambda fn, *args: call_soon(in_asyncio, fn, *args)
