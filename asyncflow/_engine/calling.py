"""The calling rule: is the code that called a task, a flow or `State.result()` async code?

*Async code* is a coroutine function's body (an `async def`, an async generator, or a notebook cell
compiled with top-level `await`, which Python marks as a coroutine too). Anything else is sync code,
even where an event loop runs in the thread: a notebook cell without `await`, a sync helper that async
code calls, a sync callback a library runs on the loop. Comprehensions, generator expressions and
lambdas count as the function they are written in (Python 3.10 and 3.11 give them frames of their
own), and so do asyncflow's own thin wrappers (a task reached through an instance).

The check reads one frame's flags: it is on every call's path, so it stays a few attribute reads.
"""

from __future__ import annotations

import inspect
import sys
import warnings
from collections.abc import Callable, Coroutine, Generator
from typing import Any

_getframe = sys._getframe
ASYNC_FLAGS = inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR
_WRAPPER = "<asyncflow wrapper>"  # the code name of asyncflow's own pass-through wrappers
# frames that belong to the function they are written in (3.12 inlines the comprehensions, not the rest)
SEE_THROUGH = frozenset({"<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>", "<lambda>", _WRAPPER})


def see_through(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark an asyncflow wrapper that calls a task or flow on its caller's behalf: its frame is skipped.
    (Its code is renamed, so that one lookup of a name finds every frame to skip.)"""
    fn.__code__ = fn.__code__.replace(co_name=_WRAPPER)
    return fn


def caller_is_async(depth: int = 2) -> bool:
    """Is the code `depth` frames up (2: the caller of the function that asks) async code?"""
    code = _getframe(depth).f_code
    if code.co_flags & ASYNC_FLAGS:
        return True
    return code.co_name in SEE_THROUGH and is_async_frame(_getframe(depth))


def is_async_frame(frame: Any) -> bool:
    """Is `frame` async code, counting comprehensions, lambdas and wrappers as their caller's?"""
    while frame is not None:
        code = frame.f_code
        if code.co_flags & ASYNC_FLAGS:  # (an async comprehension is async code itself)
            return True
        if code.co_name not in SEE_THROUGH:
            return False
        frame = frame.f_back
    return False


def call_site(depth: int = 2) -> tuple[str, int]:
    """(file, line) of the code `depth` frames up, skipping the see-through frames, for warnings."""
    frame: Any = _getframe(depth)
    while frame.f_back is not None and frame.f_code.co_name == _WRAPPER:
        frame = frame.f_back
    return frame.f_code.co_filename, frame.f_lineno


class RunCall(Coroutine[Any, Any, Any]):
    """What calling a task or flow returns in async code (and an async one in sync code): a coroutine
    that starts the run when it is awaited (or run by `asyncio.run`, `trio.run`, a task group).

    Dropped without ever being started, it warns (`RuntimeWarning`, pointing at the call) naming the
    task or flow and the fix, instead of Python's bare "coroutine ... was never awaited"."""

    __slots__ = ("_make", "_args", "_coro", "_what", "_site")

    def __init__(self, make: Callable[..., Coroutine[Any, Any, Any]], args: tuple[Any, ...], what: str,
                 site: tuple[str, int] | None) -> None:
        self._make = make
        self._args = args
        self._coro: Coroutine[Any, Any, Any] | None = None
        self._what = what  # "task 'add'", "flow 'etl'"
        self._site = site

    def _start(self) -> Coroutine[Any, Any, Any]:
        coro = self._coro
        if coro is None:
            coro = self._coro = self._make(*self._args)
            self._args = ()
        return coro

    def __await__(self) -> Generator[Any, None, Any]:
        return self._start().__await__()

    def send(self, value: Any) -> Any:
        return self._start().send(value)

    def throw(self, *exc: Any) -> Any:
        return self._start().throw(*exc)

    def close(self) -> None:
        if self._coro is None:  # closed before it started: the run never happens, and nobody is told
            self._coro = _CLOSED
            self._args = ()
            return
        self._coro.close()

    def __del__(self) -> None:
        if self._coro is not None:
            return
        filename, lineno = self._site if self._site is not None else ("<unknown>", 0)
        # (under `-W error` this raises, and Python prints it as an exception ignored in __del__)
        warnings.warn_explicit(
            f"The call of {self._what} was never awaited, so it never ran. In async code (inside "
            f"`async def`, or a notebook cell that uses `await`) write `await` before the call, or "
            f"pass it to a task group; from sync code, run an async task or flow with "
            f"`asyncio.run(...)` or `anyio.run(...)`.",
            RuntimeWarning, filename, lineno, module="asyncflow")

    def __repr__(self) -> str:
        return f"<call of {self._what}>"


async def _never() -> None:  # pragma: no cover - a placeholder that is never awaited
    pass


_CLOSED: Any = _never()
_CLOSED.close()

