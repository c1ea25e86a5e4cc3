"""Generator tasks: the run is Running while it yields and Completed when the generator is exhausted.

Each step of the user's generator runs with the task run as the current run. A retry replays the
generator from the start. In async code a sync generator task becomes an async generator whose
steps run in a worker thread (sync code never runs on the event-loop thread).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import Any

import anyio.to_thread

from .._context import TaskRunContext, current_run
from .._logging import ensure_print_capture
from .._states import State, StateType
from .._store import get_store
from .common import drive_sync, exception_message, log_final_state
from .loop import in_async_context
from .task_run import TaskCall, _final_hooks, _log_created, _new_state, resolve_inputs, set_state


def call_generator_task(task: Any, parameters: dict[str, Any], wait_for: Any) -> Any:
    call = TaskCall(task, parameters, wait_for, submitted=False)
    if task.kind == "asyncgen":
        return _async_generator(call)
    if in_async_context():
        return _sync_generator_in_threads(call)
    return _sync_generator(call)


def _begin(call: TaskCall) -> TaskRunContext:
    task, run = call.task, call.run
    store = get_store()
    store.record_task_run(run)
    store.record_state(run.id, run.state)
    parent = call.parent
    log_prints = task.log_prints if task.log_prints is not None else (parent.log_prints if parent else False)
    if log_prints:
        ensure_print_capture()
    scope = parent.scope if parent is not None else None
    ctx = TaskRunContext(task, run, call.parameters, parent, log_prints, scope)
    call.label = f"Task run '{run.name}'"
    call.ids = {"task_run_id": str(run.id), "flow_run_id": str(run.flow_run_id) if run.flow_run_id else None}
    return ctx


def _start_attempt(call: TaskCall, attempt: int) -> None:
    if attempt > 1:
        set_state(call, _new_state(call, StateType.SCHEDULED, "AwaitingRetry"))
    call.run.run_count = attempt
    set_state(call, _new_state(call, StateType.RUNNING, "Running" if attempt == 1 else "Retrying"))


def _end(call: TaskCall, state: State[Any]) -> None:
    set_state(call, state)
    log_final_state(state, call.label, call.ids)
    drive_sync(_final_hooks(call, state, sync=True))


def _sync_generator(call: TaskCall) -> Generator[Any, Any, Any]:
    ctx = _begin(call)
    token = current_run.set(ctx)
    try:
        _log_created(call)
        parameters = drive_sync(resolve_inputs(call, sync=True))
    finally:
        current_run.reset(token)
    args, kwargs = call.task.binder.to_call(parameters)
    retries = call.task.retry_policy.retries
    attempt = 0
    while True:
        attempt += 1
        _start_attempt(call, attempt)
        gen = call.task.fn(*args, **kwargs)
        sent = None
        try:
            while True:
                token = current_run.set(ctx)
                try:
                    value = gen.send(sent)
                finally:
                    current_run.reset(token)
                sent = yield value
        except StopIteration as stop:
            _end(call, _new_state(call, StateType.COMPLETED, "Completed", None, stop.value))
            return stop.value
        except GeneratorExit:
            gen.close()
            _end(call, _new_state(call, StateType.COMPLETED, "Completed"))
            raise
        except Exception as exc:
            if attempt <= retries:
                continue
            _end(call, _new_state(call, StateType.FAILED, "Failed", exception_message("Task", exc), exc))
            raise
        except BaseException as exc:
            _end(call, _new_state(call, StateType.CRASHED, "Crashed", f"Execution was aborted by an interrupt: {exc!r}", exc))
            raise


async def _sync_generator_in_threads(call: TaskCall) -> AsyncGenerator[Any, None]:
    gen = _sync_generator(call)
    done = object()

    def step() -> Any:
        return next(gen, done)

    try:
        while True:
            value = await anyio.to_thread.run_sync(step)
            if value is done:
                return
            yield value
    finally:
        gen.close()


async def _async_generator(call: TaskCall) -> AsyncGenerator[Any, None]:
    ctx = _begin(call)
    token = current_run.set(ctx)
    try:
        _log_created(call)
        parameters = await resolve_inputs(call, sync=False)
    finally:
        current_run.reset(token)
    args, kwargs = call.task.binder.to_call(parameters)
    retries = call.task.retry_policy.retries
    attempt = 0
    while True:
        attempt += 1
        _start_attempt(call, attempt)
        agen = call.task.fn(*args, **kwargs)
        try:
            while True:
                token = current_run.set(ctx)
                try:
                    value = await agen.__anext__()
                except StopAsyncIteration:
                    _end(call, _new_state(call, StateType.COMPLETED, "Completed"))
                    return
                finally:
                    current_run.reset(token)
                yield value
        except GeneratorExit:
            await agen.aclose()
            _end(call, _new_state(call, StateType.COMPLETED, "Completed"))
            raise
        except Exception as exc:
            if attempt <= retries:
                continue
            _end(call, _new_state(call, StateType.FAILED, "Failed", exception_message("Task", exc), exc))
            raise
        except BaseException as exc:
            _end(call, _new_state(call, StateType.CRASHED, "Crashed", f"Execution was aborted by an interrupt: {exc!r}", exc))
            raise
