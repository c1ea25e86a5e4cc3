"""Pieces shared by the task-run and flow-run engines: final-state lines and messages."""

from __future__ import annotations

from typing import Any

from .._logging import ERROR, INFO, log, state_line
from .._runs import TaskRun
from .._states import State, StateType
from .._store.lines import FINISHED_ERROR, FINISHED_INFO

_INFO_TYPES = (StateType.COMPLETED, StateType.RUNNING, StateType.SCHEDULED, StateType.PENDING)


def log_final_state(state: State[Any], label: str, ids: dict[str, Any], run: Any = None) -> None:
    """`Finished in state …`. With `run` (whose state `state` was just recorded): at the state's time,
    and a database store derives the line from the state instead of storing it."""
    if state.type in _INFO_TYPES:
        level, code = INFO, FINISHED_INFO
    else:
        level, code = ERROR, FINISHED_ERROR
    if run is None:
        log(level, label, f"Finished in state {state!r}", ids)
    else:
        flow_id = run.flow_run_id if type(run) is TaskRun else run.id
        state_line(level, label, f"Finished in state {state!r}", ids, run.id, code, flow_id, state.ts)


def exception_message(kind: str, exc: BaseException) -> str:
    return f"{kind} run encountered an exception {type(exc).__name__}: {exc}"
