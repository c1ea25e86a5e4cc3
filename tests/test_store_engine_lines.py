"""The engine's `Created task run …` and `Finished in state …` lines are derived from the states they
describe (asyncflow/_store/lines.py) instead of being stored as log rows: every read of log lines shows
exactly what a store of log rows shows (the memory store keeps each line as a row): the same lines, in
the same order, with the same text, level, time and run ids, through every filter and cursor. Checked
on a real SQLite file and a real PostgreSQL database, recording into the memory store at the same time."""

from __future__ import annotations

import collections
import contextlib
import sqlite3
import uuid
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from helpers import all_states, build_schema

from asyncflow import flow, get_run_logger, task
from asyncflow._runs import TaskRun
from asyncflow._states import State, StateType
from asyncflow._store import MemoryStore
from asyncflow._store import lines as lines_module
from asyncflow._store import sqlite as sqlite_module
from asyncflow._store.sqlite import SCHEMA_VERSION, SQLiteStore
from asyncflow.testing import isolated_store


class Both:
    """Records into a database store and into the memory store at once (the reference: a store of log rows)."""

    def __init__(self, db: Any) -> None:
        self.db, self.memory = db, MemoryStore()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)

    def record_flow_run(self, *args: Any) -> None:
        self.db.record_flow_run(*args)
        self.memory.record_flow_run(*args)

    def record_task_run(self, *args: Any) -> None:
        self.db.record_task_run(*args)
        self.memory.record_task_run(*args)

    def record_state(self, *args: Any) -> None:
        self.db.record_state(*args)
        self.memory.record_state(*args)

    def record_log(self, **fields: Any) -> None:
        self.db.record_log(**fields)
        self.memory.record_log(**fields)

    def record_state_line(self, *args: Any, **fields: Any) -> None:
        self.db.record_state_line(*args, **fields)
        self.memory.record_state_line(*args, **fields)


@pytest.fixture(params=["sqlite", "postgres"])
def both(request, tmp_path):
    if request.param == "postgres":
        from asyncflow._store.postgres import PostgresStore

        db: Any = PostgresStore(request.getfixturevalue("postgres_url"))
    else:
        db = SQLiteStore(tmp_path / "asyncflow.db")
    recorder = Both(db)
    with isolated_store(recorder):  # type: ignore[arg-type]
        yield recorder
    db.close()


def rows(records: list[Any]) -> list[tuple[Any, ...]]:
    return [(r.flow_run_id, r.task_run_id, r.level, r.message, r.ts) for r in records]


def paged(store: Any, limit: int, **filters: Any) -> list[Any]:
    out, since = [], 0
    while True:
        batch, since = store.read_logs_since(since, limit=limit, **filters)
        if not batch:
            return out
        out.extend(batch)


def assert_same_reads(both: Both, flow_run_ids: list[Any]) -> None:
    db, memory = both.db, both.memory
    db.flush()
    task_run_ids = [run.id for run in memory.read_task_runs()]
    assert task_run_ids and flow_run_ids
    for filters in ([{}] + [{"flow_run_id": str(f)} for f in flow_run_ids]
                    + [{"task_run_id": str(t)} for t in task_run_ids]
                    + [{"flow_run_id": str(flow_run_ids[0]), "task_run_id": str(t)} for t in task_run_ids]):
        expected = rows(memory.read_logs(**filters))
        assert rows(db.read_logs(**filters)) == expected, filters
        for level in (None, "INFO", "WARNING", "ERROR"):
            wanted = rows(memory.read_logs_since(0, level=level, **filters)[0])
            assert rows(db.read_logs_since(0, level=level, **filters)[0]) == wanted, (filters, level)
        for limit in (1, 3):
            assert rows(paged(db, limit, **filters)) == rows(paged(memory, limit, **filters)), (filters, limit)


# -- what the flows do: every kind of engine line, beside user lines -------------------------------------
tries: dict[str, int] = {}


@task(retries=1, retry_delay_seconds=0)
def flaky(key):
    tries[key] = tries.get(key, 0) + 1
    get_run_logger().info("try %s", tries[key])
    if tries[key] < 2:
        raise RuntimeError("first try fails")
    return tries[key]


@task(task_run_name="load-{n}")
def load(n):
    get_run_logger().warning("loading %s", n)
    return n


@task
def broken():
    raise ValueError("broken")


@task(log_prints=True)
def shout(n):
    print(f"shout {n}")
    return n


@flow
def child(n):
    return load(n)


@flow
def everything(key):
    flaky(key)
    load(1)
    shout(2)
    with contextlib.suppress(ValueError):
        broken()
    future = load.submit(3)  # submitted, its name rendered when it starts: its Created line is a log row
    future.result()
    shout.submit(6).result()  # submitted: its Created line is its first state's
    shout.map([7, 8]).result()
    child(4)
    return "done"


def test_every_read_of_log_lines_shows_the_engine_lines_as_a_store_of_log_rows_does(both):
    state = everything(uuid.uuid4().hex, return_state=True)
    shout(5)  # a task run outside any flow
    flows = [run.id for run in both.memory.read_flow_runs()]
    assert len(flows) == 2 and state.is_completed()
    assert_same_reads(both, flows)
    messages = [line.message for line in both.db.read_logs(flow_run_id=str(state.state_details.flow_run_id))]
    assert "Created task run 'flaky-0' for task 'flaky'" in messages
    assert "Finished in state Failed('Task run encountered an exception ValueError: broken')" in messages
    assert messages[-1] == "Finished in state Completed()"


@pytest.mark.anyio
async def test_an_async_flow_reads_back_the_same_lines(both, anyio_backend):
    @task
    async def fetch(i):
        await anyio.lowlevel.checkpoint()
        get_run_logger().info("fetched %s", i)
        return i

    @flow
    async def gather():
        return [await fetch(i) for i in range(3)]

    state = await gather(return_state=True)
    assert_same_reads(both, [state.state_details.flow_run_id])


def test_the_engine_lines_are_marked_on_states_not_stored_as_log_rows(tmp_path):
    @task
    def step(i):
        get_run_logger().info("step %s", i)

    @flow
    def steps():
        step(0)
        step.submit(1).result()  # a submitted run and mapped runs say Created with their first state too
        step.map([2]).result()

    store = SQLiteStore(tmp_path / "asyncflow.db")
    try:
        with isolated_store(store):
            steps()
        store.flush()
        conn = sqlite3.connect(store.path)
        try:
            assert [m for (m,) in conn.execute("SELECT message FROM logs ORDER BY seq")] == [
                "step 0", "step 1", "step 2"]
            marked = collections.Counter(state[-1] for state in all_states(conn) if state[-1] is not None)
            assert sorted(marked.items()) == [(lines_module.CREATED, 3), (lines_module.FINISHED_INFO, 4)]
            # a state keeps its run's id only when its run's number is not known
            assert conn.execute("SELECT count(*) FROM states WHERE run_id IS NOT NULL").fetchone() == (0,)
            seqs = [state[0] for state in all_states(conn)] + [s for (s,) in conn.execute("SELECT seq FROM logs")]
            assert len(set(seqs)) == len(seqs)  # one sequence for both
        finally:
            conn.close()
    finally:
        store.close()


def test_a_line_whose_state_was_written_in_an_earlier_batch_is_stored_as_a_log_row(tmp_path):
    store = SQLiteStore(tmp_path / "asyncflow.db")
    try:
        run = TaskRun(id=uuid.uuid4(), name="t-0", task_name="t", task_key="k", flow_run_id=None,
                      parent_task_run_id=None, tags=(), parameters={}, state=State(StateType.PENDING, "Pending"))
        store.record_task_run(run, run.state)
        done = State(StateType.COMPLETED, "Completed")
        store.record_state(run.id, done)
        store.flush()  # the state is written: the line cannot be attached to it any more
        store.record_state_line(run.id, lines_module.FINISHED_INFO, None, flow_run_id=None,
                                task_run_id=str(run.id), level="INFO", message="Finished in state Completed()",
                                ts=done.ts)
        other = State(StateType.FAILED, "Failed", "no")  # a line whose state is not the run's last one
        store.record_state(run.id, other)
        store.record_state_line(run.id, lines_module.FINISHED_ERROR, None, flow_run_id=None,
                                task_run_id=str(run.id), level="ERROR", message="Finished in state Completed()",
                                ts=done.ts)
        logs = store.read_logs(task_run_id=str(run.id))
        assert [(log.level, log.message, log.ts) for log in logs] == [
            ("INFO", "Finished in state Completed()", done.ts), ("ERROR", "Finished in state Completed()", done.ts)]
        assert store.counts()["logs"] == 2
    finally:
        store.close()


def test_a_schema_6_store_is_upgraded_with_its_log_rows_and_one_sequence(tmp_path):
    path = tmp_path / "asyncflow.db"
    conn = sqlite3.connect(path, isolation_level=None)  # the tables of schema 6
    conn.execute("PRAGMA journal_mode = WAL")
    build_schema(conn, sqlite_module.MIGRATIONS, 6)
    flow_id = str(uuid.uuid4())
    conn.execute("DROP TABLE states")  # schema 6's states table, with a line stored as a log row
    conn.execute("DELETE FROM counters WHERE name = 'seq'")
    conn.execute("""CREATE TABLE states (seq INTEGER PRIMARY KEY AUTOINCREMENT, run_ref INTEGER, run_id TEXT NOT NULL,
                    type TEXT NOT NULL, name TEXT NOT NULL, message TEXT, ts REAL NOT NULL, details TEXT)""")
    conn.execute("INSERT INTO flow_runs (ref, id, name, flow_name, parameters, tags, created) "
                 "VALUES (1, ?, 'old-run', 'old', '{}', '[]', 1.0)", (flow_id,))
    conn.execute("UPDATE counters SET value = 1 WHERE name = 'ref'")
    for seq in (5, 40):
        conn.execute("INSERT INTO states (seq, run_ref, run_id, type, name, ts) VALUES (?, 1, ?, 'PENDING', "
                     "'Pending', 1.0)", (seq, flow_id))
    conn.execute("DELETE FROM states WHERE seq = 40")  # the numbers given stay given
    conn.execute("INSERT INTO logs (seq, flow_run_id, level, message, ts) VALUES (17, ?, 'INFO', "
                 "'Finished in state Completed()', 2.0)", (flow_id,))
    conn.execute("UPDATE schema_version SET version = 6")
    conn.execute("PRAGMA user_version = 0")  # as the asyncflow of schema 6 left it: the version in the table only
    conn.close()
    store = SQLiteStore(path)
    try:
        assert store._query("SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
        assert store._query("SELECT value FROM counters WHERE name = 'seq'") == [(40,)]
        assert [(log.message, log.seq) for log in store.read_logs_since(0, flow_run_id=flow_id)[0]] == [
            ("Finished in state Completed()", 17)]
        with isolated_store(store):
            state = everything(uuid.uuid4().hex, return_state=True)
        store.flush()
        assert min(s for (s,) in store._query("SELECT seq FROM states WHERE seq > 5")) > 40
        lines = store.read_logs(flow_run_id=str(state.state_details.flow_run_id))
        assert lines[-1].message == "Finished in state Completed()"
        assert store._query("SELECT seq FROM logs WHERE message LIKE 'Finished in state%'") == [(17,)]  # the old one
    finally:
        store.close()


def test_postgres_and_sqlite_schemas_have_the_same_states_columns(postgres_url):
    from asyncflow._store.postgres import PostgresStore

    pg = PostgresStore(postgres_url)
    try:
        pg_columns = [c for (c,) in pg._query("SELECT column_name FROM information_schema.columns "
                                              "WHERE table_name = 'states' ORDER BY ordinal_position")]
    finally:
        pg.close()
    conn = sqlite3.connect(":memory:")
    for statements in sqlite_module.MIGRATIONS:
        for statement in statements:
            conn.execute(statement)
    assert pg_columns == [row[1] for row in conn.execute("PRAGMA table_info(states)")]


def test_a_schema_2_postgres_store_is_upgraded_with_its_log_rows_and_one_sequence(postgres_url):
    import psycopg

    from asyncflow._store import postgres as pg_module

    flow_id = str(uuid.uuid4())
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # what asyncflow wrote at schema version 2
        build_schema(conn, pg_module.MIGRATIONS, 2)
        conn.execute("INSERT INTO flow_runs (ref, id, name, flow_name, parameters, tags, created) "
                     "VALUES (1, %s, 'old-run', 'old', '{}', '[]', 1.0)", (flow_id,))
        conn.execute("UPDATE counters SET value = 1 WHERE name = 'ref'")
        for _ in range(3):  # numbers given by the identity columns, some deleted since
            conn.execute("INSERT INTO states (run_ref, run_id, type, name, ts) VALUES (1, %s, 'PENDING', 'Pending', "
                         "1.0)", (flow_id,))
        conn.execute("DELETE FROM states WHERE seq > 1")
        conn.execute("INSERT INTO logs (flow_run_id, level, message, ts) VALUES (%s, 'INFO', 'old line', 2.0)",
                     (flow_id,))
    store = pg_module.PostgresStore(postgres_url)
    try:
        assert store.schema_version() == pg_module.SCHEMA_VERSION
        assert store._query("SELECT value FROM counters WHERE name = 'seq'") == [(3,)]
        assert [log.message for log in store.read_logs(flow_run_id=flow_id)] == ["old line"]
        with isolated_store(store):
            state = everything(uuid.uuid4().hex, return_state=True)
        store.flush()
        assert min(s for (s,) in store._query("SELECT seq FROM states WHERE seq > 1")) > 3
        lines = store.read_logs(flow_run_id=str(state.state_details.flow_run_id))
        assert lines[-1].message == "Finished in state Completed()"
        assert not [m for (m,) in store._query("SELECT message FROM logs") if m.startswith("Finished in state")]
    finally:
        store.close()
