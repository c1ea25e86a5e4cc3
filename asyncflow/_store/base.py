"""The store interface, and what every store shares: records, errors, filters."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from .._runs import FlowRun, TaskRun
from .._states import State, StateType
from .._values import Frozen, Record, ValueEq, setters

if TYPE_CHECKING:
    from .reads import Change, Page, RunFilter, StateCount, Timeline


class ObjectNotFound(KeyError):
    """No run with this id, or no concurrency limit with this name, in the store (a `KeyError`; Prefect's
    client raises its `ObjectNotFound` for the same)."""

    def __str__(self) -> str:  # KeyError's str() is the repr of its argument: show the message itself
        return str(self.args[0]) if self.args else ""


class ObjectAlreadyExists(ValueError):
    """A concurrency limit with this name exists already (a `ValueError`; Prefect's client raises its
    `ObjectAlreadyExists` for the same)."""


class StoreError(RuntimeError):
    """The store cannot be opened or used (it does not exist, it is newer than this asyncflow...)."""


class StoreNotFoundError(StoreError):
    """There is no store at this path yet (nothing has run with this ASYNCFLOW_HOME)."""


class StateRecord(Frozen, ValueEq, Record):
    """A state as the store keeps it: no result data, just what happened and when."""

    __slots__ = ("run_id", "type", "name", "message", "ts")
    run_id: uuid.UUID
    type: StateType
    name: str
    message: str | None
    ts: float

    def __init__(self, run_id: uuid.UUID, type: StateType, name: str, message: str | None, ts: float) -> None:
        _r_run_id(self, run_id)
        _r_type(self, type)
        _r_name(self, name)
        _r_message(self, message)
        _r_ts(self, ts)

    def to_state(self) -> State[Any]:
        return State(self.type, name=self.name, message=self.message, ts=self.ts)


class LogRecord(Frozen, ValueEq, Record):
    """One log line of a run, as recorded. `seq` (the store's sequence number, for read_logs_since) is
    not compared."""

    __slots__ = ("flow_run_id", "task_run_id", "level", "message", "ts", "seq")
    _eq_exclude = ("seq",)
    flow_run_id: str | None
    task_run_id: str | None
    level: str
    message: str
    ts: float
    seq: int | None

    def __init__(self, flow_run_id: str | None, task_run_id: str | None, level: str, message: str, ts: float,
                 seq: int | None = None) -> None:
        _l_flow_run_id(self, flow_run_id)
        _l_task_run_id(self, task_run_id)
        _l_level(self, level)
        _l_message(self, message)
        _l_ts(self, ts)
        _l_seq(self, seq)

    @property
    def timestamp(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.ts, tz=dt.timezone.utc)


_r_run_id, _r_type, _r_name, _r_message, _r_ts = setters(StateRecord)
_l_flow_run_id, _l_task_run_id, _l_level, _l_message, _l_ts, _l_seq = setters(LogRecord)


class RunStore(Protocol):
    # recording (the hot path: cheap, never blocks for long, never raises)
    def record_flow_run(self, run: FlowRun, state: State[Any] | None = None) -> None:
        """Record a run (again: under a new name). With `state`: a new run and its first state, which a
        store keeps together (a run is never stored without its first state)."""

    def record_task_run(self, run: TaskRun, state: State[Any] | None = None) -> None:
        """As `record_flow_run`."""

    def record_state(self, run_id: uuid.UUID, state: State[Any]) -> None: ...

    def record_log(self, *, flow_run_id: str | None, task_run_id: str | None, level: str, message: str,
                   ts: float) -> None: ...

    def record_state_line(self, run_id: uuid.UUID, code: int, flow_id: uuid.UUID | None, flow_run_id: str | None,
                          task_run_id: str | None, level: str, message: str, ts: float) -> None:
        """An engine line that says what the state of `run_id` recorded just before says (`lines.py`;
        `ts` is that state's), in the flow run `flow_id` (None: a task run outside flows). Read back
        like a log line; a database store derives it from the state."""

    # durability
    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything recorded so far is stored; False if `timeout` ran out first."""
        ...

    def pending(self) -> bool:
        """True while some records are not stored yet (a cheap check)."""
        ...

    def close(self) -> None: ...

    # reading (sees everything this process recorded: reads flush first)
    def read_flow_run(self, run_id: uuid.UUID) -> FlowRun: ...

    def read_task_run(self, run_id: uuid.UUID) -> TaskRun: ...

    def read_flow_runs(self, *, flow_name: str | None = None, state: str | Iterable[str] | None = None,
                       limit: int | None = None) -> list[FlowRun]: ...

    def read_task_runs(self, *, flow_run_id: uuid.UUID | None = None, limit: int | None = None,
                       newest_first: bool = False) -> list[TaskRun]: ...

    def read_states(self, run_id: uuid.UUID) -> list[State[Any]]: ...

    def read_logs(self, *, flow_run_id: str | None = None, task_run_id: str | None = None) -> list[LogRecord]: ...

    # retention (flush first; never called on the hot path)
    def delete_flow_runs(self, ids: Iterable[uuid.UUID | str]) -> dict[str, int]:
        """Delete these flow runs with their subflow runs (recursively), task runs, states and log lines;
        returns the number of rows deleted per table (flow_runs, task_runs, states, logs, flows)."""
        ...

    def prune(self, older_than_seconds: float, *, dry_run: bool = False) -> dict[str, int]:
        """Delete the runs in a final state that ended more than `older_than_seconds` ago (a flow run's
        task runs go with it), with their states and log lines; runs not final are kept. Returns the
        rows deleted per table (with `dry_run`, the rows that would be, and nothing is deleted)."""
        ...

    # the read API (reads.py: what the UI and the client's paged reads use): these never flush, they
    # read what is stored (a UI polls); they agree across stores on semantics and order
    def read_flow_runs_page(self, filter: RunFilter | None = None, limit: int | None = 50, cursor: str | None = None,
                            newest_first: bool = True) -> Page[FlowRun]: ...

    def read_task_runs_page(self, filter: RunFilter | None = None, limit: int | None = 50, cursor: str | None = None,
                            newest_first: bool = True) -> Page[TaskRun]: ...

    def read_changes(self, since: int = 0, limit: int = 1000) -> tuple[list[Change], int]: ...

    def read_logs_since(self, since: int = 0, *, flow_run_id: Any = None, task_run_id: Any = None, level: Any = None,
                        limit: int = 1000) -> tuple[list[LogRecord], int]: ...

    def read_timeline(self, flow_run_id: Any) -> Timeline: ...

    def count_flow_runs_by_state(self, filter: RunFilter | None = None,
                                 bucket_seconds: float = 3600) -> list[StateCount]: ...


# -- argument checks shared by the stores and the client ------------------------------------------
def as_uuid(value: Any, what: str = "run id") -> uuid.UUID:
    """`value` as a UUID; a clear error names the argument and what it accepts."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value.strip())
        except ValueError:
            pass
        raise ValueError(f"{what} {value!r} is not a valid id: expected a UUID such as "
                         f"'0b8e2f4c-5d1a-4c3e-9f7a-2b6d8e1c4a90'.")
    raise TypeError(f"{what} must be a UUID or a string; got {type(value).__name__}.")


def state_filter(state: str | StateType | Iterable[str | StateType] | None) -> frozenset[str] | None:
    """Normalise a `state=` filter: names or types, matched without regard to case."""
    if state is None:
        return None
    values = [state] if isinstance(state, (str, StateType)) else state
    try:
        wanted = frozenset((v.value if isinstance(v, StateType) else v).strip().lower() for v in values)
    except (TypeError, AttributeError):
        raise TypeError(f"state must be a state name or type (such as 'Completed', 'Failed', 'CRASHED') or a "
                        f"list of them; got {state!r}.") from None
    if not wanted:
        raise ValueError("state filter is an empty list: give at least one state name or type.")
    return wanted


def state_matches(wanted: frozenset[str] | None, state: State[Any]) -> bool:
    return wanted is None or state.name.lower() in wanted or state.type.value.lower() in wanted


def check_limit(limit: Any) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be an integer >= 0 or None; got {limit!r}.")
    return limit


def _no_open_runs() -> list[Any]:
    return []


# The runs open in this process (flow and task runs), as the engine knows them: the engine sets it at
# import (`_engine/open_runs.py`); a writer that degrades to memory asks it (services never import the engine).
open_runs: Callable[[], list[Any]] = _no_open_runs


def set_open_runs(source: Callable[[], list[Any]]) -> None:
    global open_runs
    open_runs = source
