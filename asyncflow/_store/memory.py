"""An in-memory store, for tests and for `ASYNCFLOW_STORE=memory`."""

from __future__ import annotations

import threading
import uuid
from collections import deque
from typing import Any

from .._runs import FlowRun, TaskRun
from .._states import State
from .base import LogRecord, StateRecord


class MemoryStore:
    """Runs, states and logs in dicts. `max_runs` bounds memory: past it, the oldest runs (with their
    states) are forgotten, and only the newest `10 * max_runs` log lines are kept."""

    def __init__(self, max_runs: int | None = None) -> None:
        self.max_runs = max_runs
        self._flow_runs: dict[uuid.UUID, FlowRun] = {}
        self._task_runs: dict[uuid.UUID, TaskRun] = {}
        self._states: dict[uuid.UUID, list[tuple[Any, ...]]] = {}
        self._logs: deque[LogRecord] = deque(maxlen=10 * max_runs if max_runs else None)
        self._lock = threading.Lock()  # dict/list ops are atomic; the lock guards multi-step reads

    def _evict(self, runs: dict[uuid.UUID, Any]) -> None:
        while self.max_runs is not None and len(runs) > self.max_runs:
            try:
                oldest = next(iter(runs))
            except (StopIteration, RuntimeError):
                return
            runs.pop(oldest, None)
            self._states.pop(oldest, None)

    def record_flow_run(self, run: FlowRun) -> None:
        self._flow_runs[run.id] = run
        if self.max_runs is not None and len(self._flow_runs) > self.max_runs:
            self._evict(self._flow_runs)

    def record_task_run(self, run: TaskRun) -> None:
        self._task_runs[run.id] = run
        if self.max_runs is not None and len(self._task_runs) > self.max_runs:
            self._evict(self._task_runs)

    def record_state(self, run_id: uuid.UUID, state: State[Any]) -> None:
        record = (state.type, state.name, state.message, state.ts)  # StateRecord built on read
        history = self._states.get(run_id)
        if history is None:
            self._states[run_id] = [record]
        else:
            history.append(record)

    def record_log(self, *, flow_run_id: str | None, task_run_id: str | None, level: str, message: str,
                   ts: float) -> None:
        self._logs.append(LogRecord(flow_run_id, task_run_id, level, message, ts))

    def read_flow_run(self, run_id: uuid.UUID) -> FlowRun:
        try:
            return self._flow_runs[_as_uuid(run_id)]
        except KeyError:
            raise KeyError(f"No flow run with id {run_id} in the store.") from None

    def read_task_run(self, run_id: uuid.UUID) -> TaskRun:
        try:
            return self._task_runs[_as_uuid(run_id)]
        except KeyError:
            raise KeyError(f"No task run with id {run_id} in the store.") from None

    def read_flow_runs(self, *, flow_name: str | None = None, limit: int | None = None) -> list[FlowRun]:
        with self._lock:
            runs = [r for r in self._flow_runs.values() if flow_name is None or r.flow_name == flow_name]
        return runs[:limit] if limit is not None else runs

    def read_task_runs(self, *, flow_run_id: uuid.UUID | None = None) -> list[TaskRun]:
        with self._lock:
            return [r for r in self._task_runs.values()
                    if flow_run_id is None or r.flow_run_id == _as_uuid(flow_run_id)]

    def read_states(self, run_id: uuid.UUID) -> list[State[Any]]:
        key = _as_uuid(run_id)
        return [StateRecord(key, *record).to_state() for record in self._states.get(key, [])]

    def read_logs(self, *, flow_run_id: str | None = None, task_run_id: str | None = None) -> list[LogRecord]:
        with self._lock:
            logs = list(self._logs)
        return [log for log in logs
                if (flow_run_id is None or log.flow_run_id == str(flow_run_id))
                and (task_run_id is None or log.task_run_id == str(task_run_id))]


def _as_uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
