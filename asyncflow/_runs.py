"""Run records: what the engine and the store know about one flow run or task run."""

from __future__ import annotations

import uuid
from typing import Any

from ._states import State
from ._values import Record


class TaskRun(Record):
    """Mutable (the engine updates its state and counts); compared by identity; pickled by its fields."""

    __slots__ = ("id", "name", "task_name", "task_key", "flow_run_id", "parent_task_run_id", "tags", "parameters",
                 "state", "task_version", "run_count", "start_time", "end_time")
    id: uuid.UUID
    name: str
    task_name: str
    task_key: str
    flow_run_id: uuid.UUID | None
    parent_task_run_id: uuid.UUID | None
    tags: tuple[str, ...]
    parameters: dict[str, Any]
    state: State[Any]
    task_version: str | None
    run_count: int
    start_time: float | None
    end_time: float | None

    def __init__(self, id: uuid.UUID, name: str, task_name: str, task_key: str, flow_run_id: uuid.UUID | None,
                 parent_task_run_id: uuid.UUID | None, tags: tuple[str, ...], parameters: dict[str, Any],
                 state: State[Any], task_version: str | None = None, run_count: int = 0,
                 start_time: float | None = None, end_time: float | None = None) -> None:
        self.id = id
        self.name = name
        self.task_name = task_name
        self.task_key = task_key
        self.flow_run_id = flow_run_id
        self.parent_task_run_id = parent_task_run_id
        self.tags = tags
        self.parameters = parameters
        self.state = state
        self.task_version = task_version
        self.run_count = run_count
        self.start_time = start_time
        self.end_time = end_time

    @property
    def state_type(self) -> Any:
        return self.state.type

    @property
    def state_name(self) -> str:
        return self.state.name


class FlowRun(Record):
    """Mutable (the engine updates its state and counts); compared by identity; pickled by its fields."""

    __slots__ = ("id", "name", "flow_name", "flow_version", "parameters", "tags", "state", "parent_flow_run_id",
                 "parent_task_run_id", "run_count", "start_time", "end_time")
    id: uuid.UUID
    name: str
    flow_name: str
    flow_version: str | None
    parameters: dict[str, Any]
    tags: tuple[str, ...]
    state: State[Any]
    parent_flow_run_id: uuid.UUID | None
    parent_task_run_id: uuid.UUID | None
    run_count: int
    start_time: float | None
    end_time: float | None

    def __init__(self, id: uuid.UUID, name: str, flow_name: str, flow_version: str | None,
                 parameters: dict[str, Any], tags: tuple[str, ...], state: State[Any],
                 parent_flow_run_id: uuid.UUID | None = None, parent_task_run_id: uuid.UUID | None = None,
                 run_count: int = 0, start_time: float | None = None, end_time: float | None = None) -> None:
        self.id = id
        self.name = name
        self.flow_name = flow_name
        self.flow_version = flow_version
        self.parameters = parameters
        self.tags = tags
        self.state = state
        self.parent_flow_run_id = parent_flow_run_id
        self.parent_task_run_id = parent_task_run_id
        self.run_count = run_count
        self.start_time = start_time
        self.end_time = end_time

    @property
    def state_type(self) -> Any:
        return self.state.type

    @property
    def state_name(self) -> str:
        return self.state.name
