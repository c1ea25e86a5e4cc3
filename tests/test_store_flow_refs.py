"""Task runs point at their flow run by number (`flow_ref`, schema 8 on SQLite, 4 on PostgreSQL): what
the reads give back is the same as when the flow run's id was stored in every task run's row."""

from __future__ import annotations

import sqlite3
import uuid

import pytest
from helpers import all_states, build_schema

from asyncflow import flow, task
from asyncflow._runs import FlowRun, TaskRun
from asyncflow._states import State, StateType
from asyncflow._store import history
from asyncflow._store import sqlite as sqlite_module
from asyncflow._store.fold import STATE_CODES
from asyncflow._store.reads import RunFilter
from asyncflow._store.sqlite import SCHEMA_VERSION, SQLiteStore
from asyncflow.testing import isolated_store


@task
def double(i: int) -> int:
    return 2 * i


@flow
def doubling(n: int = 3) -> list[int]:
    return [double(i) for i in range(n)]


def _task_run(flow_run_id: uuid.UUID | None, name: str, at: float) -> TaskRun:
    return TaskRun(id=uuid.uuid4(), name=name, task_name="t", task_key="t-k", flow_run_id=flow_run_id,
                   parent_task_run_id=None, tags=(), parameters={}, state=State(StateType.PENDING, "Pending", ts=at))


def _flow_run(run_id: uuid.UUID, at: float) -> FlowRun:
    return FlowRun(id=run_id, name="late-flow", flow_name="late", flow_version=None, parameters={}, tags=(),
                   state=State(StateType.PENDING, "Pending", ts=at))


def _record(store, run, at: float) -> None:
    pending = State(StateType.PENDING, "Pending", ts=at)
    (store.record_flow_run if isinstance(run, FlowRun) else store.record_task_run)(run, pending)
    store.record_state(run.id, State(StateType.COMPLETED, "Completed", ts=at + 1))


def check_a_flow_run_stored_after_its_task_runs_finds_them(store) -> None:
    """A background run's caller is another process: its task run can be written before its flow run."""
    late = uuid.uuid4()
    first = _task_run(late, "t-0", 10.0)
    _record(store, first, 10.0)
    store.flush()
    assert [r.id for r in store.read_task_runs(flow_run_id=late)] == [first.id]
    assert store.read_task_run(first.id).flow_run_id == late
    assert store.read_states(first.id)[0].state_details.flow_run_id == late
    second = _task_run(late, "t-1", 11.0)
    _record(store, second, 11.0)
    store.flush()
    _record(store, _flow_run(late, 9.0), 9.0)
    third = _task_run(late, "t-2", 12.0)
    _record(store, third, 12.0)
    store.flush()
    assert [r.id for r in store.read_task_runs(flow_run_id=late)] == [first.id, second.id, third.id]
    assert {r.flow_run_id for r in store.read_task_runs()} >= {late}
    assert [r.run.id for r in store.read_timeline(late).task_runs] == [first.id, second.id, third.id]
    page = store.read_task_runs_page(filter=RunFilter(parent_flow_run_id=late), limit=2, newest_first=False)
    assert [r.id for r in page.items] == [first.id, second.id]
    assert store.read_flow_run(late).name == "late-flow"
    assert store.task_run_state_counts(late) == [("Completed", 3)]


def test_a_task_run_points_at_its_stored_flow_run_by_number(tmp_path):
    store = SQLiteStore(tmp_path / "asyncflow.db")
    try:
        with isolated_store(store):
            state = doubling(return_state=True)
        store.flush()
        flow_run_id = str(state.state_details.flow_run_id)
        conn = sqlite3.connect(store.path)
        try:
            [(ref,)] = conn.execute("SELECT ref FROM flow_runs WHERE id = ?", (flow_run_id,)).fetchall()
            assert conn.execute("SELECT flow_ref, flow_run_id FROM task_runs").fetchall() == [(ref, None)] * 3
        finally:
            conn.close()
        assert [r.name for r in store.read_task_runs(flow_run_id=flow_run_id)] == ["double-0", "double-1", "double-2"]
        assert {str(r.flow_run_id) for r in store.read_task_runs()} == {flow_run_id}
    finally:
        store.close()


def test_a_flow_run_stored_after_its_task_runs_finds_them_on_sqlite(tmp_path):
    store = SQLiteStore(tmp_path / "asyncflow.db")
    try:
        check_a_flow_run_stored_after_its_task_runs_finds_them(store)
        conn = sqlite3.connect(store.path)
        try:  # the flow run took the number its task runs were given
            assert conn.execute("SELECT DISTINCT t.flow_ref = f.ref FROM task_runs t, flow_runs f").fetchall() == [(1,)]
        finally:
            conn.close()
    finally:
        store.close()


def test_a_flow_run_stored_after_its_task_runs_finds_them_on_postgres(postgres_url):
    from asyncflow._store.postgres import PostgresStore

    store = PostgresStore(postgres_url)
    try:
        check_a_flow_run_stored_after_its_task_runs_finds_them(store)
    finally:
        store.close()


def _schema_7_store(path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    build_schema(conn, sqlite_module.MIGRATIONS, 7)
    return conn


def test_a_schema_7_store_is_upgraded_with_its_task_runs_under_their_flow_runs(tmp_path):
    path = tmp_path / "asyncflow.db"
    conn = _schema_7_store(path)
    stored, never = str(uuid.uuid4()), str(uuid.uuid4())  # a flow run in the store, and one that never arrived
    conn.execute("INSERT INTO flow_runs (ref, id, name, flow_name, parameters, tags, created) "
                 "VALUES (1, ?, 'old-run', 'old', '{}', '[]', 1.0)", (stored,))
    tasks = {}
    for ref, flow_id in ((2, stored), (3, never), (4, stored), (5, never), (6, None)):
        tasks[ref] = str(uuid.uuid4())
        conn.execute("INSERT INTO task_runs (ref, id, name, task_name, task_key, flow_run_id, parameters, tags, "
                     "created) VALUES (?, ?, ?, 't', 'k', ?, '{}', '[]', ?)", (ref, tasks[ref], f"t-{ref}", flow_id,
                                                                             float(ref)))
    conn.execute("UPDATE counters SET value = 6 WHERE name = 'ref'")
    conn.execute("INSERT INTO states (seq, run_ref, type, ts) VALUES (1, 2, 'COMPLETED', 3.0)")
    conn.execute("INSERT INTO states (seq, run_ref, type, name, ts) VALUES (2, 2, 'FAILED', 'Oops', 4.0)")
    conn.close()
    store = SQLiteStore(path)
    try:
        assert store._query("SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
        assert [(s.type, s.name) for s in store.read_states(tasks[2])] == [
            (StateType.COMPLETED, "Completed"), (StateType.FAILED, "Oops")]
        assert [row[2] for row in all_states(store)] == [STATE_CODES["COMPLETED"], STATE_CODES["FAILED"]]
        assert [r.name for r in store.read_task_runs(flow_run_id=stored)] == ["t-2", "t-4"]
        assert [r.name for r in store.read_task_runs(flow_run_id=never)] == ["t-3", "t-5"]
        assert [str(r.flow_run_id) for r in store.read_task_runs()] == [stored, never, stored, never, "None"]
        assert store._query("SELECT DISTINCT flow_ref FROM task_runs WHERE flow_run_id IS NOT NULL") == [(7,)]
        assert store._query("SELECT value FROM counters WHERE name = 'ref'") == [(7,)]  # 7 is given: never reused
        _record(store, _flow_run(uuid.UUID(never), 0.5), 0.5)  # it arrives at last: it takes its number
        store.flush()
        assert store._query("SELECT ref FROM flow_runs WHERE id = ?", (never,)) == [(7,)]
        assert [r.name for r in store.read_task_runs(flow_run_id=never)] == ["t-3", "t-5"]
    finally:
        store.close()


@pytest.mark.parametrize("flows", [1, 3])
def test_the_task_runs_of_several_flow_runs_in_one_batch_keep_their_own(tmp_path, flows):
    store = SQLiteStore(tmp_path / "asyncflow.db")
    try:
        with isolated_store(store):
            ids = [str(doubling(n=2, return_state=True).state_details.flow_run_id) for _ in range(flows)]
        store.flush()
        for flow_run_id in ids:
            assert [str(r.flow_run_id) for r in store.read_task_runs(flow_run_id=flow_run_id)] == [flow_run_id] * 2
    finally:
        store.close()


def test_a_schema_3_postgres_store_is_upgraded_with_its_task_runs_under_their_flow_runs(postgres_url):
    import psycopg

    from asyncflow._store import postgres as pg_module

    stored, never = str(uuid.uuid4()), str(uuid.uuid4())
    tasks = {ref: str(uuid.uuid4()) for ref in (2, 3)}
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # what asyncflow wrote at schema version 3
        build_schema(conn, pg_module.MIGRATIONS, 3)
        conn.execute("INSERT INTO flow_runs (ref, id, name, flow_name, parameters, tags, created) "
                     "VALUES (1, %s, 'old-run', 'old', '{}', '[]', 1.0)", (stored,))
        for ref, flow_id in ((2, stored), (3, never)):
            conn.execute("INSERT INTO task_runs (ref, id, name, task_name, task_key, flow_run_id, parameters, tags, "
                         "created) VALUES (%s, %s, %s, 't', 'k', %s, '{}', '[]', %s)",
                         (ref, tasks[ref], f"t-{ref}", flow_id, float(ref)))
        conn.execute("UPDATE counters SET value = 3 WHERE name = 'ref'")
        conn.execute("INSERT INTO states (seq, run_ref, type, ts) VALUES (1, 2, 'COMPLETED', 3.0)")
    store = pg_module.PostgresStore(postgres_url)
    try:
        assert store.schema_version() == pg_module.SCHEMA_VERSION
        assert [r.name for r in store.read_task_runs(flow_run_id=stored)] == ["t-2"]
        assert [str(r.flow_run_id) for r in store.read_task_runs(flow_run_id=never)] == [never]
        assert [s.type for s in store.read_states(tasks[2])] == [StateType.COMPLETED]
        [(packed, created)] = store._query("SELECT history, created FROM task_runs WHERE ref = 2")  # moved there
        assert [state[1] for state in history.decode(packed, created)] == [STATE_CODES["COMPLETED"]]
        assert store._query("SELECT value FROM counters WHERE name = 'ref'") == [(4,)]
    finally:
        store.close()
