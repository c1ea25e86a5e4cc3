"""The task-run engine: one async code path for every task run.

How each wait, sleep and call of user code happens is the business of the bridge the caller's edge
picked (`bridge.py`): on an event loop (`AWAITING`) user coroutines are awaited and sync functions go
to a worker thread; in a thread with no loop (`BLOCKING`, driven by `drive_sync`) sync functions are
called inline and every wait blocks, so the coroutine never suspends.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import itertools
import math
import threading
from typing import TYPE_CHECKING, Any

import anyio

from .. import _states
from .._clock import get_clock
from .._context import FlowRunContext, RunContext, TaskRunContext, current_run, current_tags
from .._exceptions import TaskRunTimeoutError, UpstreamTaskError
from .._futures import TaskRunFuture
from .._ids import new_id
from .._logging import ERROR, INFO, WARNING, ensure_print_capture, log, state_line
from .._logging import flush as flush_logs
from .._runners.work import Capabilities, WorkItem
from .._runs import TaskRun
from .._states import State, StateDetails, StateType
from .._store import get_store
from .._store.lines import CREATED
from .._store.records import redact
from . import caching
from .bridge import AWAITING, BLOCKING, Bridge, drive_sync, run_hooks
from .children import ChildTracker
from .common import exception_message, log_final_state
from .interrupt import SyncRunAborted, UserCode
from .loop import context_for_another_thread, in_async_context
from .open_runs import OPEN
from .remote import call_remote
from .resolve import Resolver, unfinished_in
from .scope import BaseExceptionGroup, Scope, owning, raise_sole
from .streaming import stream_attempt

if TYPE_CHECKING:
    from collections.abc import Awaitable, Coroutine

    from .._protocols import Dispatcher, EngineRunner

_global_counters: dict[str, Any] = {}
_PLAIN_RESULTS = frozenset({int, float, str, bytes, bool, type(None), dict, tuple})
_ATOM_TYPES = frozenset({int, float, str, bytes, bool, type(None), complex})
_SMALL_TYPES = frozenset({int, float, bool, type(None)})
_MAX_SMALL_INT = 2**63
_NO_IDS: dict[str, Any] = {}  # a run's ids until it starts (shared, never written to: one dict fewer per pending run)


class TaskCall:
    """One task run in the making: everything captured at call or submit time."""

    __slots__ = ("task", "run", "parameters", "wait_for", "parent", "details", "future", "submitted",
                 "label", "ids", "ticket", "guard", "scope", "started", "final", "streaming")

    def __init__(self, task: Any, parameters: dict[str, Any], wait_for: Any, submitted: bool,
                 run_id: Any = None) -> None:
        parent = current_run.get()
        flow_ctx = parent.flow_context if parent is not None else None
        context_tags = current_tags.get()
        tags = task.tags | context_tags if context_tags else task.tags
        if flow_ctx is not None:
            counters = flow_ctx.run_counters
            flow_run_id = flow_ctx.flow_run.id
        else:
            counters = _global_counters
            flow_run_id = None
        key = task.task_key
        counter = counters.get(key)
        if counter is None:
            counter = counters.setdefault(key, itertools.count())
        n = next(counter)  # atomic: runs created in several threads get distinct names
        run_id = run_id or new_id()  # a background run arrives with the id its future knows
        self.details = StateDetails(flow_run_id, run_id)  # (positional: no dict of keywords per run)
        self.run = TaskRun(  # (positional: a class called with keywords builds a dict of them each time)
            run_id, f"{task.name}-{n}", task.name, key, flow_run_id,
            parent.task_run.id if isinstance(parent, TaskRunContext) else None,
            tuple(sorted(tags)) if tags else (),
            redact(parameters, task.redact_parameters) if task.redact_parameters else parameters,
            State(StateType.PENDING, "Pending", None, None, self.details), task.version)
        self.task = task
        self.parameters = parameters
        self.wait_for = wait_for
        self.parent = parent
        self.future: TaskRunFuture[Any] | None = None
        self.submitted = submitted
        self.label = ""
        self.ids: dict[str, Any] = _NO_IDS  # its own once it starts (`_run`)
        self.ticket: object | None = None  # the runner's ticket, for runs a flow submits
        self.guard: UserCode | None = None  # set when the user code runs in a pool thread
        self.scope: Scope | None = None  # the owner of a submitted run
        self.started = False  # its scope let it start (`Scope.claim_start`)
        self.final: State[Any] | None = None  # set once, by whoever finalizes a submitted run first
        self.streaming = False  # a generator task called directly: its values are handed out as it yields

    @property
    def runner(self) -> EngineRunner | None:
        flow_ctx = self.parent.flow_context if self.parent is not None else None
        return flow_ctx.task_runner if flow_ctx is not None else None


# -- entry points --------------------------------------------------------------------------------
def run_task(call: TaskCall, bridge: Bridge) -> Coroutine[Any, Any, State[Any]]:
    """Run a task to its final state (a coroutine). A run with no parent owns the scope its children
    run in. A run in a flow is `_run` itself: no extra coroutine per run (each one is an object the
    cyclic GC walks while the run waits, and a frame every resumption passes through)."""
    if call.parent is not None:
        return _run(call, bridge, call.parent.scope)
    return _run_root(call, bridge)


async def _run_root(call: TaskCall, bridge: Bridge) -> State[Any]:
    label = f"Task run '{call.run.name}'"
    try:
        if bridge.blocking or call.streaming:  # (a generator hands out values: no task group may span its yields)
            scope = Scope(label, resolve_cancelled)
            try:
                return await owning(scope, _run(call, bridge, scope), why_ended)
            finally:
                if scope.has_helper_loop():
                    await bridge.io(scope.stop_helper_loop)
        try:
            async with anyio.create_task_group() as tg:
                scope = Scope(label, resolve_cancelled, tg)
                return await owning(scope, _run(call, bridge, scope), why_ended)
        except BaseExceptionGroup as group:
            raise_sole(group)
        # only if the task group swallowed the run's own exception (it never should): say so, not return None
        raise AssertionError(f"{label} ended without a final state")
    finally:
        flush_logs()  # a root run's lines are all out when the caller gets its result


def why_ended(exc: BaseException) -> str:
    """How a scope's owner ended, for the message of the runs it stops: "<owner> <why>"."""
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return f"was interrupted ({type(exc).__name__})"
    if in_async_context() and isinstance(exc, anyio.get_cancelled_exc_class()):
        return "was cancelled"
    if isinstance(exc, SyncRunAborted):
        return "was stopped"
    return f"ended with {type(exc).__name__}"


def run_submitted(call: TaskCall) -> Coroutine[Any, Any, Any]:
    """The coroutine of a submitted run, made by the worker that takes it from its scope's queue right
    before driving it (a function, not a coroutine of its own: one object fewer per waiting run). A run
    whose scope was cancelled, or whose deadline passed, before it got to start never starts: it is
    resolved Cancelled here, and the coroutine returned does nothing."""
    scope = call.scope
    assert scope is not None
    if not scope.claim_start(call):
        return _not_started()
    if deadline_passed():  # a deadline whose timer has not fired yet (asyncio): nothing starts after it
        resolve_cancelled(call, f"The run was cancelled before it started: {scope.label} timed out or was cancelled.")
        return _not_started()
    return run_task(call, AWAITING)


async def _not_started() -> None:
    return None


def deadline_passed() -> bool:
    """In a cancelled scope the effective deadline is -inf, so one comparison covers both cases; without
    a deadline (the common case) the clock is not read (a run asks twice: ~1.5 µs of ~2.4 on asyncio)."""
    deadline = anyio.current_effective_deadline()
    return deadline != math.inf and deadline <= anyio.current_time()


_final_lock = threading.Lock()  # a submitted run's final state: its engine and its scope race for it


def resolve_cancelled(call: TaskCall, message: str) -> None:
    """A scope resolves a run that will not start, or whose thread it stopped: Cancelled, once."""
    resolve(call, _new_state(call, StateType.CANCELLED, "Cancelled", message))


def resolve(call: TaskCall, state: State[Any]) -> None:
    """Record `state` as the run's final state and hand it to its future, unless it already has one."""
    with _final_lock:
        if call.final is not None:
            return
        call.final = state
        call.run.state = state
        get_store().record_state(call.run.id, state)
    log_final_state(state, call.label or f"Task run '{call.run.name}'", call.ids, call.run)
    _after_final(call, state)


def summarise_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """What a finished run keeps of its arguments: small plain values, else the type's name."""
    if all(type(value) in _SMALL_TYPES for value in parameters.values()):
        return parameters
    return {name: value if isinstance(value, (int, float, bool, type(None))) or
            (isinstance(value, str) and len(value) <= 200) else f"<{type(value).__name__}>"
            for name, value in parameters.items()}


def _release(call: TaskCall, state: State[Any]) -> None:
    """The engine is done with the run: hand its final state over (unless its scope already did)."""
    if call.guard is not None:  # a pool-thread run: its scope's cancel may resolve it from another thread
        with _final_lock:
            if call.final is not None:
                return
            call.final = state
    elif call.final is not None:  # (a started loop run is never resolved by its scope: no race)
        return
    else:
        call.final = state
    _after_final(call, state)


def _after_final(call: TaskCall, state: State[Any]) -> None:
    """Hand the final state to the future, let the scope and the runner forget the run, and keep
    O(1) state on the run: no result, no arguments."""
    if call.ticket is not None and (runner := call.runner) is not None:  # (a ticket comes from the runner)
        runner.release(call.ticket)
    if call.scope is not None:
        call.scope.forget(call)
    if call.future is not None:
        call.future._set_final(state)
    run = call.run
    OPEN.pop(run.id, None)
    run.end_time = state.ts
    if not _small(state.data):  # (a small immutable result costs less to keep than a result-less copy)
        run.state = State(state.type, state.name, state.message, None, state.state_details, state.ts)
    run.parameters = summarise_parameters(run.parameters)


def _small(value: Any) -> bool:
    """None, a bool or float, an int of at most 64 bits, a str or bytes of at most 64 characters: values
    no bigger than a `State`, which a finished run's record may keep."""
    kind = type(value)
    if kind in _SMALL_TYPES:
        return kind is not int or -_MAX_SMALL_INT <= value <= _MAX_SMALL_INT
    return (kind is str or kind is bytes) and len(value) <= 64


# -- the engine ----------------------------------------------------------------------------------
def set_state(call: TaskCall, state: State[Any]) -> State[Any]:
    if call.guard is not None:  # a pool-thread run: its scope may have resolved it meanwhile
        with _final_lock:
            if call.final is None:
                call.run.state = state
                get_store().record_state(call.run.id, state)
        return state
    call.run.state = state
    get_store().record_state(call.run.id, state)
    return state


def _new_state(call: TaskCall, type_: StateType, name: str, message: str | None = None, data: Any = None
               ) -> State[Any]:
    return State(type_, name, message, data, call.details)


async def _run(call: TaskCall, bridge: Bridge, scope: Scope | None) -> State[Any]:
    task, run = call.task, call.run
    if not call.submitted:  # (a submitted run was recorded when it was submitted)
        get_store().record_task_run(run, run.state)
        OPEN[run.id] = run
    parent = call.parent
    log_prints = task.log_prints if task.log_prints is not None else (parent.log_prints if parent else False)
    ctx = TaskRunContext(task, run, call.parameters, parent, log_prints, scope)
    if log_prints:
        ensure_print_capture()
    token = current_run.set(ctx)
    state: State[Any] | None = None
    try:
        if task.task_run_name is not None:
            run.name = task.render_run_name(call.parameters)
            get_store().record_task_run(run)  # recorded under its first name: record it again (an upsert)
        call.label = f"Task run '{run.name}'"
        flow_ctx = parent.flow_context if parent is not None else None
        call.ids = {"task_run_id": str(run.id),
                    "flow_run_id": flow_ctx.ids["flow_run_id"] if flow_ctx is not None else None}
        if not (call.submitted and _created_when_submitted(task)):
            _log_created(call, first_state=not call.submitted)
        try:
            parameters = await resolve_inputs(call, bridge)
        except UpstreamTaskError as exc:
            state = set_state(call, _new_state(call, StateType.PENDING, "NotReady", str(exc)))
            log_final_state(state, call.label, call.ids, call.run)
            return state
        ctx.parameters = parameters
        if call.ticket is not None and (runner := call.runner) is not None:
            # runs submitted by a flow take a runner slot; runs submitted by a task run inside its slot
            async with runner.execution_slot(call.ticket):
                state = await _attempts(call, ctx, parameters, bridge)
        else:
            state = await _attempts(call, ctx, parameters, bridge)
        if ctx.children is not None:
            await _wait_children(ctx, call, bridge)
        if call.final is not None:  # its scope resolved it meanwhile (and said so): nothing more to say
            return call.final
        log_final_state(state, call.label, call.ids, call.run)
        if task.on_completion or task.on_failure:
            await _final_hooks(call, state, bridge)
        return state
    except Exception as exc:  # before user code ran: a bad run name template, an unresolvable input...
        state = set_state(call, _new_state(call, StateType.FAILED, "Failed",
                                           f"Task run could not start: {type(exc).__name__}: {exc}", exc))
        log_final_state(state, call.label or f"Task run '{run.name}'", call.ids, call.run)
        return state
    except BaseException as exc:
        if call.final is not None:  # its scope stopped it and resolved it already
            raise
        if isinstance(exc, SyncRunAborted):  # the thread it ran in was stopped
            state = set_state(call, _new_state(call, StateType.CANCELLED, "Cancelled",
                                               "The run was stopped: its thread raised SyncRunAborted.", exc))
        elif bridge.is_cancellation(exc):
            state = set_state(call, _new_state(call, StateType.CANCELLED, "Cancelled",
                                               "The run was cancelled while it was running.", exc))
        else:
            state = set_state(call, _new_state(
                call, StateType.CRASHED, "Crashed", f"Execution was aborted by an interrupt: {exc!r}", exc))
        log_final_state(state, call.label or f"Task run '{run.name}'", call.ids, call.run)
        raise
    finally:
        current_run.reset(token)
        if state is not None:
            _release(call, state)


def _created_when_submitted(task: Any) -> bool:
    """Does a submitted run of `task` say it was created when it is submitted? Yes, unless its name is
    rendered from a template when it starts: it says so then, with that name."""
    return task.task_run_name is None


def _log_created(call: TaskCall, first_state: bool) -> None:
    """Say the run was created: when it starts, or when it is submitted (unless its name is rendered when it
    starts). Said with its first state, just recorded, a database store derives the line from that state
    instead of storing a log row (`_store/lines.py`)."""
    parent = call.parent
    message = f"Created task run '{call.run.name}' for task '{call.task.name}'"
    flow_ctx = parent.flow_context if parent is not None else None
    if flow_ctx is not None and first_state:
        state_line(INFO, flow_ctx.label, message, flow_ctx.ids, call.run.id, CREATED, call.run.flow_run_id,
                   call.run.state.ts)
    elif flow_ctx is not None:
        log(INFO, flow_ctx.label, message, flow_ctx.ids)
    else:
        log(INFO, "asyncflow.engine", message)


async def resolve_inputs(call: TaskCall, bridge: Bridge) -> dict[str, Any]:
    """Wait for upstream futures (without holding a thread slot), then substitute their results."""
    parameters, wait_for = call.parameters, call.wait_for
    if not wait_for and all(type(value) in _ATOM_TYPES for value in parameters.values()):
        return parameters  # plain values: nothing to wait for or substitute
    unfinished = unfinished_in(*parameters.values(), wait_for)
    for future in unfinished:
        if future.task_run.id == call.run.id:
            raise ValueError(f"Task run '{call.run.name}' depends on its own future. Raising to avoid a deadlock.")
    await bridge.wait_futures(unfinished)
    resolver = Resolver(call.run.id)
    if wait_for:
        _resolve_wait_for(resolver, wait_for)
    return {name: resolver.resolve(value) for name, value in parameters.items()}


def _resolve_wait_for(resolver: Resolver, wait_for: Any) -> None:
    """`wait_for` only orders runs: its values are dropped, a failure still blocks the downstream
    (and, unless wrapped in `allow_failure`, is still reported at flow end: waiting is not observing)."""
    resolver.resolve(list(wait_for))


def _attempts(call: TaskCall, ctx: TaskRunContext, parameters: dict[str, Any], bridge: Bridge
              ) -> Coroutine[Any, Any, State[Any]]:
    """The run's attempts: the loop's own coroutine, unless a transaction encloses the run or it has
    hooks (then the loop runs in the run's own transaction). No coroutine of its own in the common
    case: one object fewer per waiting run, one frame fewer per resumption."""
    own = caching.open_run_transaction(call.task)
    if own is None:
        return _attempt_loop(call, ctx, parameters, bridge)
    return _in_run_transaction(own, _attempt_loop(call, ctx, parameters, bridge), bridge)


async def _in_run_transaction(own: Any, attempts: Coroutine[Any, Any, State[Any]], bridge: Bridge) -> State[Any]:
    try:
        state = await attempts
    except BaseException:  # cancelled or crashed: the transaction is abandoned
        caching.abandon_run_transaction(own)
        raise
    await caching.close_run_transaction(own, bridge)
    return state


def _awaiting_slot(call: TaskCall) -> Any:
    """How a run that waits for a tag limit's slot says so: its state (the store, the CLI, the UI show it)."""
    from .._limits.tags import WAITING_STATE

    return lambda message: set_state(call, _new_state(call, StateType.PENDING, WAITING_STATE, message))


async def _free_slot(holder: list[Any], bridge: Bridge) -> None:
    lease, holder[1] = holder[1], None
    await lease.free(bridge)  # before the run goes on: its slot is free once its attempt has ended


async def _attempt_loop(call: TaskCall, ctx: TaskRunContext, parameters: dict[str, Any], bridge: Bridge
                        ) -> State[Any]:
    task, run = call.task, call.run
    policy = task.retry_policy
    args, kwargs = task.binder.to_call(parameters)
    holder: list[Any] = [None, None]  # [the cache plan (its key lock), the tag limits' lease]
    plan: Any = None
    attempt = 0
    try:
        while True:
            attempt += 1
            run.run_count = attempt
            if run.tags:  # a tag with a concurrency limit: wait for its slot (held while this attempt runs)
                from .._limits import tags as limit_tags  # (concurrency limits: off the import path)

                holder[1] = await limit_tags.acquire_for_task(run, bridge, _awaiting_slot(call))
            if attempt == 1:
                running = set_state(call, _new_state(call, StateType.RUNNING, "Running"))
                run.start_time = running.ts
            else:
                running = set_state(call, _new_state(call, StateType.RUNNING, "Retrying"))
            if task.on_running:
                await run_hooks(bridge, task.on_running, task, run, running, call.label, call.ids)
            if attempt == 1 and not call.streaming:  # (a generator's values are streamed, never cached)
                plan = holder[0] = await caching.plan(call, ctx, parameters, bridge)
                if plan is not None:
                    cached = await plan.lookup(bridge)
                    if cached is not None:
                        if holder[1] is not None:
                            await _free_slot(holder, bridge)
                        return set_state(call, cached)
            try:  # (inline, no coroutine of its own: one object fewer per waiting run)
                value = await _call_fn(call, args, kwargs, bridge)
                if type(value) not in _PLAIN_RESULTS and inspect.isasyncgen(value):
                    value = [item async for item in value]
                state = _returned_state(call, value)
            except Exception as exc:
                state = _failed_attempt(call, exc)
            if holder[1] is not None:
                await _free_slot(holder, bridge)
            if state.type is StateType.COMPLETED:
                state = await caching.completed(call, plan, state, bridge)
            if (state.type is StateType.FAILED and attempt <= policy.retries
                    and await _should_retry(call, state, bridge)):
                delay = policy.delay_for(attempt - 1)
                _log_retry(call, state, attempt, policy.retries, delay)
                clock = get_clock()  # every retry is AwaitingRetry (until its scheduled time), then Retrying
                when = dt.datetime.fromtimestamp(clock.time() + delay, tz=dt.timezone.utc)
                details = StateDetails(flow_run_id=run.flow_run_id, task_run_id=run.id, scheduled_time=when)
                set_state(call, State(StateType.SCHEDULED, "AwaitingRetry", None, None, details))
                if delay > 0:
                    await bridge.sleep(clock, delay)
                continue
            if plan is not None and state.type is not StateType.COMPLETED:
                plan.release()  # a SERIALIZABLE key lock ends with the run, whatever its final state
            if state.type is StateType.FAILED:
                _log_failure(call, state, policy.retries)
            return set_state(call, state)
    except BaseException:  # cancelled or crashed: a SERIALIZABLE key lock, a slot must not outlive the run
        for held in holder:
            if held is not None:
                held.release()
        raise


def _returned_state(call: TaskCall, value: Any) -> State[Any]:
    """The state an attempt ends in when the function returned `value` (a generator's items are
    collected, a returned state is the run's state)."""
    if type(value) not in _PLAIN_RESULTS:
        if inspect.isgenerator(value):
            value = list(value)
        elif isinstance(value, State) or _states.is_state_iterable(value):
            state = _states.return_value_to_state(value)
            if state.state_details.task_run_id is None:
                state = State(state.type, state.name, state.message, state.data, call.details, state.ts)
            return state
    return State(StateType.COMPLETED, "Completed", None, value, call.details)


def _failed_attempt(call: TaskCall, exc: Exception) -> State[Any]:
    if isinstance(exc, TaskRunTimeoutError):
        return _new_state(call, StateType.FAILED, "TimedOut", str(exc), exc)
    if isinstance(exc, TimeoutError):
        return _new_state(call, StateType.FAILED, "TimedOut", f"Task run failed due to timeout: {exc!r}", exc)
    return _new_state(call, StateType.FAILED, "Failed", exception_message("Task", exc), exc)


_LOCAL = Capabilities()


def _call_fn(call: TaskCall, args: tuple[Any, ...], kwargs: dict[str, Any], bridge: Bridge) -> Awaitable[Any]:
    """The awaitable that calls the function once. A plain function: on the common paths it returns the
    call's own coroutine (the task's, or the bridge's), so a run has one coroutine fewer (each one is an
    object the cyclic GC walks while the run waits, and a frame every resumption passes through)."""
    if call.streaming:
        return stream_attempt(call.task, args, kwargs, bridge)
    if call.submitted and not bridge.blocking and deadline_passed():
        return _after_checkpoint(call, args, kwargs, bridge)
    return _dispatch(call, args, kwargs, bridge)


async def _after_checkpoint(call: TaskCall, args: tuple[Any, ...], kwargs: dict[str, Any], bridge: Bridge) -> Any:
    from anyio.lowlevel import checkpoint

    await checkpoint()  # the backend delivers the cancellation: no user code after a deadline
    return await _dispatch(call, args, kwargs, bridge)


def _dispatch(call: TaskCall, args: tuple[Any, ...], kwargs: dict[str, Any], bridge: Bridge) -> Awaitable[Any]:
    task = call.task
    fn = task.fn
    runner = call.runner
    caps = runner.capabilities if runner is not None else _LOCAL
    if caps.remote and runner is not None:
        if call.submitted:  # the work item travels; the engine stays here
            return call_remote(call, runner, args, kwargs)
        runner, caps = None, _LOCAL  # a direct call runs here, as with any runner
    if task.isasync:
        if call.submitted and caps.async_tasks and runner is not None:
            item = WorkItem(_call_async, (fn, args, kwargs, task.timeout_seconds), is_async=True, label=call.label)
            return _unwrapped(runner.submit(item))
        if not task.timeout_seconds:
            return fn(*args, **kwargs)
        return _call_async(fn, args, kwargs, task.timeout_seconds)
    bound = functools.partial(fn, *args, **kwargs) if args or kwargs else fn
    if task.timeout_seconds:  # the engine stops it at its deadline (no local runner enforces timeouts)
        return bridge.call_with_deadline(bound, task.timeout_seconds, "Task")
    if runner is None or (bridge.blocking and not call.submitted):  # inline in the caller's thread
        return bridge.call_sync(bound, call.guard, None)
    # a pool-thread run's guard lets its scope stop it; on a loop, cancelling the task stops the thread
    item = WorkItem(bound, guard=call.guard)
    if bridge.blocking:  # a submitted run in one of the runner's threads (its dispatcher)
        return _ready(runner.run_inline(item).unwrap())
    return _unwrapped(runner.submit(item))


async def _unwrapped(outcome: Awaitable[Any]) -> Any:
    return (await outcome).unwrap()


async def _ready(value: Any) -> Any:
    return value


async def _call_async(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], limit: float | None) -> Any:
    if limit:
        with anyio.move_on_after(limit) as scope:
            return await fn(*args, **kwargs)
        if scope.cancelled_caught:
            raise TaskRunTimeoutError(
                f"Task run exceeded timeout of {limit:g} second(s); the coroutine was cancelled at the deadline")
    return await fn(*args, **kwargs)


async def _should_retry(call: TaskCall, state: State[Any], bridge: Bridge) -> bool:
    condition = call.task.retry_policy.condition_fn
    if condition is None:
        return True
    try:
        return bool(await bridge.call_user(condition, call.task, call.run, state))
    except Exception:
        log(ERROR, call.label, "An error was encountered while running `retry_condition_fn`; not retrying.",
            call.ids, exc_info=True)
        return False


def _describe_failure(state: State[Any]) -> str:
    if isinstance(state.data, BaseException):
        return f"exception: {state.data!r}"
    return f"state: {state!r}"


def _log_retry(call: TaskCall, state: State[Any], attempt: int, retries: int, delay: float) -> None:
    when = "immediately" if delay <= 0 else f"{delay:g} second(s) from now"
    log(WARNING, call.label,
        f"Task run failed with {_describe_failure(state)} - Retry {attempt}/{retries} will start {when}", call.ids)


def _log_failure(call: TaskCall, state: State[Any], retries: int) -> None:
    suffix = " - Retries are exhausted" if retries else ""
    exc = state.data if isinstance(state.data, BaseException) else None
    if isinstance(exc, TaskRunTimeoutError):  # our own timeout: the message says it all, no traceback
        log(ERROR, call.label, f"{exc}{suffix}", call.ids)
        return
    log(ERROR, call.label, f"Task run failed with {_describe_failure(state)}{suffix}", call.ids, exc_info=exc)


async def _final_hooks(call: TaskCall, state: State[Any], bridge: Bridge) -> None:
    task = call.task
    if state.type is StateType.COMPLETED and task.on_completion:
        await run_hooks(bridge, task.on_completion, task, call.run, state, call.label, call.ids)
    elif state.type is StateType.FAILED and task.on_failure:
        await run_hooks(bridge, task.on_failure, task, call.run, state, call.label, call.ids)


async def _wait_children(ctx: RunContext, call: TaskCall, bridge: Bridge) -> None:
    tracker = ctx.children
    if tracker is None:  # (called once the run has children)
        return
    await bridge.wait_children(tracker)
    report_unobserved(tracker, call.label, call.ids)


def report_unobserved(tracker: ChildTracker, label: str, ids: dict[str, Any]) -> None:
    for future in tracker.unobserved_failures():
        future._observed = True
        state = future._final
        log(WARNING, label,
            f"Task run '{future.task_run.name}' ended in state {state!r} and nothing looked at its outcome "
            f"(no .result(), .state, await or allow_failure; downstream runs it stopped do not count). "
            f"Its error: {getattr(state, 'data', None)!r}", ids)


def submit(task: Any, parameters: dict[str, Any], wait_for: Any) -> TaskRunFuture[Any]:
    """Start a task run in the current run's scope and return its future at once."""
    call = TaskCall(task, parameters, wait_for, submitted=True)
    parent = call.parent
    if parent is None or parent.scope is None:
        from .._exceptions import MissingContextError

        raise MissingContextError(
            f"{task.name}.submit() was called outside of a flow or task run, so no run owns the future. "
            f"Call it inside a function decorated with @flow (or @task), call the task directly, or use "
            f"`.delay()` to hand the run to a task worker.")
    # runs submitted by a flow take a runner slot; runs submitted by a task run inside its slot
    return start_submitted(call, parent.scope, ticketed=isinstance(parent, FlowRunContext))


def start_submitted(call: TaskCall, scope: Scope, ticketed: bool) -> TaskRunFuture[Any]:
    """Start a submitted run owned by `scope` (its flow's, or a task runner's used directly)."""
    task, parent = call.task, call.parent
    runner = call.runner
    # sync runs go whole to one of the runner's threads (if it has any), except time-limited ones: those
    # need a thread of their own
    dispatcher = (runner.dispatcher() if runner is not None and task.kind == "sync" and not task.timeout_seconds
                  else None)
    if dispatcher is not None:
        call.guard = UserCode()  # before the scope knows the run: a cancel can always stop it
    call.scope = scope
    scope.register(call)  # a scope that has ended refuses it, with a clear error
    get_store().record_task_run(call.run, call.run.state)
    OPEN[call.run.id] = call.run
    if _created_when_submitted(task):
        _log_created(call, first_state=True)
    future: TaskRunFuture[Any] = TaskRunFuture(call.run)
    call.future = future
    if parent is not None and parent.scope is scope:
        if parent.children is None:
            parent.children = ChildTracker()
        parent.children.add(future)
        future._tracker = parent.children  # told when the run ends, before its done callbacks
    if ticketed and runner is not None:
        call.ticket = runner.ticket()
    if dispatcher is not None:
        _dispatch_when_ready(call, dispatcher)
    else:
        scope.spawn(run_submitted, call)
    return future


def _dispatch_when_ready(call: TaskCall, dispatcher: Dispatcher) -> None:
    """A sync run goes to a pool thread once its upstream runs are done (no thread waits for them)."""
    context = context_for_another_thread()

    def job() -> None:
        context.run(_run_in_thread, call)

    unfinished = unfinished_in(*call.parameters.values(), call.wait_for)
    if not unfinished:
        dispatcher.submit(job)
        return
    remaining = [len(unfinished)]
    lock = threading.Lock()

    def upstream_done(_: TaskRunFuture[Any]) -> None:
        with lock:
            remaining[0] -= 1
            ready = remaining[0] == 0
        if ready:
            dispatcher.submit(job)

    for future in unfinished:
        future.add_done_callback(upstream_done)


def _run_in_thread(call: TaskCall) -> None:
    guard, scope = call.guard, call.scope
    assert guard is not None and scope is not None
    if call.final is not None or not scope.claim_start(call):
        return
    try:
        drive_sync(run_task(call, BLOCKING))
    except SyncRunAborted:  # its scope stopped it, and resolved it already
        pass
    except BaseException as exc:  # the pool thread lives on; the run must still reach a final state
        if call.final is None:
            log(ERROR, f"Task run '{call.run.name}'", "asyncflow could not run this task run", call.ids, exc_info=exc)
            resolve(call, _new_state(call, StateType.CRASHED, "Crashed",
                                     f"asyncflow failed while running it: {type(exc).__name__}: {exc}", exc))
    finally:
        guard.close()  # whatever happened above, nothing may be injected into this pool thread now
