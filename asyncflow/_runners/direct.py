"""A task runner used by hand, outside a flow, as Prefect's tests and some scripts do:

    with ThreadPoolTaskRunner(max_workers=2) as runner:
        future = runner.submit(my_task, {"x": 1})
        futures = runner.map(my_task, {"x": [1, 2, 3]})
        print(future.result(), futures.result())

The runner's own scope owns the runs (as a flow's scope owns the runs a flow submits): they are task
runs with no flow run, recorded like any other; leaving the block waits for every run it started
(or, when the block raised, cancels them). Each run's user code goes where the runner puts it (a pool
thread, a worker process); async tasks run on a helper event loop the scope starts on first use.
"""

from __future__ import annotations

from typing import Any

from .._engine.scope import Scope
from .._engine.task_run import TaskCall, resolve_cancelled, start_submitted
from .._futures import TaskRunFuture, TaskRunFutureList


class _DirectCall(TaskCall):
    """A run submitted through a runner used by hand: that runner is its runner."""

    __slots__ = ("direct_runner",)
    direct_runner: Any

    @property
    def runner(self) -> Any:
        return self.direct_runner


class DirectUse:
    """The runs one `with runner:` block started."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.scope = Scope(f"the block of {type(runner).__name__}", resolve_cancelled)
        self.futures: list[TaskRunFuture[Any]] = []

    def submit(self, task: Any, parameters: dict[str, Any] | None, wait_for: Any) -> TaskRunFuture[Any]:
        _check_task(task, "submit")
        if parameters is not None and not isinstance(parameters, dict):
            raise TypeError(f"runner.submit({task.name}, parameters): parameters must be a dict of argument "
                            f"names to values, such as {{'x': 1}}; got {type(parameters).__name__}.")
        args, kwargs = _split(task, dict(parameters or {}))
        return self._submit_bound(task, task.binder.bind(args, kwargs), wait_for)

    def map(self, task: Any, parameters: dict[str, Any], wait_for: Any) -> TaskRunFutureList:
        _check_task(task, "map")
        if not isinstance(parameters, dict):
            raise TypeError(f"runner.map({task.name}, parameters): parameters must be a dict of argument names "
                            f"to iterables (or values to broadcast); got {type(parameters).__name__}.")
        from .._engine.mapping import map_task

        kwargs = dict(parameters)
        if wait_for is not None:
            kwargs["wait_for"] = wait_for
        return map_task(task, (), kwargs, False, submit_one=self._submit_bound)  # (futures: no return_state here)

    def _submit_bound(self, task: Any, parameters: dict[str, Any], wait_for: Any) -> TaskRunFuture[Any]:
        call = _DirectCall(task, parameters, wait_for, submitted=True)
        call.direct_runner = self.runner
        future = start_submitted(call, self.scope, ticketed=True)
        self.futures.append(future)
        return future

    def cancel(self, reason: str) -> None:
        self.scope.cancel(reason)

    def wait_all(self) -> None:
        for future in self.futures:
            future.wait()

    async def wait_all_async(self) -> None:
        for future in self.futures:
            await future.wait_async()

    def close(self) -> None:
        """Every run is final: no new ones, and the helper loop (if one started) stops."""
        self.scope.close()
        self.futures = []
        self.scope.stop_helper_loop()


def _check_task(task: Any, method: str) -> None:
    from .._tasks import Task

    if not isinstance(task, Task):
        raise TypeError(f"runner.{method}() takes a @task as its first argument; got {task!r}. Decorate the "
                        f"function with @task, or call it yourself.")


def _split(task: Any, parameters: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """`parameters` names every argument; a `*args` parameter's value is its tuple of values."""
    binder = task.binder
    args: tuple[Any, ...] = ()
    if binder.var_positional and binder.var_positional in parameters:
        rest = tuple(parameters.pop(binder.var_positional))
        positional = [n for n in binder.positional if n in parameters]
        args = tuple(parameters.pop(n) for n in positional) + rest
    if binder.var_keyword and isinstance(parameters.get(binder.var_keyword), dict):
        parameters.update(parameters.pop(binder.var_keyword))
    return args, parameters
