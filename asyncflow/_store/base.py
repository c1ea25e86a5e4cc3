"""The store interface."""

from __future__ import annotations

import uuid
from typing import Any, Protocol

import attrs

from .._runs import FlowRun, TaskRun
from .._states import State, StateType


@attrs.frozen(slots=True)
class StateRecord:
    """A state as the store keeps it: no result data, just what happened and when."""

    run_id: uuid.UUID
    type: StateType
    name: str
    message: str | None
    ts: float

    def to_state(self) -> State[Any]:
        return State(self.type, name=self.name, message=self.message, ts=self.ts)


@attrs.frozen(slots=True)
class LogRecord:
    flow_run_id: str | None
    task_run_id: str | None
    level: str
    message: str
    ts: float


class RunStore(Protocol):
    def record_flow_run(self, run: FlowRun) -> None: ...

    def record_task_run(self, run: TaskRun) -> None: ...

    def record_state(self, run_id: uuid.UUID, state: State[Any]) -> None: ...

    def record_log(self, *, flow_run_id: str | None, task_run_id: str | None, level: str, message: str,
                   ts: float) -> None: ...

    def read_flow_run(self, run_id: uuid.UUID) -> FlowRun: ...

    def read_task_run(self, run_id: uuid.UUID) -> TaskRun: ...

    def read_flow_runs(self, *, flow_name: str | None = None, limit: int | None = None) -> list[FlowRun]: ...

    def read_task_runs(self, *, flow_run_id: uuid.UUID | None = None) -> list[TaskRun]: ...

    def read_states(self, run_id: uuid.UUID) -> list[State[Any]]: ...

    def read_logs(self, *, flow_run_id: str | None = None, task_run_id: str | None = None) -> list[LogRecord]: ...
