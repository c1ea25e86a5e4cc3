"""One attempt of a generator task: the user's generator runs step by step inside the task-run
engine's attempt loop (so timeouts, retries with their delays and conditions, hooks, transactions
and crash recording are the engine's own), and every value it yields is handed out through `emit`.

`emit` suspends the engine coroutine with an `Emit`; the driver in `generators.py` hands the value
to the consumer and resumes the engine with what the consumer sends (or throws). The consumer's
time between values is not the generator's: `timeout_seconds` bounds the time spent in the
generator's own steps, summed over the attempt.
"""

from __future__ import annotations

import types
from collections.abc import Generator
from typing import Any

import anyio

from .._exceptions import TaskRunTimeoutError
from .bridge import Bridge


class Emit:
    """What the engine coroutine suspends with when the generator yields a value."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class ConsumerClosed(BaseException):
    """Thrown into the engine at an `emit` when the consumer closes the generator task early."""


@types.coroutine
def emit(value: Any) -> Generator[Emit, Any, Any]:
    """Hand `value` to the consumer; returns what the consumer sends back."""
    return (yield Emit(value))


async def stream_attempt(task: Any, args: tuple[Any, ...], kwargs: dict[str, Any], bridge: Bridge) -> Any:
    """Run one attempt of a generator task to its end; returns the generator's return value."""
    gen = task.fn(*args, **kwargs)
    limit = task.timeout_seconds
    is_async = task.kind == "asyncgen"
    now = bridge.now  # (on a loop, the loop's clock: virtual time in tests)
    spent = 0.0
    sent: Any = None
    thrown: BaseException | None = None
    while True:
        started = now()
        remaining = None if not limit else limit - spent
        if remaining is not None and remaining <= 0:
            raise _timed_out(limit)
        if is_async:
            done, value = await _async_step(gen, sent, thrown, remaining, limit)
        else:
            done, value = await _sync_step(gen, sent, thrown, remaining, bridge)
        spent += now() - started
        if done:
            return value
        try:
            sent, thrown = await emit(value), None
        except ConsumerClosed:  # the consumer stopped early: the generator ends, the run completes
            if is_async:
                await gen.aclose()
            elif not (limit and spent >= limit):  # (a timed-out step may still hold it in its thread)
                gen.close()
            return None
        except BaseException as exc:  # the consumer threw into the generator: it gets it at its yield
            sent, thrown = None, exc


def _timed_out(limit: float) -> TaskRunTimeoutError:
    return TaskRunTimeoutError(f"Task run exceeded timeout of {limit:g} second(s) in its generator's own steps")


async def _async_step(gen: Any, sent: Any, thrown: BaseException | None, remaining: float | None,
                      limit: float | None) -> tuple[bool, Any]:
    step = gen.athrow(thrown) if thrown is not None else gen.asend(sent)
    try:
        if remaining is None:
            return False, await step
        with anyio.move_on_after(remaining):
            return False, await step
        raise _timed_out(limit)  # type: ignore[arg-type]
    except StopAsyncIteration:
        return True, None


async def _sync_step(gen: Any, sent: Any, thrown: BaseException | None, remaining: float | None,
                     bridge: Bridge) -> tuple[bool, Any]:
    def step() -> tuple[bool, Any]:  # StopIteration cannot cross a coroutine: it becomes a flag
        try:
            return False, gen.throw(thrown) if thrown is not None else gen.send(sent)
        except StopIteration as stop:
            return True, stop.value

    if remaining is not None:
        return await bridge.call_with_deadline(step, remaining, "Task")  # type: ignore[no-any-return]
    return await bridge.call_sync(step)  # type: ignore[no-any-return]
