"""Reads the CLI needs beyond the `RunStore` protocol: log lines after a sequence number (to follow a
live run without re-reading what was printed) and a flow run's task runs counted by state (so that
`flow-run inspect --limit N` summarises every task run but reads only N). SQL only; the SQLite
store's thin methods run it on its reader connection."""

from __future__ import annotations

import sqlite3
from typing import Any

from .base import LogRecord, as_uuid


def logs_after(conn: sqlite3.Connection, after: int, *, flow_run_id: Any = None, task_run_id: Any = None,
               limit: int = 10_000) -> list[tuple[int, LogRecord]]:
    """(seq, line) of the lines after `after`, in order, at most `limit`. A task run's lines are found
    through its flow run's (indexed): pass both ids for a task run inside a flow run, only
    `task_run_id` for one called outside any flow run."""
    where, params = ["seq > ?"], [int(after)]  # type: list[str], list[Any]
    if flow_run_id is not None:
        where.append("flow_run_id = ?")
        params.append(str(as_uuid(flow_run_id, "flow_run_id")))
    elif task_run_id is not None:
        where.append("flow_run_id IS NULL")
    if task_run_id is not None:
        where.append("task_run_id = ?")
        params.append(str(as_uuid(task_run_id, "task_run_id")))
    if len(where) == 1:
        raise ValueError("logs_after needs a flow_run_id or a task_run_id.")
    rows = conn.execute(f"SELECT seq, flow_run_id, task_run_id, level, message, ts FROM logs WHERE "
                        f"{' AND '.join(where)} ORDER BY seq LIMIT ?", [*params, int(limit)]).fetchall()
    return [(row[0], LogRecord(*row[1:])) for row in rows]


def task_run_state_counts(conn: sqlite3.Connection, flow_run_id: Any) -> list[tuple[str, int]]:
    """[(state name, number of task runs)] of a flow run, in the order the states first appear."""
    rows = conn.execute(
        "SELECT coalesce(state_name, 'Pending'), count(*), min(ref) FROM task_runs WHERE flow_run_id = ? "
        "GROUP BY 1 ORDER BY 3", (str(as_uuid(flow_run_id, "flow_run_id")),)).fetchall()
    return [(name, count) for name, count, _ in rows]
