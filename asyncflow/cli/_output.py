"""Output for people (aligned tables, local times) and for scripts (`--json`)."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Sequence
from typing import Any


def local_time(ts: float | None, millis: bool = False) -> str:
    if ts is None:
        return "-"
    moment = dt.datetime.fromtimestamp(ts)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{moment.microsecond // 1000:03d}" if millis else text


def iso(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc).isoformat()


def duration(start: float | None, end: float | None) -> str:
    if start is None or end is None:
        return "-"
    seconds = max(0.0, end - start)
    if seconds < 60:
        if seconds < 0.001:
            return f"{seconds * 1e6:.0f}µs"
        return f"{seconds * 1000:.1f}ms" if seconds < 1 else f"{seconds:.1f}s"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m {seconds}s" if hours else f"{minutes}m {seconds}s"


def short(text: str | None, width: int) -> str:
    if not text:
        return ""
    text = " ".join(text.split())  # one line
    return text if len(text) <= width else text[: width - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], empty: str) -> None:
    if not rows:
        print(empty)
        return
    cells = [[str(c) for c in headers]] + [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    width = max(len(name) for name, _ in pairs) + 1
    for name, value in pairs:
        print(f"{(name + ':').ljust(width)} {value}")


def dump_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


# -- records as JSON -----------------------------------------------------------------------------
def state_json(state: Any) -> dict[str, Any]:
    details = state.state_details
    out: dict[str, Any] = {"type": state.type.value, "name": state.name, "message": state.message,
                           "timestamp": iso(state.ts)}
    for name in ("cache_key", "cache_expiration", "scheduled_time"):
        value = getattr(details, name, None)
        if value is not None:
            out[name] = value.isoformat() if hasattr(value, "isoformat") else value
    return out


def _ids(value: Any) -> str | None:
    return None if value is None else str(value)


def flow_run_json(run: Any) -> dict[str, Any]:
    return {"id": str(run.id), "name": run.name, "flow_name": run.flow_name, "flow_version": run.flow_version,
            "state": state_json(run.state), "parameters": run.parameters, "tags": list(run.tags),
            "parent_flow_run_id": _ids(run.parent_flow_run_id), "parent_task_run_id": _ids(run.parent_task_run_id),
            "run_count": run.run_count, "start_time": iso(run.start_time), "end_time": iso(run.end_time),
            "duration_seconds": None if run.start_time is None or run.end_time is None
            else round(run.end_time - run.start_time, 6)}


def task_run_json(run: Any) -> dict[str, Any]:
    return {"id": str(run.id), "name": run.name, "task_name": run.task_name, "task_key": run.task_key,
            "task_version": run.task_version, "flow_run_id": _ids(run.flow_run_id),
            "parent_task_run_id": _ids(run.parent_task_run_id), "state": state_json(run.state),
            "parameters": run.parameters, "tags": list(run.tags), "run_count": run.run_count,
            "start_time": iso(run.start_time), "end_time": iso(run.end_time),
            "duration_seconds": None if run.start_time is None or run.end_time is None
            else round(run.end_time - run.start_time, 6)}


def log_json(log: Any) -> dict[str, Any]:
    return {"timestamp": iso(log.ts), "level": log.level, "flow_run_id": log.flow_run_id,
            "task_run_id": log.task_run_id, "message": log.message}
