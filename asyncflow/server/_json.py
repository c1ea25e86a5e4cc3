"""Runs, states and log lines as JSON: the same shapes as the CLI's `--json` (cli/_output.py)."""

from __future__ import annotations

from typing import Any

from ..cli._output import flow_run_json, iso, state_json, task_run_json


def log_json(line: Any) -> dict[str, Any]:
    return {"seq": line.seq, "timestamp": iso(line.ts), "level": line.level, "flow_run_id": line.flow_run_id,
            "task_run_id": line.task_run_id, "message": line.message}


def row_json(row: Any) -> dict[str, Any]:
    """A timeline row: a task run or a subflow run, its states, and (a subflow) its own rows."""
    out: dict[str, Any] = {"kind": row.kind,
                           "run": flow_run_json(row.run) if row.kind == "flow_run" else task_run_json(row.run),
                           "states": [state_json(s) for s in row.states]}
    if row.kind == "flow_run":
        out["rows"] = [row_json(r) for r in row.rows]
        out["more"] = row.more
    return out


def count_json(count: Any) -> dict[str, Any]:
    return {"start": iso(count.start), "state_type": count.state_type.value, "state_name": count.state_name,
            "count": count.count}


__all__ = ["count_json", "flow_run_json", "iso", "log_json", "row_json", "state_json", "task_run_json"]
