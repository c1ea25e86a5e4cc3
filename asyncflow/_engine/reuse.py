"""A flow retry does not run again the subflows that completed in an earlier attempt of the same
flow run (Prefect 3's rule): the call returns the final state of that earlier subflow run.

A subflow call is matched with its earlier run by the flow (name and function), its parameters and
which call of that flow with those parameters it is within the attempt (the 1st, the 2nd, ...). Prefect
matches by call order alone, so a branch that calls the subflow with other values on the retry gets
the stale run's result; here it runs.

The completed states live on the parent's flow-run context, for the parent run's life, and only while
the parent has a retry left: a flow without retries pays one attribute test per subflow call.

(Tasks need nothing here: a task's result persisted in an earlier attempt is found under its cache
key, whose default policy includes the flow run's id, which a retry keeps; see `caching.py`.)
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from .._logging import INFO, WARNING, log
from .._states import State, StateType
from .bridge import Bridge
from .task_run import _ATOM_TYPES

if TYPE_CHECKING:
    from .._context import FlowRunContext

Identity = tuple[str, str, str, int]


def parent_flow(call: Any) -> FlowRunContext | None:
    """The flow run this subflow is called in, if that run can be retried (else None: nothing to do)."""
    parent = call.parent
    if parent is None:
        return None
    flow_ctx = parent.flow_context
    # (a process-pool worker's copy of the flow's context has no flow: its retries are the parent process's)
    if flow_ctx is None or flow_ctx.flow is None or not flow_ctx.flow.retries:
        return None
    return flow_ctx


def _identity(call: Any, flow_ctx: FlowRunContext) -> Identity | str:
    """The call's identity within the parent's attempt, or why it has none (a parameter that cannot
    be hashed)."""
    from .._caching import UnhashableKeyPart, combine, stable_hash

    flow = call.flow
    fn = flow.fn
    try:
        parameters = combine(*(f"{name}={stable_hash(value, f'parameter {name!r}')}"
                               for name, value in sorted(call.parameters.items())))
    except UnhashableKeyPart as exc:
        return str(exc)
    base = (flow.name, f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', '')}", parameters)
    counters = flow_ctx.subflow_calls
    if counters is None:
        counters = flow_ctx.subflow_calls = {}
    nth = next(counters.setdefault(base, itertools.count()))  # (atomic under the GIL: threads may call)
    return (*base, nth)


async def find_earlier(call: Any, flow_ctx: FlowRunContext, bridge: Bridge) -> tuple[Identity | None,
                                                                                    State[Any] | None]:
    """The call's identity (None: it cannot have one) and, on a retry, the completed state of the
    same call in an earlier attempt (None: it runs)."""
    if call.wait_for or not all(type(value) in _ATOM_TYPES for value in call.parameters.values()):
        from .._exceptions import UpstreamTaskError
        from .flow_run import _wait_for_upstream

        try:  # the parameters' values identify the call, not the futures that bring them
            await _wait_for_upstream(call, bridge)
        except UpstreamTaskError:
            return None, None  # (the run is recorded NotReady as usual)
    identity = _identity(call, flow_ctx)
    if isinstance(identity, str):
        if flow_ctx.flow_run.run_count > 1:
            log(WARNING, flow_ctx.label, f"Subflow {call.flow.name!r} cannot be matched with its run in an earlier "
                f"attempt ({identity}): it runs again.", flow_ctx.ids)
        return None, None
    completed = flow_ctx.completed_subflows
    earlier = completed.get(identity) if completed is not None and flow_ctx.flow_run.run_count > 1 else None
    if earlier is None:
        return identity, None
    name, state = earlier
    log(INFO, flow_ctx.label, f"Subflow run {name!r} of flow {call.flow.name!r} completed in an earlier attempt "
        f"of this flow run: it is not run again, its final state is reused.", flow_ctx.ids)
    return identity, state


def remember(flow_ctx: FlowRunContext, identity: Identity, run_name: str, state: State[Any]) -> None:
    """A subflow run ended: keep its state if it completed and its parent can still be retried."""
    if state.type is not StateType.COMPLETED or flow_ctx.flow_run.run_count > flow_ctx.flow.retries:
        return
    if flow_ctx.completed_subflows is None:
        flow_ctx.completed_subflows = {}
    flow_ctx.completed_subflows[identity] = (run_name, state)
