"""The `RunStore` reads every database store shares: one run, lists of runs, a run's states and log
lines, short ids, counts. The SQL is written once, with `?` placeholders; a dialect runs it through
`_shared_query(sql, params, flush)` (SQLite as it is, PostgreSQL through its placeholder translation).
The read API for UIs (pages, feeds, timelines) is in `reads.py` and `sqlite_reads.py`."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from .._runs import FlowRun, TaskRun
from .._states import State
from . import history
from .base import LogRecord, ObjectNotFound, as_uuid, check_limit, state_filter
from .fold import PLAIN_NAMES, STORED_TYPES


class SqlRunReads:
    label: str
    prefix_by_range = True  # ids starting with a prefix as a range on the index (SQLite); else LIKE 'prefix%'

    def _shared_query(self, sql: str, params: Iterable[Any] = (), flush: bool = True) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def read_flow_run(self, run_id: uuid.UUID) -> FlowRun:
        from .sqlite import _FLOW_RUN_COLUMNS, _flow_run

        key = as_uuid(run_id, "flow_run_id")
        rows = self._shared_query(f"SELECT {_FLOW_RUN_COLUMNS} FROM flow_runs WHERE id = ?", (str(key),))
        if not rows:
            raise ObjectNotFound(f"No flow run with id {key} in {self.label}.")
        return _flow_run(rows[0])

    def read_task_run(self, run_id: uuid.UUID) -> TaskRun:
        from .sqlite import _TASK_RUN_COLUMNS, _task_run

        key = as_uuid(run_id, "task_run_id")
        rows = self._shared_query(f"SELECT {_TASK_RUN_COLUMNS} FROM task_runs WHERE id = ?", (str(key),))
        if not rows:
            raise ObjectNotFound(f"No task run with id {key} in {self.label}.")
        return _task_run(rows[0])

    def read_flow_runs(self, *, flow_name: str | None = None, state: Any = None,
                       limit: int | None = None) -> list[FlowRun]:
        """Newest first."""
        from .sqlite import _FLOW_RUN_COLUMNS, _flow_run

        wanted, limit = state_filter(state), check_limit(limit)
        where: list[str] = []
        params: list[Any] = []
        if flow_name is not None:
            where.append("flow_name = ?")
            params.append(flow_name)
        if wanted is not None:  # a run whose states are not written yet is Pending
            marks = ", ".join("?" * len(wanted))
            where.append(f"(lower(coalesce(state_name, 'Pending')) IN ({marks}) "
                         f"OR lower(coalesce(state_type, 'PENDING')) IN ({marks}))")
            params += [*sorted(wanted), *sorted(wanted)]
        sql = f"SELECT {_FLOW_RUN_COLUMNS} FROM flow_runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created DESC, ref DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_flow_run(row) for row in self._shared_query(sql, params)]

    def read_task_runs(self, *, flow_run_id: uuid.UUID | None = None, limit: int | None = None,
                       newest_first: bool = False) -> list[TaskRun]:
        """In the order they were created (or the newest first)."""
        from .sqlite import _TASK_RUN_COLUMNS, IN_FLOW, _task_run

        limit = check_limit(limit)
        sql, params = f"SELECT {_TASK_RUN_COLUMNS} FROM task_runs", []  # type: str, list[Any]
        if flow_run_id is not None:  # the index on (flow_ref, created)
            sql += f" WHERE {IN_FLOW}"
            params += [str(as_uuid(flow_run_id, "flow_run_id"))] * 2
            sql += " ORDER BY created DESC, ref DESC" if newest_first else " ORDER BY created, ref"
        else:  # insertion order: no index to keep up to date
            sql += " ORDER BY ref DESC" if newest_first else " ORDER BY ref"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_task_run(row) for row in self._shared_query(sql, params)]

    def read_states(self, run_id: uuid.UUID) -> list[State[Any]]:
        """A run's states by time (then by the order they were stored): a task run's packed ones
        (history.py) and those in `states` rows."""
        from .sqlite import FLOW_ID_OF_TASK, _details_from, _uuid_or_none

        key = str(as_uuid(run_id))
        owner = self._shared_query(f"SELECT ref, {FLOW_ID_OF_TASK.format(t='task_runs')}, 0, created, history "
                                   "FROM task_runs WHERE id = ? UNION ALL "
                                   "SELECT ref, NULL, 1, created, NULL FROM flow_runs WHERE id = ?", (key, key))
        if not owner:
            return []
        ref, flow_run_text, is_flow, created, packed = owner[0]
        flow_run_id: uuid.UUID | None
        task_run_id: uuid.UUID | None
        if is_flow:
            flow_run_id, task_run_id = uuid.UUID(key), None
        else:
            flow_run_id, task_run_id = _uuid_or_none(flow_run_text), uuid.UUID(key)
        rows = self._shared_query("SELECT seq, type, name, message, ts, details FROM states WHERE run_ref = ?",
                                  (ref,), flush=False)
        if packed:
            rows += [(seq, code, name, message, ts, details)
                     for seq, code, name, message, ts, details, _ in history.decode(packed, created)]
        rows.sort(key=_time_then_number)
        return [State(STORED_TYPES[type_], PLAIN_NAMES[type_] if name is None else name, message, None,
                      _details_from(details, flow_run_id, task_run_id), ts)
                for _, type_, name, message, ts, details in rows]

    def read_logs(self, *, flow_run_id: str | None = None, task_run_id: str | None = None) -> list[LogRecord]:
        """In the order they were recorded, the engine's lines derived from states included (lines.py)."""
        from .sqlite_reads import log_lines

        records = log_lines(lambda sql, params: self._shared_query(sql, params, flush=False), self._shared_query,
                            0, flow_run_id, task_run_id, None, None)
        return [LogRecord(r.flow_run_id, r.task_run_id, r.level, r.message, r.ts) for r in records]

    def find_run_ids(self, part: str, table: str) -> list[str]:
        """Ids in `flow_runs` or `task_runs` that start with `part`, else that end with it (for the
        CLI's short ids: ids begin with their creation time, so runs made together share their first
        characters, while the last ones are random)."""
        if table not in ("flow_runs", "task_runs"):
            raise ValueError(f"table must be 'flow_runs' or 'task_runs'; got {table!r}.")
        part = part.strip().lower()
        if not part or any(c not in "0123456789abcdef-" for c in part):
            return []
        params: tuple[str, ...]
        if self.prefix_by_range:
            sql, params = f"SELECT id FROM {table} WHERE id >= ? AND id < ? ORDER BY id LIMIT 10", (part, part + "g")
        else:
            sql, params = f"SELECT id FROM {table} WHERE id LIKE ? ORDER BY id LIMIT 10", (part + "%",)
        found = [row[0] for row in self._shared_query(sql, params)]
        if found or len(part) < 4:
            return found
        return [row[0] for row in self._shared_query(  # no index for this: a scan, bounded by LIMIT
            f"SELECT id FROM {table} WHERE id LIKE ? ORDER BY id LIMIT 10", ("%" + part,), flush=False)]

    def counts(self) -> dict[str, int]:
        """How many rows each table holds (for `asyncflow version` and the tests); `logs` counts the log
        lines, the engine's lines marked on states included (lines.py)."""
        counts = {table: self._shared_query(f"SELECT count(*) FROM {table}")[0][0]
                  for table in ("flows", "flow_runs", "task_runs", "states", "logs")}
        counts["logs"] += self._shared_query("SELECT count(*) FROM states WHERE line IS NOT NULL", flush=False)[0][0]
        for (packed,) in self._shared_query("SELECT history FROM task_runs WHERE history IS NOT NULL", flush=False):
            states, lines = history.count(packed)
            counts["states"] += states
            counts["logs"] += lines
        return counts


def _time_then_number(row: tuple[Any, ...]) -> tuple[float, int]:
    return row[4], row[0]
