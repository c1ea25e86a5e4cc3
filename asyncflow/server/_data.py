"""What the pages and the JSON API show, read through the store's read API (`_store/reads.py`).

Plain blocking functions (the app runs them in worker threads). Every read is bounded: a page of runs,
a page of log lines, a page of a flow run's timeline, whatever the store holds. A flow run with 10,000
task runs opens with its first page of 100 (their states: one small read each); `read_timeline`, which
reads a whole tree at once, is left to the client API.
"""

from __future__ import annotations

import math
import time
import uuid
from pathlib import Path
from typing import Any

import attrs

from .._runs import FlowRun, TaskRun
from .._states import State, StateType
from .._store.base import LogRecord
from .._store.reads import Page, RunFilter, decode_cursor, query_key

TIMELINE_PAGE = 100  # task runs per page of a flow run's timeline and table
NESTED_TASK_RUNS = 20  # task runs shown inside a subflow's group (the rest: on the subflow's page)
SUBFLOWS_PER_PAGE = 50
MAX_DEPTH = 2  # subflows nested this deep in a timeline; deeper ones on their own page
LOG_PAGE = 200
FAILED_TYPES = (StateType.FAILED, StateType.CRASHED)


@attrs.frozen
class Row:
    """One bar of a timeline: a task run, or a subflow run with its own rows (nested)."""

    kind: str  # "task_run" or "flow_run"
    run: Any
    states: tuple[State[Any], ...]
    depth: int = 0
    rows: tuple[Row, ...] = ()
    more: bool = False  # a subflow with more task runs or subflows than shown here

    @property
    def start(self) -> float:
        if self.states:
            return self.states[0].ts
        return self.run.start_time or self.run.state.ts


@attrs.frozen
class TimelinePage:
    flow_run: FlowRun
    states: tuple[State[Any], ...]
    rows: tuple[Row, ...]
    cursor: str | None  # the page shown (None: the first)
    next_cursor: str | None
    start: float  # the scale: from the flow run's first state
    end: float | None  # to its end (None: still going, the page's clock says where "now" is)

    @property
    def task_runs(self) -> list[Row]:
        return [row for row in self.rows if row.kind == "task_run"]


def states_of(store: Any, run_id: uuid.UUID) -> tuple[State[Any], ...]:
    return tuple(store.read_states(run_id))


def timeline_page(store: Any, flow_run_id: uuid.UUID, cursor: str | None = None,
                  limit: int = TIMELINE_PAGE) -> TimelinePage:
    """A flow run, its states, and one page of its timeline: `limit` task runs in the order they were
    created, with the subflows created among them (each with its first task runs, nested)."""
    run = store.read_flow_run(flow_run_id)  # ObjectNotFound: a 404
    states = states_of(store, run.id)
    rows, next_cursor = _rows(store, run.id, limit, cursor, 0)
    start = states[0].ts if states else (run.start_time or run.state.ts)
    end = None
    if run.state.is_final():
        end = run.end_time or run.state.ts
    return TimelinePage(run, states, rows, cursor, next_cursor, start, end)


def _task_filter(flow_run_id: uuid.UUID) -> RunFilter:
    return RunFilter(parent_flow_run_id=flow_run_id)


def _rows(store: Any, flow_run_id: uuid.UUID, limit: int, cursor: str | None,
          depth: int) -> tuple[tuple[Row, ...], str | None]:
    f = _task_filter(flow_run_id)
    page: Page[TaskRun] = store.read_task_runs_page(f, limit, cursor, False)
    rows = [Row("task_run", t, states_of(store, t.id), depth) for t in page]
    # the subflows created among this page's task runs: after the previous page's last task run and up
    # to this page's last (keyset positions, from the cursors), so that paging shows each once
    key = query_key("task_runs", f, False)
    after, last = decode_cursor(cursor, key), decode_cursor(page.next_cursor, key)
    since = after[0] if after is not None else None
    until = math.nextafter(last[0], math.inf) if last is not None else None
    subs = store.read_flow_runs_page(RunFilter(parent_flow_run_id=flow_run_id, since=since, until=until),
                                     SUBFLOWS_PER_PAGE, None, False)
    for sub in subs:
        children: tuple[Row, ...] = ()
        more = True
        if depth + 1 < MAX_DEPTH:
            children, next_cursor = _rows(store, sub.id, NESTED_TASK_RUNS, None, depth + 1)
            more = next_cursor is not None
        rows.append(Row("flow_run", sub, states_of(store, sub.id), depth, children, more))
    rows.sort(key=lambda row: row.start)
    return tuple(rows), page.next_cursor


def task_run_counts(store: Any, flow_run_id: uuid.UUID) -> list[tuple[str, int]] | None:
    """[(state name, task runs)] of a flow run where the store can count them cheaply (SQLite)."""
    counts = getattr(store, "task_run_state_counts", None)
    return counts(flow_run_id) if counts is not None else None


# -- logs ---------------------------------------------------------------------------------------------
@attrs.frozen
class LogPage:
    lines: tuple[LogRecord, ...]
    after: int  # the sequence number this page starts after
    next_after: int | None  # where the next page starts (None: nothing more yet)
    last_seq: int  # the number to follow new lines from (live)


def log_page(store: Any, *, flow_run_id: uuid.UUID | None = None, task_run_id: uuid.UUID | None = None,
             level: Any = None, after: int = 0, limit: int = LOG_PAGE) -> LogPage:
    lines, _last = store.read_logs_since(after, flow_run_id=flow_run_id, task_run_id=task_run_id, level=level,
                                        limit=limit + 1)
    more = len(lines) > limit
    lines = lines[:limit]
    end = lines[-1].seq if lines else after
    return LogPage(tuple(lines), after, end if more else None, end)


def traceback_of(store: Any, run: Any, is_flow: bool) -> str | None:
    """The traceback stored with the run's last error line (the engine logs the exception with the
    line that says the run failed), for a run that failed or crashed."""
    if run.state.type not in FAILED_TYPES:
        return None
    kwargs: dict[str, Any] = {"flow_run_id": run.id} if is_flow else {"task_run_id": run.id}
    found = None
    since = 0
    for _ in range(20):  # at most 20,000 error lines of one run: enough to find the last traceback
        lines, since = store.read_logs_since(since, level="ERROR", limit=1000, **kwargs)
        for line in lines:
            if "Traceback (most recent call last)" in line.message and (not is_flow or line.task_run_id is None):
                found = line.message
        if len(lines) < 1000:
            break
    if found is None:
        return None
    return found[found.index("Traceback (most recent call last)"):]


# -- the task run page's cache entry ---------------------------------------------------------------
@attrs.frozen
class CacheInfo:
    key: str
    expiration: float | None
    stored: bool  # a record with this key exists under the storage path (it can be cleared)


def cache_info(states: tuple[State[Any], ...]) -> CacheInfo | None:
    for state in reversed(states):
        details = state.state_details
        if details.cache_key:
            expiration = details.cache_expiration.timestamp() if details.cache_expiration else None
            path = cache_path(details.cache_key)
            return CacheInfo(details.cache_key, expiration, path is not None and path.is_file())
    return None


def storage_root() -> Path:
    from .. import _settings

    return Path(_settings.LOCAL_STORAGE_PATH.value())


def cache_path(key: str) -> Path | None:
    """The file of a cache record under the storage path; None for a key that names none there (a
    path that leaves the storage path, the lock directory)."""
    parts = [p for p in key.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts or parts[0] == ".locks" or any(p.startswith(".") for p in parts):
        return None
    return storage_root().joinpath(*parts)


def cache_records(task: str | None = None) -> list[dict[str, Any]]:
    from .._results import list_records

    now = time.time()
    records = [r for r in list_records(storage_root()) if task is None or r["task"] == task]
    for record in records:
        record["expired"] = record["expiration"] is not None and record["expiration"] <= now
        record.pop("path", None)
    return records


def clear_cache_record(key: str) -> bool:
    """Remove one cache record; False if there is none with this key."""
    path = cache_path(key)
    if path is None or not path.is_file():
        return False
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
