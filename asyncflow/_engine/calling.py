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

import sys
from collections.abc import Callable
from typing import Any

_getframe = sys._getframe
# inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR (fixed since Python 3.6), without importing inspect:
# the store's writer process imports this module through _states, and inspect is a third of its imports
ASYNC_FLAGS = 0x0080 | 0x0200
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


def unawaited_name(kind: str, name: str) -> str:
    """The `__qualname__` given to the coroutine a call of a task or flow returns. Python's warning
    for a coroutine dropped without being awaited quotes it, so the warning names the task or flow
    and the fix instead of an engine function: "coroutine 'add() [an asyncflow task called without
    await: ...]' was never awaited". (One attribute set per call; a wrapper object cost microseconds.)"""
    return (f"{name}() [an asyncflow {kind} called without await: in async code write `await {name}(...)`; "
            f"from sync code run it with asyncio.run(...) or anyio.run(...)]")
