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
from .loop import in_async_context
from .streaming import ConsumerClosed, Emit
from .task_run import TaskCall, run_task


def call_generator_task(task: Any, parameters: dict[str, Any], wait_for: Any) -> Any:
    call = TaskCall(task, parameters, wait_for, submitted=False)
    call.streaming = True
    if task.kind == "asyncgen" or in_async_context():
        return _drive_async(call)
    return _drive_sync(call)


def _drive_sync(call: TaskCall) -> Generator[Any, Any, Any]:
    context = contextvars.copy_context()
    engine = run_task(call, BLOCKING)
    sent: Any = None
    thrown: BaseException | None = None
    closing = False
    while True:
        try:
            out = context.run(engine.throw, thrown) if thrown is not None else context.run(engine.send, sent)
        except StopIteration as stop:
            state = stop.value
            break
        sent, thrown = None, None
        if type(out) is not Emit:
            engine.close()
            raise RuntimeError("asyncflow internal error: a sync generator task tried to suspend.")
        if closing:  # it yielded while being closed: tell it again
            thrown = ConsumerClosed()
            continue
        try:
            sent = yield out.value
        except GeneratorExit:
            thrown, closing = ConsumerClosed(), True
        except BaseException as exc:  # noqa: BLE001 - the consumer's throw() goes on into the generator
            thrown = exc
    if closing:
        return None
    return state.result()  # the generator's return value, or its failure raised


@types.coroutine
def _pass_to_loop(trap: Any) -> Generator[Any, Any, Any]:
    """Suspend on whatever the engine awaited (a future, a trio trap): it is the event loop's business."""
    return (yield trap)


async def _drive_async(call: TaskCall) -> AsyncGenerator[Any, None]:
    context = contextvars.copy_context()
    engine = run_task(call, AWAITING)
    sent: Any = None
    thrown: BaseException | None = None
    closing = False
    while True:
        try:
            out = context.run(engine.throw, thrown) if thrown is not None else context.run(engine.send, sent)
        except StopIteration as stop:
            state = stop.value
            break
        sent, thrown = None, None
        if type(out) is Emit:
            if closing:
                thrown = ConsumerClosed()
                continue
            try:
                sent = yield out.value
            except GeneratorExit:
                thrown, closing = ConsumerClosed(), True
            except BaseException as exc:  # noqa: BLE001 - the consumer's athrow() goes on into the generator
                thrown = exc
        else:
            try:
                sent = await _pass_to_loop(out)
            except BaseException as exc:  # noqa: BLE001 - cancellation and the like go into the engine
                thrown = exc
    if not closing:
        state.result()  # a failure is raised (an async generator returns no value)
