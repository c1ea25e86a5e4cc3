"""Reads the CLI needs beyond the `RunStore` protocol and the read API: a flow run's task runs counted
by state (so that `flow-run inspect --limit N` summarises every task run but reads only N). SQL only; the SQLite
store's thin methods run it on its reader connection."""

from __future__ import annotations

import sqlite3
from typing import Any

from .base import as_uuid
from .sqlite import IN_FLOW


def task_run_state_counts(conn: sqlite3.Connection, flow_run_id: Any) -> list[tuple[str, int]]:
    """[(state name, number of task runs)] of a flow run, in the order the states first appear."""
    rows = conn.execute(
        f"SELECT coalesce(state_name, 'Pending'), count(*), min(ref) FROM task_runs WHERE {IN_FLOW} "
        "GROUP BY 1 ORDER BY 3", [str(as_uuid(flow_run_id, "flow_run_id"))] * 2).fetchall()
    return [(name, count) for name, count, _ in rows]
