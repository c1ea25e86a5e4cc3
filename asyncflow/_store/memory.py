"""An in-memory store, for tests and for `ASYNCFLOW_STORE=memory`.

Recording only appends a tuple to a queue (the hot path pays ~0.1 µs per record); the queue is
folded into indexes when something reads. `max_runs` bounds memory: past it, the oldest runs (with
their states) are forgotten, and only the newest `10 * max_runs` log lines are kept.
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from typing import Any

from .._runs import FlowRun, TaskRun
from .._states import FINAL_TYPES, State
from .base import LogRecord, ObjectNotFound, StateRecord, as_uuid, check_limit, state_filter, state_matches

_FLOW, _TASK, _STATE, _LOG = range(4)


class MemoryStore:
    def __init__(self, max_runs: int | None = None) -> None:
        self.max_runs = max_runs
        self._pending: deque[tuple[Any, ...]] = deque()
        self._flow_runs: dict[uuid.UUID, FlowRun] = {}
        self._task_runs: dict[uuid.UUID, TaskRun] = {}
        self._states: dict[uuid.UUID, list[tuple[Any, ...]]] = {}
        self._logs: deque[LogRecord] = deque(maxlen=10 * max_runs if max_runs else None)
        self._lock = threading.Lock()
        self._since_fold = 0

    # -- recording: append only -------------------------------------------------------------------
    def record_flow_run(self, run: FlowRun) -> None:
        self._append((_FLOW, run))

    def record_task_run(self, run: TaskRun) -> None:
        self._append((_TASK, run))

    def record_state(self, run_id: uuid.UUID, state: State[Any]) -> None:
        self._append((_STATE, run_id, state.type, state.name, state.message, state.ts))

    def record_log(self, *, flow_run_id: str | None, task_run_id: str | None, level: str, message: str,
                   ts: float) -> None:
        self._append((_LOG, flow_run_id, task_run_id, level, message, ts))

    def _append(self, record: tuple[Any, ...]) -> None:
        self._pending.append(record)
        self._since_fold += 1
        if self.max_runs is not None and self._since_fold > 20 * self.max_runs:
            self._fold()  # nobody reads: keep the queue itself bounded

    # -- durability: nothing to write -------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        return True

    def pending(self) -> bool:
        return False

    def close(self) -> None:
        pass

    # -- folding the queue into indexes -----------------------------------------------------------
    def _fold(self) -> None:
        with self._lock:
            self._since_fold = 0
            pending = self._pending
            while pending:
                try:
                    record = pending.popleft()
                except IndexError:
                    break
                kind = record[0]
                if kind == _STATE:
                    history = self._states.get(record[1])
                    if history is None:
                        self._states[record[1]] = [record[2:]]
                    else:
                        history.append(record[2:])
                elif kind == _LOG:
                    self._logs.append(LogRecord(*record[1:]))
                elif kind == _TASK:
                    self._task_runs[record[1].id] = record[1]
                    self._evict(self._task_runs)
                else:
                    self._flow_runs[record[1].id] = record[1]
                    self._evict(self._flow_runs)

    def _evict(self, runs: dict[uuid.UUID, Any]) -> None:
        while self.max_runs is not None and len(runs) > self.max_runs:
            oldest = next(iter(runs))
            runs.pop(oldest, None)
            self._states.pop(oldest, None)

    # -- reading ----------------------------------------------------------------------------------
    def read_flow_run(self, run_id: uuid.UUID) -> FlowRun:
        key = as_uuid(run_id, "flow_run_id")
        self._fold()
        try:
            return self._flow_runs[key]
        except KeyError:
            raise ObjectNotFound(f"No flow run with id {key} in the memory store.") from None

    def read_task_run(self, run_id: uuid.UUID) -> TaskRun:
        key = as_uuid(run_id, "task_run_id")
        self._fold()
        try:
            return self._task_runs[key]
        except KeyError:
            raise ObjectNotFound(f"No task run with id {key} in the memory store.") from None

    def read_flow_runs(self, *, flow_name: str | None = None, state: Any = None,
                       limit: int | None = None) -> list[FlowRun]:
        """Newest first."""
        wanted, limit = state_filter(state), check_limit(limit)
        self._fold()
        runs = [r for r in reversed(list(self._flow_runs.values()))
                if (flow_name is None or r.flow_name == flow_name) and state_matches(wanted, r.state)]
        return runs[:limit] if limit is not None else runs

    def read_task_runs(self, *, flow_run_id: uuid.UUID | None = None, limit: int | None = None,
                       newest_first: bool = False) -> list[TaskRun]:
        """In the order they were created (or the newest first)."""
        wanted = as_uuid(flow_run_id, "flow_run_id") if flow_run_id is not None else None
        limit = check_limit(limit)
        self._fold()
        runs = [r for r in list(self._task_runs.values()) if wanted is None or r.flow_run_id == wanted]
        if newest_first:
            runs.reverse()
        return runs[:limit] if limit is not None else runs

    def read_states(self, run_id: uuid.UUID) -> list[State[Any]]:
        key = as_uuid(run_id)
        self._fold()
        return [StateRecord(key, *record).to_state() for record in self._states.get(key, [])]

    def read_logs(self, *, flow_run_id: str | None = None, task_run_id: str | None = None) -> list[LogRecord]:
        flow_key = str(as_uuid(flow_run_id, "flow_run_id")) if flow_run_id is not None else None
        task_key = str(as_uuid(task_run_id, "task_run_id")) if task_run_id is not None else None
        self._fold()
        return [log for log in list(self._logs)
                if (flow_key is None or log.flow_run_id == flow_key)
                and (task_key is None or log.task_run_id == task_key)]

    # -- retention ----------------------------------------------------------------------------------
    def delete_flow_runs(self, ids: Any) -> dict[str, int]:
        """Delete these flow runs, their subflow runs (recursively), their task runs, states and logs."""
        wanted = {as_uuid(value, "flow_run_id") for value in ids}
        self._fold()
        with self._lock:
            children: dict[uuid.UUID, list[uuid.UUID]] = {}
            for run in list(self._flow_runs.values()):
                if run.parent_flow_run_id is not None:
                    children.setdefault(run.parent_flow_run_id, []).append(run.id)
            tree: set[uuid.UUID] = set()
            frontier = [run_id for run_id in wanted if run_id in self._flow_runs]
            while frontier:
                run_id = frontier.pop()
                if run_id not in tree:
                    tree.add(run_id)
                    frontier.extend(children.get(run_id, ()))
            tasks = {run.id for run in list(self._task_runs.values()) if run.flow_run_id in tree}
            return self._remove(tree, tasks, orphans_before=None, dry_run=False)

    def prune(self, older_than_seconds: float, *, dry_run: bool = False) -> dict[str, int]:
        """Delete the final runs that ended more than `older_than_seconds` ago (see RunStore.prune)."""
        from .retention import cutoff

        before = cutoff(older_than_seconds)

        def old(run: Any) -> bool:
            ended = run.end_time if run.end_time is not None else run.state.ts
            return run.state.type in FINAL_TYPES and ended < before

        self._fold()
        with self._lock:
            flows = {run.id for run in list(self._flow_runs.values()) if old(run)}
            tasks = {run.id for run in list(self._task_runs.values())
                     if run.flow_run_id in flows
                     or ((run.flow_run_id is None or run.flow_run_id not in self._flow_runs) and old(run))}
            return self._remove(flows, tasks, orphans_before=before, dry_run=dry_run)

    def _remove(self, flows: set[uuid.UUID], tasks: set[uuid.UUID], orphans_before: float | None,
                dry_run: bool) -> dict[str, int]:
        """Remove these runs with their states and logs (and, with `orphans_before`, the states and
        logs older than it whose run is not here). Called under the lock."""
        counts = {"flow_runs": len(flows), "task_runs": len(tasks), "states": 0, "logs": 0, "flows": 0}
        for run_id, history in list(self._states.items()):
            if run_id in flows or run_id in tasks:
                counts["states"] += len(history)
                if not dry_run:
                    del self._states[run_id]
            elif orphans_before is not None and run_id not in self._flow_runs and run_id not in self._task_runs:
                kept = [state for state in history if state[3] >= orphans_before]
                counts["states"] += len(history) - len(kept)
                if not dry_run:
                    self._states[run_id] = kept
                    if not kept:
                        del self._states[run_id]
        flow_keys, task_keys = {str(run_id) for run_id in flows}, {str(run_id) for run_id in tasks}
        present_flows = {str(run_id) for run_id in self._flow_runs}
        present_tasks = {str(run_id) for run_id in self._task_runs}

        def goes(log: LogRecord) -> bool:
            if log.flow_run_id in flow_keys or (log.flow_run_id is None and log.task_run_id in task_keys):
                return True
            if orphans_before is None or log.ts >= orphans_before:
                return False
            if log.flow_run_id is not None:
                return log.flow_run_id not in present_flows
            return log.task_run_id is None or log.task_run_id not in present_tasks

        kept_logs = [log for log in list(self._logs) if not goes(log)]
        counts["logs"] = len(self._logs) - len(kept_logs)
        if not dry_run:
            for run_id in flows:
                self._flow_runs.pop(run_id, None)
            for run_id in tasks:
                self._task_runs.pop(run_id, None)
            if counts["logs"]:
                self._logs.clear()
                self._logs.extend(kept_logs)
        return counts
