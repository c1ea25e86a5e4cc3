"""Pieces shared by the task-run and flow-run engines: final-state lines and messages."""

from __future__ import annotations

from typing import Any

from .._logging import ERROR, INFO, log
from .._states import State, StateType

_INFO_TYPES = (StateType.COMPLETED, StateType.RUNNING, StateType.SCHEDULED, StateType.PENDING)


def log_final_state(state: State[Any], label: str, ids: dict[str, Any]) -> None:
    log(INFO if state.type in _INFO_TYPES else ERROR, label, f"Finished in state {state!r}", ids)


def exception_message(kind: str, exc: BaseException) -> str:
    return f"{kind} run encountered an exception {type(exc).__name__}: {exc}"
