"""Run records: what the engine and the store know about one flow run or task run."""

from __future__ import annotations

import uuid
from typing import Any

import attrs

from ._states import State


@attrs.define(slots=True, eq=False)
class TaskRun:
    id: uuid.UUID
    name: str
    task_name: str
    task_key: str
    flow_run_id: uuid.UUID | None
    parent_task_run_id: uuid.UUID | None
    tags: tuple[str, ...]
    parameters: dict[str, Any]
    state: State[Any]
    task_version: str | None = None
    run_count: int = 0
    start_time: float | None = None
    end_time: float | None = None

    @property
    def state_type(self) -> Any:
        return self.state.type

    @property
    def state_name(self) -> str:
        return self.state.name


@attrs.define(slots=True, eq=False)
class FlowRun:
    id: uuid.UUID
    name: str
    flow_name: str
    flow_version: str | None
    parameters: dict[str, Any]
    tags: tuple[str, ...]
    state: State[Any]
    parent_flow_run_id: uuid.UUID | None = None
    parent_task_run_id: uuid.UUID | None = None
    run_count: int = 0
    start_time: float | None = None
    end_time: float | None = None

    @property
    def state_type(self) -> Any:
        return self.state.type

    @property
    def state_name(self) -> str:
        return self.state.name
