"""The SQLite store: what it records, how it reads back, its schema, and how it behaves when the
database is busy, full or broken. Real SQLite files in tmp_path; a plain `sqlite3` connection plays
the other process that reads the file."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import anyio
import anyio.lowlevel
import pytest
from helpers import all_states

from asyncflow import flow, tags, task
from asyncflow._states import State, StateType
from asyncflow._store import ObjectNotFound, StoreError, StoreNotFoundError, get_store
from asyncflow._store import sqlite as sqlite_module
from asyncflow._store.fold import STATE_CODES
from asyncflow._store.sqlite import SCHEMA_VERSION, SQLiteStore
from asyncflow.testing import isolated_store


def raw(store: SQLiteStore, sql: str, *params):
    """Read the file as another process would: a connection of its own, no flush."""
    conn = sqlite3.connect(store.path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


@task
def double(x):
    return 2 * x


@flow
def doubling(n=3):
    return [double(i) for i in range(n)]


def test_a_flow_is_on_disk_when_it_returns(db):
    state = doubling(return_state=True)
    flow_run_id = str(state.state_details.flow_run_id)
    assert raw(db, "SELECT name, flow_name, state_name, run_count FROM flow_runs WHERE id = ?", flow_run_id) == [
        (db.read_flow_run(flow_run_id).name, "doubling", "Completed", 1)]
    assert raw(db, "SELECT t.name FROM task_runs t JOIN flow_runs f ON f.ref = t.flow_ref WHERE f.id = ? "
                   "ORDER BY t.created", flow_run_id) == [("double-0",), ("double-1",), ("double-2",)]
    assert len(all_states(db)) == 4 * 3  # 3 per task run, 3 for the flow run
    assert raw(db, "SELECT name FROM flows") == [("doubling",)]
    messages = [line.message for line in db.read_logs(flow_run_id=flow_run_id)]
    assert "Created task run 'double-0' for task 'double'" in messages
    assert messages[-1] == "Finished in state Completed()"
    # the engine's lines are marked on their states, not stored as log rows (lines.py)
    assert raw(db, "SELECT count(*) FROM logs") == [(0,)]
    assert len([state for state in all_states(db) if state[-1] is not None]) == 3 * 2 + 1


@pytest.mark.anyio
async def test_an_async_flow_is_on_disk_when_it_returns(db):
    @task
    async def fetch(i):
        await anyio.lowlevel.checkpoint()
        return i

    @flow
    async def gather():
        return [await fetch(i) for i in range(3)]

    state = await gather(return_state=True)
    assert raw(db, "SELECT state_name FROM flow_runs WHERE id = ?", str(state.state_details.flow_run_id)) == [
        ("Completed",)]
    assert raw(db, "SELECT count(*) FROM task_runs WHERE state_type = 'COMPLETED'") == [(3,)]


@pytest.mark.anyio
async def test_many_async_flows_ending_at_once_are_each_on_disk_when_they_return_and_share_flushes(
        db, monkeypatch):
    from asyncflow._engine import flow_run, flushing

    flushes = []
    for module in (flow_run, flushing):  # every way the engine flushes when a root run ends
        monkeypatch.setattr(module, "flush_store", lambda: flushes.append(1) or db.flush())
    seen: dict[str, list[tuple[str]]] = {}

    @task
    async def step(i):
        await anyio.sleep(0.01)
        return i

    @flow
    async def one(i):
        return await step(i)

    async def run_and_look(i):
        state = await one(i, return_state=True)
        flow_run_id = str(state.state_details.flow_run_id)
        seen[flow_run_id] = raw(db, "SELECT state_name FROM flow_runs WHERE id = ?", flow_run_id)

    async with anyio.create_task_group() as tg:
        for i in range(200):
            tg.start_soon(run_and_look, i)
    assert list(seen.values()) == [[("Completed",)]] * 200  # each caller found its run written
    assert len(flushes) < 200  # flows that ended together shared a flush


@pytest.mark.anyio
async def test_a_cancelled_async_flow_is_on_disk_when_the_cancellation_arrives(db):
    @flow
    async def waits():
        await anyio.sleep(10)

    with anyio.move_on_after(0.05):
        await waits()
    assert raw(db, "SELECT state_name FROM flow_runs") == [("Cancelled",)]  # flushed, shielded from the cancel


def test_a_task_run_keeps_name_key_tags_summarised_parameters_parent_and_timing(db):
    class Opaque:
        pass

    @task(task_run_name="inner-{label}", tags=["deco"])
    def inner(label, payload, blob, numbers):
        return label

    @task
    def outer():
        return inner("x" * 5, Opaque(), "y" * 500, [1, 2.5, None, "z"])

    @flow
    def nesting():
        with tags("ctx"):
            return outer()

    state = nesting(return_state=True)
    runs = {run.task_name: run for run in db.read_task_runs(flow_run_id=state.state_details.flow_run_id)}
    run = runs["inner"]
    assert run.name == "inner-xxxxx"  # the rendered name, not the default one
    assert run.task_key == inner.task_key and run.tags == ("ctx", "deco")
    assert run.parameters == {"label": "xxxxx", "payload": "<Opaque>", "blob": "y" * 200 + "…",
                              "numbers": [1, 2.5, None, "z"]}
    assert run.parent_task_run_id == runs["outer"].id and run.flow_run_id == state.state_details.flow_run_id
    assert run.start_time <= run.end_time and run.state.is_completed() and run.run_count == 1


def test_parameters_summaries_never_run_user_code():
    class Loud(list):
        def __iter__(self):
            raise AssertionError("user code ran in the writer")

        def __repr__(self):
            raise AssertionError("user code ran in the writer")

    summary = json.loads(sqlite_module.summarise_parameters(
        {"loud": Loud([1]), "big": list(range(1000)), "nan": float("nan"), "nested": {"a": {"b": {"c": 1}}}}))
    assert summary == {"loud": "<Loud>", "big": "<list of 1000 items>", "nan": "nan",
                       "nested": {"a": {"b": "<dict of 1 items>"}}}


def test_state_history_with_messages_details_and_retries(db):
    attempts = []

    @task(retries=2, retry_delay_seconds=0.01)
    def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise ValueError(f"attempt {len(attempts)}")
        return "ok"

    state = flaky(return_state=True)
    run_id = state.state_details.task_run_id
    history = db.read_states(run_id)
    assert [s.name for s in history] == ["Pending", "Running", "AwaitingRetry", "Retrying", "AwaitingRetry",
                                         "Retrying", "Completed"]
    assert [s.ts for s in history] == sorted(s.ts for s in history)
    assert history[2].state_details.scheduled_time is not None
    assert all(s.state_details.task_run_id == run_id for s in history)
    run = db.read_task_run(str(run_id))
    assert run.run_count == 3 and run.state.name == "Completed" and run.end_time == history[-1].ts

    failing = task(retries=0)(lambda: 1 / 0)
    failed = failing(return_state=True)
    last = db.read_states(failed.state_details.task_run_id)[-1]
    assert last.type is StateType.FAILED and "ZeroDivisionError" in last.message


def test_reads_filter_and_order_flow_runs(db):
    @flow
    def good():
        return 1

    @flow
    def bad():
        raise ValueError("no")

    first, second = good(return_state=True), good(return_state=True)
    bad(return_state=True)
    names = [run.flow_name for run in db.read_flow_runs()]
    assert names == ["bad", "good", "good"]  # newest first
    assert [r.id for r in db.read_flow_runs(flow_name="good")] == [
        second.state_details.flow_run_id, first.state_details.flow_run_id]
    assert [r.flow_name for r in db.read_flow_runs(state="failed")] == ["bad"]
    assert len(db.read_flow_runs(state=["COMPLETED", "Failed"])) == 3
    assert len(db.read_flow_runs(limit=2)) == 2
    with pytest.raises(ValueError, match="limit must be an integer >= 0"):
        db.read_flow_runs(limit=-1)
    with pytest.raises(TypeError, match="state must be a state name or type"):
        db.read_flow_runs(state=3)


def test_another_store_on_the_same_file_reads_what_was_flushed(db):
    doubling()
    other = SQLiteStore(db.path, create=False)
    try:
        [run] = other.read_flow_runs()
        assert run.state.is_completed() and [s.name for s in other.read_states(run.id)] == [
            "Pending", "Running", "Completed"]
        assert len(other.read_task_runs(flow_run_id=run.id)) == 3
        assert [log.level for log in other.read_logs(flow_run_id=run.id)][:1] == ["INFO"]
    finally:
        other.close()


def test_unknown_and_malformed_ids_are_clear_errors(db):
    missing = uuid.uuid4()
    with pytest.raises(ObjectNotFound, match=f"No flow run with id {missing} in the store {db.path}"):
        db.read_flow_run(missing)
    with pytest.raises(ObjectNotFound, match="No task run with id"):
        db.read_task_run(str(missing))
    with pytest.raises(ValueError, match="flow_run_id 'abc' is not a valid id: expected a UUID"):
        db.read_flow_run("abc")
    assert db.read_states(missing) == []


def test_a_store_that_does_not_exist_is_not_created_by_readers(tmp_path):
    path = tmp_path / "home" / "asyncflow.db"
    with pytest.raises(StoreNotFoundError, match=f"No asyncflow store at {path} yet"):
        SQLiteStore(path, create=False)
    assert not path.exists()


def test_a_file_that_is_not_a_store_is_a_clear_error(tmp_path):
    path = tmp_path / "asyncflow.db"
    path.write_bytes(b"definitely not sqlite" * 100)
    with pytest.raises(StoreError, match=r"Cannot open the asyncflow store .* is not an asyncflow store: move .* away"):
        SQLiteStore(path)


def test_schema_migrates_forward_and_keeps_the_data(tmp_path, monkeypatch):
    path = tmp_path / "asyncflow.db"
    store = SQLiteStore(path)
    with isolated_store(store):
        doubling()
    store.close()
    assert raw(store, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    migrations = [*sqlite_module.MIGRATIONS, ["ALTER TABLE flow_runs ADD COLUMN note TEXT",
                                              "UPDATE flow_runs SET note = 'migrated'"]]
    monkeypatch.setattr(sqlite_module, "MIGRATIONS", migrations)
    monkeypatch.setattr(sqlite_module, "SCHEMA_VERSION", len(migrations))
    upgraded = SQLiteStore(path, create=False)
    try:
        assert raw(upgraded, "SELECT version FROM schema_version") == [(SCHEMA_VERSION + 1,)]
        assert raw(upgraded, "SELECT flow_name, note FROM flow_runs") == [("doubling", "migrated")]
        assert len(upgraded.read_task_runs()) == 3
    finally:
        upgraded.close()


def test_a_version_1_store_is_migrated_with_its_runs_states_and_logs(tmp_path):
    path = tmp_path / "asyncflow.db"
    flow_id, task_id = str(uuid.uuid4()), str(uuid.uuid4())
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in sqlite_module.MIGRATIONS[0]:  # what asyncflow wrote at schema version 1
        conn.execute(statement)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (1)")
    conn.execute("INSERT INTO flow_runs (id, name, flow_name, parameters, tags, created, state_type, state_name, "
                 "run_count, start_time, end_time) VALUES (?, 'old-run', 'old', '{}', '[]', 1.0, 'COMPLETED', "
                 "'Completed', 1, 2.0, 3.0)", (flow_id,))
    conn.execute("INSERT INTO task_runs (id, name, task_name, task_key, flow_run_id, parameters, tags, created, "
                 "state_type, state_name, run_count) VALUES (?, 't-0', 't', 'k', ?, '{\"x\": 1}', '[\"a\"]', 1.5, "
                 "'COMPLETED', 'Completed', 1)", (task_id, flow_id))
    for run_id, name, ts in [(flow_id, "Pending", 1.0), (task_id, "Pending", 1.5), (task_id, "Completed", 2.5),
                             (flow_id, "Completed", 3.0)]:
        conn.execute("INSERT INTO states (run_id, type, name, ts) VALUES (?, ?, ?, ?)",
                     (run_id, name.upper(), name, ts))
    conn.execute("INSERT INTO logs (flow_run_id, task_run_id, level, message, ts) VALUES (?, ?, 'INFO', 'hello', 2.0)",
                 (flow_id, task_id))
    conn.close()
    store = SQLiteStore(path, create=False)
    try:
        assert raw(store, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
        assert store.read_flow_run(flow_id).name == "old-run"
        task_run = store.read_task_run(task_id)
        assert task_run.parameters == {"x": 1} and task_run.tags == ("a",)
        assert [s.name for s in store.read_states(task_id)] == ["Pending", "Completed"]
        assert [s.name for s in store.read_states(flow_id)] == ["Pending", "Completed"]
        assert [log.message for log in store.read_logs(task_run_id=task_id)] == ["hello"]
        with isolated_store(store):
            doubling()  # new runs are numbered after the migrated ones
        assert len(store.read_flow_runs()) == 2 and store.counts()["task_runs"] == 4
    finally:
        store.close()


@pytest.mark.parametrize("header", [99, 0], ids=["stamped", "table-only"])
def test_a_store_newer_than_this_asyncflow_is_refused(tmp_path, header):
    """Newer asyncflows stamp the version in the file header and the table; one that did not stamp
    the header (as before it carried the version) is refused by the table."""
    path = tmp_path / "asyncflow.db"
    SQLiteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_version SET version = 99")
    conn.execute(f"PRAGMA user_version = {header}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError,
                       match=f"schema version 99, newer than this asyncflow understands \\({SCHEMA_VERSION}\\)"):
        SQLiteStore(path)


class TracedStore(SQLiteStore):
    """A SQLite store whose connections report every statement they run (the writer's too)."""

    def __init__(self, path, statements, **kwargs):
        self.statements = statements
        super().__init__(path, **kwargs)

    def _sqlite_connect(self):
        conn = super()._sqlite_connect()
        conn.set_trace_callback(self.statements.append)
        return conn


SCHEMA_WORDS = ("CREATE ", "ALTER ", "DROP ", "INSERT INTO SCHEMA_VERSION", "DELETE FROM SCHEMA_VERSION",
                "SELECT VERSION FROM SCHEMA_VERSION", "PRAGMA USER_VERSION =")


def schema_statements(statements):
    return [s for s in statements if s.strip().upper().startswith(SCHEMA_WORDS)]


def test_the_first_flow_on_an_up_to_date_store_runs_no_schema_statement(tmp_path):
    path = tmp_path / "asyncflow.db"
    created: list[str] = []
    TracedStore(path, created).close()
    assert schema_statements(created)  # the new file got its schema (the trace sees the statements)
    statements: list[str] = []
    store = TracedStore(path, statements)
    with isolated_store(store):
        assert doubling() == [0, 2, 4]
    store.close()
    assert "PRAGMA user_version" in statements  # its version was checked, by the file header
    assert schema_statements(statements) == []
    assert raw(store, "SELECT count(*) FROM task_runs") == [(3,)]


def test_an_up_to_date_store_from_before_the_header_version_is_stamped_once(tmp_path):
    path = tmp_path / "asyncflow.db"
    SQLiteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 0")  # as an earlier asyncflow left it: the version in the table only
    conn.commit()
    conn.close()
    first: list[str] = []
    TracedStore(path, first).close()
    assert [s for s in schema_statements(first) if not s.startswith("SELECT")] == [
        f"PRAGMA user_version = {SCHEMA_VERSION}"]
    again: list[str] = []
    TracedStore(path, again).close()
    assert schema_statements(again) == []
    assert raw(SQLiteStore(path, create=False), "PRAGMA user_version") == [(SCHEMA_VERSION,)]


def hold_write_lock(path, until):
    """Another process holding the database: an open write transaction on another connection, committed
    once `until()` is true (what the test waits for has happened), or after 60 s: a hang guard."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO flows (name, version, created) VALUES ('holder', NULL, 0)")
    released = threading.Event()

    def release():
        deadline = time.monotonic() + 60
        while not until() and time.monotonic() < deadline:
            time.sleep(0.005)
        released.set()
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=release, daemon=True)
    thread.released = released  # type: ignore[attr-defined]
    thread.start()
    return thread


def test_a_busy_database_delays_writes_but_loses_nothing(tmp_path, capfd):
    store = SQLiteStore(tmp_path / "asyncflow.db", busy_timeout=0.05,  # retries ourselves, not SQLite's wait
                        flush_timeout=60)  # (a hang guard: the flow's flush waits for the holder)
    finishing, flushing_thread, busy_in_flush = threading.Event(), [], [0]
    write_once = store._write_once

    def counting_write_once(*args, **kwargs):  # counts the flow's flush meeting the busy database
        written = write_once(*args, **kwargs)
        if written is False and threading.current_thread() in flushing_thread:
            busy_in_flush[0] += 1
        return written

    store._write_once = counting_write_once  # type: ignore[method-assign]

    @flow
    def held_doubling():
        values = [double(i) for i in range(5)]
        flushing_thread.append(threading.current_thread())  # the flow's last flush runs in this thread
        finishing.set()
        return values

    try:
        # committed once the flow's own flush found the database busy twice (it retries, then writes)
        holder = hold_write_lock(store.path, until=lambda: busy_in_flush[0] >= 2)
        with isolated_store(store):
            assert held_doubling() == [0, 2, 4, 6, 8]
        assert holder.released.is_set()
        assert raw(store, "SELECT count(*) FROM task_runs") == [(5,)]  # on disk when the flow returned
        holder.join()
        assert "locked" not in capfd.readouterr().err
    finally:
        store.close()


def test_a_flush_gives_up_after_its_timeout_and_the_records_stay_queued(tmp_path, capfd):
    store = SQLiteStore(tmp_path / "asyncflow.db", busy_timeout=0.02, flush_timeout=0.1)
    gave_up = threading.Event()
    try:
        holder = hold_write_lock(store.path, until=gave_up.is_set)  # held until the flush returned
        run_id = uuid.uuid4()
        store.record_state(run_id, State(StateType.RUNNING))
        assert store.flush() is False  # (a flush that waited for the holder would write, and return True)
        assert not holder.released.is_set()  # it gave up while the database was still held
        gave_up.set()
        assert "stayed busy for 0.1 s" in capfd.readouterr().err
        holder.join()
        assert store.flush(timeout=60) is True
        assert raw(store, "SELECT run_id FROM states") == [(str(run_id),)]
    finally:
        store.close()


def test_a_full_queue_makes_recording_wait_and_nothing_is_dropped(tmp_path, capfd):
    store = SQLiteStore(tmp_path / "asyncflow.db", queue_size=10, busy_timeout=0.02)
    try:
        holder = hold_write_lock(store.path, until=lambda: store.waited > 0)  # held until recording waited
        for _ in range(100):
            store.record_state(uuid.uuid4(), State(StateType.RUNNING))
        assert store.waited > 0  # backpressure: the recording thread waited for room
        holder.join()
        assert store.flush(timeout=60)
        assert raw(store, "SELECT count(*) FROM states")[0][0] == 100
        assert "dropped" not in capfd.readouterr().err
    finally:
        store.close()


def test_a_stalled_writer_lets_the_queue_grow_with_one_warning_instead_of_blocking(tmp_path, capfd):
    store = SQLiteStore(tmp_path / "asyncflow.db", queue_size=10, busy_timeout=0.02, stall_seconds=0.1)
    recorded = threading.Event()
    try:
        holder = hold_write_lock(store.path, until=recorded.is_set)  # the writer stalls until all are recorded
        for _ in range(100):
            store.record_state(uuid.uuid4(), State(StateType.RUNNING))
        assert not holder.released.is_set()  # recording did not wait for the holder ...
        recorded.set()
        assert store.waited == 1 and capfd.readouterr().err.count("has written nothing for 0.1 s") == 1  # ... once
        holder.join()
        assert store.flush(timeout=60)
        assert raw(store, "SELECT count(*) FROM states")[0][0] == 100
    finally:
        store.close()


def test_a_record_that_cannot_be_written_is_left_out_alone_and_its_batch_is_written(db, capfd):
    db.record_log(flow_run_id=None, task_run_id=None, level="INFO", message="before", ts=0.0)
    db.record_log(flow_run_id=None, task_run_id=None, level="INFO", message=object(), ts=0.0)  # type: ignore[arg-type]
    db.record_log(flow_run_id=None, task_run_id=None, level="INFO", message="after", ts=0.0)
    assert db.flush()
    assert db.lost == 1
    assert "it is left out, the rest of its batch is written" in capfd.readouterr().err
    assert [log.message for log in db.read_logs()] == ["before", "after"]
    doubling()
    assert len(db.read_flow_runs()) == 1


def test_one_writer_thread_per_store_and_it_stops_on_close(tmp_path):
    store = SQLiteStore(tmp_path / "asyncflow.db")
    for _ in range(3):
        store.record_state(uuid.uuid4(), State(StateType.RUNNING))
    writers = [t for t in threading.enumerate() if t.name == "asyncflow-store-writer"]
    assert store._thread in writers
    store.close()
    assert not store._thread and raw(store, "SELECT count(*) FROM states") == [(3,)]


def test_records_are_written_soon_without_a_flush(db):
    double(21)  # a task outside any flow: nothing waits for its records, the writer takes them
    deadline = time.monotonic() + 5
    while len(all_states(db)) != 3:
        assert time.monotonic() < deadline, "the writer did not write within 5 s"
        time.sleep(0.01)


def test_the_default_store_follows_the_settings(tmp_path, monkeypatch):
    from asyncflow import _settings
    from asyncflow._store import MemoryStore, default_store

    monkeypatch.setenv("ASYNCFLOW_HOME", str(tmp_path))
    monkeypatch.delenv("ASYNCFLOW_STORE", raising=False)
    _settings.reload()
    store = default_store()
    assert isinstance(store, SQLiteStore) and store.path == tmp_path / "asyncflow.db"
    store.close()
    monkeypatch.setenv("ASYNCFLOW_STORE", "memory")
    assert isinstance(default_store(), MemoryStore)
    _settings.reload()


def test_an_unwritable_home_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError,
                       match=r"Cannot create the asyncflow store .*Not a directory.* Set ASYNCFLOW_HOME to a writable"):
        SQLiteStore(blocker / "home" / "asyncflow.db")


def run_script(code: str, home, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ASYNCFLOW_HOME": str(home), "ASYNCFLOW_STORE": "sqlite"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_runs_still_open_at_exit_are_recorded_crashed(tmp_path):
    proc = run_script("""
        import threading
        from asyncflow import flow
        from asyncflow._store import get_store

        started, never = threading.Event(), threading.Event()

        @flow
        def stuck():
            started.set()
            never.wait()

        threading.Thread(target=stuck, daemon=True).start()
        started.wait()
        # the interpreter exits with the flow still running
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    store = SQLiteStore(tmp_path / "asyncflow.db", create=False)
    try:
        [run] = store.read_flow_runs()
        assert run.state.is_crashed() and run.state.message == "The process exited while the run was still open."
        assert [s.name for s in store.read_states(run.id)] == ["Pending", "Running", "Crashed"]
    finally:
        store.close()


def test_a_forked_child_writes_its_own_records_only_even_if_forked_mid_write(db):
    if not hasattr(os, "fork"):
        pytest.skip("needs fork")
    for _ in range(20_000):  # the parent's writer is busy (inside SQLite) when the fork comes
        db.record_state(uuid.uuid4(), State(StateType.RUNNING))
    time.sleep(0.01)
    pid = os.fork()
    if pid == 0:  # the child: its own writer; the parent's queue is the parent's to write
        try:
            db.record_state(uuid.uuid4(), State(StateType.COMPLETED))
            ok = db.flush(timeout=10)
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    db.flush()
    assert raw(db, "SELECT type, count(*) FROM states GROUP BY type ORDER BY type") == [  # stored as numbers
        (STATE_CODES["RUNNING"], 20_000), (STATE_CODES["COMPLETED"], 1)]


def test_get_store_is_the_installed_store(db):
    assert get_store() is db


def _task_run(run_id, state):
    from asyncflow._runs import TaskRun

    return TaskRun(id=run_id, name="send_email-0", task_name="send_email", task_key="send_email-k",
                   flow_run_id=None, parent_task_run_id=None, tags=(), parameters={"to": "a@b.c"}, state=state)


def test_a_run_recorded_again_by_another_writer_keeps_its_row_and_loses_nothing(tmp_path):
    """B5: `.delay()` records a background run Scheduled in the caller's process; the worker records
    the same run id again when it runs it. The second INSERT broke the UNIQUE id, and the worker's
    whole batch was dropped, unrelated runs included: completed runs stayed Scheduled for ever."""
    path = tmp_path / "asyncflow.db"
    caller, worker = SQLiteStore(path), SQLiteStore(path)
    try:
        run_id, other_id = uuid.uuid4(), uuid.uuid4()
        scheduled = State(StateType.SCHEDULED, "Scheduled")
        caller.record_task_run(_task_run(run_id, scheduled))
        caller.record_state(run_id, scheduled)
        assert caller.flush(10)
        # the worker: the same run from Pending to Completed, and a run of its own in the same batch
        for rid in (run_id, other_id):
            pending = State(StateType.PENDING, "Pending")
            worker.record_task_run(_task_run(rid, pending))
            worker.record_state(rid, pending)
            worker.record_state(rid, State(StateType.RUNNING, "Running"))
            worker.record_state(rid, State(StateType.COMPLETED, "Completed"))
        assert worker.flush(10)
        assert worker.lost == 0
        run = caller.read_task_run(run_id)
        assert run.state.name == "Completed" and run.run_count == 1
        assert [s.name for s in caller.read_states(run_id)] == ["Scheduled", "Pending", "Running", "Completed"]
        assert caller.read_task_run(other_id).state.name == "Completed"
        assert raw(caller, "SELECT count(*) FROM task_runs WHERE id = ?", str(run_id)) == [(1,)]
        # and a later batch of the worker for that run still reaches the existing row
        worker.record_state(run_id, State(StateType.COMPLETED, "Cached"))
        assert worker.flush(10)
        assert caller.read_task_run(run_id).state.name == "Cached"
    finally:
        caller.close()
        worker.close()


def test_runs_the_writer_stopped_remembering_still_get_their_later_states(db, monkeypatch):
    from asyncflow._runs import TaskRun
    from asyncflow._store import fold

    monkeypatch.setattr(fold, "OPEN_RUNS_KEPT", 10)
    runs = [TaskRun(id=uuid.uuid4(), name=f"t-{i}", task_name="t", task_key="t", flow_run_id=None,
                    parent_task_run_id=None, tags=(), parameters={}, state=State(StateType.PENDING, "Pending"),
                    task_version=None) for i in range(45)]
    for run in runs:
        db.record_task_run(run, run.state)
        db.flush()  # one batch each: the writer's memory of open runs overflows many times
    for run in runs:
        db.record_state(run.id, State(StateType.COMPLETED, "Completed"))
    db.flush()
    assert {db.read_task_run(run.id).state.name for run in runs} == {"Completed"}
    assert len(db._open_runs) <= 10
