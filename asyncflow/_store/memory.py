"""An in-memory store, for tests and for `ASYNCFLOW_STORE=memory`.

Recording only appends a tuple to a queue (the hot path pays ~0.1 µs per record); the queue is
folded into indexes when something reads. `max_runs` bounds memory: past it, the oldest runs (with
their states) are forgotten, and only the newest `10 * max_runs` log lines are kept.
"""

from __future__ import annotations

import threading
import uuid
from bisect import bisect_left
from collections import deque
from collections.abc import Iterator
from typing import Any

from .._runs import FlowRun, TaskRun
from .._states import FINAL_TYPES, State, StateDetails, StateType
from . import reads
from .base import LogRecord, ObjectNotFound, as_uuid, check_limit, state_filter, state_matches

_FLOW, _TASK, _STATE, _LOG = range(4)
_ANY = reads.RunFilter()


class MemoryStore:
    def __init__(self, max_runs: int | None = None) -> None:
        self.max_runs = max_runs
        self._pending: deque[tuple[Any, ...]] = deque()
        self._flow_runs: dict[uuid.UUID, FlowRun] = {}
        self._task_runs: dict[uuid.UUID, TaskRun] = {}
        # run id -> its states, oldest first: a tuple of tuples of plain values (the type's value, the
        # details as their two ids' ints when that is all they say), which the cyclic GC stops tracking
        self._states: dict[uuid.UUID, tuple[tuple[Any, ...], ...]] = {}
        self._details: tuple[Any, Any] = (None, None)  # the last details compacted, and their compact form
        # logs and the change feed are kept as tuples of plain values (a LogRecord, a Change when read):
        # the cyclic GC stops tracking such tuples, so the store's bounded history costs no collection time
        self._logs: deque[tuple[Any, ...]] = deque(maxlen=10 * max_runs if max_runs else None)
        # the read API: each run's (created, ref) as the SQLite store keeps them, and every state in the
        # order stored, numbered (the change feed); logs are numbered too
        self._positions: dict[uuid.UUID, tuple[float, int]] = {}
        self._refs = 0
        # per kind of run, (created, ref, id) in that order (sorted when a read needs it: runs arrive
        # nearly in order), so that a page walks from its cursor instead of sorting every run
        self._order: dict[int, list[tuple[float, int, uuid.UUID]]] = {_FLOW: [], _TASK: []}
        # per kind of run, the ids in the order they arrived: the oldest is forgotten first. (Not
        # `next(iter(runs))`: a dict emptied from its front walks every deleted slot to find its first
        # key, ~11 µs per run forgotten at 10,000 runs.)
        self._arrivals: dict[int, deque[uuid.UUID]] = {_FLOW: deque(), _TASK: deque()}
        self._unsorted = {_FLOW: False, _TASK: False}
        # flow run id -> its subflows' / its task runs' ids (dicts as ordered sets: a forgotten run leaves
        # its flow's index, so a long flow's index keeps `max_runs` ids, not every run it ever had)
        self._subflows: dict[uuid.UUID, dict[uuid.UUID, None]] = {}
        self._tasks_of: dict[uuid.UUID, dict[uuid.UUID, None]] = {}
        self._feed: deque[tuple[Any, ...]] = deque(maxlen=20 * max_runs if max_runs else None)
        self._state_seq = 0
        self._log_seq = 0
        self._lock = threading.Lock()
        self._since_fold = 0

    # -- recording: append only -------------------------------------------------------------------
    def record_flow_run(self, run: FlowRun, state: State[Any] | None = None) -> None:
        self._append((_FLOW, run, run.state.ts))
        if state is not None:
            self.record_state(run.id, state)

    def record_task_run(self, run: TaskRun, state: State[Any] | None = None) -> None:
        self._append((_TASK, run, run.state.ts))
        if state is not None:
            self.record_state(run.id, state)

    def record_state(self, run_id: uuid.UUID, state: State[Any]) -> None:
        self._append((_STATE, run_id, state.type, state.name, state.message, state.ts, state.state_details))

    def record_log(self, *, flow_run_id: str | None, task_run_id: str | None, level: str, message: str,
                   ts: float) -> None:
        self._append((_LOG, flow_run_id, task_run_id, level, message, ts))

    def record_state_line(self, run_id: uuid.UUID, code: int, flow_id: uuid.UUID | None, flow_run_id: str | None,
                          task_run_id: str | None, level: str, message: str, ts: float) -> None:
        """Kept as the log line it is (lines.py)."""
        self._append((_LOG, flow_run_id, task_run_id, level, message, ts))

    def _append(self, record: tuple[Any, ...]) -> None:
        self._pending.append(record)
        self._since_fold += 1
        if self.max_runs is not None and self._since_fold > self.max_runs:
            self._fold()  # nobody reads: keep the queue itself bounded

    # -- durability: nothing to write -------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        return True

    def pending(self) -> bool:
        return False

    def close(self) -> None:
        pass

    # -- folding the queue into indexes -----------------------------------------------------------
    def _fold(self) -> None:
        with self._lock:
            self._since_fold = 0
            pending = self._pending
            while pending:
                try:
                    record = pending.popleft()
                except IndexError:
                    break
                kind = record[0]
                if kind == _STATE:
                    details = record[6]
                    last = self._details
                    if last[0] is not details:  # (a run's states share one details object)
                        last = self._details = (details, _compact(details))
                    type_ = record[2]
                    entry = (type_._value_ if type(type_) is StateType else type_, record[3], record[4], record[5],
                             last[1])  # (`_value_`: the enum's `.value` is a Python-level property)
                    history = self._states.get(record[1])
                    self._states[record[1]] = (entry,) if history is None else (*history, entry)
                    self._state_seq += 1
                    kind_of, flow_of = self._owner(record[1])
                    flow_int = None if flow_of is None else flow_of.int
                    self._feed.append((self._state_seq, record[1].int, kind_of, flow_int, entry[0], entry[1],
                                       entry[2], entry[3]))
                elif kind == _LOG:
                    self._log_seq += 1
                    self._logs.append((*record[1:], self._log_seq))  # LogRecord's fields, in its order
                else:
                    run = record[1]
                    if run.id not in self._positions:  # recorded again (a background run): keeps its place
                        self._place(kind, run, record[2])
                    runs = self._task_runs if kind == _TASK else self._flow_runs
                    if run.id not in runs:
                        self._arrivals[kind].append(run.id)
                    runs[run.id] = run
                    self._evict(kind, runs)

    def _place(self, kind: int, run: Any, created: float) -> None:
        """Number a new run and put it in the read API's indexes (under the lock)."""
        self._refs += 1
        self._positions[run.id] = (created, self._refs)
        order = self._order[kind]
        if order and created < order[-1][0]:
            self._unsorted[kind] = True
        order.append((created, self._refs, run.id))
        parent = run.flow_run_id if kind == _TASK else run.parent_flow_run_id
        if parent is not None:
            (self._tasks_of if kind == _TASK else self._subflows).setdefault(parent, {})[run.id] = None

    def _owner(self, run_id: uuid.UUID) -> tuple[str | None, uuid.UUID | None]:
        """(kind, flow run id) of a run, as the change feed says them (under the lock)."""
        task_run = self._task_runs.get(run_id)
        if task_run is not None:
            return "task_run", task_run.flow_run_id
        if run_id in self._flow_runs:
            return "flow_run", run_id
        return None, None

    def _evict(self, kind: int, runs: dict[uuid.UUID, Any]) -> None:
        arrivals = self._arrivals[kind]
        if self.max_runs is None or len(runs) <= self.max_runs:
            if len(arrivals) > 2 * len(runs) + 1024:  # runs deleted under the limit: forget their ids
                self._arrivals[kind] = deque(runs)
            return
        tasks = kind == _TASK
        while len(runs) > self.max_runs:
            oldest = arrivals.popleft()
            run = runs.pop(oldest, None)
            if run is None:  # deleted already
                continue
            parent = run.flow_run_id if tasks else run.parent_flow_run_id
            siblings = (self._tasks_of if tasks else self._subflows).get(parent) if parent is not None else None
            if siblings is not None:
                siblings.pop(oldest, None)
            self._states.pop(oldest, None)
            self._positions.pop(oldest, None)
            if not tasks:  # (only flow runs have subflows and task runs)
                self._subflows.pop(oldest, None)
                self._tasks_of.pop(oldest, None)
        order = self._order[kind]
        if len(order) > 2 * len(runs) + 1024:  # forget the forgotten runs' places (amortised: seldom)
            positions = self._positions
            order[:] = [entry for entry in order if positions.get(entry[2]) == entry[:2]]

    # -- reading ----------------------------------------------------------------------------------
    def read_flow_run(self, run_id: uuid.UUID) -> FlowRun:
        key = as_uuid(run_id, "flow_run_id")
        self._fold()
        try:
            return self._flow_runs[key]
        except KeyError:
            raise ObjectNotFound(f"No flow run with id {key} in the memory store.") from None

    def read_task_run(self, run_id: uuid.UUID) -> TaskRun:
        key = as_uuid(run_id, "task_run_id")
        self._fold()
        try:
            return self._task_runs[key]
        except KeyError:
            raise ObjectNotFound(f"No task run with id {key} in the memory store.") from None

    def read_flow_runs(self, *, flow_name: str | None = None, state: Any = None,
                       limit: int | None = None) -> list[FlowRun]:
        """Newest first."""
        wanted, limit = state_filter(state), check_limit(limit)
        self._fold()
        runs = [r for r in reversed(list(self._flow_runs.values()))
                if (flow_name is None or r.flow_name == flow_name) and state_matches(wanted, r.state)]
        return runs[:limit] if limit is not None else runs

    def read_task_runs(self, *, flow_run_id: uuid.UUID | None = None, limit: int | None = None,
                       newest_first: bool = False) -> list[TaskRun]:
        """In the order they were created (or the newest first)."""
        wanted = as_uuid(flow_run_id, "flow_run_id") if flow_run_id is not None else None
        limit = check_limit(limit)
        self._fold()
        runs = [r for r in list(self._task_runs.values()) if wanted is None or r.flow_run_id == wanted]
        if newest_first:
            runs.reverse()
        return runs[:limit] if limit is not None else runs

    def read_states(self, run_id: uuid.UUID) -> list[State[Any]]:
        key = as_uuid(run_id)
        self._fold()
        return [_state(record) for record in self._states.get(key, [])]

    def read_logs(self, *, flow_run_id: str | None = None, task_run_id: str | None = None) -> list[LogRecord]:
        flow_key = str(as_uuid(flow_run_id, "flow_run_id")) if flow_run_id is not None else None
        task_key = str(as_uuid(task_run_id, "task_run_id")) if task_run_id is not None else None
        self._fold()
        return [LogRecord(*log) for log in list(self._logs)
                if (flow_key is None or log[0] == flow_key) and (task_key is None or log[1] == task_key)]

    # -- retention ----------------------------------------------------------------------------------
    def delete_flow_runs(self, ids: Any) -> dict[str, int]:
        """Delete these flow runs, their subflow runs (recursively), their task runs, states and logs."""
        wanted = {as_uuid(value, "flow_run_id") for value in ids}
        self._fold()
        with self._lock:
            children: dict[uuid.UUID, list[uuid.UUID]] = {}
            for run in list(self._flow_runs.values()):
                if run.parent_flow_run_id is not None:
                    children.setdefault(run.parent_flow_run_id, []).append(run.id)
            tree: set[uuid.UUID] = set()
            frontier = [run_id for run_id in wanted if run_id in self._flow_runs]
            while frontier:
                run_id = frontier.pop()
                if run_id not in tree:
                    tree.add(run_id)
                    frontier.extend(children.get(run_id, ()))
            tasks = {run.id for run in list(self._task_runs.values()) if run.flow_run_id in tree}
            return self._remove(tree, tasks, orphans_before=None, dry_run=False)

    def prune(self, older_than_seconds: float, *, dry_run: bool = False) -> dict[str, int]:
        """Delete the final runs that ended more than `older_than_seconds` ago (see RunStore.prune)."""
        from .retention import cutoff

        before = cutoff(older_than_seconds)

        def old(run: Any) -> bool:
            ended = run.end_time if run.end_time is not None else run.state.ts
            return run.state.type in FINAL_TYPES and ended < before

        self._fold()
        with self._lock:
            flows = {run.id for run in list(self._flow_runs.values()) if old(run)}
            tasks = {run.id for run in list(self._task_runs.values())
                     if run.flow_run_id in flows
                     or ((run.flow_run_id is None or run.flow_run_id not in self._flow_runs) and old(run))}
            return self._remove(flows, tasks, orphans_before=before, dry_run=dry_run)

    def _remove(self, flows: set[uuid.UUID], tasks: set[uuid.UUID], orphans_before: float | None,
                dry_run: bool) -> dict[str, int]:
        """Remove these runs with their states and logs (and, with `orphans_before`, the states and
        logs older than it whose run is not here). Called under the lock."""
        counts = {"flow_runs": len(flows), "task_runs": len(tasks), "states": 0, "logs": 0, "flows": 0}
        for run_id, history in list(self._states.items()):
            if run_id in flows or run_id in tasks:
                counts["states"] += len(history)
                if not dry_run:
                    del self._states[run_id]
            elif orphans_before is not None and run_id not in self._flow_runs and run_id not in self._task_runs:
                kept = tuple(state for state in history if state[3] >= orphans_before)
                counts["states"] += len(history) - len(kept)
                if not dry_run:
                    self._states[run_id] = kept
                    if not kept:
                        del self._states[run_id]
        flow_keys, task_keys = {str(run_id) for run_id in flows}, {str(run_id) for run_id in tasks}
        present_flows = {str(run_id) for run_id in self._flow_runs}
        present_tasks = {str(run_id) for run_id in self._task_runs}

        def goes(log: LogRecord) -> bool:
            if log.flow_run_id in flow_keys or (log.flow_run_id is None and log.task_run_id in task_keys):
                return True
            if orphans_before is None or log.ts >= orphans_before:
                return False
            if log.flow_run_id is not None:
                return log.flow_run_id not in present_flows
            return log.task_run_id is None or log.task_run_id not in present_tasks

        kept_logs = [log for log in list(self._logs) if not goes(LogRecord(*log))]
        counts["logs"] = len(self._logs) - len(kept_logs)
        if not dry_run:
            for run_id in (*flows, *tasks):
                self._flow_runs.pop(run_id, None)
                self._task_runs.pop(run_id, None)
                self._positions.pop(run_id, None)  # the read API's indexes skip runs without a place
                self._subflows.pop(run_id, None)
                self._tasks_of.pop(run_id, None)
            if counts["logs"]:
                self._logs.clear()
                self._logs.extend(kept_logs)
        return counts

    # -- the read API (reads.py): the SQLite store's semantics and order, in Python -------------------
    def _ordered(self, kind: int) -> list[tuple[float, int, uuid.UUID]]:
        """A snapshot of the runs of this kind in (created, ref) order."""
        with self._lock:
            order = self._order[kind]
            if self._unsorted[kind]:
                order.sort()  # nearly sorted: linear; (created, ref) is unique, ids are never compared
                self._unsorted[kind] = False
            return order[:]

    def _rows(self, order: list[tuple[float, int, uuid.UUID]], runs: dict[uuid.UUID, Any], f: reads.RunFilter,
              matches: Any, position: tuple[float, int] | None, newest_first: bool,
              want: int | None) -> list[tuple[float, int, Any]]:
        """Walk `order` from the cursor's position, keeping the runs that match, until `want` are found."""
        if newest_first:
            end = bisect_left(order, position) if position is not None else len(order)
            if f.until is not None:
                end = min(end, bisect_left(order, (f.until,)))
            indexes: range = range(end - 1, -1, -1)
        else:
            start = bisect_left(order, (position[0], position[1] + 1)) if position is not None else 0
            if f.since is not None:
                start = max(start, bisect_left(order, (f.since,)))
            indexes = range(start, len(order))
        positions, out, everything = self._positions, [], f == _ANY
        for index in indexes:
            created, ref, run_id = order[index]
            if (f.since is not None and created < f.since) or (f.until is not None and created >= f.until):
                break  # past the time range: nothing further on can match
            run = runs.get(run_id)
            if run is None or positions.get(run_id) != (created, ref):  # forgotten (max_runs)
                continue
            if everything or matches(f, run, created):
                out.append((created, ref, run))
                if len(out) == want:
                    break
        return out

    def _children_of(self, index: dict[uuid.UUID, dict[uuid.UUID, None]],
                     parent: uuid.UUID) -> list[tuple[float, int, uuid.UUID]]:
        positions, out = self._positions, []
        with self._lock:
            ids = list(index.get(parent, ()))
        for run_id in ids:
            position = positions.get(run_id)
            if position is not None:
                out.append((position[0], position[1], run_id))
        out.sort()
        return out

    def _page(self, kind: int, runs: dict[uuid.UUID, Any], index: dict[uuid.UUID, dict[uuid.UUID, None]],
              f: reads.RunFilter, matches: Any, limit: Any, cursor: Any, newest_first: bool) -> reads.Page[Any]:
        limit = reads.check_page_limit(limit)
        key = reads.query_key("flow_runs" if kind == _FLOW else "task_runs", f, newest_first)
        position = reads.decode_cursor(cursor, key)
        self._fold()
        order = (self._children_of(index, f.parent_flow_run_id) if f.parent_flow_run_id is not None
                 else self._ordered(kind))
        rows = self._rows(order, runs, f, matches, position, newest_first, limit + 1 if limit is not None else None)
        return reads.page_of(rows, limit, key)

    def read_flow_runs_page(self, filter: Any = None, limit: int | None = 50, cursor: str | None = None,
                            newest_first: bool = True) -> reads.Page[FlowRun]:
        f = reads.check_flow_run_filter(reads.as_filter(filter))
        return self._page(_FLOW, self._flow_runs, self._subflows, f, reads.flow_run_matches, limit, cursor,
                          newest_first)

    def read_task_runs_page(self, filter: Any = None, limit: int | None = 50, cursor: str | None = None,
                            newest_first: bool = True) -> reads.Page[TaskRun]:
        f = reads.as_filter(filter)
        flow_runs = self._flow_runs

        def flow_name_of(flow_run_id: Any) -> str | None:
            run = flow_runs.get(flow_run_id)
            return run.flow_name if run is not None else None

        def matches(f: reads.RunFilter, run: TaskRun, created: float) -> bool:
            return reads.task_run_matches(f, run, created, flow_name_of)

        return self._page(_TASK, self._task_runs, self._tasks_of, f, matches, limit, cursor, newest_first)

    def read_changes(self, since: int = 0, limit: int = 1000) -> tuple[list[reads.Change], int]:
        since, limit = reads.check_since(since), reads.check_feed_limit(limit)
        self._fold()
        out = []
        feed = _after(self._feed, since, _first, self._lock)
        for seq, run_int, kind, flow_int, type_value, name, message, ts in feed:
            run_id = uuid.UUID(int=run_int)
            run = (self._task_runs.get(run_id) if kind == "task_run" else
                   self._flow_runs.get(run_id) if kind == "flow_run" else None)
            out.append(reads.Change(seq, run_id, kind, None if flow_int is None else uuid.UUID(int=flow_int),
                                    run.name if run is not None else None, StateType(type_value), name, message, ts))
            if len(out) == limit:
                break
        return out, (out[-1].seq if out else since)

    def read_logs_since(self, since: int = 0, *, flow_run_id: Any = None, task_run_id: Any = None, level: Any = None,
                        limit: int = 1000) -> tuple[list[LogRecord], int]:
        since, limit, levels = reads.check_since(since), reads.check_feed_limit(limit), reads.levels_from(level)
        flow_key = str(as_uuid(flow_run_id, "flow_run_id")) if flow_run_id is not None else None
        task_key = str(as_uuid(task_run_id, "task_run_id")) if task_run_id is not None else None
        self._fold()
        out = []
        for entry in _after(self._logs, since, _seq, self._lock):
            log = LogRecord(*entry)
            if ((flow_key is None or log.flow_run_id == flow_key) and (task_key is None or log.task_run_id == task_key)
                    and (levels is None or log.level in levels)):
                out.append(log)
                if len(out) == limit:
                    break
        return out, (out[-1].seq if out else since)  # type: ignore[return-value]

    def read_timeline(self, flow_run_id: Any) -> reads.Timeline:
        root = as_uuid(flow_run_id, "flow_run_id")
        self._fold()
        flow_runs, task_runs, positions, histories = self._flow_runs, self._task_runs, self._positions, self._states
        flow_rows: list[tuple[float, int, FlowRun]] = []
        task_rows: list[tuple[float, int, TaskRun]] = []
        tree, frontier = {root}, [root]
        while frontier:
            parent = frontier.pop()
            run = flow_runs.get(parent)
            position = positions.get(parent)
            if run is None or position is None:
                continue
            flow_rows.append((*position, run))
            for _, _, child in self._children_of(self._subflows, parent):
                if child not in tree:
                    tree.add(child)
                    frontier.append(child)
            for created, ref, task_run_id in self._children_of(self._tasks_of, parent):
                task_run = task_runs.get(task_run_id)
                if task_run is not None:
                    task_rows.append((created, ref, task_run))
        refs = [(ref, run.id) for _, ref, run in flow_rows] + [(ref, task.id) for _, ref, task in task_rows]
        states = {ref: [_state(record) for record in histories.get(run_id, ())] for ref, run_id in refs}
        found = reads.build_timeline(root, flow_rows, task_rows, states)
        if found is None:
            raise ObjectNotFound(f"No flow run with id {root} in the memory store.")
        return found

    def count_flow_runs_by_state(self, filter: Any = None, bucket_seconds: float = 3600) -> list[reads.StateCount]:
        f = reads.check_flow_run_filter(reads.as_filter(filter))
        bucket = reads.check_bucket(bucket_seconds)
        self._fold()
        order = (self._children_of(self._subflows, f.parent_flow_run_id) if f.parent_flow_run_id is not None
                 else self._ordered(_FLOW))
        counts: dict[tuple[int, str, str], int] = {}
        for created, _, run in self._rows(order, self._flow_runs, f, reads.flow_run_matches, None, False, None):
            key = (reads.bucket_of(created, bucket), run.state.type.value, run.state.name)
            counts[key] = counts.get(key, 0) + 1
        return [reads.StateCount(number * bucket, StateType(type_), name, count)
                for (number, type_, name), count in sorted(counts.items())]


def _state(record: tuple[Any, ...]) -> State[Any]:
    type_, name, message, ts, details = record
    if type(details) is tuple:
        flow_int, task_int = details
        details = StateDetails(None if flow_int is None else uuid.UUID(int=flow_int),
                               None if task_int is None else uuid.UUID(int=task_int))
    return State(_TYPES.get(type_, type_), name, message, None, details, ts)


_TYPES = {t.value: t for t in StateType}


def _compact(details: Any) -> Any:
    """A state's details as the history keeps them: the two ids' ints when the details say nothing
    else (ints, unlike `UUID`s and `StateDetails`, are not tracked by the cyclic GC), else as they are."""
    if (type(details) is StateDetails and details.child_flow_run_id is None and details.cache_key is None
            and details.cache_expiration is None and details.scheduled_time is None):
        flow_id, task_id = details.flow_run_id, details.task_run_id
        if (flow_id is None or type(flow_id) is uuid.UUID) and (task_id is None or type(task_id) is uuid.UUID):
            return (None if flow_id is None else flow_id.int, None if task_id is None else task_id.int)
    return details


def _after(items: deque[Any], since: int, seq_of: Any, lock: threading.Lock) -> Iterator[Any]:
    """The items numbered after `since`, oldest first. Numbers increase by one along the deque (only
    its oldest items are dropped), so the first one is found by its number; read under the fold's
    lock, a few at a time (a fold drops items at the left and shifts the indexes)."""
    index = None
    while True:
        with lock:
            if not items:
                return
            first = seq_of(items[0])
            if index is None:
                index = max(0, since - first + 1)
            chunk = [items[i] for i in range(index, min(index + 256, len(items)))]
        if not chunk:
            return
        yield from chunk
        since = seq_of(chunk[-1])
        index = None


def _first(item: tuple[Any, ...]) -> int:
    return item[0]  # type: ignore[no-any-return]


def _seq(item: tuple[Any, ...]) -> int:
    return item[5]  # type: ignore[no-any-return]  # (LogRecord's seq)
