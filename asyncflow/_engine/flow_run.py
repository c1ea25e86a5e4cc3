"""The flow-run engine. A flow run is a structured scope: it ends only after every run it started
has finished, and every failure inside it is either returned, observed or reported."""

from __future__ import annotations

import datetime as dt
import functools
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import anyio

from .. import _signals, _states
from .._clock import get_clock
from .._context import FlowRunContext, TaskRunContext, current_run, current_tags
from .._exceptions import FlowRunTimeoutError, UpstreamTaskError
from .._futures import TaskRunFuture, TaskRunFutureList
from .._ids import new_id
from .._logging import ERROR, INFO, WARNING, ensure_print_capture, log
from .._logging import flush as flush_logs
from .._names import generate_flow_run_name
from .._runs import FlowRun
from .._states import State, StateDetails, StateType
from .._store import flush as flush_store
from .._store import get_store
from .._store import pending as store_pending
from .._store.records import redact
from ..task_runners import TaskRunner
from . import reuse
from .bridge import OWN_THREAD, Bridge, run_hooks
from .common import exception_message, log_final_state
from .flushing import flush_on_loop
from .interrupt import SyncRunAborted
from .open_runs import OPEN
from .resolve import Resolver, unfinished_in
from .scope import BaseExceptionGroup, Scope, owning, raise_sole, stop_owned
from .task_run import _ATOM_TYPES, report_unobserved, resolve_cancelled, why_ended

if TYPE_CHECKING:
    from .._protocols import EngineRunner

SHIELDED_HOOKS_SECONDS = 30.0  # the hooks of a cancelled flow run are shielded from it, this long at most
SETTLE_SUBFLOWS_SECONDS = 5.0  # how long a cancelled flow waits for the subflows called in its runs to end
STORE_FLUSH_SHIELD_SECONDS = 120.0
# a task runner (a process pool, a Dask cluster) gets this long to shut down; the store's own flush
# timeout (a setting) ends the wait before this
RUNNER_SHUTDOWN_SECONDS = 60.0


class FlowCall:
    __slots__ = ("flow", "run", "parameters", "wait_for", "parent", "details", "label", "ids")

    def __init__(self, flow: Any, parameters: dict[str, Any], wait_for: Any) -> None:
        parent = current_run.get()
        run_id = new_id()
        self.details = StateDetails(flow_run_id=run_id)
        parent_flow = parent.flow_context if parent is not None else None
        self.run = FlowRun(
            id=run_id, name="", flow_name=flow.name, flow_version=flow.version,
            parameters=redact(parameters, flow.redact_parameters) if flow.redact_parameters else parameters,
            tags=tuple(sorted(current_tags.get())), state=State(StateType.PENDING, "Pending", None, None, self.details),
            parent_flow_run_id=parent_flow.flow_run.id if parent_flow is not None else None,
            parent_task_run_id=parent.task_run.id if isinstance(parent, TaskRunContext) else None)
        self.flow = flow
        self.parameters = parameters
        self.wait_for = wait_for
        self.parent = parent
        self.label = ""
        self.ids = {"flow_run_id": str(run_id)}


def _set(call: FlowCall, type_: StateType, name: str, message: str | None = None, data: Any = None,
         details: StateDetails | None = None) -> State[Any]:
    state: State[Any] = State(type_, name, message, data, details or call.details)
    call.run.state = state
    get_store().record_state(call.run.id, state)
    return state


def run_flow(call: FlowCall, bridge: Bridge, unwrap: bool = False) -> Coroutine[Any, Any, Any]:
    """The flow run's coroutine (awaited by the caller: no wrapper coroutine unless the run may be
    reused from an earlier attempt of its parent flow). It returns the final state, or with `unwrap`
    the state's result (raising its exception), as `await my_flow()` does: an awaited flow call holds
    no coroutine of its own around the run's."""
    parent_flow = reuse.parent_flow(call)  # None unless this is a subflow of a flow with retries
    if parent_flow is None:
        return _run_flow(call, bridge, unwrap)
    return _run_or_reuse(call, parent_flow, bridge, unwrap)


async def _run_or_reuse(call: FlowCall, parent_flow: Any, bridge: Bridge, unwrap: bool) -> Any:
    identity, earlier = await reuse.find_earlier(call, parent_flow, bridge)
    if earlier is not None:  # it completed in an earlier attempt of the parent: not run again
        return earlier._result() if unwrap else earlier
    state = await _run_flow(call, bridge)
    if identity is not None:
        reuse.remember(parent_flow, identity, call.run.name, state)
    return state._result() if unwrap else state


async def _run_flow(call: FlowCall, bridge: Bridge, unwrap: bool = False) -> Any:
    flow, run = call.flow, call.run
    store = get_store()
    parent = call.parent
    log_prints = flow.log_prints if flow.log_prints is not None else (
        parent.log_prints if parent is not None else flow.default_log_prints())
    if log_prints:
        ensure_print_capture()
    ctx = FlowRunContext(flow, run, parent, log_prints, None, flow.task_runner.duplicate(), call.ids)
    token = current_run.set(ctx)
    state: State[Any] | None = None
    try:
        run.name = flow.render_run_name(call.parameters) if flow.flow_run_name is not None else generate_flow_run_name()
        call.label = ctx.label = f"Flow run '{run.name}'"
        store.record_flow_run(run, run.state)
        OPEN[run.id] = run
        if parent is None:  # on the main thread: no signal waits for the main thread (`_signals.watch`)
            _signals.watch()
        log(INFO, "asyncflow.engine", f"Created flow run '{run.name}' for flow '{flow.name}'")
        ready = True
        if call.wait_for or not all(type(value) in _ATOM_TYPES for value in call.parameters.values()):
            try:
                await _wait_for_upstream(call, bridge)
            except UpstreamTaskError as exc:
                ready = False
                state = _set(call, StateType.PENDING, "NotReady", str(exc))
        if ready:
            try:
                parameters = flow.validate(call.parameters)
            except Exception as exc:
                state = _set(call, StateType.FAILED, "Failed",
                             f"Validation of flow parameters failed with error: {type(exc).__name__}: {exc}", exc)
                log(ERROR, call.label, f"Parameter validation failed for flow {flow.name!r}: {exc}", call.ids)
            else:
                run.parameters = redact(parameters, flow.redact_parameters) if flow.redact_parameters else parameters
                # the attempts inside the task runner's lifecycle (`async with runner:`), inline (not in
                # a coroutine of their own: a waiting flow holds one coroutine fewer): the runner starts
                # or connects once per flow run, and shuts down once every run of the flow is final
                runner = ctx.task_runner
                assert runner is not None  # a flow run's own context always has one
                state = await _start_runner(call, runner)
                if state is None:
                    try:
                        attempt = 0
                        while True:
                            attempt += 1
                            run.run_count = attempt
                            ctx.children = None
                            ctx.subflow_calls = None  # each attempt counts its subflow calls from the first
                            if ctx.scope is not None:  # the previous attempt's scope: this one has a new one
                                ctx.scope.detach()
                            running = _set(call, StateType.RUNNING, "Running" if attempt == 1 else "Retrying")
                            if attempt == 1:
                                run.start_time = running.ts
                            if flow.on_running:
                                await run_hooks(bridge, flow.on_running, flow, run, running, call.label, call.ids)
                            state = await _one_attempt(call, ctx, parameters, bridge)
                            if state.type is StateType.FAILED and attempt <= flow.retries:
                                await _await_retry(call, state, bridge)
                                continue
                            run.end_time = state.ts
                            run.state = state
                            get_store().record_state(run.id, state)
                            break
                    finally:
                        if _stops_at_once(runner):  # it cannot be interrupted: nothing in it waits
                            await _shutdown(runner, call)
                        else:
                            await bridge.shielded(_shutdown(runner, call), RUNNER_SHUTDOWN_SECONDS,
                                                  f"{call.label}: shutting down its task runner", call.ids)
        assert state is not None
        log_final_state(state, call.label, call.ids, call.run)
        if ready:  # (a run whose upstream failed never ran: no hooks)
            await _final_hooks(call, state, bridge)
    except BaseException as exc:
        if bridge.is_cancellation(exc) or isinstance(exc, SyncRunAborted):
            scope = ctx.scope
            why = f"The flow run {scope.cancelled}." if scope is not None and scope.by_parent else (
                "The flow run was cancelled while it was running.")
            state = _set(call, StateType.CANCELLED, "Cancelled", why, exc)
        else:
            state = _set(call, StateType.CRASHED, "Crashed", f"Execution was aborted by an interrupt: {exc!r}", exc)
        log_final_state(state, call.label or f"Flow run '{run.name}'", call.ids, call.run)
        # hooks of a cancelled run still get to run, for a bounded time
        await bridge.shielded(_final_hooks(call, state, bridge), SHIELDED_HOOKS_SECONDS,
                              f"{call.label}: the hooks of the ended flow run", call.ids)
        raise
    finally:
        current_run.reset(token)
        OPEN.pop(run.id, None)
        if ctx.scope is not None:  # the run has its final state: a flow it was called in may end now
            ctx.scope.detach()
        if parent is None:
            # a root run's lines are all out and everything it recorded is in the store when the caller
            # gets its result (the store bounds the wait); on a loop, in rounds shared by the runs that
            # end together (`flushing.py`), lines and records written by one worker-thread hop
            if not store_pending():
                flush_logs()
            elif bridge.blocking:
                flush_logs()
                await bridge.shielded(bridge.io(flush_store), STORE_FLUSH_SHIELD_SECONDS,
                                      f"{call.label}: writing its records to the store", call.ids)
            else:
                await flush_on_loop(bridge, STORE_FLUSH_SHIELD_SECONDS,
                                    f"{call.label}: writing its records to the store", call.ids)
    # (outside the `try`: a failed run's exception, raised for its caller, is not a crash of the run)
    return state._result() if unwrap else state


async def _start_runner(call: FlowCall, runner: EngineRunner) -> State[Any] | None:
    """Start (or connect) the flow run's task runner: None, or the run's Failed state if it cannot."""
    try:
        await runner.__aenter__()
    except Exception as exc:
        state = _set(call, StateType.FAILED, "Failed",
                     f"Its task runner {runner!r} could not start: {type(exc).__name__}: {exc}", exc)
        log(ERROR, call.label, f"The task runner {runner!r} could not start", call.ids, exc_info=exc)
        return state
    return None


def _stops_at_once(runner: Any) -> bool:
    """Does the runner's `async with` exit without waiting? (The default runner's does: no `shutdown`
    of its own, no runs used by hand.) Then it needs no shielded, time-limited scope around it, which
    costs a flow run more than the rest of its runner's lifecycle."""
    cls = type(runner)
    return (getattr(cls, "shutdown", None) is TaskRunner.shutdown
            and getattr(cls, "__aexit__", None) is TaskRunner.__aexit__ and getattr(runner, "_direct", True) is None)


async def _await_retry(call: FlowCall, failed: State[Any], bridge: Bridge) -> None:
    """A failed attempt with retries left: AwaitingRetry until the retry delay has passed."""
    delay = call.flow.retry_delay_seconds
    log(INFO, call.label, "Received non-final state 'AwaitingRetry' when proposing final state "
        f"{failed.name!r} and will attempt to run again...", call.ids)
    clock = get_clock()
    when = dt.datetime.fromtimestamp(clock.time() + delay, tz=dt.timezone.utc)
    _set(call, StateType.SCHEDULED, "AwaitingRetry", details=StateDetails(flow_run_id=call.run.id, scheduled_time=when))
    if delay > 0:
        await bridge.sleep(clock, delay)


async def _shutdown(runner: EngineRunner, call: FlowCall) -> None:
    try:
        await runner.__aexit__(None, None, None)
    except Exception as exc:  # the runs are all final: a runner that fails to stop changes no state
        log(WARNING, call.label, f"The task runner {runner!r} failed to shut down", call.ids, exc_info=exc)


async def _wait_for_upstream(call: FlowCall, bridge: Bridge) -> None:
    """Wait for the runs in `wait_for` and for futures among the parameters (a subflow given a task's
    future gets its result, as a task does)."""
    await bridge.wait_futures(unfinished_in(*call.parameters.values(), call.wait_for))
    resolver = Resolver(None)
    if call.wait_for:
        resolver.resolve(list(call.wait_for))
    call.parameters = {name: resolver.resolve(value) for name, value in call.parameters.items()}


async def _one_attempt(call: FlowCall, ctx: FlowRunContext, parameters: dict[str, Any], bridge: Bridge) -> State[Any]:
    """One attempt of the flow body, in a scope of its own that owns every run it starts: on every
    way out (failure, deadline, outer cancellation, Ctrl-C, a signal) the scope is cancelled and
    closed, so no run it started outlives it."""
    flow = call.flow
    args, kwargs = flow.binder.to_call(parameters)
    timeout = flow.timeout_seconds
    state: State[Any] | None = None  # (stays None when a parent's cancel ends the task group)
    if bridge.blocking:
        # its event loop (in a helper thread) starts only if the flow submits an async run
        ctx.scope = scope = Scope(call.label, resolve_cancelled, parent=_parent_scope(call))
        try:
            state = await owning(scope, _body(call, ctx, args, kwargs, bridge), why_ended)
        finally:
            await _settle_subflows(call, scope, bridge)
            scope.stop_helper_loop()
        _report_children(call, ctx)
        return _attempt_state(call, scope, state)
    # a flow with no time limit needs no cancel scope of its own (one is five objects the GC walks)
    limit = anyio.CancelScope(deadline=anyio.current_time() + timeout) if timeout else None
    with limit or _NO_DEADLINE as deadline:
        scope = Scope(call.label, resolve_cancelled, None, time.monotonic() + timeout if timeout else None,
                      _parent_scope(call))
        try:
            async with anyio.create_task_group() as tg:
                ctx.scope = scope.on_loop(tg)
                try:  # `owning(scope, ...)` inline: a waiting flow holds one coroutine fewer
                    if flow.isasync:  # `_body` inline too: one coroutine fewer again
                        try:
                            value = await flow.fn(*args, **kwargs)
                            if type(value) not in _ATOM_TYPES:  # (no futures in None, a number, a str)
                                value = await _futures_to_states(value, bridge)
                        except Exception as exc:
                            state = await _body_failed(call, ctx, exc, bridge)
                        else:
                            state = await _body_ended(call, ctx, value, bridge)
                    else:
                        state = await _body(call, ctx, args, kwargs, bridge)
                except BaseException as exc:
                    stop_owned(scope, exc, why_ended, limit)
                    raise
                finally:
                    scope.close()
        except BaseExceptionGroup as group:
            raise_sole(group)
        finally:
            await _settle_subflows(call, scope, bridge)
    _report_children(call, ctx)
    if deadline.cancelled_caught:
        error = FlowRunTimeoutError(f"Flow run exceeded timeout of {timeout:g} second(s)")
        return State(StateType.FAILED, "TimedOut", str(error), error, call.details)
    return _attempt_state(call, scope, state)


class _NoDeadline:
    """Stands for the cancel scope of a flow with no time limit: it is never cancelled. (`__exit__` is a
    static method: a `with` block keeps its `__exit__` while the body runs, and a bound method would be
    one more object per waiting flow for the GC to walk.)"""

    __slots__ = ()
    cancelled_caught = False

    def __enter__(self) -> _NoDeadline:
        return self

    @staticmethod
    def __exit__(*exc_info: object) -> None:
        return None


_NO_DEADLINE = _NoDeadline()


def _attempt_state(call: FlowCall, scope: Scope, state: State[Any] | None) -> State[Any]:
    """A subflow whose caller's flow ended under it (its scope was cancelled from above: its body was
    cancelled, or failed on a cancelled child) ends Cancelled, and is not retried."""
    if scope.by_parent:
        return State(StateType.CANCELLED, "Cancelled", f"The flow run {scope.cancelled}.", None, call.details)
    assert state is not None  # (only a cancel from above ends the attempt's task group without a state)
    return state


async def _settle_subflows(call: FlowCall, scope: Scope, bridge: Bridge) -> None:
    """Flows called inside the attempt's runs end with it: their scopes were cancelled with this one
    (a sync subflow in a stopped pool-thread task ends on that thread, moments later). Wait for them,
    bounded, so that this flow does not end while one of them still runs."""
    if not scope.has_children():
        return
    left: list[str] = []

    async def settle() -> None:
        left.extend(await bridge.io(scope.settle_children, SETTLE_SUBFLOWS_SECONDS))

    await bridge.shielded(settle(), SETTLE_SUBFLOWS_SECONDS + 1, call.label, call.ids)
    if left:
        log(WARNING, call.label, f"Ended while flow runs called inside it had not ended within "
            f"{SETTLE_SUBFLOWS_SECONDS:g} s of their cancellation: {', '.join(left)}", call.ids)


def _parent_scope(call: FlowCall) -> Scope | None:
    """The scope of the run this flow was called in (a subflow is cancelled with its caller's flow)."""
    return call.parent.scope if call.parent is not None else None


def _report_children(call: FlowCall, ctx: FlowRunContext) -> None:
    """Every run of the attempt is final now: report the failures nobody looked at."""
    if ctx.children is not None:
        report_unobserved(ctx.children, call.label, call.ids)


async def _body(call: FlowCall, ctx: FlowRunContext, args: tuple[Any, ...], kwargs: dict[str, Any],
                bridge: Bridge) -> State[Any]:
    flow = call.flow
    try:
        if flow.isasync:
            value = await flow.fn(*args, **kwargs)
        elif flow.timeout_seconds:
            try:
                value = await bridge.call_with_deadline(
                    functools.partial(flow.fn, *args, **kwargs), flow.timeout_seconds, "Flow")
            except FlowRunTimeoutError as exc:
                await _stop_children(ctx, bridge, "timed out")  # the runs it submitted stop too
                return State(StateType.FAILED, "TimedOut", str(exc), exc, call.details)
        else:  # on a loop: in a thread of its own (cancelling the awaiting code stops it at its next line)
            value = await bridge.call_sync(functools.partial(flow.fn, *args, **kwargs), runner=OWN_THREAD)
        value = await _futures_to_states(value, bridge)
    except Exception as exc:
        return await _body_failed(call, ctx, exc, bridge)
    return await _body_ended(call, ctx, value, bridge)


async def _body_failed(call: FlowCall, ctx: FlowRunContext, exc: Exception, bridge: Bridge) -> State[Any]:
    """The flow's code raised: the attempt failed, and the runs it started stop."""
    log(ERROR, call.label, f"Encountered exception during execution: {exc!r}", call.ids, exc_info=exc)
    await _stop_children(ctx, bridge, "failed")  # a failure ends the scope: its runs stop
    return State(StateType.FAILED, "Failed", exception_message("Flow", exc), exc, call.details)


async def _body_ended(call: FlowCall, ctx: FlowRunContext, value: Any, bridge: Bridge) -> State[Any]:
    """The flow's code returned `value`: the attempt's state, once every run it started has ended."""
    if ctx.children is not None:  # the flow ends when every run it started has ended
        await bridge.wait_children(ctx.children)
    state = _states.return_value_to_state(value)
    if state.state_details.flow_run_id is None and state.state_details.task_run_id is None:
        state = State(state.type, state.name, state.message, state.data, call.details, state.ts)
    return state


async def _stop_children(ctx: FlowRunContext, bridge: Bridge, reason: str) -> None:
    """Cancel the attempt's scope. Queued runs and runs in pool threads are resolved at once; runs on
    the event loop are cancelled: an async flow's task group waits for them as it exits, a sync flow
    waits here (its helper loop is stopped next)."""
    scope = ctx.scope
    assert scope is not None
    scope.cancel(reason)
    await bridge.settle_cancelled(ctx.children)


async def _futures_to_states(value: Any, bridge: Bridge) -> Any:
    """Futures in a flow's return value become their final states (Prefect's rule)."""
    if isinstance(value, TaskRunFutureList):
        value = list(value)
    await bridge.wait_futures(unfinished_in(value))
    return _StateResolver(None).resolve(value)


class _StateResolver(Resolver):
    def resolve(self, value: Any, allow_failed: bool = False, memo: dict[int, Any] | None = None) -> Any:
        if isinstance(value, TaskRunFuture):
            return value.state
        if isinstance(value, (State, _states_quote())):
            return value
        if isinstance(value, TaskRunFutureList):
            value = list(value)
        return self._container(value, allow_failed, memo) if not isinstance(value, (int, str, float, bytes, bool,
                                                                                    type(None))) else value


def _states_quote() -> type:
    from .._annotations import BaseAnnotation

    return BaseAnnotation


async def _final_hooks(call: FlowCall, state: State[Any], bridge: Bridge) -> None:
    flow = call.flow
    hooks: list[Any] = []
    if state.type is StateType.COMPLETED:
        hooks = flow.on_completion
    elif state.type is StateType.FAILED:
        hooks = flow.on_failure
    elif state.type in (StateType.CANCELLED, StateType.CANCELLING):
        hooks = flow.on_cancellation
    elif state.type is StateType.CRASHED:
        hooks = flow.on_crashed
    if hooks:
        await run_hooks(bridge, hooks, flow, call.run, state, call.label, call.ids)
