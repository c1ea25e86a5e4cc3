"""What a task runner is handed and what it hands back.

The engine stays where the flow runs: it records every state, decides retries, caching and timeouts,
and logs. A runner only executes the user's function. It receives a `WorkItem` (the function, its
arguments, and for runners that ship work elsewhere a `RunSnapshot` of the run's context), and returns
an `Outcome` (the value or the exception, the log records the function emitted, and when and where it
ran).

For a local runner the item never leaves the process: `WorkItem.run()` calls the function in the
current thread, stoppable through the engine's guard. For a remote runner `pack()` turns the item into
bytes (checking first that every part can be pickled, so the error names the culprit), and
`execute_payload(bytes) -> bytes` runs it in the worker process, wherever that is.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
import traceback
import weakref
from collections.abc import Callable
from typing import Any

from .._exceptions import AsyncflowError
from .._values import Frozen, Record, ValueEq

_perf = time.perf_counter
_now = time.time


class UnpicklableWorkError(AsyncflowError, TypeError):
    """An argument, the function or the result of a task run cannot be pickled, so it cannot travel
    between processes. The message names the task, the parameter (or the result) and the type."""


class WorkerDiedError(AsyncflowError, RuntimeError):
    """The worker process running a task run exited (killed, crashed, out of memory) before it
    returned an outcome."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process (its `__cause__` on the driver)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f"\n\nThe exception was raised in a worker:\n{self.text}"


class Capabilities(Frozen, ValueEq, Record):
    """What a runner declares about itself; the engine reads these, never introspects methods.

    - `pool_threads`: submitted sync runs execute whole (engine and function) in one of the runner's
      threads (`dispatcher()`), with no hop through the event loop;
    - `slots`: the runner hands out tickets and execution slots (`ticket`, `execution_slot`, `release`);
    - `async_tasks`: the runner executes async task functions (`submit` gets them too); otherwise the
      engine awaits them on the flow's loop;
    - `remote`: work items leave this process: they are pickled (and checked first), carry a snapshot
      of the run's context, and log records come back in the outcome;
    - `enforces_timeouts`: the runner applies `WorkItem.timeout` itself (and says how in the
      `TaskRunTimeoutError` it raises); otherwise the engine stops the call at its deadline;
    - `kills_at_deadline`: it does so by killing the worker process that runs the call (a hard limit);
      otherwise the worker stops the call in its thread at the deadline (as the engine does locally).
    """

    __slots__ = ("pool_threads", "slots", "async_tasks", "remote", "enforces_timeouts", "kills_at_deadline")
    pool_threads: bool
    slots: bool
    async_tasks: bool
    remote: bool
    enforces_timeouts: bool
    kills_at_deadline: bool

    def __init__(self, pool_threads: bool = False, slots: bool = False, async_tasks: bool = False,
                 remote: bool = False, enforces_timeouts: bool = False, kills_at_deadline: bool = False) -> None:
        self._set_fields(pool_threads, slots, async_tasks, remote, enforces_timeouts, kills_at_deadline)


class RunSnapshot(Frozen, ValueEq, Record):
    """The run context a worker needs, as primitives: `get_run_logger()`, `asyncflow.runtime` and
    `log_prints` work in the worker from this. Flow parameters are summarised (small plain values,
    else the type's name); the task run's own parameters are its arguments."""

    __slots__ = ("flow_run_id", "flow_run_name", "flow_name", "flow_version", "flow_parameters", "flow_tags",
                 "flow_run_count", "task_run_id", "task_run_name", "task_name", "task_key", "task_tags",
                 "task_run_count", "parameters", "log_prints", "log_level")
    flow_run_id: str | None
    flow_run_name: str | None
    flow_name: str | None
    flow_version: str | None
    flow_parameters: dict[str, Any]
    flow_tags: tuple[str, ...]
    flow_run_count: int
    task_run_id: str
    task_run_name: str
    task_name: str
    task_key: str
    task_tags: tuple[str, ...]
    task_run_count: int
    parameters: dict[str, Any]
    log_prints: bool
    log_level: int

    def __init__(self, flow_run_id: str | None, flow_run_name: str | None, flow_name: str | None,
                 flow_version: str | None, flow_parameters: dict[str, Any], flow_tags: tuple[str, ...],
                 flow_run_count: int, task_run_id: str, task_run_name: str, task_name: str, task_key: str,
                 task_tags: tuple[str, ...], task_run_count: int, parameters: dict[str, Any], log_prints: bool,
                 log_level: int) -> None:
        self._set_fields(flow_run_id, flow_run_name, flow_name, flow_version, flow_parameters, flow_tags,
                         flow_run_count, task_run_id, task_run_name, task_name, task_key, task_tags, task_run_count,
                         parameters, log_prints, log_level)

    # pickled by `Record.__reduce__`: a tuple of primitives, pickled at C speed, cloudpickle included


class WorkItem:
    """One call of a task's function, for a runner to execute.

    `fn(*args, **kwargs)` is the user's function (a coroutine function when `is_async`); `timeout`
    is the task's `timeout_seconds` (enforced by the runner only if it declares `enforces_timeouts`);
    `context` is the run snapshot (remote runners only); `label` names the run in messages;
    `stop_in_worker`: the worker stops the call at `timeout` itself (False when the runner kills the
    worker at the deadline). `guard` is local only and never pickled: the engine's handle that stops
    the call in its thread.
    """

    __slots__ = ("fn", "args", "kwargs", "is_async", "timeout", "context", "label", "stop_in_worker", "guard",
                 "_payload")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None,
                 is_async: bool = False, timeout: float | None = None, context: RunSnapshot | None = None,
                 label: str = "", stop_in_worker: bool = True, guard: Any = None) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs if kwargs is not None else {}
        self.is_async = is_async
        self.timeout = timeout
        self.context = context
        self.label = label
        self.stop_in_worker = stop_in_worker
        self.guard = guard
        self._payload: bytes | None = None

    def __reduce__(self) -> Any:
        fn: Any = self.fn
        if self.context is not None and self.context.flow_run_id is not None:
            fn = _PackedFunction(_function_bytes(fn, self.context.flow_run_id))
        return (_rebuild_item, (fn, self.args, self.kwargs, self.is_async, self.timeout, self.context, self.label,
                                self.stop_in_worker))

    def __repr__(self) -> str:
        return f"WorkItem({self.label or getattr(self.fn, '__qualname__', self.fn)!s})"

    # -- in this process ---------------------------------------------------------------------------
    def run(self) -> Outcome:
        """Call the sync function here (through the guard, if any). An `Exception` becomes the
        outcome's error; a `BaseException` (a stop, an interrupt) propagates."""
        started = _now()
        t0 = _perf()
        fn, args, kwargs, guard = self.fn, self.args, self.kwargs, self.guard
        try:
            if args or kwargs:
                value = guard.run(lambda: fn(*args, **kwargs)) if guard is not None else fn(*args, **kwargs)
            else:
                value = guard.run(fn) if guard is not None else fn()
        except Exception as exc:
            return Outcome(None, exc, (), started, _perf() - t0)
        return Outcome(value, None, (), started, _perf() - t0)

    async def run_async(self) -> Outcome:
        started = _now()
        t0 = _perf()
        try:
            value = await self.fn(*self.args, **self.kwargs)
        except Exception as exc:
            return Outcome(None, exc, (), started, _perf() - t0)
        return Outcome(value, None, (), started, _perf() - t0)

    # -- to another process ------------------------------------------------------------------------
    def pack(self, task_name: str = "") -> bytes:
        """The item as bytes for another process; if a part cannot be pickled, an
        `UnpicklableWorkError` names the task, the parameter and the type (nothing was sent). Packed
        once: the engine packs it before handing it over, and the runner gets the same bytes."""
        if self._payload is not None:
            return self._payload
        import cloudpickle

        try:
            self._payload = cloudpickle.dumps(self)
        except Exception as exc:
            raise self._culprit(task_name or self.label, exc) from None
        return self._payload

    def _culprit(self, task_name: str, exc: BaseException) -> UnpicklableWorkError:
        import cloudpickle

        where = f"Task {task_name!r} cannot run in another process"
        parameters = self.context.parameters if self.context is not None else {}
        named = dict(parameters) if parameters else {
            **{f"argument {i}": value for i, value in enumerate(self.args)}, **self.kwargs}
        for name, value in named.items():
            try:
                cloudpickle.dumps(value)
            except Exception as inner:
                return UnpicklableWorkError(
                    f"{where}: parameter {name!r} is of type {_type_name(value)}, which cannot be pickled "
                    f"({type(inner).__name__}: {inner}). Pass something picklable (a path, an id, plain data) "
                    f"and open the resource inside the task, or use a thread-based task runner.")
        try:
            cloudpickle.dumps(self.fn)
        except Exception as inner:
            return UnpicklableWorkError(
                f"{where}: its function {getattr(self.fn, '__qualname__', self.fn)!r} cannot be pickled "
                f"({type(inner).__name__}: {inner}).")
        return UnpicklableWorkError(f"{where}: its work item cannot be pickled ({type(exc).__name__}: {exc}).")


# A task's function is pickled once per flow run, not once per work item: pickling a function by value
# (defined in a script or a test module) costs far more than its arguments. (Its globals are those it
# saw at its flow run's first work item.) The worker keeps the functions it rebuilt, by their bytes.
_packed: weakref.WeakKeyDictionary[Any, tuple[str, bytes]] = weakref.WeakKeyDictionary()
_rebuilt: dict[bytes, Any] = {}
_REBUILT_MAX = 256


class _PackedFunction:
    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> Any:
        return (_unpack_function, (self.data,))


def _function_bytes(fn: Any, flow_run_id: str) -> bytes:
    import cloudpickle

    try:
        cached = _packed.get(fn)
    except TypeError:  # not weakly referenceable
        return cloudpickle.dumps(fn)  # type: ignore[no-any-return]
    if cached is not None and cached[0] == flow_run_id:
        return cached[1]
    data: bytes = cloudpickle.dumps(fn)
    _packed[fn] = (flow_run_id, data)
    return data


def _unpack_function(data: bytes) -> Any:
    fn = _rebuilt.get(data)
    if fn is None:
        import cloudpickle

        fn = cloudpickle.loads(data)
        if len(_rebuilt) >= _REBUILT_MAX:
            _rebuilt.pop(next(iter(_rebuilt)))
        _rebuilt[data] = fn
    return fn


def _rebuild_item(fn: Any, *rest: Any) -> WorkItem:
    return WorkItem(fn, *rest)


class Outcome:
    """What came of a work item: `value` or `error`, the log records it emitted (remote runs), when it
    started (wall clock), how long it ran (seconds), and where (`host:pid`, remote runs)."""

    __slots__ = ("value", "error", "logs", "started", "duration", "worker", "traceback")

    def __init__(self, value: Any = None, error: BaseException | None = None, logs: Any = (),
                 started: float = 0.0, duration: float = 0.0, worker: str = "", traceback: str | None = None
                 ) -> None:
        self.value = value
        self.error = error
        self.logs = logs  # tuples (level, where, message, flow_run_id, task_run_id, ts, exc_text)
        self.started = started
        self.duration = duration
        self.worker = worker
        self.traceback = traceback  # the error's traceback as text, when it was raised in another process

    def __reduce__(self) -> Any:
        return (Outcome, (self.value, self.error, self.logs, self.started, self.duration, self.worker,
                          self.traceback))

    def unwrap(self) -> Any:
        error = self.error
        if error is not None:
            if self.traceback is not None and error.__cause__ is None:
                error.__cause__ = RemoteTraceback(self.traceback)
            raise error
        return self.value

    def __repr__(self) -> str:
        what = f"error={self.error!r}" if self.error is not None else f"value={type(self.value).__name__}"
        return f"Outcome({what}, duration={self.duration:.6f}, worker={self.worker!r})"


def _type_name(value: Any) -> str:
    cls = type(value)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def failure(error: BaseException, worker: str = "") -> Outcome:
    return Outcome(None, error, (), _now(), 0.0, worker)


# -- in the worker process -----------------------------------------------------------------------
def worker_name() -> str:
    import socket  # only in worker processes: not on asyncflow's import path

    return f"{socket.gethostname()}:{os.getpid()}"


def execute_payload(payload: bytes) -> bytes:
    """Run a packed work item in this (worker) process and return its packed outcome.

    The run context is rebuilt from the snapshot; log lines the function emits are collected (not
    written here) and travel back in the outcome. A result or exception that cannot be pickled is
    replaced by an `UnpicklableWorkError` naming the task and the type."""
    import cloudpickle

    worker = worker_name()
    try:
        item: WorkItem = cloudpickle.loads(payload)
    except Exception as exc:
        return cloudpickle.dumps(failure(RuntimeError(
            f"The worker {worker} could not unpickle the work item: {type(exc).__name__}: {exc} (is the "
            f"task's module importable there, with the same packages?)"), worker))
    outcome = _execute(item)
    outcome.worker = worker
    try:
        return cloudpickle.dumps(outcome)
    except Exception as exc:
        label = item.context.task_name if item.context is not None else item.label
        if outcome.error is None:
            error: BaseException = UnpicklableWorkError(
                f"Task {label!r} returned a value of type {_type_name(outcome.value)}, which cannot be pickled "
                f"to travel back from the worker ({type(exc).__name__}: {exc}). Return plain data, or persist "
                f"the value inside the task and return where it is.")
        else:
            error = RuntimeError(
                f"Task {label!r} raised {_type_name(outcome.error)}, which cannot be pickled: {outcome.error}")
        outcome.value, outcome.error = None, error
        return cloudpickle.dumps(outcome)


def _execute(item: WorkItem) -> Outcome:
    from .._context import current_run
    from .._logging import capture_records, ensure_print_capture

    snapshot = item.context
    token = current_run.set(remote_context(snapshot)) if snapshot is not None else None
    records: list[Any] = []
    capture = capture_records(records, snapshot.log_level if snapshot is not None else logging.INFO)
    if snapshot is not None and snapshot.log_prints:
        ensure_print_capture()
    started = _now()
    t0 = _perf()
    text: str | None = None
    try:
        with capture:
            value = _call(item)
        error: BaseException | None = None
    except Exception as exc:
        value, error, text = None, exc, _format(exc)
    finally:
        if token is not None:
            current_run.reset(token)
    return Outcome(value, error, tuple(records), started, _perf() - t0, "", text)


def _call(item: WorkItem) -> Any:
    if item.is_async:
        import anyio

        return anyio.run(_call_async, item)  # (the worker's own loop: asyncio)
    # stopped in its thread at the deadline (the runner may also enforce it harder)
    if item.timeout and item.stop_in_worker:
        from .._engine.bridge import drive_sync
        from .._engine.deadline import call_sync_with_deadline

        fn, args, kwargs = item.fn, item.args, item.kwargs
        return _listed(drive_sync(call_sync_with_deadline(lambda: fn(*args, **kwargs), item.timeout, True, "Task")))
    return _listed(item.fn(*item.args, **item.kwargs))


async def _call_async(item: WorkItem) -> Any:
    import anyio

    from .._exceptions import TaskRunTimeoutError

    if item.timeout and item.stop_in_worker:
        with anyio.move_on_after(item.timeout) as scope:
            value = await item.fn(*item.args, **item.kwargs)
            return await _alisted(value)
        if scope.cancelled_caught:
            raise TaskRunTimeoutError(
                f"Task run exceeded timeout of {item.timeout:g} second(s); the coroutine was cancelled at the "
                f"deadline in the worker")
    return await _alisted(await item.fn(*item.args, **item.kwargs))


def _listed(value: Any) -> Any:
    """A generator cannot travel: a generator task's values come back as a list."""
    if inspect.isgenerator(value):
        return list(value)
    if inspect.isasyncgen(value):
        import anyio

        return anyio.run(_alisted, value)
    return value


async def _alisted(value: Any) -> Any:
    if inspect.isasyncgen(value):
        return [item async for item in value]
    return _listed(value)


def _format(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()


def remote_context(snapshot: RunSnapshot) -> Any:
    """A task-run context rebuilt from a snapshot, for `get_run_logger()` and `asyncflow.runtime`."""
    import uuid

    from .._context import FlowRunContext, TaskRunContext
    from .._runs import FlowRun, TaskRun
    from .._states import State, StateType

    running: State[Any] = State(StateType.RUNNING, "Running")
    flow_ctx = None
    flow_run_id = uuid.UUID(snapshot.flow_run_id) if snapshot.flow_run_id else None
    if flow_run_id is not None:
        flow_run = FlowRun(id=flow_run_id, name=snapshot.flow_run_name or "", flow_name=snapshot.flow_name or "",
                           flow_version=snapshot.flow_version, parameters=dict(snapshot.flow_parameters),
                           tags=snapshot.flow_tags, state=running, run_count=snapshot.flow_run_count)
        flow_ctx = FlowRunContext(None, flow_run, None, snapshot.log_prints, None, None)
        flow_ctx.label = f"Flow run '{flow_run.name}'"
    task_run = TaskRun(id=uuid.UUID(snapshot.task_run_id), name=snapshot.task_run_name, task_name=snapshot.task_name,
                       task_key=snapshot.task_key, flow_run_id=flow_run_id, parent_task_run_id=None,
                       tags=snapshot.task_tags, parameters=snapshot.parameters, state=running,
                       run_count=snapshot.task_run_count)
    return TaskRunContext(None, task_run, dict(snapshot.parameters), flow_ctx, snapshot.log_prints, None)
