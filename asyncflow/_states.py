"""States: small immutable records of where a run is in its life.

A run's history is the sequence of states it entered (kept by the store); the run object itself
only holds its current state. `repr(state)` is the short form used in logs: `Completed()`,
`Failed('boom')`, `Cached(type=COMPLETED)`.
"""

from __future__ import annotations

import datetime as _dt
import enum
import time
import uuid
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from ._engine.calling import caller_is_async
from ._exceptions import CancelledRun, CrashedRun, FailedRun, UnfinishedRun
from ._values import Frozen, Record, ValueEq, setters

R = TypeVar("R")


class StateType(str, enum.Enum):
    SCHEDULED = "SCHEDULED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    CRASHED = "CRASHED"
    PAUSED = "PAUSED"
    CANCELLING = "CANCELLING"

    def __repr__(self) -> str:
        return self.value

    __str__ = __repr__


_PLAIN_NAMES = {t: t.value.capitalize() for t in StateType}
FINAL_TYPES = frozenset({StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED})
_FAILURE_TYPES = frozenset({StateType.FAILED, StateType.CRASHED, StateType.CANCELLED})


_now = time.time
_NOTHING: Any = object()  # (a default computed by the constructor)


class StateDetails(Frozen, ValueEq, Record):
    """Frozen, compared and hashed by value."""

    __slots__ = ("flow_run_id", "task_run_id", "child_flow_run_id", "cache_key", "cache_expiration",
                 "scheduled_time")
    flow_run_id: uuid.UUID | None
    task_run_id: uuid.UUID | None
    child_flow_run_id: uuid.UUID | None
    cache_key: str | None
    cache_expiration: _dt.datetime | None
    scheduled_time: _dt.datetime | None

    def __init__(self, flow_run_id: uuid.UUID | None = None, task_run_id: uuid.UUID | None = None,
                 child_flow_run_id: uuid.UUID | None = None, cache_key: str | None = None,
                 cache_expiration: _dt.datetime | None = None, scheduled_time: _dt.datetime | None = None) -> None:
        _d_flow_run_id(self, flow_run_id)
        _d_task_run_id(self, task_run_id)
        _d_child_flow_run_id(self, child_flow_run_id)
        _d_cache_key(self, cache_key)
        _d_cache_expiration(self, cache_expiration)
        _d_scheduled_time(self, scheduled_time)

    def _key(self) -> tuple[Any, ...]:  # (written out: attribute loads are ~3x faster than an attrgetter)
        return (self.flow_run_id, self.task_run_id, self.child_flow_run_id, self.cache_key, self.cache_expiration,
                self.scheduled_time)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        o: StateDetails = other  # type: ignore[assignment]
        return (self.flow_run_id, self.task_run_id, self.child_flow_run_id, self.cache_key, self.cache_expiration,
                self.scheduled_time) == (o.flow_run_id, o.task_run_id, o.child_flow_run_id, o.cache_key,
                                         o.cache_expiration, o.scheduled_time)

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return hash((StateDetails, *self._key()))


_d_flow_run_id, _d_task_run_id, _d_child_flow_run_id, _d_cache_key, _d_cache_expiration, _d_scheduled_time = (
    setters(StateDetails))


_NO_DETAILS = StateDetails()


class State(Frozen, Record, Generic[R]):
    """The state of a task run or flow run.

    `data` holds the result (completed states) or the exception (failed states). States compare by
    identity: two `Completed()` states of different runs are different events. Frozen; `name` defaults
    to the type's (`Completed`), `ts` to now.
    """

    __slots__ = ("type", "name", "message", "data", "state_details", "ts")
    type: StateType
    name: str
    message: str | None
    data: Any
    state_details: StateDetails
    ts: float

    def __init__(self, type: StateType, name: str = _NOTHING, message: str | None = None, data: Any = None,
                 state_details: StateDetails = _NO_DETAILS, ts: float = _NOTHING) -> None:
        _s_type(self, type)
        _s_name(self, _PLAIN_NAMES[type] if name is _NOTHING else name)
        _s_message(self, message)
        _s_data(self, data)
        _s_state_details(self, state_details)
        _s_ts(self, _now() if ts is _NOTHING else ts)

    @property
    def timestamp(self) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(self.ts, tz=_dt.timezone.utc)

    # -- predicates -----------------------------------------------------------------------------
    def is_scheduled(self) -> bool:
        return self.type is StateType.SCHEDULED

    def is_pending(self) -> bool:
        return self.type is StateType.PENDING

    def is_running(self) -> bool:
        return self.type is StateType.RUNNING

    def is_completed(self) -> bool:
        return self.type is StateType.COMPLETED

    def is_failed(self) -> bool:
        return self.type is StateType.FAILED

    def is_crashed(self) -> bool:
        return self.type is StateType.CRASHED

    def is_cancelled(self) -> bool:
        return self.type is StateType.CANCELLED

    def is_cancelling(self) -> bool:
        return self.type is StateType.CANCELLING

    def is_paused(self) -> bool:
        return self.type is StateType.PAUSED

    def is_final(self) -> bool:
        return self.type in FINAL_TYPES

    # -- result ---------------------------------------------------------------------------------
    def result(self, raise_on_failure: bool = True) -> R:
        """The run's return value; for a failed run, its exception (raised unless asked not to).

        The calling rule applies: in async code (an `async def`, a notebook cell that uses `await`)
        this returns an awaitable of the same (`await state.result()`), as in Prefect 3; in sync code,
        the value."""
        if caller_is_async():
            return self.aresult(raise_on_failure)  # type: ignore[return-value]
        return self._result(raise_on_failure)

    async def aresult(self, raise_on_failure: bool = True) -> R:
        """`state.result()` as a coroutine, in any code."""
        return self._result(raise_on_failure)

    def _result(self, raise_on_failure: bool = True) -> R:
        """`result()` for asyncflow's own code: the value, wherever it is called from."""
        if self.type in _FAILURE_TYPES:
            if not raise_on_failure and (isinstance(self.data, State) or is_state_iterable(self.data)):
                return self.data  # type: ignore[no-any-return]  # a flow's returned states, as in Prefect
            exc = _exception_of(self)
            if raise_on_failure:
                raise exc
            return exc  # type: ignore[return-value]
        if self.type is not StateType.COMPLETED:
            raise UnfinishedRun(
                f"Run is in {self.type.value} state ({self.name}), its result is not available. "
                "Wait for the run to finish first (`await future` or `future.wait()`)."
            )
        return self.data

    def with_details(self, **changes: Any) -> State[R]:
        return State(self.type, self.name, self.message, self.data, self.state_details.replace(**changes), self.ts)

    def __repr__(self) -> str:
        if self.message is None and self.name == _PLAIN_NAMES.get(self.type):
            return f"{self.name}()"
        parts = []
        if self.message is not None:
            parts.append(repr(self.message))
        if self.name.upper() != self.type.value:
            parts.append(f"type={self.type.value}")
        return f"{self.name}({', '.join(parts)})"

    __str__ = __repr__


_s_type, _s_name, _s_message, _s_data, _s_state_details, _s_ts = setters(State)


def _exception_of(state: State[Any]) -> BaseException:
    data = state.data
    if isinstance(data, BaseException):
        return data
    if isinstance(data, State):
        return _exception_of(data)
    if is_state_iterable(data):
        for inner in data:
            if inner.type in _FAILURE_TYPES:
                return _exception_of(inner)
    wrapper = {StateType.CRASHED: CrashedRun, StateType.CANCELLED: CancelledRun}.get(state.type, FailedRun)
    message = data if isinstance(data, str) else state.message or f"Run ended in state {state!r}."
    return wrapper(message)


def is_state_iterable(value: Any) -> bool:
    """A non-empty list, tuple or set made only of states."""
    return (
        isinstance(value, (list, tuple, set, frozenset))
        and len(value) > 0
        and all(isinstance(item, State) for item in value)
    )


# -- constructors (Prefect's names) ---------------------------------------------------------------
def Scheduled(*, scheduled_time: _dt.datetime | None = None, **kwargs: Any) -> State[Any]:
    details = kwargs.pop("state_details", _NO_DETAILS)
    if scheduled_time is not None:
        details = details.replace(scheduled_time=scheduled_time)
    return State(StateType.SCHEDULED, state_details=details, **kwargs)


def AwaitingRetry(*, scheduled_time: _dt.datetime | None = None, **kwargs: Any) -> State[Any]:
    return Scheduled(scheduled_time=scheduled_time, name="AwaitingRetry", **kwargs)


def Pending(**kwargs: Any) -> State[Any]:
    return State(StateType.PENDING, **kwargs)


def NotReady(**kwargs: Any) -> State[Any]:
    return State(StateType.PENDING, name="NotReady", **kwargs)


def Running(**kwargs: Any) -> State[Any]:
    return State(StateType.RUNNING, **kwargs)


def Retrying(**kwargs: Any) -> State[Any]:
    return State(StateType.RUNNING, name="Retrying", **kwargs)


def Completed(**kwargs: Any) -> State[Any]:
    return State(StateType.COMPLETED, **kwargs)


def Cached(**kwargs: Any) -> State[Any]:
    return State(StateType.COMPLETED, name="Cached", **kwargs)


def Failed(**kwargs: Any) -> State[Any]:
    return State(StateType.FAILED, **kwargs)


def TimedOut(**kwargs: Any) -> State[Any]:
    return State(StateType.FAILED, name="TimedOut", **kwargs)


def Crashed(**kwargs: Any) -> State[Any]:
    return State(StateType.CRASHED, **kwargs)


def Cancelling(**kwargs: Any) -> State[Any]:
    return State(StateType.CANCELLING, **kwargs)


def Cancelled(**kwargs: Any) -> State[Any]:
    return State(StateType.CANCELLED, **kwargs)


def Paused(**kwargs: Any) -> State[Any]:
    return State(StateType.PAUSED, **kwargs)


# -- aggregation of a flow's return value ---------------------------------------------------------
def aggregate_states(states: Iterable[State[Any]], data: Any) -> State[Any]:
    """The final state of a flow that returned these run states (Prefect's rules)."""
    states = list(states)
    total = len(states)
    counts: dict[StateType, int] = {}
    for s in states:
        counts[s.type] = counts.get(s.type, 0) + 1
    if counts.get(StateType.COMPLETED, 0) == total:
        return Completed(message="All states completed.", data=data)
    if counts.get(StateType.CANCELLED):
        return Cancelled(message=f"{counts[StateType.CANCELLED]}/{total} states cancelled.", data=data)
    if counts.get(StateType.PAUSED):
        return Paused(message=f"{counts[StateType.PAUSED]}/{total} states paused.", data=data)
    failed = counts.get(StateType.FAILED, 0) + counts.get(StateType.CRASHED, 0)
    if failed:
        return Failed(message=f"{failed}/{total} states failed.", data=data)
    not_final = sum(n for t, n in counts.items() if t not in FINAL_TYPES)
    if not_final:
        return Failed(message=f"{not_final}/{total} states are not final.", data=data)
    summary = ", ".join(f"{t.value}={n}" for t, n in sorted(counts.items()))
    return Failed(message=f"Given states: total={total}, {summary}", data=data)


def return_value_to_state(value: Any) -> State[Any]:
    """Turn what a flow or task function returned into its final state.

    - a state created by user code (not attached to a run) is adopted as it is;
    - a run's state, or a non-empty list/tuple/set of states, is aggregated;
    - anything else completes the run with that value.
    """
    if isinstance(value, State):
        details = value.state_details
        if details.task_run_id is None and details.flow_run_id is None:
            return value
        return aggregate_states([value], value)
    if is_state_iterable(value):
        return aggregate_states(value, value)
    return Completed(data=value)
