"""The engine's lines that a database store derives from states instead of storing as log rows.

Two of the engine's lines say exactly what a state already says: `Created task run 'x' for task 'y'`
(a task run's first state, in a flow) and `Finished in state Completed()` (a run's final state). The
engine still writes them to the console; to the store it hands them as *state lines*
(`record_state_line`): a database store marks the state row they belong to (`states.line`, one of the
codes below) and writes no log row; every read of log lines (sql_reads.py, sqlite_reads.py) puts them
back, with the text, level, time, run ids and place in the sequence the stored line would have had:

- the text is made here from the state and its run (`text`), exactly as the engine made it;
- the time is the state's (the engine logs these lines with their state's time);
- a line's number (`seq`) is its state's: states and log lines are numbered from one counter, in the
  order they were recorded, so the derived line sits where the log row would have been;
- a created line belongs to the task run's flow run (task_run_id NULL), a finished line to its run.

A line the store cannot attach to its state (the state was written in an earlier batch, or is not the
one the line is about) is stored as a log row, as before. The memory store stores every line as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._states import State
from .fold import STORED_TYPES

CREATED, FINISHED_INFO, FINISHED_ERROR = 1, 2, 3  # states.line: which line a state row carries
LEVELS = {CREATED: "INFO", FINISHED_INFO: "INFO", FINISHED_ERROR: "ERROR"}
LEVEL_SQL = f"CASE WHEN s.line = {FINISHED_ERROR} THEN 'ERROR' ELSE 'INFO' END"  # a derived line's level


def codes_for(levels: Sequence[str] | None) -> list[int] | None:
    """The line codes whose level is one of `levels` (None: every code)."""
    if levels is None:
        return None
    return [code for code, level in LEVELS.items() if level in levels]


def text(code: int, type_: Any, name: str | None, message: str | None, run_name: str | None,
         task_name: str | None) -> str:
    """The line as the engine wrote it (`_engine/task_run._log_created`, `_engine/common.log_final_state`)."""
    if code == CREATED:
        return f"Created task run '{run_name}' for task '{task_name}'"
    kind = STORED_TYPES[type_]
    return f"Finished in state {State(kind, kind.value.capitalize() if name is None else name, message)!r}"


def row(flow_run_id: Any, task_run_id: Any, code: int, type_: Any, name: str | None, message: str | None,
        ts: float, seq: int, run_name: str | None, task_name: str | None) -> tuple[Any, ...]:
    """A derived line as a log row: (flow_run_id, task_run_id, level, message, ts, seq)."""
    return (flow_run_id, task_run_id, LEVELS[code], text(code, type_, name, message, run_name, task_name), ts, seq)
