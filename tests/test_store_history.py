"""A task run's states packed in its row (`_store/history.py`): every read gives back what was recorded,
whichever batch wrote each state, whichever writer, and after the migration from the rows of schema 8."""

from __future__ import annotations

import datetime as dt
import sqlite3
import uuid

import pytest
from helpers import all_states, build_schema

from asyncflow import flow, task
from asyncflow._runs import FlowRun, TaskRun
from asyncflow._states import State, StateDetails, StateType
from asyncflow._store import StoreError, history
from asyncflow._store import sqlite as sqlite_module
from asyncflow._store.memory import MemoryStore
from asyncflow._store.sqlite import SCHEMA_VERSION, SQLiteStore
from asyncflow.testing import isolated_store

NOW = 1_764_680_000.123456  # a time as time.time() gives it


def _flow_run(at: float = NOW) -> FlowRun:
    return FlowRun(id=uuid.uuid4(), name="f-run", flow_name="f", flow_version=None, parameters={}, tags=(),
                   state=State(StateType.PENDING, "Pending", ts=at))


def _task_run(flow_run_id: uuid.UUID | None, at: float = NOW, run_id: uuid.UUID | None = None) -> TaskRun:
    return TaskRun(id=run_id or uuid.uuid4(), name="t-0", task_name="t", task_key="t-k", flow_run_id=flow_run_id,
                   parent_task_run_id=None, tags=(), parameters={}, state=State(StateType.PENDING, "Pending", ts=at))


def _fields(state: State) -> tuple:
    d = state.state_details
    return (state.type, state.name, state.message, state.ts, d.flow_run_id, d.task_run_id, d.child_flow_run_id,
            d.cache_key, d.cache_expiration, d.scheduled_time)


# a task run's life with what packing must keep: messages, names of their own, details, odd times
def _states(flow_id: uuid.UUID | None, run_id: uuid.UUID) -> list[State]:
    def details(**fields):
        return StateDetails(flow_run_id=flow_id, task_run_id=run_id, **fields)

    later = dt.datetime(2026, 12, 2, 15, 0, 0, 123456, tzinfo=dt.timezone.utc)
    return [
        State(StateType.SCHEDULED, "Scheduled", None, None, details(scheduled_time=later), NOW - 5.5),
        State(StateType.RUNNING, "Running", None, None, details(), NOW + 0.000_001),
        State(StateType.FAILED, "AwaitingRetry", 'boom: "quoted", é, \n and a NUL-free tab\t', None, details(),
              NOW + 0.25),
        State(StateType.RUNNING, "Retrying", "", None, details(), NOW + 0.5),
        State(StateType.COMPLETED, "Cached", None, None,
              details(cache_key="k" * 40, cache_expiration=later, child_flow_run_id=uuid.uuid4()), NOW + 3600.75),
        State(StateType.COMPLETED, "Completed", None, None, details(), 0.1),  # far from its run's creation
        State(StateType.CRASHED, "Crashed", "late", None, details(), 1e-300),
    ]


def _store(tmp_path) -> SQLiteStore:
    return SQLiteStore(tmp_path / "asyncflow.db")


@pytest.mark.parametrize("flush_after", [None, 1, 3])
def test_a_task_runs_states_read_back_exactly_as_recorded_whichever_batches_wrote_them(tmp_path, flush_after):
    store = _store(tmp_path)
    try:
        parent = _flow_run()
        store.record_flow_run(parent, parent.state)
        run = _task_run(parent.id)
        states = _states(parent.id, run.id)
        store.record_task_run(run, states[0])
        for n, state in enumerate(states[1:], 1):
            if n == flush_after or (flush_after == 3 and n == 5):
                store.flush()  # the states after it are appended to the row by later batches
            store.record_state(run.id, state)
        store.flush()
        expected = sorted(states, key=lambda s: s.ts)
        assert [_fields(s) for s in store.read_states(run.id)] == [_fields(s) for s in expected]
        assert store.read_task_run(run.id).state.name == "Cached"  # the newest by time is the current state
        timeline = store.read_timeline(parent.id)
        by_number = [_fields(s) for s in timeline.task_runs[0].states]
        assert by_number == [_fields(s) for s in states]  # the timeline's states are in the order recorded
        assert store._query("SELECT count(*) FROM states WHERE run_ref IS NOT NULL")[0][0] == 1  # the flow run's
        appends = store._query("SELECT count(*) FROM appends")[0][0]
        assert appends == 1 + (flush_after is not None) + (flush_after == 3)
    finally:
        store.close()


def test_many_states_of_many_runs_in_one_flow_read_as_the_memory_store_reads_them(tmp_path):
    attempts: dict[int, int] = {}

    @task(retries=2, retry_delay_seconds=0)
    def flaky(i):
        attempts[i] = attempts.get(i, 0) + 1
        if attempts[i] <= i % 3:
            raise ValueError(f"attempt {attempts[i]} of {i}")
        return i

    @flow
    def many():
        return [flaky(i) for i in range(30)]

    reads = []
    for store in (MemoryStore(), _store(tmp_path)):
        attempts.clear()
        with isolated_store(store):
            flow_id = many(return_state=True).state_details.flow_run_id
            store.flush()
            runs = store.read_task_runs(flow_run_id=flow_id)
            reads.append([[(s.type, s.name, s.message) for s in store.read_states(r.id)] for r in runs])
            reads.append([(line.level, line.message) for line in store.read_logs(flow_run_id=str(flow_id))])
        store.close()
    assert reads[0] == reads[2] and reads[1] == reads[3]
    assert sum(len(states) for states in reads[2]) == 10 * 3 + 10 * 5 + 10 * 7  # no retry, one, two
    assert [n for t, n, m in reads[2][2]] == ["Pending", "Running", "AwaitingRetry", "Retrying", "AwaitingRetry",
                                              "Retrying", "Completed"]
    assert any("attempt 2 of 2" in message for _, message in reads[3])


def test_the_change_feed_reads_every_state_once_in_order_at_any_page_size(tmp_path):
    store = _store(tmp_path)
    try:
        parent = _flow_run()
        store.record_flow_run(parent, parent.state)
        runs = [_task_run(parent.id, NOW + i) for i in range(12)]
        for i, run in enumerate(runs):  # runs whose states interleave, across batches
            store.record_task_run(run, run.state)
            if i % 4 == 3:
                store.flush()
        for i, run in enumerate(runs):
            store.record_state(run.id, State(StateType.RUNNING, "Running", ts=NOW + i + 0.5))
            if i % 5 == 0:
                store.flush()
        for run in reversed(runs):
            store.record_state(run.id, State(StateType.COMPLETED, "Completed", ts=NOW + 20))
        store.record_state(parent.id, State(StateType.COMPLETED, "Completed", ts=NOW + 21))
        store.flush()
        whole, last = store.read_changes(0, 1000)
        assert [c.seq for c in whole] == sorted(row[0] for row in all_states(store))
        assert len(whole) == 12 * 3 + 2 and last == whole[-1].seq
        for size in (1, 2, 5, 7):
            pages, since = [], 0
            while True:
                page, since = store.read_changes(since, size)
                if not page:
                    break
                assert len(page) <= size
                pages += page
            assert pages == whole
        assert [(c.run_id, c.kind) for c in whole[:2]] == [(parent.id, "flow_run"), (runs[0].id, "task_run")]
        assert {c.flow_run_id for c in whole} == {parent.id}
    finally:
        store.close()


def test_a_task_run_two_writers_record_keeps_every_state_and_the_newest_wins(tmp_path):
    """A background run: the caller's process records it Scheduled, the worker's records it again and runs it
    (two stores on one file: two writers, as two processes)."""
    caller, worker = _store(tmp_path), _store(tmp_path)
    try:
        run_id = uuid.uuid4()
        caller.record_task_run(_task_run(None, NOW, run_id), State(StateType.SCHEDULED, "Scheduled", ts=NOW))
        caller.flush()
        worker.record_task_run(_task_run(None, NOW + 1, run_id), State(StateType.PENDING, "Pending", ts=NOW + 1))
        worker.record_state(run_id, State(StateType.RUNNING, "Running", ts=NOW + 2))
        worker.flush()
        caller.record_state(run_id, State(StateType.FAILED, "Late", "an older time", ts=NOW + 1.5))  # loses
        caller.flush()
        worker.record_state(run_id, State(StateType.COMPLETED, "Completed", ts=NOW + 3))
        worker.flush()
        for store in (caller, worker):
            assert [(s.name, s.ts) for s in store.read_states(run_id)] == [
                ("Scheduled", NOW), ("Pending", NOW + 1), ("Late", NOW + 1.5), ("Running", NOW + 2),
                ("Completed", NOW + 3)]
            assert store.read_task_run(run_id).state.name == "Completed"
        assert len(caller.read_task_runs()) == 1
        assert [c.state_name for c in caller.read_changes(0)[0]] == [
            "Scheduled", "Pending", "Running", "Late", "Completed"]
    finally:
        caller.close()
        worker.close()


def test_deleting_and_pruning_take_the_packed_states_and_their_appends(tmp_path):
    @task
    def one(i):
        return i

    @flow
    def three():
        return [one(i) for i in range(3)]

    store = _store(tmp_path)
    try:
        with isolated_store(store):
            first = three(return_state=True).state_details.flow_run_id
            three()
        store.flush()
        assert store.counts()["states"] == 2 * (3 * 3 + 3)
        counts = store.delete_flow_runs([first])
        assert (counts["task_runs"], counts["states"], counts["logs"]) == (3, 3 * 3 + 3, 3 * 2 + 1)
        assert store._query("SELECT count(*) FROM appends")[0][0] == 3  # the other flow's task runs'
        assert len(store.read_changes(0)[0]) == 3 * 3 + 3
        counts = store.prune(0)
        assert (counts["task_runs"], counts["states"]) == (3, 3 * 3 + 3)
        assert store._query("SELECT count(*) FROM appends") == [(0,)]
        assert store.read_changes(0) == ([], 0)
    finally:
        store.close()


def _schema_8_store(path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    build_schema(conn, sqlite_module.MIGRATIONS, 8)
    conn.execute("PRAGMA user_version = 8")
    return conn


def test_a_schema_8_store_moves_its_task_runs_states_into_their_rows_and_reads_the_same(tmp_path):
    path = tmp_path / "asyncflow.db"
    parent, run_id, other = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    conn = _schema_8_store(path)
    conn.execute("INSERT INTO flow_runs (ref, id, name, flow_name, parameters, tags, created, state_type, state_name, "
                 "state_ts) VALUES (1, ?, 'old-run', 'old', '{}', '[]', ?, 'COMPLETED', 'Completed', ?)",
                 (parent, NOW, NOW + 9))
    for ref, key in ((2, run_id), (3, other)):
        conn.execute("INSERT INTO task_runs (ref, id, name, task_name, task_key, flow_ref, parameters, tags, created, "
                     "state_type, state_name, state_ts) VALUES (?, ?, 't-0', 't', 'k', 1, '{}', '[]', ?, "
                     "'COMPLETED', 'Completed', ?)", (ref, key, NOW, NOW + 3))
    conn.execute("UPDATE counters SET value = 3 WHERE name = 'ref'")
    rows = [(1, 1, 1, None, None, NOW, None, None, None), (2, 2, 1, None, None, NOW, None, 1, 1),
            (3, 2, 4, "AwaitingRetry", "boom", NOW + 1, None, None, None),
            (4, 3, 1, None, None, NOW, None, 1, 1),
            (5, 2, 3, "Cached", None, NOW + 2, '{"cache_key": "abc"}', None, None),
            (6, 2, 3, None, None, NOW + 3, None, 2, 1), (7, 3, 3, None, None, 0.1, None, 2, 1),
            (8, 1, 3, None, None, NOW + 9, None, 2, 1)]
    conn.executemany("INSERT INTO states (seq, run_ref, type, name, message, ts, details, line, flow_ref) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.execute("UPDATE counters SET value = 8 WHERE name = 'seq'")
    conn.close()

    def reads(store):
        return ([_fields(s) for s in store.read_states(uuid.UUID(run_id))],
                [_fields(s) for s in store.read_states(uuid.UUID(other))],
                store.read_changes(0), store.read_logs_since(0), store.read_logs(flow_run_id=parent),
                [[_fields(s) for s in t.states] for t in store.read_timeline(parent).task_runs], store.counts())

    store = SQLiteStore(path)
    try:
        assert store._query("SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
        # the flow run's stay, and a time that does not pack exactly in SQL (0.1 against `created`)
        assert store._query("SELECT seq FROM states ORDER BY seq") == [(1,), (7,), (8,)]
        assert store._query("SELECT seq, run_ref, back FROM appends ORDER BY seq") == [
            (2, 2, 0), (3, 2, 0), (4, 3, 0), (5, 2, 0), (6, 2, 0)]
        migrated = reads(store)
    finally:
        store.close()
    # the same file read as schema 8 read it: the rows put back where they were
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TABLE appends")
    conn.execute("UPDATE task_runs SET history = NULL")
    conn.executemany("INSERT INTO states (seq, run_ref, type, name, message, ts, details, line, flow_ref) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [row for row in rows if row[0] not in (1, 7, 8)])
    conn.execute("CREATE TABLE appends (seq INTEGER PRIMARY KEY, run_ref INTEGER NOT NULL, back INTEGER NOT NULL)")
    conn.close()
    store = SQLiteStore(path)
    try:
        assert reads(store) == migrated
        assert migrated[0][1][1:3] == ("AwaitingRetry", "boom") and migrated[0][2][7] == "abc"
        assert [line.message for line in migrated[4]] == [
            "Created task run 't-0' for task 't'", "Created task run 't-0' for task 't'",
            "Finished in state Completed()", "Finished in state Completed()", "Finished in state Completed()"]
    finally:
        store.close()


def test_an_asyncflow_of_schema_8_refuses_the_file(tmp_path, monkeypatch):
    _store(tmp_path).close()
    monkeypatch.setattr(sqlite_module, "MIGRATIONS", sqlite_module.MIGRATIONS[:8])
    monkeypatch.setattr(sqlite_module, "SCHEMA_VERSION", 8)
    with pytest.raises(StoreError, match=r"schema version 9, newer than this asyncflow understands \(8\)"):
        SQLiteStore(tmp_path / "asyncflow.db")


def test_a_time_that_does_not_pack_as_ticks_is_kept_whole():
    created = NOW
    states = [[10, 2, None, None, created + 0.25, None, None], [11, 3, None, None, 0.1, None, 2],
              [15, 4, "Oops", None, 1e-300, '{"cache_key": "x"}', None]]
    text = "[" + history.append(states, created) + "]"
    assert text == '[[10,2,1048576,0,1,3,0.1,2,4,4,1e-300,[0,"Oops",null,"{\\"cache_key\\": \\"x\\"}"]]]'
    assert history.decode(text, created) == [tuple(s) for s in states]
    assert history.append_keys(text) == [15] and history.count(text) == (3, 1)
