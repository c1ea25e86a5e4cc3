"""A submitted run whose runner ships work to other processes (`Capabilities.remote`).

The engine stays here: it records the states, retries, caches and logs. Only the work item travels:
the function, its resolved arguments and a snapshot of the run's context. It is pickled here first,
so an argument that cannot travel fails the run with an error naming the parameter and its type
before anything is sent. The log records the function emitted come back in the outcome and are
written to this run's logs (and the store) with their own timestamps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

from .._context import TaskRunContext, current_run
from .._exceptions import TaskRunTimeoutError
from .._logging import replay, sink
from .._runners.work import RunSnapshot, WorkItem

if TYPE_CHECKING:
    from .._protocols import EngineRunner
    from .task_run import TaskCall


def snapshot(call: TaskCall, parameters: dict[str, Any]) -> RunSnapshot:
    from .task_run import summarise_parameters

    run = call.run
    ctx = current_run.get()
    log_prints = ctx.log_prints if isinstance(ctx, TaskRunContext) else False
    flow_ctx = call.parent.flow_context if call.parent is not None else None
    flow_run = flow_ctx.flow_run if flow_ctx is not None else None
    return RunSnapshot(
        flow_run_id=str(flow_run.id) if flow_run is not None else None,
        flow_run_name=flow_run.name if flow_run is not None else None,
        flow_name=flow_run.flow_name if flow_run is not None else None,
        flow_version=flow_run.flow_version if flow_run is not None else None,
        flow_parameters=summarise_parameters(flow_run.parameters) if flow_run is not None else {},
        flow_tags=tuple(flow_run.tags) if flow_run is not None else (),
        flow_run_count=flow_run.run_count if flow_run is not None else 0,
        task_run_id=str(run.id), task_run_name=run.name, task_name=run.task_name, task_key=run.task_key,
        task_tags=tuple(run.tags), task_run_count=run.run_count, parameters=parameters,
        log_prints=log_prints, log_level=sink().level)


async def call_remote(call: TaskCall, runner: EngineRunner, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    task = call.task
    ctx = current_run.get()
    parameters = ctx.parameters if isinstance(ctx, TaskRunContext) else {}
    caps = runner.capabilities
    timeout = task.timeout_seconds
    item = WorkItem(task.fn, args, kwargs, is_async=task.isasync, timeout=timeout,
                    context=snapshot(call, parameters), label=task.name, stop_in_worker=not caps.kills_at_deadline)
    item.pack(task.name)  # fails here, naming the culprit, if anything of it cannot be pickled
    if timeout and not caps.enforces_timeouts:  # the runner does not: the engine stops waiting
        with anyio.move_on_after(timeout) as scope:
            outcome = await runner.submit(item)
        if scope.cancelled_caught:
            raise TaskRunTimeoutError(
                f"Task run exceeded timeout of {timeout:g} second(s); {type(runner).__name__} does not enforce "
                f"timeouts, so the flow stopped waiting for it at the deadline (the work may still be running "
                f"where the runner sent it)")
    else:
        outcome = await runner.submit(item)
    if outcome.logs:
        replay(outcome.logs)
    return outcome.unwrap()
