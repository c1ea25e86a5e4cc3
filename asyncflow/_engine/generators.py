"""Generator tasks: the run is Running while it yields and ends when the generator is exhausted.

There is no second engine: a generator task's run is the task-run engine's own coroutine (attempt
loop, timeouts, retries, hooks, crash recording), and its attempt steps the user's generator
(`streaming.stream_attempt`). The engine suspends at each yielded value with an `Emit`; the drivers
below hand the value to the consumer and resume the engine with what the consumer sends, throws or
whether it closed the generator. The engine steps in a context of its own, so the run's context never
leaks into the consumer's code between values.

- From sync code, a sync generator task is a generator: the engine is driven with `send` (in sync
  mode it never suspends but to emit).
- In async code (and for async generator tasks) it is an async generator: whatever else the engine
  awaits is passed through to the event loop; sync steps run in worker threads.
"""

from __future__ import annotations

import contextvars
import types
from collections.abc import AsyncGenerator, Generator
from typing import Any

from .bridge import AWAITING, BLOCKING
from .streaming import ConsumerClosed, Emit
from .task_run import TaskCall, run_task


def call_generator_task(task: Any, parameters: dict[str, Any], wait_for: Any, in_async_code: bool) -> Any:
    """A generator task called directly: an async generator for an async generator function or a call
    in async code (the calling rule), else a generator."""
    call = TaskCall(task, parameters, wait_for, submitted=False)
    call.streaming = True
    if task.kind == "asyncgen" or in_async_code:
        return _drive_async(call)
    return _drive_sync(call)


_DONE: Any = object()


class _Stepper:
    """The engine coroutine of one generator task run, resumed step by step in a context of its own."""

    __slots__ = ("closing", "context", "engine", "sent", "state", "thrown")

    def __init__(self, call: TaskCall, bridge: Any) -> None:
        self.context = contextvars.copy_context()
        self.engine = run_task(call, bridge)
        self.sent: Any = None
        self.thrown: BaseException | None = None
        self.closing = False  # the consumer closed the generator: the engine is told, then finishes
        self.state: Any = None

    def step(self) -> Any:
        """Resume the engine with what the consumer sent or threw; returns what it suspended with
        (an `Emit`, or on a loop whatever it awaits), or `_DONE` once it has its final state."""
        sent, thrown = self.sent, self.thrown
        self.sent = self.thrown = None
        try:
            if thrown is not None:
                return self.context.run(self.engine.throw, thrown)
            return self.context.run(self.engine.send, sent)
        except StopIteration as stop:
            self.state = stop.value
            return _DONE

    def consumer_raised(self, exc: BaseException) -> None:
        """At a yielded value: closing goes to the engine as `ConsumerClosed`, a throw() goes on into
        the generator; a value yielded while closing is answered with `ConsumerClosed` again."""
        if isinstance(exc, GeneratorExit) or self.closing:
            self.thrown, self.closing = ConsumerClosed(), True
        else:
            self.thrown = exc


def _drive_sync(call: TaskCall) -> Generator[Any, Any, Any]:
    stepper = _Stepper(call, BLOCKING)
    while (out := stepper.step()) is not _DONE:
        if type(out) is not Emit:
            stepper.engine.close()
            raise RuntimeError("asyncflow internal error: a sync generator task tried to suspend.")
        if stepper.closing:
            stepper.consumer_raised(GeneratorExit())
            continue
        try:
            stepper.sent = yield out.value
        except BaseException as exc:
            stepper.consumer_raised(exc)
    return None if stepper.closing else stepper.state._result()  # its return value, or its failure raised


@types.coroutine
def _pass_to_loop(trap: Any) -> Generator[Any, Any, Any]:
    """Suspend on whatever the engine awaited (a future, a trio trap): it is the event loop's business."""
    return (yield trap)


async def _drive_async(call: TaskCall) -> AsyncGenerator[Any, None]:
    stepper = _Stepper(call, AWAITING)
    while (out := stepper.step()) is not _DONE:
        if type(out) is not Emit:
            try:
                stepper.sent = await _pass_to_loop(out)
            except BaseException as exc:
                stepper.thrown = exc
        elif stepper.closing:
            stepper.consumer_raised(GeneratorExit())
        else:
            try:
                stepper.sent = yield out.value
            except BaseException as exc:
                stepper.consumer_raised(exc)
    if not stepper.closing:
        stepper.state._result()  # a failure is raised (an async generator returns no value)
