"""The read API's SQL for the SQLite store (see reads.py for what each read means).

Every function takes `query(sql, params) -> rows` (the store's reader, which does not flush the
writer: a UI polls) and runs a fixed number of statements, whatever the size of the result:

- pages: one statement, keyset on (created, ref) with `LIMIT n + 1`, served by the indexes on
  flow_runs (created), (flow_name, created), (parent_flow_run_id, created) and task_runs
  (flow_ref, created) (each also holds `ref`, the rowid);
- changes and logs since a sequence number: one range on the `seq` primary key of `states` (and `logs`),
  merged with the task runs' packed states after that number (history.py: `appends`, a chunk at a time);
- a timeline: one statement for the runs (the subflow tree by a recursive CTE, their task runs)
  and one for all their states (by run_ref, through a JSON array of refs), one for their packed states.
"""

from __future__ import annotations

import heapq
import itertools
import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .._runs import FlowRun, TaskRun
from .._states import State, StateDetails, StateType
from . import history, lines
from .base import LogRecord, ObjectNotFound, as_uuid
from .fold import PLAIN_NAMES, STORED_TYPES
from .reads import (
    Change,
    Page,
    RunFilter,
    StateCount,
    Timeline,
    as_filter,
    build_timeline,
    check_bucket,
    check_feed_limit,
    check_flow_run_filter,
    check_page_limit,
    check_since,
    decode_cursor,
    levels_from,
    page_of,
    query_key,
)
from .sqlite import _FLOW_RUN_COLUMNS, _TASK_RUN_COLUMNS, _V2_TASK_RUN_COLUMNS, FLOW_ID_OF_TASK, IN_FLOW, _details_from

Query = Callable[[str, Any], list[tuple[Any, ...]]]

_FLOW_CREATED = _FLOW_RUN_COLUMNS.split(", ").index("created")  # where `created` is in a run row (ref first)
_TASK_CREATED = ("ref, " + _V2_TASK_RUN_COLUMNS).split(", ").index("created")
_STATE_NAME = "coalesce(state_name, 'Pending')"  # a run whose states are not written yet reads as Pending
_STATE_TYPE = "coalesce(state_type, 'PENDING')"


_TYPES = {t.value: t for t in StateType}


class Dialect:
    """The few terms of the read API's SQL that differ between SQLite and PostgreSQL (postgres.py has the
    other dialect); the rest of this module's SQL is portable, with `?` placeholders."""

    def has_tag(self, table: str) -> str:
        return f"EXISTS (SELECT 1 FROM json_each({table}.tags) WHERE value = ?)"

    def contains(self, column: str) -> str:
        """`?` (ASCII lower case) occurs in the column, ignoring ASCII case."""
        return f"instr(lower({column}), ?) > 0"

    refs = "SELECT value FROM json_each(?)"  # the run refs of a JSON array (a timeline's states)
    bucket = "CAST(created / ? AS INTEGER)"  # a creation-time bucket number (truncated)
    mixed_union = True  # a UNION may mix column types (flow runs' and task runs' rows in one statement)


SQLITE = Dialect()


class _Rows:
    """Rows into runs and states, as sqlite.py's readers make them, at a few microseconds a row: what
    repeats across the rows of one read (a flow run id, tags, a run's state details) is made once."""

    def __init__(self) -> None:
        self.ids: dict[str | None, uuid.UUID | None] = {None: None}
        self.tags: dict[str, tuple[str, ...]] = {"[]": ()}
        self.details: dict[int, StateDetails] = {}  # per run (by ref): the details of its plain states

    def uuid(self, text: str | None) -> uuid.UUID | None:
        found = self.ids.get(text)
        if found is None and text is not None:
            found = self.ids[text] = uuid.UUID(text)
        return found

    def _tags(self, text: str) -> tuple[str, ...]:
        found = self.tags.get(text)
        if found is None:
            found = self.tags[text] = tuple(json.loads(text))
        return found

    def _state(self, type_: str | None, name: str | None, message: str | None, ts: float | None, created: float,
               details: StateDetails) -> State[Any]:
        if type_ is None:  # the run's states are not written yet (or were dropped)
            return State(StateType.PENDING, "Pending", None, None, details, created)
        return State(_TYPES[type_], name or type_.capitalize(), message, None, details,
                     ts if ts is not None else created)

    def flow_run(self, row: tuple[Any, ...]) -> FlowRun:
        (_, id_, name, flow_name, flow_version, parameters, tags, parent_flow_run_id, parent_task_run_id, created,
         state_type, state_name, state_message, state_ts, run_count, start_time, end_time) = row
        run_id = uuid.UUID(id_)
        details = self.details[row[0]] = StateDetails(flow_run_id=run_id)
        return FlowRun(run_id, name, flow_name, flow_version, json.loads(parameters), self._tags(tags),
                       self._state(state_type, state_name, state_message, state_ts, created, details),
                       self.uuid(parent_flow_run_id), self.uuid(parent_task_run_id), run_count, start_time, end_time)

    def task_run(self, row: tuple[Any, ...]) -> TaskRun:
        (_, id_, name, task_name, task_key, task_version, flow_run_id, parent_task_run_id, parameters, tags, created,
         state_type, state_name, state_message, state_ts, run_count, start_time, end_time) = row
        run_id = uuid.UUID(id_)
        flow_id = self.uuid(flow_run_id)
        details = self.details[row[0]] = StateDetails(flow_run_id=flow_id, task_run_id=run_id)
        return TaskRun(run_id, name, task_name, task_key, flow_id, self.uuid(parent_task_run_id), self._tags(tags),
                       json.loads(parameters),
                       self._state(state_type, state_name, state_message, state_ts, created, details),
                       task_version, run_count, start_time, end_time)

    def state(self, ref: int, type_: Any, name: str, message: str | None, ts: float,
              details: str | None) -> State[Any]:
        plain = self.details[ref]
        return State(STORED_TYPES[type_], PLAIN_NAMES[type_] if name is None else name, message, None,
                     _details_from(details, plain.flow_run_id, plain.task_run_id) if details else plain, ts)


def _marks(values: Any) -> str:
    return ", ".join("?" * len(values))


def _where(f: RunFilter, table: str, dialect: Dialect = SQLITE) -> tuple[list[str], list[Any]]:
    """The filter as SQL terms on `table` (flow_runs or task_runs)."""
    where: list[str] = []
    params: list[Any] = []
    flows = table == "flow_runs"
    if f.flow_names is not None:
        names = sorted(f.flow_names)
        if flows:
            where.append(f"flow_name IN ({_marks(names)})")
        else:
            where.append(f"flow_ref IN (SELECT ref FROM flow_runs WHERE flow_name IN ({_marks(names)}))")
        params += names
    if f.task_names is not None:
        names = sorted(f.task_names)
        where.append(f"task_name IN ({_marks(names)})")
        params += names
    if f.parent_flow_run_id is not None:
        where.append("parent_flow_run_id = ?" if flows else IN_FLOW)
        params += [str(f.parent_flow_run_id)] * (1 if flows else 2)
    if f.since is not None:
        where.append("created >= ?")
        params.append(f.since)
    if f.until is not None:
        where.append("created < ?")
        params.append(f.until)
    if f.states is not None:
        wanted = sorted(f.states)
        where.append(f"(lower({_STATE_NAME}) IN ({_marks(wanted)}) OR lower({_STATE_TYPE}) IN ({_marks(wanted)}))")
        params += wanted + wanted
    if f.tags is not None:
        for tag in sorted(f.tags):
            where.append(dialect.has_tag(table))
            params.append(tag)
    if f.search is not None:
        where.append(f"({dialect.contains('name')} OR {dialect.contains('flow_name' if flows else 'task_name')})")
        params += [f.search, f.search]
    return where, params


def _page(query: Query, table: str, f: RunFilter, limit: Any, cursor: Any, newest_first: bool,
          dialect: Dialect = SQLITE) -> Page[Any]:
    limit = check_page_limit(limit)
    key = query_key(table, f, newest_first)
    position = decode_cursor(cursor, key)
    where, params = _where(f, table, dialect)
    if position is not None:
        where.append("(created, ref) < (?, ?)" if newest_first else "(created, ref) > (?, ?)")
        params += list(position)
    rows_ = _Rows()
    columns, convert, created = ((_FLOW_RUN_COLUMNS, rows_.flow_run, _FLOW_CREATED) if table == "flow_runs"
                                 else (_TASK_RUN_COLUMNS, rows_.task_run, _TASK_CREATED))
    sql = f"SELECT {columns} FROM {table}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY created DESC, ref DESC" if newest_first else " ORDER BY created, ref"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit + 1)
    rows = query(sql, params)
    return page_of([(row[created], row[0], convert(row)) for row in rows], limit, key)


def flow_runs_page(query: Query, filter: Any, limit: Any, cursor: Any, newest_first: bool,
                   dialect: Dialect = SQLITE) -> Page[FlowRun]:
    return _page(query, "flow_runs", check_flow_run_filter(as_filter(filter)), limit, cursor, newest_first, dialect)


def task_runs_page(query: Query, filter: Any, limit: Any, cursor: Any, newest_first: bool,
                   dialect: Dialect = SQLITE) -> Page[TaskRun]:
    return _page(query, "task_runs", as_filter(filter), limit, cursor, newest_first, dialect)


def changes(query: Query, since: Any, limit: Any) -> tuple[list[Change], int]:
    since, limit = check_since(since), check_feed_limit(limit)
    rows = query(
        "SELECT s.seq, coalesce(t.id, f.id, s.run_id), "
        "CASE WHEN t.ref IS NOT NULL THEN 'task_run' WHEN f.ref IS NOT NULL THEN 'flow_run' END, "
        f"CASE WHEN t.ref IS NOT NULL THEN {FLOW_ID_OF_TASK.format(t='t')} ELSE f.id END, coalesce(t.name, f.name), "
        "s.type, s.name, s.message, s.ts "
        "FROM states s LEFT JOIN task_runs t ON t.ref = s.run_ref LEFT JOIN flow_runs f ON f.ref = s.run_ref "
        "WHERE s.seq > ? ORDER BY s.seq LIMIT ?", (since, limit))
    packed = ((state[0], run[2], "task_run", run[3], run[4], state[1], state[2], state[3], state[4])
              for state, run in history.after(query, since, f"t.id, {FLOW_ID_OF_TASK.format(t='t')}, t.name", limit))
    ids = _Rows()
    out = [Change(seq, uuid.UUID(run_id), kind, ids.uuid(flow_run_id), name, STORED_TYPES[type_],
                  PLAIN_NAMES[type_] if state_name is None else state_name, message, ts)
           for seq, run_id, kind, flow_run_id, name, type_, state_name, message, ts
           in itertools.islice(heapq.merge(rows, packed, key=_first), limit)]
    return out, (out[-1].seq if out else since)


def _first(row: tuple[Any, ...]) -> Any:
    return row[0]


_LOG_COLUMNS = ("flow_run_id, task_run_id, level, message, ts, seq, CAST(NULL AS INTEGER) AS line, "
                "CAST(NULL AS SMALLINT) AS type, CAST(NULL AS TEXT) AS name, CAST(NULL AS TEXT) AS state_message, "
                "CAST(NULL AS TEXT) AS run_name, CAST(NULL AS TEXT) AS task_name")
# the engine's lines marked on states (lines.py): the flow run by the line's flow_ref, the task run by its run_ref
_LINE_ROWS = (f"SELECT f.id, CASE WHEN s.line <> {lines.CREATED} THEN t.id END, NULL, NULL, s.ts, s.seq, s.line, "
              "s.type, s.name, s.message, t.name, t.task_name FROM states s LEFT JOIN task_runs t ON t.ref = s.run_ref "
              "LEFT JOIN flow_runs f ON f.ref = s.flow_ref WHERE ")


def log_lines(query: Query, lookup: Query, since: int, flow_run_id: Any, task_run_id: Any,
              levels: Sequence[str] | None, limit: int | None) -> list[LogRecord]:
    """A run's log lines (or every run's) after `since`, in order: the log rows, and the engine's lines
    derived from the states they are marked on (lines.py), merged by their number. A task run's rows are
    found through its flow run's (indexed), or, for a task run called outside any flow, through the index
    of such runs' rows; its derived lines through its states, a flow run's through `states_lines_by_flow`.
    `lookup` runs the query that finds a task run's flow run (the first statement of a read)."""
    flow_key = str(as_uuid(flow_run_id, "flow_run_id")) if flow_run_id is not None else None
    task_key = str(as_uuid(task_run_id, "task_run_id")) if task_run_id is not None else None
    where: list[str] = ["seq > ?"]
    params: list[Any] = [since]
    found: list[str] = ["s.seq > ?", "s.line IS NOT NULL"]  # the derived lines' terms
    derived_params: list[Any] = [since]
    derived: list[str] | None = found
    if task_key is not None:
        owner = lookup(f"SELECT {FLOW_ID_OF_TASK.format(t='task_runs')} FROM task_runs WHERE id = ?", (task_key,))
        if not owner or (flow_key is not None and owner[0][0] != flow_key):
            derived = None  # no such task run (or not in that flow run): no lines to derive
        else:
            found += ["s.run_ref = (SELECT ref FROM task_runs WHERE id = ?)", f"s.line <> {lines.CREATED}"]
            derived_params.append(task_key)
        if flow_key is None and owner:
            if owner[0][0] is not None:
                flow_key = owner[0][0]
            else:
                where.append("flow_run_id IS NULL")
    elif flow_key is not None:
        found.append("s.flow_ref = (SELECT ref FROM flow_runs WHERE id = ?)")
        derived_params.append(flow_key)
    if flow_key is not None:
        where.append("flow_run_id = ?")
        params.append(flow_key)
    if task_key is not None:
        where.append("task_run_id = ?")
        params.append(task_key)
    if levels is not None:
        where.append(f"level IN ({_marks(levels)})" if levels else "1 = 0")
        params += list(levels)
        codes = lines.codes_for(levels)
        if not codes:
            derived = None
        elif derived is not None and len(codes) < len(lines.LEVELS):
            derived.append(f"s.line IN ({', '.join(map(str, codes))})")
    sql = f"SELECT {_LOG_COLUMNS} FROM logs WHERE " + " AND ".join(where)
    if derived is not None:
        sql = f"{sql} UNION ALL {_LINE_ROWS}{' AND '.join(derived)}"  # merged in order (each side is)
        params += derived_params
    sql += " ORDER BY seq"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    line_row = lines.row
    records = (LogRecord(*row[:6]) if row[6] is None else LogRecord(*line_row(*row[:2], *row[6:10], *row[4:6],
                                                                             *row[10:])) for row in query(sql, params))
    if derived is None:
        return list(records)
    wanted = lines.codes_for(levels)
    packed = _packed_lines(query, since, flow_key if task_key is None else None, task_key,
                           set(wanted) if wanted is not None else None, limit or 500)
    return list(itertools.islice(heapq.merge(records, packed, key=_seq), limit))


def _seq(record: LogRecord) -> Any:
    return record.seq


# a packed state's line: its task run's id, flow run id, name and task name (history.after's columns)
_LINE_OF = f"t.id, {FLOW_ID_OF_TASK.format(t='t')}, t.name, t.task_name"


def _packed_lines(query: Query, since: int, flow_key: str | None, task_key: str | None,
                  codes: set[int] | None, chunk: int) -> Iterator[LogRecord]:
    """The engine's lines marked on task runs' packed states (history.py), after `since`, in order: of one
    task run (`task_key`: its finished line; its created line is its flow run's), of one flow run's task
    runs, or of all (through `appends`)."""
    if task_key is None and flow_key is None:
        states: Iterator[tuple[Any, ...]] = history.after(query, since, _LINE_OF, chunk)
    else:
        params: list[Any]
        if task_key is not None:
            where, params = "t.id = ?", [task_key]
        else:
            where, params = IN_FLOW, [flow_key, flow_key]
        found = [(state, (run[0], run[1], *run[3:])) for run in query(
            f"SELECT t.ref, t.created, t.history, {_LINE_OF} FROM task_runs t WHERE {where}", params)
            for state in history.decode(run[2], run[1]) if state[0] > since and state[6]]
        found.sort(key=_state_seq)
        states = iter(found)
    for (seq, code, name, message, ts, _, line), (_, _, run_id, flow_id, run_name, task_name) in states:
        if not line or (codes is not None and line not in codes) or (task_key is not None and line == lines.CREATED):
            continue
        yield LogRecord(*lines.row(flow_id, None if line == lines.CREATED else run_id, line, code, name, message,
                                   ts, seq, run_name, task_name))


def _state_seq(item: tuple[Any, ...]) -> Any:
    return item[0][0]


def logs_since(query: Query, since: Any, flow_run_id: Any, task_run_id: Any, level: Any,
               limit: Any) -> tuple[list[LogRecord], int]:
    since, limit, levels = check_since(since), check_feed_limit(limit), levels_from(level)
    records = log_lines(query, query, since, flow_run_id, task_run_id, levels, limit)
    return records, (records[-1].seq if records else since)  # type: ignore[return-value]


def timeline(query: Query, flow_run_id: Any, where: str, dialect: Dialect = SQLITE) -> Timeline:
    """Two statements (three where a UNION needs matching column types), whatever the number of task runs
    and subflows."""
    root = as_uuid(flow_run_id, "flow_run_id")
    tree = ("WITH RECURSIVE tree(id) AS (SELECT CAST(? AS TEXT) UNION "
            "SELECT f.id FROM flow_runs f JOIN tree ON f.parent_flow_run_id = tree.id) ")
    flows = f"SELECT 1, {_FLOW_RUN_COLUMNS}, NULL FROM flow_runs WHERE id IN (SELECT id FROM tree)"
    tasks = (f"SELECT 0, {_TASK_RUN_COLUMNS} FROM task_runs "
             "WHERE flow_ref IN (SELECT ref FROM flow_runs WHERE id IN (SELECT id FROM tree))")
    if dialect.mixed_union:
        rows = query(tree + flows + " UNION ALL " + tasks, (str(root),))
    else:
        rows = query(tree + flows, (str(root),)) + query(tree + tasks, (str(root),))
    convert = _Rows()
    flow_rows, task_rows = [], []
    for row in rows:
        if row[0]:
            flow_rows.append((row[1 + _FLOW_CREATED], row[1], convert.flow_run(row[1:-1])))
        else:
            task_rows.append((row[1 + _TASK_CREATED], row[1], convert.task_run(row[1:])))
    if not flow_rows or all(r[2].id != root for r in flow_rows):
        raise ObjectNotFound(f"No flow run with id {root} in {where}.")
    states: dict[int, list[State[Any]]] = {ref: [] for ref in convert.details}
    rows = []
    for ref, type_, name, message, ts, details, seq, packed in query(  # the states rows, then the packed ones
            "SELECT run_ref, type, name, message, ts, details, seq, NULL FROM states "
            f"WHERE run_ref IN ({dialect.refs}) UNION ALL "
            "SELECT ref, NULL, NULL, NULL, created, NULL, NULL, history FROM task_runs "
            f"WHERE ref IN ({dialect.refs}) AND history IS NOT NULL", (json.dumps(list(states)),) * 2):
        if packed is None:
            rows.append((ref, type_, name, message, ts, details, seq))
        else:
            rows += [(ref, code, name, message, ts, details, seq)
                     for seq, code, name, message, ts, details, _ in history.decode(packed, ts)]
    rows.sort(key=_run_then_number)
    state = convert.state
    for ref, type_, name, message, ts, details, _ in rows:
        states[ref].append(state(ref, type_, name, message, ts, details))
    found = build_timeline(root, flow_rows, task_rows, states)
    assert found is not None
    return found


def _run_then_number(row: tuple[Any, ...]) -> tuple[int, int]:
    return row[0], row[6]


def count_by_state(query: Query, filter: Any, bucket_seconds: Any, dialect: Dialect = SQLITE) -> list[StateCount]:
    f = check_flow_run_filter(as_filter(filter))
    bucket = check_bucket(bucket_seconds)
    where, params = _where(f, "flow_runs", dialect)
    sql = (f"SELECT {dialect.bucket} AS bucket, {_STATE_TYPE}, {_STATE_NAME}, count(*) FROM flow_runs"
           + (" WHERE " + " AND ".join(where) if where else "") + " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3")
    return [StateCount(number * bucket, _TYPES[type_], name, count)
            for number, type_, name, count in query(sql, [bucket, *params])]

